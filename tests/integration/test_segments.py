#!/usr/bin/python3
"""Many steps in one request: a batch's segments (README "Many steps in one request").

usage: BUILD=build /usr/bin/python3 tests/integration/test_segments.py [-v] [unittest names...]

- EqualityTest: a seeded training-like sequence of steps (ids repeating across steps and epochs, meta,
  two runs) posted step by step into one dataset and as segmented requests into another, in JSON and in
  the binary framing: every dataset, run and sample field, every recent observation and the ranking are
  equal, live, after a SIGTERM restart and after a SIGKILL one (the batch log replayed).
- DuplicateTest: a segmented request sent again with its batch_id is answered duplicate and changes nothing;
  one that differs from it in any segment is refused as another request and changes nothing.
- BadSegmentsTest: each malformed segments field gets a 422 naming the field and changes nothing.

Uses harness.py's daemon and runner and test_binary's framing. The last line is "ok N" or "failed K".
"""
import os
import random
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
import test_binary as tb  # noqa: E402
import test_consistency as tc  # noqa: E402

ALL = tc.ALL


def workload(seed, steps=90, pool=40, classes=4):
    """Steps of a small training loop: (run, step, epoch, ids, logits, labels, meta) in order. Ids come
    from a pool, so a sample is seen at many steps and often twice within a few steps."""
    rng = random.Random(seed)
    out = []
    for s in range(steps):
        run = "b" if (s // 15) % 3 == 2 else "a"
        n = rng.randint(1, 12)
        ids = rng.sample(["s%d" % i for i in range(pool)], n)
        logits = tb.as_f32([[rng.uniform(-3, 3) for _ in range(classes)] for _ in ids])
        labels = [rng.randrange(classes) for _ in ids]
        meta = {i: {"uri": "mem://%s/%d" % (i, s)} for i in ids if rng.random() < 0.1}
        out.append({"run": run, "step": s, "epoch": s // 30, "ids": ids, "logits": logits, "labels": labels,
                    "meta": meta})
    return out


def requests_of(steps, rng, most=8):
    """The steps cut into requests of 1 to `most` consecutive steps of one run."""
    out, cur, size = [], [], rng.randint(1, most)
    for st in steps:
        if cur and (cur[0]["run"] != st["run"] or len(cur) == size):
            out.append(cur)
            cur, size = [], rng.randint(1, most)
        cur.append(st)
    if cur:
        out.append(cur)
    return out


def segmented_body(group, batch_id=None):
    """One JSON request for consecutive steps: each step a segment; meta by id, a later step's winning."""
    meta = {}
    for st in group:
        meta.update(st["meta"])
    body = {"run": group[0]["run"], "loss": {"type": "softmax_focal"},
            "ids": [i for st in group for i in st["ids"]],
            "logits": [x for st in group for x in st["logits"]],
            "targets": [y for st in group for y in st["labels"]],
            "segments": [{"n": len(st["ids"]), "step": st["step"], "epoch": st["epoch"]} for st in group]}
    if meta:
        body["meta"] = meta
    if batch_id:
        body["batch_id"] = batch_id
    return body


def step_body(st):
    body = {"run": st["run"], "loss": {"type": "softmax_focal"}, "ids": st["ids"], "logits": st["logits"],
            "targets": st["labels"], "step": st["step"], "epoch": st["epoch"]}
    if st["meta"]:
        body["meta"] = st["meta"]
    return body


def first_difference(a, b, path=""):
    """Where a and b first differ, as a path and the two values."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return first_difference(a.get(k), b.get(k), "%s/%s" % (path, k))
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_difference(x, y, "%s[%d]" % (path, i))
    return "%s: want %r, got %r" % (path or "/", a, b)


def view(d, ds):
    """The dataset's API-visible state without its name: what step-by-step and segmented posting must agree on."""
    def unname(x):
        if isinstance(x, dict):
            return {k: unname(y) for k, y in x.items() if k != "dataset"}
        return [unname(y) for y in x] if isinstance(x, (list, tuple)) else x
    v = unname(tc.dump(d)[ds])
    v["detail"].pop("name", None)
    # the relabel feed's cursor names its dataset ("<dataset id>-<position>"): its position is what must agree
    v["relabels"]["next_cursor"] = v["relabels"]["next_cursor"].split("-", 1)[1]
    v["ranking"] = {run: [(it["id"], it.get("score")) for it in d.all_hard(ds, page=1000, run=run, status=ALL)]
                    for run in sorted(r["name"] for r in v["detail"]["runs"])}
    return v


class SegmentsTestCase(tc.ConsistencyTestCase):

    @classmethod
    def setUpClass(cls):
        pass


class EqualityTest(SegmentsTestCase):

    def _post_segmented_binary(self, d, ds, group, batch_id):
        meta = {}
        for st in group:
            meta.update(st["meta"])
        header = {"run": group[0]["run"], "loss": {"type": "softmax_focal"}, "batch_id": batch_id,
                  "segments": [{"n": len(st["ids"]), "step": st["step"], "epoch": st["epoch"]} for st in group]}
        if meta:
            header["meta"] = meta
        tensors = tb.bin_tensors([i for st in group for i in st["ids"]], [x for st in group for x in st["logits"]],
                                 [y for st in group for y in st["labels"]])
        body, hl = tb.build(header, tensors)
        r = d.post("/v1/datasets/%s/batches" % ds, body,
                   headers={"Content-Type": tb.OCTET, "Inference-Header-Content-Length": str(hl)})
        self.assertEqual(r.status, 200, r)

    def _equal_after_restarts(self, binary):
        steps = workload(11 if binary else 5)
        # a long snapshot interval: after the SIGKILL, everything comes back by replaying the batch log
        d = self.daemon(args=["--snapshot-interval", "3600"]).start()
        for st in steps:
            d.ok_batch("steps", step_body(st))
        rng = random.Random(3)
        groups = requests_of(steps, rng)
        self.assertGreater(sum(len(g) > 1 for g in groups), len(groups) // 2, "too few requests with several steps")
        self.assertTrue(any(len(set(i for st in g for i in st["ids"])) < sum(len(st["ids"]) for st in g)
                            for g in groups), "no request has a sample at two of its steps")
        for k, g in enumerate(groups):
            if binary:
                self._post_segmented_binary(d, "segs", g, "b%d" % k)
            else:
                r = d.batch("segs", segmented_body(g, batch_id="b%d" % k))
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["accepted"], sum(len(st["ids"]) for st in g))
        want = view(d, "steps")
        self.assertGreater(want["detail"]["observations"], 400)
        self._assertSame(view(d, "segs"), want, "live")
        self.assertEqual(d.stop(), 0)
        d = self.restart(d, args=["--snapshot-interval", "3600"])
        self._assertSame(view(d, "segs"), want, "after a SIGTERM restart")
        for st in workload(17, steps=10):  # more after the snapshot, then a kill: replayed from the log
            d.ok_batch("steps", step_body(st))
        for k, g in enumerate(requests_of(workload(17, steps=10), rng)):
            self.assertEqual(d.batch("segs", segmented_body(g, batch_id="late%d" % k)).status, 200)
        want = view(d, "steps")
        self._assertSame(view(d, "segs"), want, "live, after more")
        d.kill9()
        d = self.restart(d)
        self._assertSame(view(d, "segs"), want, "after a SIGKILL restart")
        self._assertSame(view(d, "steps"), want, "step by step, after a SIGKILL restart")
        self.assertEqual(d.stop(), 0)

    def _assertSame(self, got, want, ctx):
        if got != want:
            self.fail("%s: first difference at %s" % (ctx, first_difference(want, got)))

    def test_segments_json_equal_step_by_step_field_by_field(self):
        self._equal_after_restarts(binary=False)

    def test_segments_binary_equal_step_by_step_field_by_field(self):
        self._equal_after_restarts(binary=True)

    def test_segments_take_the_request_step_and_epoch_unless_they_give_their_own(self):
        d = self.daemon().start()
        body = {"ids": ["x", "y", "x", "z"], "logits": [[1.0, 0.0]] * 4, "targets": [0, 1, 1, 0], "epoch": 3,
                "step": 40, "loss": {"type": "softmax_focal"},
                "segments": [{"n": 2}, {"n": 1, "step": 41}, {"n": 1, "step": None, "epoch": 4}]}
        self.assertEqual(d.batch("ds", body).status, 200)
        x = d.sample("ds", "x").json()
        y = d.sample("ds", "y").json()
        z = d.sample("ds", "z").json()
        run = lambda s: s["runs"][0] if "runs" in s else s  # noqa: E731
        self.assertEqual(run(x)["seen"], 2)
        self.assertEqual((run(x)["first_step"], run(x)["last_step"]), (40, 41))
        self.assertEqual((run(y)["first_step"], run(y)["last_step"]), (40, 40))
        self.assertIsNone(run(z)["last_step"])
        self.assertEqual([(o.get("step"), o.get("epoch")) for o in run(x)["recent"]], [(41, 3), (40, 3)])
        self.assertEqual([(o.get("step"), o.get("epoch")) for o in run(z)["recent"]], [(None, 4)])
        self.assertEqual(d.stop(), 0)


class DuplicateTest(SegmentsTestCase):

    def test_segmented_request_sent_again_is_a_duplicate_and_changes_nothing(self):
        d = self.daemon().start()
        steps = workload(23, steps=12)
        g = [st for st in steps if st["run"] == "a"][:5]
        r = d.batch("ds", segmented_body(g, batch_id="once"))
        self.assertEqual(r.status, 200, r)
        self.assertFalse(r.json()["duplicate"])
        before = view(d, "ds")
        # a retry may compute its predictions, labels and steps anew: the same ids in the same segments
        recomputed = [dict(st, logits=[[-x for x in row] for row in st["logits"]],
                           labels=[(y + 1) % 4 for y in st["labels"]], step=st["step"] + 100) for st in g]
        for again in (segmented_body(g, batch_id="once"), segmented_body(recomputed, batch_id="once")):
            r = d.batch("ds", again)
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.json()["duplicate"], r)
            self.assertEqual(view(d, "ds"), before)
        d.kill9()
        d = self.restart(d)
        self.assertEqual(view(d, "ds"), before)
        self.assertTrue(d.batch("ds", segmented_body(g, batch_id="once")).json()["duplicate"])
        self.assertEqual(d.stop(), 0)

    def test_a_request_unlike_the_stored_one_in_any_segment_is_refused_and_changes_nothing(self):
        # the stored request's first segment is the same in each of these; a later one differs, or the
        # segments are fewer, more or cut elsewhere: each is another request under a reused batch_id
        d = self.daemon().start()
        steps = workload(29, steps=14)
        g = [st for st in steps if st["run"] == "a" and len(st["ids"]) >= 2][:5]
        self.assertEqual(len(g), 5)
        self.assertFalse(d.ok_batch("ds", segmented_body(g, batch_id="once"))["duplicate"])
        renamed = [dict(st) for st in g]
        renamed[3]["ids"] = renamed[3]["ids"][:-1] + ["not-" + renamed[3]["ids"][-1]]
        swapped = [dict(st) for st in g]
        swapped[4]["ids"] = swapped[4]["ids"][::-1]
        cut = segmented_body(g, batch_id="once")
        cut["segments"] = [dict(x) for x in cut["segments"]]
        cut["segments"][1]["n"] -= 1
        cut["segments"][2]["n"] += 1
        other = {
            "one segment fewer": segmented_body(g[:4], batch_id="once"),
            "the first segment alone": segmented_body(g[:1], batch_id="once"),
            "the first step without segments": dict(step_body(g[0]), batch_id="once"),
            "one segment more": segmented_body(g + [g[0]], batch_id="once"),
            "an id of a later segment renamed": segmented_body(renamed, batch_id="once"),
            "a later segment's ids in another order": segmented_body(swapped, batch_id="once"),
            "the same ids cut into other segments": cut,
        }
        before = view(d, "ds")

        def all_refused():
            for what, body in other.items():
                with self.subTest(what):
                    self.assertProblem(d.batch("ds", body), 422, "batch_id_reused", "/batch_id")
                    self.assertEqual(view(d, "ds"), before)

        all_refused()
        self.assertTrue(d.batch("ds", segmented_body(g, batch_id="once")).json()["duplicate"])
        d.kill9()
        d = self.restart(d)
        all_refused()
        self.assertEqual(d.stop(), 0)


def _bad(segments, field, code="invalid_field", **extra):
    body = {"ids": ["p", "q", "r"], "logits": [[0.5, -0.5]] * 3, "targets": [0, 1, 0], "segments": segments}
    body.update(extra)
    return body, field, code


BAD = {
    "not_an_array": _bad({"n": 3}, "/segments"),
    "empty": _bad([], "/segments"),
    "more_than_65536": _bad([{"n": 1}] * 65537, "/segments", "too_large"),
    "not_an_object": _bad([{"n": 2}, 3], "/segments/1"),
    "n_missing": _bad([{"step": 1}, {"n": 3}], "/segments/0/n", "missing_field"),
    "n_zero": _bad([{"n": 0}, {"n": 3}], "/segments/0/n", "out_of_range"),
    "n_not_integer": _bad([{"n": 1.5}, {"n": 2}], "/segments/0/n"),
    "cover_fewer": _bad([{"n": 1}, {"n": 1}], "/segments", "shape_mismatch"),
    "cover_more": _bad([{"n": 2}, {"n": 2}], "/segments", "shape_mismatch"),
    "step_negative": _bad([{"n": 1}, {"n": 2, "step": -1}], "/segments/1/step", "out_of_range"),
    "epoch_text": _bad([{"n": 3, "epoch": "1"}], "/segments/0/epoch"),
    "unknown_field": _bad([{"n": 3, "steps": 1}], "/segments/0/steps", "unknown_field"),
    "id_twice_in_a_segment": (dict(_bad([{"n": 3}], "")[0], ids=["p", "q", "p"]), "/ids/2", "duplicate_id"),
    "meta_for_no_id": (dict(_bad([{"n": 1}, {"n": 2}], "")[0], meta={"zz": {}}), "/meta/zz", "invalid_field"),
}


class BadSegmentsTest(SegmentsTestCase):

    def test_bad_segments_get_a_precise_error_and_change_nothing(self):
        d = self.daemon().start()
        d.ok_batch("ds", {"ids": ["p"], "logits": [[0.1, 0.2]], "targets": [1], "step": 1})
        before = tc.dump(d)
        for name, (body, field, code) in sorted(BAD.items()):
            with self.subTest(name):
                r = d.batch("ds", body)
                self.assertEqual(r.status, 422, "%s: %r" % (name, r))
                p = r.json()
                self.assertEqual((p["code"], p["field"]), (code, field), "%s: %r" % (name, p))
                self.assertTrue(p["detail"], name)
                self.assertEqual(tc.dump(d), before, name)
        # the same bodies in the binary framing: the header carries segments the same way
        for name, (body, field, code) in sorted(BAD.items()):
            if name == "id_twice_in_a_segment":
                field = "/inputs/0"
            with self.subTest("binary " + name):
                header = {k: v for k, v in body.items() if k not in ("ids", "logits", "targets")}
                body_bytes, hl = tb.build(header, tb.bin_tensors(body["ids"], body["logits"], body["targets"]))
                r = d.post("/v1/datasets/ds/batches", body_bytes,
                           headers={"Content-Type": tb.OCTET, "Inference-Header-Content-Length": str(hl)})
                self.assertEqual(r.status, 422, "%s: %r" % (name, r))
                p = r.json()
                self.assertEqual((p["code"], p["field"]), (code, field), "%s: %r" % (name, p))
        self.assertEqual(tc.dump(d), before)
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    sys.exit(harness.main())
