#!/usr/bin/python3
"""Integration tests of focald's review loop (README "The review loop"), against the real daemon.

usage: BUILD=build /usr/bin/python3 tests/integration/test_review.py [-v] [unittest names...]

Covers review states and every transition between them, legal and illegal (an illegal one is 409 and
changes nothing: not the state, not the audit trail, not the relabel feed); malformed review bodies; the
per-sample audit trail; hard-examples' default status filter and the reconsideration of confirmed samples
on both sides of --reconsider-factor; the relabel feed with its cursors, withdrawals and stale-label counts;
review queues (size, per-label quotas on planted data where they bind, de-duplication by a meta key,
progress, stability, deletion); changes to one sample sent at the same moment; sample meta; every export
format against its documented shape and against hard-examples' order; and that all of it survives a restart
after SIGTERM and after SIGKILL.

Uses tests/integration/harness.py (Daemon, FocaldTestCase, the runner): each test
class starts $BUILD/focald on a free loopback port with a fresh database; tests that restart or need other
flags start their own. The last line of output is "ok N" when all N tests passed, or "failed K" when K
failed, preceded by "ok P" for the P that passed (tests/suites/integration sums them).

Python standard library only. Expected losses, where a test needs one in advance, come from harness.py's
float64 reference of torchvision's sigmoid focal loss; the daemon computes in float32, so such tests keep a
margin of several percent from any threshold they probe.
"""
import csv
import datetime
import io
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ANY = harness.ANY
STATES = ["open", "queued", "in_review", "relabelled", "confirmed", "dismissed"]
UNDECIDED = ("open", "queued", "in_review")
ALL_STATES = ",".join(STATES)
HISTORY_FIELDS = harness.HISTORY_FIELDS
CSV_COLUMNS = ["rank", "id", "score"] + HISTORY_FIELDS + [
    "first_step", "last_step", "label", "label_issue", "status", "corrected_label", "reconsider", "uri",
    "study_uid", "series_uid", "sop_uid", "patient_id", "viewer_url"]
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RFC3339_S = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def legal(src, dst):
    """README "The review loop": a sample waiting for a decision may go to any other state; a decision may
    only be reopened or taken back into review, and a relabel may be replaced by another relabel."""
    if src in UNDECIDED:
        return src != dst
    return dst in ("open", "in_review") or (src == dst == "relabelled")


def parse_at(s):
    """An RFC 3339 UTC time with milliseconds, as Unix seconds."""
    return datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def row(label, z, c=3, rest=-2.0):
    """A logit row of c classes: z for the label, rest elsewhere. The loss falls as z rises."""
    r = [rest] * c
    r[label] = z
    return r


def row_loss(r, label):
    """The float64 sigmoid focal loss (sum over classes, torchvision) of a logit row with a class label."""
    return sum(harness.sigmoid_focal_element(z, 1.0 if k == label else 0.0) for k, z in enumerate(r))


def z_for_loss(loss, label=0, c=3, rest=-2.0):
    """The z whose row(label, z) has the given loss (bisection: the loss falls as z rises)."""
    lo, hi = -30.0, 30.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if row_loss(row(label, mid, c, rest), label) > loss:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# ---------------------------------------------------------------------------- the base class

class ReviewTestCase(harness.FocaldTestCase):

    # -- requests (d: another daemon than the class's)

    def _d(self, d):
        return d or self.d

    def sample_path(self, ds, sid):
        return "/v1/datasets/%s/samples/%s" % (harness.q(ds), harness.q(sid))

    def review(self, ds, sid, status=ANY, d=None, **fields):
        body = dict(fields)
        if status is not ANY:
            body["status"] = status
        return self._d(d).post(self.sample_path(ds, sid) + "/review", body)

    def ok_review(self, ds, sid, status, d=None, **fields):
        r = self.review(ds, sid, status, d=d, **fields)
        self.assertEqual(r.status, 200, "review %s -> %s: %r" % (sid, status, r))
        return r.json()

    def audit(self, ds, sid, d=None):
        r = self._d(d).get(self.sample_path(ds, sid) + "/reviews")
        self.assertEqual(r.status, 200, r)
        return r.json()

    def status_of(self, ds, sid, d=None):
        r = self._d(d).sample(ds, sid)
        self.assertEqual(r.status, 200, r)
        return r.json()["status"]

    def feed(self, ds, d=None, **params):
        qs = urllib.parse.urlencode(params)
        return self._d(d).get("/v1/datasets/%s/relabels%s" % (harness.q(ds), "?" + qs if qs else ""))

    def feed_all(self, ds, d=None, since=None, limit=None):
        """Every entry of the relabel feed from since, following next_cursor; (entries, final cursor)."""
        entries, cursor = [], since
        for _ in range(10000):
            p = {}
            if cursor is not None:
                p["since"] = cursor
            if limit is not None:
                p["limit"] = limit
            r = self.feed(ds, d=d, **p)
            self.assertEqual(r.status, 200, r)
            j = r.json()
            self.assertIsInstance(j["next_cursor"], str)
            if not j["relabels"]:
                return entries, j["next_cursor"]
            entries += j["relabels"]
            cursor = j["next_cursor"]
        self.fail("the relabel feed did not end")

    def put_meta(self, ds, sid, meta, d=None, headers=None):
        return self._d(d).request("PUT", self.sample_path(ds, sid) + "/meta", meta, headers=headers)

    def make_queue(self, ds, body, d=None):
        return self._d(d).post("/v1/datasets/%s/queues" % harness.q(ds), body)

    def ok_queue(self, ds, body, d=None):
        r = self.make_queue(ds, body, d=d)
        self.assertEqual(r.status, 201, "queue %r: %r" % (body, r))
        return r.json()

    def get_queue(self, ds, name, d=None, **params):
        qs = urllib.parse.urlencode(params)
        return self._d(d).get("/v1/datasets/%s/queues/%s%s" % (harness.q(ds), harness.q(name), "?" + qs if qs else ""))

    def queue_ids(self, ds, name, d=None):
        r = self.get_queue(ds, name, d=d, limit=10000)
        self.assertEqual(r.status, 200, r)
        return [it["id"] for it in r.json()["items"]]

    def export(self, ds, d=None, **params):
        qs = urllib.parse.urlencode(params)
        return self._d(d).get("/v1/datasets/%s/export?%s" % (harness.q(ds), qs), timeout=60)

    def export_trailers(self, ds, fmt, d=None, **params):
        """An export read over a raw socket, chunk by chunk: (status, headers, body, trailers); http.client
        reads a chunked body's trailer fields and drops them."""
        d = self._d(d)
        qs = urllib.parse.urlencode(dict(params, format=fmt))
        with socket.create_connection(("127.0.0.1", d.port), timeout=60) as s:
            s.sendall(("GET /v1/datasets/%s/export?%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                       % (harness.q(ds), qs)).encode())
            f = s.makefile("rb")
            status = int(f.readline().split()[1])
            headers = {}
            for line in iter(f.readline, b"\r\n"):
                k, _, v = line.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            self.assertEqual(headers.get("transfer-encoding"), "chunked")
            body = b""
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if size == 0:
                    break
                body += f.read(size)
                self.assertEqual(f.read(2), b"\r\n")
            trailers = {}
            for line in iter(f.readline, b"\r\n"):
                k, _, v = line.decode("latin-1").partition(":")
                trailers[k.strip().lower()] = v.strip()
        return status, headers, body, trailers

    def skipped(self, ds, fmt, d=None, **params):
        """(body, the Focald-Skipped trailer as an int) of a 200 export; the header announces the trailer."""
        status, headers, body, trailers = self.export_trailers(ds, fmt, d=d, **params)
        self.assertEqual(status, 200, body[:300])
        self.assertEqual(headers.get("trailer"), "Focald-Skipped")
        self.assertEqual(list(trailers), ["focald-skipped"], trailers)
        return body, int(trailers["focald-skipped"])

    def ok_export(self, ds, fmt, d=None, **params):
        r = self.export(ds, d=d, format=fmt, **params)
        self.assertEqual(r.status, 200, "export %s %r: %r" % (fmt, params, r))
        return r

    # -- data

    def plant(self, ds, samples, run="r1", step=1, meta=None, d=None, c=3):
        """One batch: samples are (id, label, z) (see row); returns the batch response."""
        body = {"run": run, "ids": [s[0] for s in samples], "targets": [s[1] for s in samples],
                "logits": [row(s[1], s[2], c) for s in samples]}
        if step is not None:
            body["step"] = step
        if meta:
            body["meta"] = meta
        return self._d(d).ok_batch(ds, body)

    def hard_ids(self, ds, d=None, **params):
        return [it["id"] for it in self._d(d).all_hard(ds, **params)]

    # -- assertions

    def assertAt(self, at, t0, t1, ctx=""):
        """at is an RFC 3339 time with milliseconds, between t0 and t1 (Unix seconds, with a second's slack)."""
        self.assertRegex(at, RFC3339_MS, ctx)
        self.assertTrue(t0 - 1.0 <= parse_at(at) <= t1 + 1.0, "%s: %s is not within [%s, %s]" % (ctx, at, t0, t1))

    def assertMonotone(self, times, ctx=""):
        secs = [parse_at(t) for t in times]
        self.assertEqual(secs, sorted(secs), "%s: times out of order: %r" % (ctx, times))


# ---------------------------------------------------------------------------- transitions

class TransitionsTest(ReviewTestCase):
    """Every (from, to) pair of the six states, each on its own sample of one dataset."""
    DS = "trans"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        samples = []
        for i, (src, dst) in enumerate((s, t) for s in STATES for t in STATES):
            samples.append(("t-%s-%s" % (src, dst), i % 3, -1.0 + 0.05 * i))
        samples += [("other", 1, 0.5), ("a/b ü", 2, 0.0), ("7", 0, 0.3)]
        body = {"run": "r1", "step": 1, "ids": [s[0] for s in samples], "targets": [s[1] for s in samples],
                "logits": [row(s[1], s[2]) for s in samples]}
        cls.d.ok_batch(cls.DS, body)
        cls.labels = {s[0]: s[1] for s in samples}

    def everything(self, sid):
        """What a refused change must leave alone: the sample, its audit trail, the feed, the listings."""
        feed, cursor = self.feed_all(self.DS)
        return (self.d.sample(self.DS, sid).json(), self.audit(self.DS, sid), feed, cursor,
                self.hard_ids(self.DS), self.hard_ids(self.DS, status=ALL_STATES))

    def check_transition(self, src, dst):
        ds, sid = self.DS, "t-%s-%s" % (src, dst)
        training = self.labels[sid]
        t0 = time.time()
        if src != "open":
            extra = {"label": (training + 1) % 3} if src == "relabelled" else {}
            setup = self.ok_review(ds, sid, src, reviewer="setup", **extra)
            self.assertEqual((setup["from"], setup["status"]), ("open", src))
        self.assertEqual(self.status_of(ds, sid), src)
        before = self.everything(sid)
        audit0 = before[1]["reviews"]
        feed0 = before[2]
        correction = {"label": "cat"} if dst == "relabelled" else {}
        r = self.review(ds, sid, dst, reviewer="rev-1", note="from %s to %s" % (src, dst), **correction)
        t1 = time.time()
        if not legal(src, dst):
            self.assertProblem(r, 409, "conflict", "/status")
            self.assertEqual(self.everything(sid), before, "a refused %s -> %s changed something" % (src, dst))
            return
        self.assertEqual(r.status, 200, r)
        j = r.json()
        label_before = (training + 1) % 3 if src == "relabelled" else training
        want = {"id": sid, "from": src, "status": dst, "label_before": label_before,
                "label": "cat" if dst == "relabelled" else None, "reviewer": "rev-1",
                "note": "from %s to %s" % (src, dst)}
        self.assertEqual({k: j.get(k) for k in want}, want)
        self.assertAt(j["at"], t0, t1, "the answer's at")
        rec = self.d.sample(ds, sid).json()
        self.assertEqual(rec["status"], dst)
        self.assertEqual(rec["corrected_label"], "cat" if dst == "relabelled" else None)
        a = self.audit(ds, sid)
        self.assertEqual((a["id"], a["status"], a["corrected_label"]), (sid, dst, rec["corrected_label"]))
        self.assertEqual(a["reviews"][:-1], audit0, "the audit trail is appended to, never rewritten")
        last = a["reviews"][-1]
        self.assertEqual(last, {"id": sid, "from": src, "to": dst, "label_before": label_before,
                                "label_after": want["label"], "reviewer": "rev-1", "note": want["note"],
                                "at": j["at"]})
        feed1, _ = self.feed_all(ds)
        self.assertEqual(feed1[:len(feed0)], feed0)
        new = feed1[len(feed0):]
        if dst == "relabelled":
            self.assertEqual([(e["id"], e["label"], e["previous_label"], e["withdrawn"]) for e in new],
                             [(sid, "cat", label_before, False)])
        elif src == "relabelled":
            self.assertEqual([(e["id"], e["label"], e["previous_label"], e["withdrawn"]) for e in new],
                             [(sid, None, label_before, True)])
        else:
            self.assertEqual(new, [], "a change that neither sets nor withdraws a relabel is not in the feed")

    def test_transition_table_has_22_legal_and_14_illegal_pairs(self):
        pairs = [(s, t) for s in STATES for t in STATES]
        self.assertEqual(sum(legal(s, t) for s, t in pairs), 22)
        self.assertFalse(any(legal(s, s) for s in STATES if s != "relabelled"))

    def test_review_unknown_sample_404(self):
        before = self.hard_ids(self.DS, status=ALL_STATES)
        self.assertProblem(self.review(self.DS, "nope", "confirmed"), 404, "sample_not_found")
        self.assertProblem(self.d.get(self.sample_path(self.DS, "nope") + "/reviews"), 404, "sample_not_found")
        self.assertProblem(self.d.sample(self.DS, "nope"), 404, "sample_not_found")
        self.assertEqual(self.hard_ids(self.DS, status=ALL_STATES), before, "a review must not create a sample")

    def test_review_unknown_dataset_404(self):
        for name in ("never-made", "bad name!"):
            self.assertProblem(self.review(name, "other", "confirmed"), 404, "dataset_not_found")
            self.assertProblem(self.d.get(self.sample_path(name, "other") + "/reviews"), 404, "dataset_not_found")
            self.assertProblem(self.feed(name), 404, "dataset_not_found")
        names = [x["name"] for x in self.d.get("/v1/datasets").json()["datasets"]]
        self.assertNotIn("never-made", names)

    def test_review_ids_with_slash_space_unicode_and_integer(self):
        j = self.ok_review(self.DS, "a/b ü", "in_review")
        self.assertEqual(j["id"], "a/b ü")
        self.assertEqual(self.audit(self.DS, "a/b ü")["reviews"][-1]["to"], "in_review")
        self.ok_review(self.DS, "a/b ü", "open")
        j = self.ok_review(self.DS, 7, "dismissed")  # the integer id 7 is the sample "7"
        self.assertEqual((j["id"], j["label_before"]), ("7", 0))
        self.assertEqual(self.status_of(self.DS, "7"), "dismissed")
        self.ok_review(self.DS, "7", "open")

    def test_review_wrong_method_405(self):
        r = self.d.get(self.sample_path(self.DS, "other") + "/review")
        self.assertProblem(r, 405, "method_not_allowed")
        self.assertIn("POST", r.header("Allow") or "")


def _make_transition_test(src, dst):
    def test(self):
        self.check_transition(src, dst)
    test.__doc__ = "%s -> %s is %s" % (src, dst, "legal" if legal(src, dst) else "refused with 409")
    return test


for _s in STATES:
    for _t in STATES:
        setattr(TransitionsTest, "test_transition_%s_to_%s" % (_s, _t), _make_transition_test(_s, _t))


# ---------------------------------------------------------------------------- malformed review bodies

BAD_REVIEWS = [
    # name, body (dict, list or raw bytes), status, code, field
    ("missing_status", {"reviewer": "x"}, 422, "missing_field", "/status"),
    ("unknown_status", {"status": "done"}, 422, "invalid_field", "/status"),
    ("status_capitalised", {"status": "Confirmed"}, 422, "invalid_field", "/status"),
    ("status_number", {"status": 4}, 422, "invalid_field", "/status"),
    ("status_list", {"status": ["confirmed"]}, 422, "invalid_field", "/status"),
    ("label_without_relabelled", {"status": "confirmed", "label": 2}, 422, "invalid_field", "/label"),
    ("relabelled_without_label", {"status": "relabelled"}, 422, "missing_field", "/label"),
    ("relabelled_label_null", {"status": "relabelled", "label": None}, 422, "missing_field", "/label"),
    # a class index is 0 to 2^31 - 1, as a batch's label can be: outside that, alone or in a list, as a batch's label
    ("relabelled_label_negative", {"status": "relabelled", "label": -1}, 422, "label_out_of_range", "/label"),
    ("relabelled_label_2_31", {"status": "relabelled", "label": 2 ** 31}, 422, "label_out_of_range", "/label"),
    ("relabelled_label_2_32_plus_1", {"status": "relabelled", "label": 2 ** 32 + 1}, 422, "label_out_of_range",
     "/label"),
    ("relabelled_label_2_63_minus_1", {"status": "relabelled", "label": 2 ** 63 - 1}, 422, "label_out_of_range",
     "/label"),
    ("relabelled_label_minus_2_63", {"status": "relabelled", "label": -2 ** 63}, 422, "label_out_of_range", "/label"),
    ("relabelled_label_list_2_31", {"status": "relabelled", "label": [1, "dog", 2 ** 31]}, 422, "label_out_of_range",
     "/label/2"),
    ("relabelled_label_list_negative", {"status": "relabelled", "label": [-2, 1]}, 422, "label_out_of_range",
     "/label/0"),
    ("relabelled_label_fraction", {"status": "relabelled", "label": 1.5}, 422, "invalid_field", "/label"),
    ("relabelled_label_boolean", {"status": "relabelled", "label": True}, 422, "invalid_field", "/label"),
    ("relabelled_label_object", {"status": "relabelled", "label": {"k": 1}}, 422, "invalid_field", "/label"),
    # size limits: too_large, whose title says so
    ("relabelled_label_too_large", {"status": "relabelled", "label": "x" * 5000}, 422, "too_large", "/label"),
    ("relabelled_label_list_too_large", {"status": "relabelled", "label": [100] * 1100}, 422, "too_large", "/label"),
    ("unknown_field", {"status": "confirmed", "reason": "x"}, 422, "unknown_field", "/reason"),
    ("reviewer_number", {"status": "confirmed", "reviewer": 5}, 422, "invalid_field", "/reviewer"),
    ("reviewer_129_bytes", {"status": "confirmed", "reviewer": "r" * 129}, 422, "too_large", "/reviewer"),
    ("note_object", {"status": "confirmed", "note": {"a": 1}}, 422, "invalid_field", "/note"),
    ("note_4097_bytes", {"status": "confirmed", "note": "n" * 4097}, 422, "too_large", "/note"),
    ("note_4098_bytes_of_2049_characters", {"status": "confirmed", "note": "é" * 2049}, 422, "too_large", "/note"),
    ("body_array", [{"status": "confirmed"}], 422, "invalid_field", ANY),
    ("body_string", "confirmed", 422, "invalid_field", ANY),
    ("duplicate_key", b'{"status": "confirmed", "status": "dismissed"}', 400, "bad_json", ANY),
    ("not_json", b"status=confirmed", 400, "bad_json", ANY),
    ("truncated_json", b'{"status": "confirmed"', 400, "bad_json", ANY),
    ("empty_body", b"", 400, "bad_json", ANY),
]


class BadReviewTest(ReviewTestCase):
    """Each malformed review gets its status, code and field, and changes nothing."""
    DS = "badrev"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d.ok_batch(cls.DS, {"run": "r1", "step": 1, "ids": ["s0", "s1"], "targets": [0, 1],
                                "logits": [row(0, -1.0), row(1, 0.0)]})

    def state(self):
        return (self.d.sample(self.DS, "s0").json(), self.audit(self.DS, "s0"), self.feed_all(self.DS),
                self.hard_ids(self.DS, status=ALL_STATES))

    def run_case(self, body, status, code, field):
        before = self.state()
        r = self.d.post(self.sample_path(self.DS, "s0") + "/review", body)
        self.assertProblem(r, status, code, field)
        self.assertEqual(self.state(), before, "a refused review changed something")

    def test_bad_review_wrong_content_type_415(self):
        before = self.state()
        r = self.d.post(self.sample_path(self.DS, "s0") + "/review", {"status": "confirmed"},
                        headers={"Content-Type": "text/plain"})
        self.assertProblem(r, 415, "unsupported_media_type")
        self.assertEqual(self.state(), before)

    def test_bad_review_limits_are_inclusive(self):
        # the largest reviewer and note, and null for either, are accepted
        j = self.ok_review(self.DS, "s1", "in_review", reviewer="r" * 128, note="é" * 2048)
        self.assertEqual((len(j["reviewer"]), j["note"]), (128, "é" * 2048))
        j = self.ok_review(self.DS, "s1", "open", reviewer=None, note=None)
        self.assertEqual((j["reviewer"], j["note"]), (None, None))
        # a label may be a class index, a class name or a list
        for label in (0, 2 ** 31 - 1, "cat", "2147483648", [1, 2], ["cat", "dog"], [0, 2 ** 31 - 1]):
            j = self.ok_review(self.DS, "s1", "relabelled", label=label)
            self.assertEqual(j["label"], label)
            self.assertEqual(self.d.sample(self.DS, "s1").json()["corrected_label"], label)
        self.ok_review(self.DS, "s1", "open")


def _make_bad_review(body, status, code, field):
    def test(self):
        self.run_case(body, status, code, field)
    return test


for _name, _body, _status, _code, _field in BAD_REVIEWS:
    setattr(BadReviewTest, "test_bad_review_" + _name, _make_bad_review(_body, _status, _code, _field))


# ---------------------------------------------------------------------------- the audit trail

class AuditTest(ReviewTestCase):

    def test_audit_trail_keeps_every_change_in_order(self):
        ds = self.ds_name()
        self.plant(ds, [("x", 1, -0.5), ("y", 2, -0.4)])
        self.assertEqual(self.audit(ds, "x"), {"id": "x", "status": "open", "corrected_label": None, "reviews": []})
        steps = [("in_review", "alice", "looking", {}),
                 ("relabelled", "alice", "it is a 2", {"label": 2}),
                 ("relabelled", "bob", None, {"label": "cat"}),
                 ("in_review", "carol", "second opinion", {}),
                 ("confirmed", None, "ok after all", {}),
                 ("open", "dave", "", {})]
        t0 = time.time()
        answers = []
        for status, who, note, extra in steps:
            answers.append(self.ok_review(ds, "x", status, reviewer=who, note=note, **extra))
            self.ok_review(ds, "y", "in_review" if len(answers) % 2 else "open")  # interleaved, elsewhere
        t1 = time.time()
        a = self.audit(ds, "x")
        self.assertEqual((a["status"], a["corrected_label"]), ("open", None))
        got = a["reviews"]
        self.assertEqual(len(got), len(steps), "only x's changes are in x's trail: %r" % got)
        want_from = ["open"] + [s[0] for s in steps[:-1]]
        want_before = [1, 1, 2, "cat", 1, 1]  # the correction in force, or else the training label
        want_after = [None, 2, "cat", None, None, None]
        for i, (e, (status, who, note, _)) in enumerate(zip(got, steps)):
            self.assertEqual(e, {"id": "x", "from": want_from[i], "to": status, "label_before": want_before[i],
                                 "label_after": want_after[i], "reviewer": who, "note": note,
                                 "at": answers[i]["at"]}, "entry %d" % i)
            self.assertAt(e["at"], t0, t1, "entry %d" % i)
        self.assertMonotone([e["at"] for e in got], "x's trail")
        self.assertEqual(len(self.audit(ds, "y")["reviews"]), len(steps))

    def test_audit_label_before_follows_the_run_with_the_latest_step(self):
        ds = self.ds_name()
        self.plant(ds, [("x", 1, 0.0)], run="early", step=5)
        self.plant(ds, [("x", 2, 0.0)], run="late", step=9)
        self.plant(ds, [("x", 0, 0.0)], run="early", step=7)
        self.assertEqual(self.ok_review(ds, "x", "confirmed")["label_before"], 2)

    def test_audit_queue_entries_are_by_focald_and_in_order(self):
        ds = self.ds_name()
        self.plant(ds, [("x", 0, -2.0), ("y", 1, 1.0)])
        t0 = time.time()
        self.ok_review(ds, "x", "in_review", reviewer="ann")
        self.ok_review(ds, "x", "open", reviewer="ann")
        self.ok_queue(ds, {"name": "q1", "size": 1})
        self.ok_review(ds, "x", "dismissed", reviewer="ann")
        self.assertEqual(self.d.delete("/v1/datasets/%s/queues/q1" % ds).status, 200)
        self.ok_queue(ds, {"name": "q2", "size": 1})  # y, the only open sample
        self.assertEqual(self.d.delete("/v1/datasets/%s/queues/q2" % ds).json()["released"], 1)
        t1 = time.time()
        x = self.audit(ds, "x")["reviews"]
        self.assertEqual([(e["from"], e["to"], e["reviewer"], e["note"]) for e in x],
                         [("open", "in_review", "ann", None), ("in_review", "open", "ann", None),
                          ("open", "queued", "focald", "queue q1"), ("queued", "dismissed", "ann", None)])
        self.assertMonotone([e["at"] for e in x], "x's trail, a queue entry among reviews")
        y = self.audit(ds, "y")["reviews"]
        self.assertEqual([(e["from"], e["to"], e["reviewer"], e["note"]) for e in y],
                         [("open", "queued", "focald", "queue q2"), ("queued", "open", "focald", "queue q2 removed")])
        for e in x + y:
            self.assertAt(e["at"], t0, t1, "%s %s->%s" % (e["id"], e["from"], e["to"]))
        self.assertMonotone([e["at"] for e in y], "y's trail")


# ---------------------------------------------------------------------------- hard-examples and reconsideration

class StatusFilterTest(ReviewTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.DS = "filter"
        samples = [("s-" + st, i % 3, -1.0 + 0.3 * i) for i, st in enumerate(STATES)]
        cls.d.ok_batch(cls.DS, {"run": "r1", "step": 1, "ids": [s[0] for s in samples],
                                "targets": [s[1] for s in samples], "logits": [row(s[1], s[2]) for s in samples]})
        for st in STATES[1:]:
            r = cls.d.post("/v1/datasets/%s/samples/s-%s/review" % (cls.DS, st),
                           dict({"status": st}, **({"label": 0} if st == "relabelled" else {})))
            assert r.status == 200, r

    def test_hard_examples_default_lists_only_undecided(self):
        items = self.d.all_hard(self.DS)
        self.assertEqual(sorted(it["id"] for it in items), ["s-in_review", "s-open", "s-queued"])
        self.assertEqual({it["id"]: it["status"] for it in items},
                         {"s-open": "open", "s-queued": "queued", "s-in_review": "in_review"})
        self.assertTrue(all(it["reconsider"] is False for it in items))

    def test_hard_examples_status_filter_is_exact(self):
        for q in ("confirmed", "dismissed", "relabelled", "confirmed,dismissed", "open,relabelled", ALL_STATES):
            want = sorted("s-" + st for st in q.split(","))
            self.assertEqual(sorted(self.hard_ids(self.DS, status=q)), want, q)
        items = self.d.all_hard(self.DS, status="relabelled")
        self.assertEqual(items[0]["status"], "relabelled")

    def test_hard_examples_bad_status_400(self):
        for bad in ("done", "", "OPEN", "open,nope", "open;queued"):
            self.assertProblem(self.d.hard(self.DS, status=bad), 400, "bad_query", "status")

    def test_sample_record_has_review_fields(self):
        rec = self.d.sample(self.DS, "s-relabelled").json()
        self.assertEqual((rec["status"], rec["corrected_label"], rec["reconsider"]), ("relabelled", 0, False))
        self.assertEqual(rec["runs"][0]["stale_labels"], 0)
        rec = self.d.sample(self.DS, "s-confirmed").json()
        self.assertEqual((rec["status"], rec["corrected_label"], rec["reconsider"]), ("confirmed", None, False))


class ReconsiderTest(ReviewTestCase):
    """A confirmed sample returns only once its ema_loss passes --reconsider-factor times its value at
    confirmation. With --ema-alpha 0.3 (the default), a loss L after ema E gives 0.3 L + 0.7 E."""

    def push_to_ratio(self, d, ds, sid, e0, ratio, step):
        """Sends one observation that takes sid's ema_loss to about ratio * e0; returns the ema reached."""
        ema = d.sample(ds, sid).json()["runs"][0]["ema_loss"]
        loss = (ratio * e0 - (1 - harness.EMA_ALPHA) * ema) / harness.EMA_ALPHA
        self.plant(ds, [(sid, 0, z_for_loss(loss))], step=step, d=d)
        return d.sample(ds, sid).json()["runs"][0]["ema_loss"]

    def setup_confirmed(self, d, ds):
        """Samples a, b (confirmed at about the same ema) and c (open, harder than both at first)."""
        z0 = z_for_loss(0.05)
        self.plant(ds, [("a", 0, z0), ("b", 0, z0), ("c", 0, z_for_loss(0.2))], d=d)
        e0 = d.sample(ds, "a").json()["runs"][0]["ema_loss"]
        self.assertTrue(harness.close(e0, 0.05, rel=1e-3), e0)
        self.ok_review(ds, "a", "confirmed", d=d)
        self.ok_review(ds, "b", "confirmed", d=d)
        self.assertEqual(self.hard_ids(ds, d=d), ["c"])
        return e0

    def reconsidered(self, d, ds):
        return sorted(it["id"] for it in d.all_hard(ds) if it["reconsider"])

    def test_reconsider_both_sides_of_the_default_factor(self):
        ds = self.ds_name()
        e0 = self.setup_confirmed(self.d, ds)
        ema_a = self.push_to_ratio(self.d, ds, "a", e0, 1.8, 2)
        ema_b = self.push_to_ratio(self.d, ds, "b", e0, 2.3, 2)
        self.assertTrue(1.7 < ema_a / e0 < 1.9 and 2.2 < ema_b / e0 < 2.4, (ema_a / e0, ema_b / e0))
        items = {it["id"]: it for it in self.d.all_hard(ds)}
        self.assertEqual(sorted(items), ["b", "c"], "only b passed 2 x its ema at confirmation")
        self.assertEqual((items["b"]["status"], items["b"]["reconsider"], items["c"]["reconsider"]),
                         ("confirmed", True, False))
        self.assertEqual((self.d.sample(ds, "a").json()["reconsider"], self.d.sample(ds, "b").json()["reconsider"]),
                         (False, True))
        # an explicit status filter lists exactly those states, without reconsideration
        self.assertEqual(self.hard_ids(ds, status="open"), ["c"])
        self.assertEqual(sorted(self.hard_ids(ds, status="confirmed")), ["a", "b"])
        # a crosses the line later
        ema_a = self.push_to_ratio(self.d, ds, "a", e0, 2.3, 3)
        self.assertTrue(2.2 < ema_a / e0 < 2.4, ema_a / e0)
        self.assertEqual(self.reconsidered(self.d, ds), ["a", "b"])
        # a new confirmation is a new reference: b at its current ema is not due any more
        self.ok_review(ds, "b", "in_review")
        self.ok_review(ds, "b", "confirmed")
        self.assertEqual(self.reconsidered(self.d, ds), ["a"])
        self.assertFalse(self.d.sample(ds, "b").json()["reconsider"])

    def test_reconsider_a_sample_confirmed_at_a_loss_of_zero_stays_out_while_easy(self):
        """A sample confirmed where its loss was 0 in float (logits of +-60) does not come back for a loss
        of 1e-7 after (p_t 0.993: as easy as ever; any loss at all was "2 x harder" than 0, and a queue
        took the sample and, removed, left it open: its confirmation lost); it comes back once clearly
        harder."""
        ds = self.ds_name()
        body = lambda z, step: {"run": "r1", "step": step, "ids": ["z"], "targets": [0],
                                "logits": [[z, -z, -z]]}
        self.d.ok_batch(ds, body(60.0, 1))
        self.assertEqual(self.d.sample(ds, "z").json()["runs"][0]["ema_loss"], 0)
        self.ok_review(ds, "z", "confirmed")
        self.d.ok_batch(ds, body(5.0, 2))
        ema = self.d.sample(ds, "z").json()["runs"][0]["ema_loss"]
        self.assertTrue(0 < ema < 1e-6, ema)
        self.assertFalse(self.d.sample(ds, "z").json()["reconsider"])
        self.assertEqual(self.hard_ids(ds), [])
        self.ok_queue(ds, {"name": "q", "size": 10})
        self.assertEqual(self.queue_ids(ds, "q"), [])
        self.assertEqual(self.status_of(ds, "z"), "confirmed")
        self.d.ok_batch(ds, body(-5.0, 3))
        self.assertTrue(self.d.sample(ds, "z").json()["reconsider"])
        self.assertEqual(self.hard_ids(ds), ["z"])

    def test_reconsidered_sample_is_taken_into_a_queue_and_exported(self):
        ds = self.ds_name()
        e0 = self.setup_confirmed(self.d, ds)
        self.push_to_ratio(self.d, ds, "a", e0, 1.8, 2)
        self.push_to_ratio(self.d, ds, "b", e0, 2.5, 2)
        lines = self.ok_export(ds, "jsonl").body.decode().splitlines()
        self.assertEqual([(json.loads(x)["id"], json.loads(x)["reconsider"]) for x in lines],
                         [(i, i == "b") for i in self.hard_ids(ds)])
        self.ok_queue(ds, {"name": "q", "size": 10})
        self.assertEqual(sorted(self.queue_ids(ds, "q")), ["b", "c"])
        self.assertEqual((self.status_of(ds, "a"), self.status_of(ds, "b")), ("confirmed", "queued"))
        self.assertEqual(self.audit(ds, "b")["reviews"][-1]["from"], "confirmed")

    def test_reconsider_factor_is_configurable(self):
        d = self.start_daemon(args=("--reconsider-factor", "3"))
        ds = self.ds_name()
        e0 = self.setup_confirmed(d, ds)
        r = self.push_to_ratio(d, ds, "a", e0, 2.5, 2)
        self.assertTrue(2.4 < r / e0 < 2.6, r / e0)
        self.assertEqual(self.reconsidered(d, ds), [], "2.5 x is below a factor of 3")
        r = self.push_to_ratio(d, ds, "a", e0, 3.3, 3)
        self.assertTrue(3.2 < r / e0 < 3.4, r / e0)
        self.assertEqual(self.reconsidered(d, ds), ["a"])
        self.assertTrue(d.sample(ds, "a").json()["reconsider"])

    def test_reconsider_factor_zero_turns_it_off(self):
        d = self.start_daemon(args=("--reconsider-factor", "0"))
        ds = self.ds_name()
        e0 = self.setup_confirmed(d, ds)
        self.push_to_ratio(d, ds, "a", e0, 5.0, 2)
        self.assertEqual(self.hard_ids(ds, d=d), ["c"])
        lines = parse_jsonl(self.ok_export(ds, "jsonl", d=d, status=ALL_STATES).body)
        self.assertEqual({x["id"]: x["reconsider"] for x in lines}, {"a": False, "b": False, "c": False})
        _, rows = parse_csv(self.ok_export(ds, "csv", d=d, status=ALL_STATES).body)
        self.assertEqual([r[CSV_COLUMNS.index("reconsider")] for r in rows], ["false"] * 3)
        self.assertFalse(d.sample(ds, "a").json()["reconsider"])
        self.assertEqual([it["reconsider"] for it in d.all_hard(ds, status="confirmed")], [False, False])
        self.ok_queue(ds, {"name": "q"}, d=d)
        self.assertEqual(self.queue_ids(ds, "q", d=d), ["c"])


# ---------------------------------------------------------------------------- the relabel feed and stale labels

class RelabelFeedTest(ReviewTestCase):

    def setup_ds(self, n=6):
        ds = self.ds_name()
        self.plant(ds, [("s%d" % i, i % 3, 0.1 * i) for i in range(n)])
        return ds

    def test_feed_lists_relabels_in_commit_order(self):
        ds = self.setup_ds()
        self.plant(self.ds_name("-other"), [("s0", 0, 0.0)])
        t0 = time.time()
        self.ok_review(ds, "s4", "relabelled", label=0, reviewer="ann", note="n4")
        self.ok_review(self.ds_name("-other"), "s0", "relabelled", label=2)  # another dataset's feed
        self.ok_review(ds, "s1", "confirmed", reviewer="ann")  # not a relabel
        self.ok_review(ds, "s2", "relabelled", label="dog")
        self.ok_review(ds, "s0", "in_review")
        self.ok_review(ds, "s0", "relabelled", label=[1, 2], reviewer="bo")
        t1 = time.time()
        r = self.feed(ds)
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["dataset"], ds)
        self.assertIsInstance(j["next_cursor"], str)
        got = j["relabels"]
        self.assertEqual([{k: e[k] for k in ("id", "label", "previous_label", "withdrawn", "reviewer", "note")}
                          for e in got],
                         [{"id": "s4", "label": 0, "previous_label": 1, "withdrawn": False, "reviewer": "ann",
                           "note": "n4"},
                          {"id": "s2", "label": "dog", "previous_label": 2, "withdrawn": False, "reviewer": None,
                           "note": None},
                          {"id": "s0", "label": [1, 2], "previous_label": 0, "withdrawn": False, "reviewer": "bo",
                           "note": None}])
        for e in got:
            self.assertAt(e["at"], t0, t1, e["id"])
        self.assertMonotone([e["at"] for e in got], "the feed")
        # each entry's at is its audit entry's
        self.assertEqual(got[0]["at"], self.audit(ds, "s4")["reviews"][-1]["at"])
        self.assertEqual([e["id"] for e in self.feed(self.ds_name("-other")).json()["relabels"]], ["s0"])

    def test_feed_pages_with_limit_and_cursor(self):
        ds = self.setup_ds(8)
        for i in range(7):
            self.ok_review(ds, "s%d" % i, "relabelled", label=(i + 1) % 3)
        whole = self.feed(ds).json()["relabels"]
        self.assertEqual([e["id"] for e in whole], ["s%d" % i for i in range(7)])
        for limit in (1, 2, 3, 7):
            pages, cursor = [], None
            for _ in range(20):
                p = {"limit": limit}
                if cursor is not None:
                    p["since"] = cursor
                j = self.feed(ds, **p).json()
                self.assertLessEqual(len(j["relabels"]), limit)
                if not j["relabels"]:
                    self.assertEqual(j["next_cursor"], cursor, "an empty page keeps the cursor")
                    break
                pages.append(j["relabels"])
                cursor = j["next_cursor"]
            self.assertEqual([e for p in pages for e in p], whole, "limit %d" % limit)
            self.assertEqual([len(p) for p in pages[:-1]], [limit] * (len(pages) - 1), "limit %d" % limit)

    def test_feed_cursor_at_the_end_waits_for_new_entries(self):
        ds = self.setup_ds()
        self.ok_review(ds, "s0", "relabelled", label=2)
        j = self.feed(ds).json()
        cursor = j["next_cursor"]
        self.assertEqual(len(j["relabels"]), 1)
        for _ in range(3):  # polling at the end returns nothing and keeps its place
            j = self.feed(ds, since=cursor).json()
            self.assertEqual(j["relabels"], [])
            cursor = j["next_cursor"]
        self.ok_review(ds, "s1", "confirmed")  # not a relabel: nothing new for the feed
        self.ok_review(ds, "s2", "dismissed")
        j = self.feed(ds, since=cursor).json()
        self.assertEqual(j["relabels"], [])
        cursor = j["next_cursor"]
        self.ok_review(ds, "s3", "relabelled", label=1)
        self.ok_review(ds, "s4", "relabelled", label=2)
        j = self.feed(ds, since=cursor, limit=1).json()
        self.assertEqual([e["id"] for e in j["relabels"]], ["s3"])
        j = self.feed(ds, since=j["next_cursor"]).json()
        self.assertEqual([e["id"] for e in j["relabels"]], ["s4"])
        self.assertEqual(self.feed(ds, since=j["next_cursor"]).json()["relabels"], [])
        # an empty dataset feed
        ds2 = self.ds_name("-empty")
        self.plant(ds2, [("x", 0, 0.0)])
        j = self.feed(ds2).json()
        self.assertEqual(j["relabels"], [])
        self.ok_review(ds2, "x", "relabelled", label=1)
        self.assertEqual([e["id"] for e in self.feed(ds2, since=j["next_cursor"]).json()["relabels"]], ["x"])

    def test_feed_cursor_is_only_good_for_its_own_dataset(self):
        # a pipeline that applied a dataset's corrections learns that it was deleted, instead of reading on
        # into a new dataset of the same name; another dataset's cursor is refused too
        ds, other = self.setup_ds(), self.ds_name("-other")
        self.plant(other, [("x", 0, 0.0)])
        self.ok_review(ds, "s0", "relabelled", label=2)
        cursor = self.feed(ds).json()["next_cursor"]
        self.assertEqual(self.feed(ds, since=cursor).status, 200)
        self.assertProblem(self.feed(other, since=cursor), 400, "bad_query", "since")
        self.assertEqual(self.d.delete("/v1/datasets/%s" % harness.q(ds)).status, 200)
        self.plant(ds, [("s0", 0, 0.0), ("s1", 1, 0.0)])
        self.ok_review(ds, "s1", "relabelled", label=0)  # after the old cursor, in the new dataset
        r = self.feed(ds, since=cursor)
        self.assertProblem(r, 400, "bad_query", "since")
        self.assertIn("deleted since", r.json()["detail"])
        entries, _ = self.feed_all(ds)
        self.assertEqual([(e["id"], e["label"]) for e in entries], [("s1", 0)])
        # a cursor without its dataset (a plain position, as focald wrote before) is read for the dataset named
        plain = cursor.rsplit("-", 1)[1]
        self.assertRegex(plain, r"^[0-9]+$")
        self.assertEqual(self.feed(ds, since="0").json()["relabels"], entries)
        for bad in ("-1", "1-", "x-1", "0-1", "1-x", "1--1", "99999999999999999999999-1", "1-2-3", " 1-1"):
            with self.subTest(since=bad):
                self.assertProblem(self.feed(ds, since=bad), 400, "bad_query", "since")

    def test_feed_withdrawals_when_a_relabel_is_reopened(self):
        ds = self.setup_ds()
        self.ok_review(ds, "s1", "relabelled", label=0, reviewer="a")
        cursor = self.feed(ds).json()["next_cursor"]
        self.ok_review(ds, "s1", "open", reviewer="b", note="wrong")
        self.ok_review(ds, "s2", "relabelled", label=0)
        self.ok_review(ds, "s2", "in_review")
        self.ok_review(ds, "s3", "relabelled", label=0)
        self.ok_review(ds, "s3", "relabelled", label=1)  # a replacement is a relabel, not a withdrawal
        got, _ = self.feed_all(ds, since=cursor)
        self.assertEqual([(e["id"], e["label"], e["previous_label"], e["withdrawn"]) for e in got],
                         [("s1", None, 0, True), ("s2", 0, 2, False), ("s2", None, 0, True),
                          ("s3", 0, 0, False), ("s3", 1, 0, False)])
        self.assertEqual((got[0]["reviewer"], got[0]["note"]), ("b", "wrong"))
        self.assertEqual(self.d.sample(ds, "s1").json()["corrected_label"], None)
        self.assertEqual(self.d.sample(ds, "s3").json()["corrected_label"], 1)

    def test_feed_bad_cursor_or_limit_400(self):
        ds = self.setup_ds(2)
        for p in ({"since": "abc"}, {"since": "-1"}, {"since": "1.5"}, {"since": ""}, {"since": "12x"}):
            self.assertProblem(self.feed(ds, **p), 400, "bad_query", "since")
        for p in ({"limit": "0"}, {"limit": "10001"}, {"limit": "x"}):
            self.assertProblem(self.feed(ds, **p), 400, "bad_query", "limit")
        self.assertEqual(self.feed(ds, limit=10000).status, 200)

    def test_stale_labels_count_old_labels_not_corrected_ones(self):
        ds = self.ds_name()
        self.plant(ds, [("s", 0, 0.0), ("t", 0, 0.0), ("u", 0, 0.0), ("v", 0, 0.0)], step=1)
        self.ok_review(ds, "s", "relabelled", label=2)
        self.ok_review(ds, "t", "relabelled", label="cat")  # a class name cannot be compared with labels
        self.ok_review(ds, "v", "relabelled", label=2 ** 31 - 1)  # the largest class index there is

        def stale(sid):
            return {r["run"]: r["stale_labels"] for r in self.d.sample(ds, sid).json()["runs"]}

        self.assertEqual(stale("s"), {"r1": 0}, "a batch before the relabel is not stale")
        self.plant(ds, [("s", 0, 0.0), ("t", 0, 0.0), ("u", 0, 0.0), ("v", 0, 0.0)], step=2)
        self.assertEqual((stale("s"), stale("v")), ({"r1": 1}, {"r1": 1}))
        self.plant(ds, [("s", 2, 0.0)], step=3)  # the corrected label: not stale
        self.assertEqual(stale("s"), {"r1": 1})
        self.plant(ds, [("s", 0, 0.0)], run="r2", step=4)  # counted per run
        self.assertEqual(stale("s"), {"r1": 1, "r2": 1})
        self.plant(ds, [("s", 0, 0.0)], step=5)
        self.assertEqual(stale("s"), {"r1": 2, "r2": 1})
        self.assertEqual((stale("t"), stale("u")), ({"r1": 0}, {"r1": 0}))
        # the count shows in the run's record of the sample
        rec = self.d.sample(ds, "s", run="r1").json()
        self.assertEqual((rec["corrected_label"], rec["runs"][0]["stale_labels"]), (2, 2))
        # once the correction is withdrawn, the old label is not stale any more; the count stays
        self.ok_review(ds, "s", "open")
        self.plant(ds, [("s", 0, 0.0)], step=6)
        self.assertEqual(stale("s"), {"r1": 2, "r2": 1})


# ---------------------------------------------------------------------------- queues

# Planted for the quota tests: label 0 holds the five hardest samples, label 1 the next three, label 2 the
# two easiest, so that without quotas a queue is all label 0.
PLANTED = [("a0", 0, -3.0), ("a1", 0, -2.6), ("a2", 0, -2.2), ("a3", 0, -1.8), ("a4", 0, -1.4),
           ("b0", 1, -1.0), ("b1", 1, -0.6), ("b2", 1, -0.2), ("c0", 2, 0.2), ("c1", 2, 0.6)]
RANKING = [s[0] for s in PLANTED]

QUOTA_CASES = [
    # name, queue params, the queue expected (in ranking order)
    ("no_quota", {"size": 4}, ["a0", "a1", "a2", "a3"]),
    ("max_per_label", {"size": 4, "max_per_label": 2}, ["a0", "a1", "b0", "b1"]),
    ("max_per_label_fills_from_every_label", {"size": 6, "max_per_label": 2}, ["a0", "a1", "b0", "b1", "c0", "c1"]),
    ("min_per_label", {"size": 4, "min_per_label": 1}, ["a0", "a1", "b0", "c0"]),
    ("min_per_label_not_met_by_the_data", {"size": 10, "min_per_label": 3, "max_per_label": 3},
     ["a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1"]),
    ("quotas_override_min_and_max", {"size": 5, "quotas": {"0": {"max": 1}, "2": {"min": 2}}},
     ["a0", "b0", "b1", "c0", "c1"]),
    ("quota_min_keeps_the_general_max", {"size": 6, "max_per_label": 2, "quotas": {"1": {"min": 1}}},
     ["a0", "a1", "b0", "b1", "c0", "c1"]),
    ("quota_max_keeps_the_general_min", {"size": 3, "min_per_label": 1, "quotas": {"2": {"max": 5}}},
     ["a0", "b0", "c0"]),
    ("quota_max_zero_excludes_a_label", {"size": 10, "quotas": {"0": {"max": 0}}},
     ["b0", "b1", "b2", "c0", "c1"]),
    ("label_filter", {"size": 10, "label": 1}, ["b0", "b1", "b2"]),
    ("min_seen_filter", {"size": 10, "min_seen": 2}, []),
    ("by_confidence", {"size": 2, "by": "confidence", "max_per_label": 1}, ["a0", "b0"]),
]


class QueueQuotaTest(ReviewTestCase):
    """Each case builds its queue on a fresh copy of PLANTED."""

    def run_case(self, params, want):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        self.assertEqual(self.hard_ids(ds), RANKING)
        j = self.ok_queue(ds, dict(params, name="q"))
        self.assertEqual(j["size"], len(want))
        got = self.queue_ids(ds, "q")
        self.assertEqual(got, want)
        self.assertEqual({s: self.status_of(ds, s) for s in RANKING},
                         {s: "queued" if s in want else "open" for s in RANKING})


def _make_quota_case(params, want):
    def test(self):
        self.run_case(params, want)
    return test


for _name, _params, _want in QUOTA_CASES:
    setattr(QueueQuotaTest, "test_queue_quota_" + _name, _make_quota_case(_params, _want))


BAD_QUEUES = [
    ("missing_name", {"size": 3}, 422, "missing_field", "/name"),
    ("bad_name", {"name": "a b"}, 422, "bad_name", "/name"),
    ("name_too_long", {"name": "n" * 65}, 422, "bad_name", "/name"),
    ("name_number", {"name": 5}, 422, "bad_name", "/name"),
    ("size_zero", {"name": "q", "size": 0}, 422, "invalid_field", "/size"),
    ("size_too_big", {"name": "q", "size": 10001}, 422, "invalid_field", "/size"),
    ("size_string", {"name": "q", "size": "5"}, 422, "invalid_field", "/size"),
    ("size_fraction", {"name": "q", "size": 2.5}, 422, "invalid_field", "/size"),
    ("by_unknown", {"name": "q", "by": "hardness"}, 422, "invalid_field", "/by"),
    ("run_bad_name", {"name": "q", "run": "a b"}, 422, "bad_name", "/run"),
    ("label_negative", {"name": "q", "label": -1}, 422, "invalid_field", "/label"),
    ("min_seen_zero", {"name": "q", "min_seen": 0}, 422, "invalid_field", "/min_seen"),
    ("max_per_label_zero", {"name": "q", "max_per_label": 0}, 422, "invalid_field", "/max_per_label"),
    ("min_above_max", {"name": "q", "min_per_label": 3, "max_per_label": 2}, 422, "invalid_field", "/min_per_label"),
    ("quotas_list", {"name": "q", "quotas": [1]}, 422, "invalid_field", "/quotas"),
    ("quotas_key_not_a_label", {"name": "q", "quotas": {"cat": {"max": 1}}}, 422, "invalid_field", "/quotas/cat"),
    ("quotas_key_negative", {"name": "q", "quotas": {"-1": {"max": 1}}}, 422, "invalid_field", "/quotas/-1"),
    ("quotas_value_number", {"name": "q", "quotas": {"1": 3}}, 422, "invalid_field", "/quotas/1"),
    ("quotas_max_below_min", {"name": "q", "quotas": {"1": {"min": 3, "max": 2}}}, 422, "invalid_field",
     "/quotas/1"),
    ("quotas_min_string", {"name": "q", "quotas": {"1": {"min": "3"}}}, 422, "invalid_field", "/quotas/1/min"),
    # one label, two spellings: which quota would hold is not for the server to guess
    ("quotas_key_with_leading_zero", {"name": "q", "quotas": {"7": {"max": 1}, "07": {"max": 3}}}, 422,
     "invalid_field", "/quotas/07"),
    ("dedupe_by_empty", {"name": "q", "dedupe_by": ""}, 422, "invalid_field", "/dedupe_by"),
    ("dedupe_by_number", {"name": "q", "dedupe_by": 3}, 422, "invalid_field", "/dedupe_by"),
    ("unknown_field", {"name": "q", "sort": "asc"}, 422, "unknown_field", "/sort"),
    ("order_unknown", {"name": "q", "order": "up"}, 422, "invalid_field", "/order"),
    ("order_upper_case", {"name": "q", "order": "ASC"}, 422, "invalid_field", "/order"),
    ("order_number", {"name": "q", "order": 1}, 422, "invalid_field", "/order"),
    ("label_issue_string", {"name": "q", "label_issue": "true"}, 422, "invalid_field", "/label_issue"),
    ("label_issue_number", {"name": "q", "label_issue": 1}, 422, "invalid_field", "/label_issue"),
    ("body_list", [{"name": "q"}], 422, "invalid_field", ANY),
    ("not_json", b"name=q", 400, "bad_json", ANY),
]


class QueueTest(ReviewTestCase):

    def planted(self, suffix=""):
        ds = self.ds_name(suffix)
        self.plant(ds, PLANTED)
        return ds

    def test_queue_size_limit_order_summary_and_queued_state(self):
        ds = self.planted()
        t0 = time.time()
        j = self.ok_queue(ds, {"name": "first", "size": 3})
        t1 = time.time()
        self.assertEqual(set(j), {"name", "created_at", "size", "reviewed", "progress", "params"})
        self.assertEqual((j["name"], j["size"], j["reviewed"]), ("first", 3, 0))
        self.assertEqual(j["progress"], {"open": 0, "queued": 3, "in_review": 0, "relabelled": 0, "confirmed": 0,
                                         "dismissed": 0})
        self.assertEqual(j["params"]["size"], 3)
        self.assertRegex(j["created_at"], RFC3339_S)
        self.assertTrue(t0 - 2 <= datetime.datetime.strptime(j["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).timestamp() <= t1 + 1)
        r = self.get_queue(ds, "first")
        self.assertEqual(r.status, 200, r)
        q = r.json()
        self.assertEqual({k: q[k] for k in j}, j)
        self.assertEqual(q["offset"], 0)
        hard = {it["id"]: it for it in self.d.all_hard(ds, status=ALL_STATES)}
        self.assertEqual([(it["position"], it["id"]) for it in q["items"]], [(1, "a0"), (2, "a1"), (3, "a2")])
        for it in q["items"]:
            self.assertEqual(it["score"], hard[it["id"]]["mean_loss"])
            for f in HISTORY_FIELDS + ["status", "meta"]:
                self.assertEqual(it[f], hard[it["id"]][f], f)
            self.assertEqual((it["status"], it["corrected_label"]), ("queued", None))
        self.assertEqual(self.audit(ds, "a0")["reviews"][0]["to"], "queued")
        # queued samples are not taken again
        self.ok_queue(ds, {"name": "second", "size": 3})
        self.assertEqual(self.queue_ids(ds, "second"), ["a3", "a4", "b0"])
        names = [x["name"] for x in self.d.get("/v1/datasets/%s/queues" % ds).json()["queues"]]
        self.assertEqual(names, ["first", "second"])
        # only open samples: in review, decided and queued ones are left alone
        self.ok_review(ds, "b1", "in_review")
        self.ok_review(ds, "b2", "dismissed")
        self.ok_queue(ds, {"name": "third", "size": 10})
        self.assertEqual(self.queue_ids(ds, "third"), ["c0", "c1"])
        self.assertEqual(self.ok_queue(ds, {"name": "empty"})["size"], 0)

    def test_queue_order_takes_the_other_end(self):
        """order=asc on a hardest-first field takes the easiest open samples, in the order hard-examples gives
        for the same query; the queue's params keep it, and its export follows it."""
        for by, order in (("mean_loss", "asc"), ("confidence", "desc"), ("mean_loss", "desc")):
            with self.subTest(by=by, order=order):
                ds = self.planted(by + order)
                want = [it["id"] for it in self.d.hard(ds, by=by, order=order, k=4).json()["items"]]
                j = self.ok_queue(ds, {"name": "q", "size": 4, "by": by, "order": order})
                self.assertEqual(j["params"]["order"], order)
                self.assertEqual(self.queue_ids(ds, "q"), want)
                r = self.d.get("/v1/datasets/%s/export?format=jsonl&queue=q" % ds)
                self.assertEqual([json.loads(line)["id"] for line in r.body.decode().splitlines()], want)
        # PLANTED is hardest first by mean_loss: the reverse starts from its end
        ds = self.planted("easy")
        self.ok_queue(ds, {"name": "easy", "size": 3, "order": "asc"})
        self.assertEqual(self.queue_ids(ds, "easy"), RANKING[::-1][:3])

    def test_queue_of_one_run_shows_that_runs_history(self):
        """A queue built over one run lists, and exports, that run's history fields (its scores are of that run),
        as hard-examples does for the same run; a queue over "*" the fields over every run."""
        ds = self.ds_name()
        self.plant(ds, PLANTED, run="r1")
        # r2 sees the same samples with the opposite margins: its losses and AUM differ from r1's everywhere
        self.plant(ds, [(i, label, -z) for i, label, z in PLANTED], run="r2", step=2)
        for run in ("r1", "r2", "*"):
            with self.subTest(run=run):
                name = "q-" + ("all" if run == "*" else run)
                self.ok_queue(ds, {"name": name, "size": 3, "run": run, "by": "aum"})
                items = self.get_queue(ds, name).json()["items"]
                self.assertEqual(len(items), 3)
                hard = {it["id"]: it for it in self.d.all_hard(ds, run=run, status=ALL_STATES)}
                lines = {x["id"]: x for x in parse_jsonl(self.ok_export(ds, "jsonl", queue=name).body)}
                for it in items:
                    self.assertEqual(it["score"], hard[it["id"]]["aum"])
                    for f in HISTORY_FIELDS + ["label"]:
                        self.assertEqual(it[f], hard[it["id"]][f], (it["id"], f))
                        self.assertEqual(lines[it["id"]][f], hard[it["id"]][f], (it["id"], f))
                # release them: the next queue takes from the same samples
                self.assertEqual(self.d.delete("/v1/datasets/%s/queues/%s" % (ds, name)).status, 200)

    def test_queue_over_every_run_ranks_means_as_hard_examples_does(self):
        """Over every run a score is a mean of the runs' values, taken in double: a queue must order its
        samples by that mean, not by the mean rounded to a float, where two means 2^-24 apart can tie."""
        ds = self.ds_name()
        one_ulp = "1.00000011920928955078125"  # 1 + 2^-23, a float
        self.d.ok_batch(ds, {"run": "r1", "ids": ["a", "b"], "targets": [0, 0], "logits": [[1, 0, 0], [1, 0, 0]]})
        self.d.ok_batch(ds, {"run": "r2", "ids": ["a", "b"], "targets": [0, 0],
                             "logits": [[json.loads(one_ulp), 0, 0], [1, 0, 0]]})
        # mean AUM over the runs: a 1 + 2^-24 (a float would round it to 1), b 1
        for order in ("asc", "desc"):
            with self.subTest(order=order):
                want = [it["id"] for it in self.d.hard(ds, by="aum", order=order, k=2).json()["items"]]
                self.assertEqual(want, ["b", "a"] if order == "asc" else ["a", "b"])
                name = "q-" + order
                self.ok_queue(ds, {"name": name, "size": 2, "by": "aum", "order": order})
                self.assertEqual(self.queue_ids(ds, name), want)
                self.assertEqual(self.d.delete("/v1/datasets/%s/queues/%s" % (ds, name)).status, 200)

    def test_queue_delete_of_a_name_longer_than_any_queue_names_none(self):
        """A queue name has at most 64 characters: DELETE of a longer one is 404 and leaves the queue whose name
        it starts with alone (the name was cut to 64 characters, and that queue removed)."""
        ds = self.planted()
        name = "q" * 64
        self.ok_queue(ds, {"name": name, "size": 3})
        for longer in (name + "X", name + "q" * 100):
            with self.subTest(length=len(longer)):
                self.assertProblem(self.d.delete("/v1/datasets/%s/queues/%s" % (ds, longer)), 404, "not_found")
                self.assertProblem(self.get_queue(ds, longer), 404, "not_found")
        j = self.get_queue(ds, name).json()
        self.assertEqual((j["size"], j["progress"]["queued"]), (3, 3))
        # of a dataset that does not exist, the dataset is what is not found, whatever the name
        self.assertProblem(self.d.delete("/v1/datasets/nosuch-%s/queues/%s" % (ds, name + "X")), 404, "dataset_not_found")

    def test_queue_paging_with_offset_and_limit(self):
        ds = self.planted()
        self.ok_queue(ds, {"name": "q", "size": 10})
        j = self.get_queue(ds, "q", offset=3, limit=4).json()
        self.assertEqual((j["offset"], j["size"]), (3, 10))
        self.assertEqual([(it["position"], it["id"]) for it in j["items"]],
                         [(4, "a3"), (5, "a4"), (6, "b0"), (7, "b1")])
        self.assertEqual(self.get_queue(ds, "q", offset=10).json()["items"], [])
        for p in ({"offset": "-1"}, {"offset": "x"}):
            self.assertProblem(self.get_queue(ds, "q", **p), 400, "bad_query", "offset")
        for p in ({"limit": "0"}, {"limit": "10001"}):
            self.assertProblem(self.get_queue(ds, "q", **p), 400, "bad_query", "limit")

    def test_queue_dedupe_by_patient_keeps_the_hardest_of_each(self):
        ds = self.ds_name()
        samples = [("d0", 0, -3.0), ("d1", 1, -2.5), ("d2", 2, -2.0), ("d3", 0, -1.5), ("d4", 1, -1.0),
                   ("d5", 2, -0.5), ("d6", 0, 0.0), ("d7", 1, 0.5)]
        meta = {"d0": {"patient_id": "pA"}, "d1": {"patient_id": "pB"}, "d3": {"patient_id": "pA"},
                "d4": {"patient_id": "pB", "study_uid": "1.2"}, "d5": {"patient_id": "pC"},
                "d6": {"uri": "x.png"}, "d7": {"patient_id": "pA"}}
        self.plant(ds, samples, meta=meta)
        self.ok_queue(ds, {"name": "one-per-patient", "size": 10, "dedupe_by": "patient_id"})
        # samples without the key are not duplicates of each other
        self.assertEqual(self.queue_ids(ds, "one-per-patient"), ["d0", "d1", "d2", "d5", "d6"])
        self.assertEqual([s for s, *_ in samples if self.status_of(ds, s) == "open"], ["d3", "d4", "d7"])
        # among the open samples: with d0 gone, d3 is pA's hardest; the size limit applies after de-duplication
        ds2 = self.ds_name("-2")
        self.plant(ds2, samples, meta=meta)
        self.ok_review(ds2, "d0", "dismissed")
        self.ok_queue(ds2, {"name": "q", "size": 3, "dedupe_by": "patient_id"})
        self.assertEqual(self.queue_ids(ds2, "q"), ["d1", "d2", "d3"])
        # de-duplication and quotas together
        ds3 = self.ds_name("-3")
        self.plant(ds3, samples, meta=meta)
        self.ok_queue(ds3, {"name": "q", "size": 10, "dedupe_by": "patient_id", "max_per_label": 1})
        self.assertEqual(self.queue_ids(ds3, "q"), ["d0", "d1", "d2"])

    def test_queue_progress_counts_reviews(self):
        ds = self.planted()
        self.ok_queue(ds, {"name": "q", "size": 5})
        self.ok_review(ds, "a0", "confirmed")
        self.ok_review(ds, "a1", "relabelled", label=1)
        self.ok_review(ds, "a2", "in_review")
        self.ok_review(ds, "a3", "dismissed")
        j = self.get_queue(ds, "q").json()
        self.assertEqual(j["progress"], {"open": 0, "queued": 1, "in_review": 1, "relabelled": 1, "confirmed": 1,
                                         "dismissed": 1})
        self.assertEqual((j["size"], j["reviewed"]), (5, 3))
        self.assertEqual([(it["id"], it["status"], it["corrected_label"]) for it in j["items"]],
                         [("a0", "confirmed", None), ("a1", "relabelled", 1), ("a2", "in_review", None),
                          ("a3", "dismissed", None), ("a4", "queued", None)])
        self.ok_review(ds, "a0", "open")  # reopened: no longer reviewed
        j = self.d.get("/v1/datasets/%s/queues" % ds).json()["queues"][0]
        self.assertEqual((j["reviewed"], j["progress"]["open"], j["progress"]["confirmed"]), (2, 1, 0))

    def test_queue_is_stable_when_new_batches_change_scores(self):
        ds = self.planted()
        self.ok_queue(ds, {"name": "q", "size": 4})
        before = self.get_queue(ds, "q").json()
        # a3 becomes the easiest, b2 (not queued) the hardest of all, a0 easier than a1
        self.plant(ds, [("a3", 0, 6.0), ("b2", 1, -8.0), ("a0", 0, 4.0)], step=2)
        self.plant(ds, [("a3", 0, 6.0), ("b2", 1, -8.0), ("a0", 0, 4.0)], step=3)
        after = self.get_queue(ds, "q").json()
        self.assertEqual([(it["position"], it["id"], it["score"]) for it in after["items"]],
                         [(it["position"], it["id"], it["score"]) for it in before["items"]])
        a3 = after["items"][3]
        self.assertEqual(a3["seen"], 3)
        self.assertLess(a3["mean_loss"], a3["score"], "the items carry current history, the score at build time")
        self.assertEqual(self.hard_ids(ds)[0], "b2")
        self.assertNotIn("b2", [it["id"] for it in after["items"]])
        self.assertEqual(self.queue_ids(ds, "q"), ["a0", "a1", "a2", "a3"])

    def test_queue_duplicate_name_409_changes_nothing(self):
        ds = self.planted()
        self.ok_queue(ds, {"name": "q", "size": 2})
        before = (self.get_queue(ds, "q").json(), self.hard_ids(ds, status=ALL_STATES),
                  [self.status_of(ds, s) for s in RANKING])
        self.assertProblem(self.make_queue(ds, {"name": "q", "size": 5}), 409, "conflict", "/name")
        after = (self.get_queue(ds, "q").json(), self.hard_ids(ds, status=ALL_STATES),
                 [self.status_of(ds, s) for s in RANKING])
        self.assertEqual(after, before)
        # names are per dataset
        other = self.planted("-other")
        self.ok_queue(other, {"name": "q", "size": 1})

    def test_queue_delete_releases_queued_samples_to_open(self):
        ds = self.planted()
        self.ok_queue(ds, {"name": "q", "size": 4})
        self.ok_review(ds, "a0", "confirmed")
        self.ok_review(ds, "a1", "in_review")
        r = self.d.delete("/v1/datasets/%s/queues/q" % ds)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"deleted": "q", "released": 2})
        self.assertEqual([self.status_of(ds, s) for s in ("a0", "a1", "a2", "a3")],
                         ["confirmed", "in_review", "open", "open"])
        last = self.audit(ds, "a2")["reviews"][-1]
        self.assertEqual((last["from"], last["to"], last["reviewer"], last["note"], last["label_before"]),
                         ("queued", "open", "focald", "queue q removed", 0))
        self.assertProblem(self.get_queue(ds, "q"), 404, "not_found")
        self.assertEqual(self.d.get("/v1/datasets/%s/queues" % ds).json()["queues"], [])
        self.assertProblem(self.d.delete("/v1/datasets/%s/queues/q" % ds), 404, "not_found")
        # the name is free again, and released samples can be queued again
        self.ok_queue(ds, {"name": "q", "size": 3})
        self.assertEqual(self.queue_ids(ds, "q"), ["a2", "a3", "a4"])

    def test_queue_unknown_dataset_queue_or_run_404(self):
        ds = self.planted()
        self.assertProblem(self.make_queue("no-such-ds", {"name": "q"}), 404, "dataset_not_found")
        self.assertProblem(self.get_queue("no-such-ds", "q"), 404, "dataset_not_found")
        self.assertProblem(self.d.get("/v1/datasets/no-such-ds/queues"), 404, "dataset_not_found")
        self.assertProblem(self.d.delete("/v1/datasets/no-such-ds/queues/q"), 404, "dataset_not_found")
        self.assertProblem(self.get_queue(ds, "nope"), 404, "not_found")
        self.assertProblem(self.make_queue(ds, {"name": "q", "run": "nope"}), 404, "run_not_found", "/run")
        self.assertEqual(self.d.get("/v1/datasets/%s/queues" % ds).json()["queues"], [])
        self.assertEqual(self.hard_ids(ds), RANKING)

    def run_bad(self, body, status, code, field):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        r = self.d.post("/v1/datasets/%s/queues" % ds, body)
        self.assertProblem(r, status, code, field)
        self.assertEqual(self.d.get("/v1/datasets/%s/queues" % ds).json()["queues"], [])
        self.assertEqual(self.hard_ids(ds), RANKING)


def _make_bad_queue(body, status, code, field):
    def test(self):
        self.run_bad(body, status, code, field)
    return test


for _name, _body, _status, _code, _field in BAD_QUEUES:
    setattr(QueueTest, "test_queue_bad_" + _name, _make_bad_queue(_body, _status, _code, _field))


# ---------------------------------------------------------------------------- concurrent changes

def run_together(fns):
    """Runs each fn in its own thread, all released at once; returns their results in order."""
    out = [None] * len(fns)
    barrier = threading.Barrier(len(fns))

    def one(i):
        barrier.wait()
        try:
            out[i] = fns[i]()
        except Exception as e:  # reported by the caller's assertions
            out[i] = e
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


class ConcurrencyTest(ReviewTestCase):
    """Changes sent at the same moment are often committed in one group; each must still see the ones
    before it."""

    def assertChain(self, ds, sid, d=None):
        """sid's audit trail is a chain of legal transitions from open that ends in its status; returns it."""
        a = self.audit(ds, sid, d=d)
        state = "open"
        for e in a["reviews"]:
            chain = [(x["from"], x["to"]) for x in a["reviews"]]
            self.assertEqual(e["from"], state, "%s: broken chain %r" % (sid, chain))
            if e["reviewer"] != "focald":
                self.assertTrue(legal(e["from"], e["to"]), "%s: illegal %s -> %s recorded" % (sid, e["from"], e["to"]))
            state = e["to"]
        self.assertEqual(a["status"], state, sid)
        return a

    def test_concurrent_reviews_of_one_sample_follow_the_rule(self):
        ds = self.ds_name()
        ids = ["s%d" % i for i in range(12)]
        self.plant(ds, [(s, 0, 0.1 * i) for i, s in enumerate(ids)])
        for sid in ids:
            asks = [{"status": "in_review"}] * 3 + [{"status": "confirmed"}, {"status": "dismissed"},
                                                    {"status": "relabelled", "label": 1}]
            path = self.sample_path(ds, sid) + "/review"
            res = run_together([lambda b=b: self.d.post(path, b) for b in asks])
            self.assertTrue(all(isinstance(r, harness.Resp) and r.status in (200, 409) for r in res), res)
            a = self.assertChain(ds, sid)
            won = sorted((r.json()["from"], r.json()["status"]) for r in res if r.status == 200)
            self.assertEqual(won, sorted((e["from"], e["to"]) for e in a["reviews"]), sid)

    def test_concurrent_queues_with_one_name_make_one_queue(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        res = run_together([lambda: self.make_queue(ds, {"name": "same", "size": 3})] * 4)
        self.assertEqual(sorted(r.status for r in res), [201, 409, 409, 409], res)
        for r in res:
            if r.status == 409:
                self.assertProblem(r, 409, "conflict", "/name")
        self.assertEqual(self.queue_ids(ds, "same"), ["a0", "a1", "a2"])
        for sid in RANKING:
            self.assertChain(ds, sid)

    def test_concurrent_queue_and_reviews_keep_every_chain(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        fns = [lambda: self.make_queue(ds, {"name": "q", "size": 6})]
        fns += [lambda s=s: self.review(ds, s, "in_review") for s in RANKING[:5]]
        res = run_together(fns)
        self.assertEqual(res[0].status, 201, res[0])
        self.assertTrue(all(r.status in (200, 409) for r in res[1:]), res)
        for sid in RANKING:
            self.assertChain(ds, sid)
        # a sample taken into review in the same moment is never queued over it
        for it in self.get_queue(ds, "q").json()["items"]:
            self.assertEqual(self.audit(ds, it["id"])["reviews"][0]["to"], "queued", it["id"])

    def test_concurrent_review_and_meta_edit_both_survive_a_restart(self):
        d = self.start_daemon()
        ds = self.ds_name()
        ids = ["s%d" % i for i in range(8)]
        self.plant(ds, [(s, 1, 0.0) for s in ids], d=d)
        for sid in ids:
            run_together([lambda s=sid: self.review(ds, s, "relabelled", d=d, label=2),
                          lambda s=sid: self.put_meta(ds, s, {"uri": s + ".png"}, d=d)])
        before = {s: d.sample(ds, s).json() for s in ids}
        for s in ids:
            self.assertEqual((before[s]["status"], before[s]["corrected_label"], before[s]["meta"]),
                             ("relabelled", 2, {"uri": s + ".png"}))
        self.assertEqual(d.stop(), 0)
        d2 = self.start_daemon(db_dir=d.db_dir)
        self.assertEqual({s: d2.sample(ds, s).json() for s in ids}, before)


# ---------------------------------------------------------------------------- meta

# Ids a browser cannot put in a URL path as they are: WHATWG's URL parser (every browser, fetch()) removes "."
# and ".." segments, "%2e" spellings included, before the request leaves; the others must survive encoding.
AWKWARD_IDS = [".", "..", "%2e", "%2E%2e", ".%2e", "a/b", "../x", "./x", "a/../b", "?", "#", "%", "%25", "+", "a+b",
               " lead", "&id=x", "é ✓ 𝄞", "\u2028", "7"]


def browser_path(path):
    """What a browser sends for an absolute path: WHATWG URL's dot segments ("." or "%2e", ".." or any mix of
    "." and "%2e" twice) removed, a ".." taking the segment before it."""
    out = []
    segs = path.split("/")[1:]
    for i, seg in enumerate(segs):
        low = seg.lower()
        last = i == len(segs) - 1
        if low in ("..", ".%2e", "%2e.", "%2e%2e"):
            if out:
                out.pop()
            if last:
                out.append("")
        elif low in (".", "%2e"):
            if last:
                out.append("")
        else:
            out.append(seg)
    return "/" + "/".join(out)


class SampleIdInQueryTest(ReviewTestCase):
    """/v1/datasets/{dataset}/sample?id=<id> and its /review, /reviews, /media and /meta: the same sample and the
    same answers as the path form, for every id, including those a browser cannot send in a path."""

    def qpath(self, ds, sid, sub="", **params):
        return "/v1/datasets/%s/sample%s?%s" % (harness.q(ds), sub, urllib.parse.urlencode(dict(id=sid, **params)))

    def test_sample_id_in_query_reaches_every_awkward_id(self):
        ds = self.ds_name()
        self.plant(ds, [(sid, i % 3, -1.0 + 0.1 * i) for i, sid in enumerate(AWKWARD_IDS)])
        for i, sid in enumerate(AWKWARD_IDS):
            with self.subTest(id=sid):
                qp = self.qpath(ds, sid)
                # what the console sends is what the server gets: a browser leaves the query form alone
                self.assertEqual(browser_path(urllib.parse.urlsplit(qp).path), urllib.parse.urlsplit(qp).path)
                r = self.d.get(qp)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["id"], sid)
                self.assertEqual(r.json(), self.d.get(self.sample_path(ds, sid)).json())
                self.assertEqual(self.d.get(self.qpath(ds, sid, run="r1")).json()["runs"][0]["run"], "r1")
                self.assertEqual(self.d.request("HEAD", qp).status, 200)
                # meta, review and the trail, through the query form, land on this sample and no other
                meta = {"uri": "/m/%d.png" % i, "n": i}
                r = self.d.request("PUT", self.qpath(ds, sid, "/meta"), meta)
                self.assertEqual((r.status, r.json()), (200, {"id": sid, "meta": meta}), r)
                self.assertEqual(self.d.get(self.sample_path(ds, sid)).json()["meta"], meta)
                r = self.d.post(self.qpath(ds, sid, "/review"), {"status": "confirmed", "reviewer": "q%d" % i})
                self.assertEqual((r.status, r.json()["id"], r.json()["status"]), (200, sid, "confirmed"), r)
                trail = self.d.get(self.qpath(ds, sid, "/reviews"))
                self.assertEqual(trail.status, 200, trail)
                self.assertEqual(trail.json(), self.d.get(self.sample_path(ds, sid) + "/reviews").json())
                self.assertEqual([(e["to"], e["reviewer"]) for e in trail.json()["reviews"]], [("confirmed", "q%d" % i)])
                r = self.d.get(self.qpath(ds, sid, "/media"))
                self.assertEqual((r.status, r.json()["code"]), (404, "not_found"), "no --media-root: the path form's answer")
        # each sample was changed once, by its own requests
        statuses = {it["id"]: it["status"] for it in self.d.all_hard(ds, status=ALL_STATES)}
        self.assertEqual(statuses, {sid: "confirmed" for sid in AWKWARD_IDS})
        # the ids that need the query form: their path form is rewritten by a browser into another route
        for sid in (".", ".."):
            p = self.sample_path(ds, sid)
            self.assertNotEqual(browser_path(p), p)
            self.assertNotEqual(browser_path(p + "/review"), p + "/review")

    def test_sample_id_in_query_errors(self):
        ds = self.ds_name()
        self.plant(ds, [("s1", 0, 1.0)])
        base = "/v1/datasets/%s/sample" % ds
        cases = [
            (base, 400, "bad_query", "id"),
            (base + "?run=r1", 400, "bad_query", "id"),
            (base + "?id", 400, "bad_query", "id"),
            (base + "?id=%zz", 400, "bad_query", "id"),
            (base + "?id=a%00b", 400, "bad_query", "id"),
            (base + "?id=s1&id=s1", 400, "bad_query", "id"),
            (base + "?id=s1&k=1", 400, "bad_query", "k"),
            (base + "/reviews?id=s1&run=r1", 400, "bad_query", "run"),
            (base + "?id=", 404, "sample_not_found", None),
            (base + "?id=nope", 404, "sample_not_found", None),
            (base + "?id=" + "x" * 300, 404, "sample_not_found", None),
            (base + "?id=s1&run=r9", 404, "run_not_found", "run"),
            ("/v1/datasets/nope/sample?id=s1", 404, "dataset_not_found", None),
            (base + "/media?id=nope", 404, "sample_not_found", None),
        ]
        for path, status, code, field in cases:
            with self.subTest(path=path[:80]):
                r = self.d.get(path)
                self.assertEqual((r.status, r.json()["code"], r.json().get("field")), (status, code, field), r)
        # changes: refused before anything is stored
        for method, sub, body in (("POST", "/review", {"status": "confirmed"}), ("PUT", "/meta", {"x": 1})):
            for q, status, code in (("", 400, "bad_query"), ("?id=%zz", 400, "bad_query"), ("?id=nope", 404, "sample_not_found")):
                with self.subTest(method=method, q=q):
                    r = self.d.request(method, base + sub + q, body)
                    self.assertEqual((r.status, r.json()["code"]), (status, code), r)
        s1 = self.d.get(self.sample_path(ds, "s1")).json()
        self.assertEqual((s1["status"], s1["meta"]), ("open", {}))
        # a + is a space, as in every query value; %2B is a plus
        self.plant(ds, [("a b", 0, 1.0), ("a+b", 1, 1.0)], step=2)
        self.assertEqual(self.d.get(base + "?id=a+b").json()["id"], "a b")
        self.assertEqual(self.d.get(base + "?id=a%2Bb").json()["id"], "a+b")


class MetaTest(ReviewTestCase):
    DS = "meta"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d.ok_batch(cls.DS, {"run": "r1", "step": 1, "ids": ["m0", "m1", "m2"], "targets": [0, 1, 2],
                                "logits": [row(0, 0.0), row(1, 0.0), row(2, 0.0)],
                                "meta": {"m1": {"uri": "b.png", "k": 1}}})

    def meta_of(self, sid):
        return self.d.sample(self.DS, sid).json()["meta"]

    def test_meta_put_replaces_and_batches_keep_or_replace(self):
        m = {"uri": "s3://bucket/m0.dcm", "study_uid": "1.2.840.1", "series_uid": "1.2.840.1.2",
             "sop_uid": "1.2.840.1.2.3", "patient_id": "P-17", "tags": ["ct", "chest"], "site": {"n": 3},
             "note": "ünïcode"}
        r = self.put_meta(self.DS, "m0", m)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"id": "m0", "meta": m})
        self.assertEqual(self.meta_of("m0"), m)
        r = self.put_meta(self.DS, "m0", {"uri": "other.png", "tags": {"a": 1}, "uri2": None})
        self.assertEqual(self.meta_of("m0"), {"uri": "other.png", "tags": {"a": 1}, "uri2": None},
                         "PUT replaces the meta, it does not merge")
        self.assertEqual(self.meta_of("m1"), {"uri": "b.png", "k": 1})
        # a batch without meta keeps it; a batch with meta replaces it
        self.plant(self.DS, [("m0", 0, 0.0), ("m1", 1, 0.0)], step=2)
        self.assertEqual(self.meta_of("m0"), {"uri": "other.png", "tags": {"a": 1}, "uri2": None})
        self.plant(self.DS, [("m0", 0, 0.0)], step=3, meta={"m0": {"uri": "batch.png"}})
        self.assertEqual(self.meta_of("m0"), {"uri": "batch.png"})
        self.assertEqual(self.put_meta(self.DS, "m0", {}).json()["meta"], {})
        self.assertEqual(self.meta_of("m0"), {})
        # nulls for the known keys are accepted
        self.assertEqual(self.put_meta(self.DS, "m0", {"uri": None, "study_uid": None, "tags": None}).status, 200)

    def test_meta_shows_in_hard_examples_and_queue_items(self):
        self.put_meta(self.DS, "m2", {"patient_id": "P-2"})
        items = {it["id"]: it for it in self.d.all_hard(self.DS, status=ALL_STATES)}
        self.assertEqual(items["m2"]["meta"], {"patient_id": "P-2"})
        self.ok_queue(self.DS, {"name": "with-meta", "size": 3, "label": 2})
        items = self.get_queue(self.DS, "with-meta").json()["items"]
        self.assertEqual([(it["id"], it["meta"]) for it in items], [("m2", {"patient_id": "P-2"})])

    def test_meta_bad_bodies_422_and_nothing_changes(self):
        self.put_meta(self.DS, "m2", {"patient_id": "P-2"})
        cases = [({"uri": 5}, 422, "invalid_field", "/uri"),
                 ({"study_uid": 1.2}, 422, "invalid_field", "/study_uid"),
                 ({"series_uid": ["1"]}, 422, "invalid_field", "/series_uid"),
                 ({"sop_uid": {"a": 1}}, 422, "invalid_field", "/sop_uid"),
                 ({"patient_id": 17}, 422, "invalid_field", "/patient_id"),
                 ({"tags": "ct"}, 422, "invalid_field", "/tags"),
                 ({"tags": 3}, 422, "invalid_field", "/tags"),
                 ([{"uri": "x"}], 422, "invalid_field", ANY),
                 ("x", 422, "invalid_field", ANY),
                 ({"big": "x" * 70000}, 422, "too_large", ANY),
                 ({"big": "x" * (65536 - len('{"big":""}') + 1)}, 422, "too_large", ANY),
                 (b"{uri: 1}", 400, "bad_json", ANY),
                 (b"", 400, "bad_json", ANY)]
        for body, status, code, field in cases:
            with self.subTest(body=str(body)[:40]):
                self.assertProblem(self.put_meta(self.DS, "m2", body), status, code, field)
                self.assertEqual(self.meta_of("m2"), {"patient_id": "P-2"})
        r = self.put_meta(self.DS, "m2", {"uri": "x"}, headers={"Content-Type": "text/plain"})
        self.assertProblem(r, 415, "unsupported_media_type")
        self.assertProblem(self.put_meta(self.DS, "nope", {"uri": "x"}), 404, "sample_not_found")
        self.assertProblem(self.put_meta("no-such-ds", "m2", {"uri": "x"}), 404, "dataset_not_found")
        self.assertEqual(self.meta_of("m2"), {"patient_id": "P-2"})
        # the largest meta is accepted
        big = {"big": "x" * (65536 - len('{"big":""}'))}
        self.assertEqual(self.put_meta(self.DS, "m2", big).status, 200)
        self.assertEqual(self.meta_of("m2"), big)
        self.put_meta(self.DS, "m2", {"patient_id": "P-2"})


# ---------------------------------------------------------------------------- exports

def parse_csv(body):
    """(header, rows) of an RFC 4180 body; asserts CRLF line ends."""
    text = body.decode("utf-8")
    assert text.endswith("\r\n"), "the CSV does not end with CRLF"
    rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    return rows[0], rows[1:]


def parse_jsonl(body):
    text = body.decode("utf-8")
    assert text == "" or text.endswith("\n"), "JSONL must end with a newline"
    return [json.loads(x) for x in text.split("\n") if x != ""]


def fnum(s):
    return None if s == "" else float(s)


def fnum_or_none(s):
    try:
        return float(s)
    except ValueError:
        return None


def guarded(text):
    """A text cell as an export's CSV holds it: OWASP's rule against CSV (formula) injection prefixes a
    cell starting with =, +, -, @, a tab or a carriage return with a single quote."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def has_scheme(uri):
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]+:", uri) is not None


def local_path(uri):
    """The local file a meta uri names (a plain path, or a file: URL's decoded path), or None for a URL."""
    if not has_scheme(uri):
        return uri
    for prefix in ("file://localhost/", "file:///"):
        if uri.lower().startswith(prefix):
            return "/" + urllib.parse.unquote(uri[len(prefix):])
    if uri.lower().startswith("file:/") and uri[6:7] != "/":  # RFC 8089's file:/path
        return urllib.parse.unquote(uri[5:])
    return None


# The URL schemes Label Studio opens as an image: the browser's, and its cloud storages' (README "Label Studio").
LS_SCHEMES = ("http", "https", "s3", "gs", "azure-blob")


def has_dotdot(path):
    """Whether a path has a ".." segment, '/' or '\\' between segments."""
    return ".." in re.split(r"[/\\]", path)


def ls_image(uri, root=None):
    """What Label Studio can open for a uri (None: the sample is left out): a URL of one of LS_SCHEMES with a
    host, or a local-files link below the root, as it is; with a document root, a local path under it (or
    relative to it) as /data/local-files/?d=<relative path>; nothing else."""
    if uri is None:
        return None
    if uri.startswith("/data/local-files/?d="):
        rel = uri[len("/data/local-files/?d="):]
        d = urllib.parse.unquote_plus(rel)
        if rel and not re.search("[&#]", rel) and "\0" not in d and not d.startswith("/") and not has_dotdot(d):
            return uri
    path = local_path(uri)
    if path is None:
        m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#\\])", uri)
        return uri if m and m.group(1).lower() in LS_SCHEMES else None
    if root is None or has_dotdot(path):
        return None
    root = root.rstrip("/")
    if path.startswith("/"):
        if not path.startswith(root + "/"):
            return None
        path = path[len(root) + 1:]
    segs = [x for x in path.split("/") if x not in ("", ".")]
    if not segs or ".." in segs:
        return None
    return "/data/local-files/?d=" + "/".join(urllib.parse.quote(x, safe="") for x in segs)


def fiftyone_path(uri):
    """The filepath FiftyOne's CSV importer gets for a uri, or None (the sample is left out)."""
    path = local_path(uri) if uri else None
    return path if path and guarded(path) == path and not has_dotdot(path) else None


def check_label_studio_import(test, tasks):
    """The checks Label Studio's import runs on a task file (label_studio/tasks/validation.py, TaskValidator,
    for a labeling config <Image name="img" value="$image"/>), plus that each image is something Label Studio
    can load: a URL with a scheme and a host (validation.py's is_url), or its local-files form
    /data/local-files/?d=<path relative to LOCAL_FILES_DOCUMENT_ROOT> (docs/source/guide/storage_local.md)."""
    test.assertIsInstance(tasks, list, "data is not a list")
    test.assertGreater(len(tasks), 0, "data is empty")
    for i, t in enumerate(tasks):
        test.assertIsInstance(t, dict, i)
        test.assertIn("data", t, i)
        test.assertIsInstance(t["data"], dict, i)
        test.assertIn("image", t["data"], '"image" key is expected in task data')
        image = t["data"]["image"]
        test.assertIsInstance(image, (str, list), "data['image'] of task %d: the Image tag expects str or list" % i)
        test.assertIsInstance(t.get("predictions", []), list)
        for pred in t.get("predictions", []):
            test.assertIsInstance(pred, dict)
            test.assertIsInstance(pred.get("result"), list, 'Prediction must have "result" fields')
        test.assertIsInstance(t.get("meta", {}), (dict, list))
        u = urllib.parse.urlsplit(image)
        if u.scheme:
            test.assertTrue(u.netloc, "image %r: a URL needs a host" % image)
        else:
            test.assertEqual(image.split("?")[0], "/data/local-files/", image)
            d = urllib.parse.parse_qs(u.query)["d"]
            test.assertEqual(len(d), 1, image)
            test.assertFalse(d[0].startswith("/") or ".." in d[0].split("/") or d[0] == "", image)


class ExportTest(ReviewTestCase):
    """One dataset of 40 samples over two runs with meta, reviews and a queue; each format against its
    documented shape and against hard-examples' order for the same query."""
    DS = "exp"
    ODD_ID = 'odd,"id"'
    QUERIES = [{}, {"by": "confidence"}, {"by": "aum", "run": "r1"}, {"run": "r2"}, {"label": "1"},
               {"min_seen": "2"}, {"status": "confirmed,dismissed,relabelled"}, {"status": ALL_STATES},
               {"by": "forgetting", "status": ALL_STATES}, {"by": "confidence", "order": "desc"},
               {"by": "mean_loss", "order": "asc", "run": "r1"}, {"by": "forgetting_events", "order": "asc"}]

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d, ds = cls.d, cls.DS
        ids = ["e%02d" % i for i in range(34)] + ["@34", "-35", "=SUM(1+1)", "+37", cls.ODD_ID, "ünï/ç ø"]
        cls.ids = ids
        meta = {}
        for i, sid in enumerate(ids):
            m = {}
            if i % 4 == 0:
                m["uri"] = "s3://scans/%s.png" % i  # a URL: Label Studio opens it, FiftyOne cannot
            elif i % 8 == 2:
                m["uri"] = "/data/scans/%s.png" % i  # local paths: FiftyOne's, and Label Studio's under a root
            elif i % 8 == 6:
                m["uri"] = "scans/%s b.png" % i
            if i == 10:
                m["uri"] = "file:///data/scans/10%20x.png"
            if i == 14:
                m["uri"] = "-14.png"  # a relative path the formula guard would change: not for FiftyOne
            if i % 3 == 0:
                m["study_uid"] = "1.2.840.%d" % i
                m["patient_id"] = "P%d" % (i % 5)
            if i % 6 == 0:
                m["series_uid"] = "1.2.840.%d.1" % i
                m["sop_uid"] = "1.2.840.%d.1.1" % i
            if i == 4:
                m["uri"] = 'gs://a,b/"quoted" name\nline2.png'
                m["tags"] = ["x", "y"]
                m["site"] = "north"
            if i == 6:
                m["patient_id"] = "=1+2"
            if i == 12:
                m["patient_id"] = "\tP12"
            if m:
                meta[sid] = m
        cls.meta = meta
        for step, run in ((1, "r1"), (2, "r2"), (3, "r1")):
            sub = ids if run == "r1" else ids[::3]
            body = {"run": run, "step": step, "ids": sub, "targets": [i % 3 for i in range(len(sub))],
                    "logits": [row(i % 3, -2.0 + 0.11 * ((i * 7 + step) % 40)) for i in range(len(sub))]}
            if step == 1:
                body["meta"] = meta
            d.ok_batch(ds, body)

        def review(sid, status, **kw):
            r = d.post("/v1/datasets/%s/samples/%s/review" % (ds, harness.q(sid)), dict(kw, status=status))
            assert r.status == 200, r
        review("e01", "confirmed")
        review("e02", "dismissed")
        review("e03", "relabelled", label="cat")
        review(cls.ODD_ID, "relabelled", label=2)
        review("e05", "in_review")
        r = d.post("/v1/datasets/%s/queues" % ds, {"name": "q", "size": 6, "by": "last_loss"})
        assert r.status == 201, r

    def hard_items(self, **params):
        return self.d.all_hard(self.DS, **params)

    def test_export_headers_per_format(self):
        """Each format has its own suggested file name and media type."""
        for fmt, ctype, name in (("csv", "text/csv; charset=utf-8", "exp.csv"), ("jsonl", "application/x-ndjson", "exp.jsonl"),
                                 ("label-studio", "application/json", "exp-label-studio.json"),
                                 ("fiftyone", "text/csv; charset=utf-8", "exp-fiftyone.csv"),
                                 ("ohif", "application/x-ndjson", "exp-ohif.jsonl")):
            r = self.ok_export(self.DS, fmt)
            self.assertEqual(r.header("Content-Type"), ctype, fmt)
            self.assertEqual(r.header("Content-Disposition"), 'attachment; filename="%s"' % name, fmt)
            self.assertEqual(r.header("Trailer"), "Focald-Skipped", fmt)
            r = self.ok_export(self.DS, fmt, queue="q")
            self.assertEqual(r.header("Content-Disposition"), 'attachment; filename="%s"' % name.replace("exp", "exp-q"), fmt)

    def test_export_csv_shape_and_quoting(self):
        r = self.ok_export(self.DS, "csv", status=ALL_STATES)
        header, rows = parse_csv(r.body)
        self.assertEqual(header, CSV_COLUMNS)
        items = self.hard_items(status=ALL_STATES)
        self.assertEqual(len(rows), len(items))
        for row_, it in zip(rows, items):
            self.assertEqual(len(row_), len(CSV_COLUMNS), row_)
            c = dict(zip(CSV_COLUMNS, row_))
            self.assertEqual((int(c["rank"]), c["id"], fnum(c["score"])), (it["rank"], guarded(it["id"]), it["score"]))
            for f in HISTORY_FIELDS:
                self.assertEqual(fnum(c[f]), it[f], "%s %s" % (it["id"], f))
            self.assertEqual((int(c["first_step"]), int(c["last_step"])), (it["first_step"], it["last_step"]))
            self.assertEqual(c["label"], str(it["label"]))
            self.assertEqual((c["label_issue"], c["status"], c["reconsider"]),
                             (str(it["label_issue"]).lower(), it["status"], str(it["reconsider"]).lower()))
            m = self.meta.get(it["id"], {})
            for k in ("uri", "study_uid", "series_uid", "sop_uid", "patient_id"):
                self.assertEqual(c[k], guarded(m.get(k, "")), "%s %s" % (it["id"], k))
            corrected = self.d.sample(self.DS, it["id"]).json()["corrected_label"]
            self.assertEqual(c["corrected_label"], "" if corrected is None else json.dumps(corrected))
            want_url = ""
            if "study_uid" in m:
                want_url = "http://localhost:3000/viewer?StudyInstanceUIDs=" + m["study_uid"]
                if "series_uid" in m:
                    want_url += "&SeriesInstanceUIDs=" + m["series_uid"]
                if "sop_uid" in m:
                    want_url += "&initialSOPInstanceUID=" + m["sop_uid"]
            self.assertEqual(c["viewer_url"], want_url)
        # RFC 4180: a field with a comma, a quote or a line break is quoted, quotes doubled
        self.assertIn(b'\r\n' + str(self._rank(items, self.ODD_ID)).encode() + b',"odd,""id""",', r.body)
        self.assertIn(b',"gs://a,b/""quoted"" name\nline2.png",', r.body)
        self.assertIn(b',"""cat""",', r.body)  # the corrected label "cat" as JSON text, quoted
        lines = r.body.split(b"\r\n")
        self.assertEqual(lines[0].decode(), ",".join(CSV_COLUMNS))

    def _rank(self, items, sid):
        return next(it["rank"] for it in items if it["id"] == sid)

    def test_export_jsonl_equals_hard_examples_for_each_query(self):
        for q in self.QUERIES:
            with self.subTest(query=q):
                lines = parse_jsonl(self.ok_export(self.DS, "jsonl", **q).body)
                items = self.hard_items(**q)
                self.assertEqual([x["id"] for x in lines], [it["id"] for it in items])
                for x, it in zip(lines, items):
                    self.assertEqual({k: x.get(k) for k in it}, it)
                    self.assertIn("corrected_label", x)
                    self.assertIn("viewer_url", x)

    def test_export_every_format_keeps_hard_examples_order(self):
        for q in self.QUERIES:
            with self.subTest(query=q):
                want = [it["id"] for it in self.hard_items(**q)]
                _, rows = parse_csv(self.ok_export(self.DS, "csv", **q).body)
                self.assertEqual([x[1] for x in rows], [guarded(s) for s in want], "csv")
                tasks = json.loads(self.ok_export(self.DS, "label-studio", **q).body)
                self.assertEqual([t["data"]["focald_id"] for t in tasks],
                                 [s for s in want if ls_image(self.meta.get(s, {}).get("uri"))], "label-studio")
                tasks = json.loads(self.ok_export(self.DS, "label-studio", local_files_root="/data", **q).body)
                self.assertEqual([t["data"]["focald_id"] for t in tasks],
                                 [s for s in want if ls_image(self.meta.get(s, {}).get("uri"), "/data")], "label-studio")
                _, fo = parse_csv(self.ok_export(self.DS, "fiftyone", **q).body)
                self.assertEqual([x[3] for x in fo], [guarded(s) for s in want if fiftyone_path(self.meta.get(s, {}).get("uri"))],
                                 "fiftyone: the samples with a local file")
                oh = parse_jsonl(self.ok_export(self.DS, "ohif", **q).body)
                self.assertEqual([x["id"] for x in oh],
                                 [s for s in want if "study_uid" in self.meta.get(s, {})], "ohif")

    def test_export_label_studio_task_shape(self):
        for q in ({}, {"by": "confidence"}, {"by": "aum", "run": "r1"}, {"by": "correctness"},
                  {"by": "variability", "status": ALL_STATES}):
            with self.subTest(query=q):
                r = self.ok_export(self.DS, "label-studio", local_files_root="/data/", **q)
                tasks = json.loads(r.body)
                items = [dict(it, rank=i + 1) for i, it in enumerate(
                    it for it in self.hard_items(**q) if ls_image(self.meta.get(it["id"], {}).get("uri"), "/data"))]
                self.assertIsInstance(tasks, list)
                self.assertEqual(len(tasks), len(items))
                check_label_studio_import(self, tasks)
                run = q.get("run", "*")
                for t, it in zip(tasks, items):
                    self.assertIsInstance(t["data"], dict)
                    self.assertIsInstance(t["predictions"], list)
                    self.assertEqual(len(t["predictions"]), 1)
                    p = t["predictions"][0]
                    self.assertEqual(set(p), {"model_version", "score", "result"})
                    self.assertEqual(p["model_version"], run)
                    self.assertIsInstance(p["score"], (int, float))
                    self.assertTrue(0.0 <= p["score"] <= 1.0, p)
                    self.assertIsInstance(p["result"], list)
                    data = t["data"]
                    m = self.meta.get(it["id"], {})
                    self.assertEqual((data["focald_id"], data["focald_dataset"], data["focald_rank"],
                                      data["focald_score"], data["focald_label"], data["focald_status"]),
                                     (it["id"], self.DS, it["rank"], it["score"], it["label"], it["status"]))
                    self.assertEqual(data["image"], ls_image(m.get("uri"), "/data"))
                    for k, v in m.items():
                        self.assertEqual(data[k], v)
                    self.assertEqual("viewer_url" in data, "study_uid" in m)
                # Label Studio lists the lowest prediction score first: that must be the hardest
                scores = [t["predictions"][0]["score"] for t in tasks]
                self.assertEqual(scores, sorted(scores), "ascending by score must be hardest first")
                by = q.get("by", "mean_loss")
                for t, it in zip(tasks, items):
                    s = it["score"]
                    want = {"confidence": s, "correctness": s, "aum": 1 / (1 + math.exp(-s))}.get(
                        by, math.exp(-s) if s > 0 else 1.0)
                    self.assertClose(t["predictions"][0]["score"], want, by, rel=1e-5)

    def test_export_label_studio_scores_separate_distinct_difficulties(self):
        tasks = json.loads(self.ok_export(self.DS, "label-studio").body)
        scores = [t["predictions"][0]["score"] for t in tasks]
        items = [it for it in self.hard_items() if ls_image(self.meta.get(it["id"], {}).get("uri"))]
        self.assertEqual(len(set(scores)), len(set(it["score"] for it in items)),
                         "distinct losses must map to distinct Label Studio scores")

    def test_export_label_studio_every_task_passes_import_validation(self):
        """Every task of every query passes Label Studio's task validation and names an image it can load;
        the samples left out are counted in the Focald-Skipped trailer."""
        for root in (None, "/data", "/"):
            for q in self.QUERIES + [{"queue": "q"}]:
                with self.subTest(root=root, query=q):
                    params = dict(q, local_files_root=root) if root else q
                    body, skipped = self.skipped(self.DS, "label-studio", **params)
                    tasks = json.loads(body)
                    if tasks:
                        check_label_studio_import(self, tasks)
                    else:
                        self.assertEqual(body, b"[]\n")
                    want = [it["id"] for it in (self.get_queue(self.DS, "q").json()["items"] if "queue" in q
                                                else self.hard_items(**q))]
                    kept = [s for s in want if ls_image(self.meta.get(s, {}).get("uri"), root)]
                    self.assertEqual([t["data"]["focald_id"] for t in tasks], kept)
                    self.assertEqual(skipped, len(want) - len(kept))
                    self.assertEqual([t["data"]["focald_rank"] for t in tasks], list(range(1, len(kept) + 1)))

    def test_export_label_studio_local_files_root(self):
        """With local_files_root (Label Studio's LOCAL_FILES_DOCUMENT_ROOT), local paths become the local-files
        URLs Label Studio serves: d is the path relative to the root, percent-encoded; URLs pass as they are."""
        ds = self.ds_name()
        cases = [("u1", "https://host/a b.png", "https://host/a b.png"),
                 ("u2", "s3://bucket/k.png", "s3://bucket/k.png"),
                 ("u3", "gs://bucket/k.png", "gs://bucket/k.png"),
                 ("a1", "/srv/ls/imgs/a b.png", "/data/local-files/?d=imgs/a%20b.png"),
                 ("a2", "/srv/ls/ünï/ç?#&.png", "/data/local-files/?d=%C3%BCn%C3%AF/%C3%A7%3F%23%26.png"),
                 ("a3", "/srv/ls//x/./y.png", "/data/local-files/?d=x/y.png"),
                 ("r1", "imgs/c.png", "/data/local-files/?d=imgs/c.png"),
                 ("r2", "./c d.png", "/data/local-files/?d=c%20d.png"),
                 ("f1", "file:///srv/ls/f%20g.png", "/data/local-files/?d=f%20g.png"),
                 ("f2", "file:/srv/ls/h.png", "/data/local-files/?d=h.png"),  # RFC 8089's file:/path (was left out)
                 ("o1", "/srv/lsx/a.png", None),      # outside the root, though it starts like it
                 ("o2", "/etc/passwd", None),
                 ("o3", "../up.png", None),            # .. could leave the root
                 ("o4", "/srv/ls/a/../../b.png", None),
                 ("o5", "file://otherhost/srv/ls/a.png", None),
                 ("n1", None, None)]
        meta = {sid: ({"uri": uri} if uri else {"site": "x"}) for sid, uri, _ in cases}
        self.plant(ds, [(sid, 0, -2.0 + 0.1 * i) for i, (sid, _, _) in enumerate(cases)], meta=meta)
        for root in ("/srv/ls", "/srv/ls/", "/srv//ls"):
            with self.subTest(root=root):
                body, skipped = self.skipped(ds, "label-studio", local_files_root=root)
                tasks = json.loads(body)
                check_label_studio_import(self, tasks)
                got = {t["data"]["focald_id"]: t["data"]["image"] for t in tasks}
                self.assertEqual(got, {sid: want for sid, _, want in cases if want}, root)
                self.assertEqual(skipped, sum(1 for _, _, want in cases if not want))
                for t in tasks:
                    self.assertEqual(t["data"].get("uri"), meta[t["data"]["focald_id"]]["uri"], "the meta stays as given")
        # without a root, only the URLs: Label Studio cannot open a bare path
        body, skipped = self.skipped(ds, "label-studio")
        self.assertEqual([t["data"]["focald_id"] for t in json.loads(body)], ["u1", "u2", "u3"])
        self.assertEqual(skipped, len(cases) - 3)
        # the root "/" (Label Studio's default document root): every absolute path, relative to /
        tasks = json.loads(self.ok_export(ds, "label-studio", local_files_root="/").body)
        self.assertEqual({t["data"]["focald_id"]: t["data"]["image"] for t in tasks}["o2"], "/data/local-files/?d=etc/passwd")

    def test_export_label_studio_writes_only_urls_it_opens_safely(self):
        """A task's image reaches the annotator's browser as given: only http(s) and Label Studio's cloud storage
        schemes (s3, gs, azure-blob) with a host, and its own local-files links below the document root, are
        written; every other scheme (script, inline data, local and other URLs) leaves the sample out, counted."""
        ds = self.ds_name()
        ok = ["http://h/a.png", "HTTPS://h/a.png", "s3://b/k.png", "S3://b/k.png", "gs://b/k.png",
              "azure-blob://c/k.png", "Azure-Blob://c/d/k.png", "https://h:8080/a.png?x=1#f",
              "/data/local-files/?d=imgs/a%20b.png", "/data/local-files/?d=a/..b/c.png"]
        refused = ["javascript:alert(1)", "JavaScript:alert(1)", "javascript://h/%0aalert(1)", "data:image/png;base64,AAAA",
                   "data:text/html,<script>alert(1)</script>", "vbscript:msgbox(1)", "blob:http://h/uuid", "ftp://h/a.png",
                   "about:blank", "file://otherhost/a.png", "http:a.png", "https:///a.png", "s3:/b/k.png", "gs:b",
                   "azure-blob:///k.png", "http://", "ws://h/a", "jar:http://h/a!/b", "x-javascript:1",
                   "/data/local-files/?d=../etc/passwd", "/data/local-files/?d=a/%2e%2e/b", "/data/local-files/?d=",
                   "/data/local-files/?d=/etc/passwd", "/data/local-files/?d=a.png&x=1", "/data/local-files/?d=a%00b"]
        ids = ["ok%02d" % i for i in range(len(ok))] + ["no%02d" % i for i in range(len(refused))]
        meta = {sid: {"uri": uri} for sid, uri in zip(ids, ok + refused)}
        self.plant(ds, [(sid, 0, -2.0 + 0.05 * i) for i, sid in enumerate(ids)], meta=meta)
        for root in (None, "/"):
            with self.subTest(root=root):
                body, skipped = self.skipped(ds, "label-studio", **({"local_files_root": root} if root else {}))
                tasks = json.loads(body)
                check_label_studio_import(self, tasks)
                got = {t["data"]["focald_id"]: t["data"]["image"] for t in tasks}
                want = {sid: ls_image(meta[sid]["uri"], root) for sid in ids if ls_image(meta[sid]["uri"], root)}
                self.assertEqual(got, want)
                self.assertEqual(skipped, len(ids) - len(want))
                for image in got.values():
                    self.assertRegex(image, r"^((?i:https?|s3|gs|azure-blob)://[^/?#\\]|/data/local-files/\?d=[^/&#])")
        # without a root, exactly the safe URLs and links; under the root "/" a refused "URL" that is a path
        # (no scheme) is a local-files link to a file of that name, never the URL
        self.assertEqual({sid: ls_image(meta[sid]["uri"]) for sid in ids if ls_image(meta[sid]["uri"])}, dict(zip(ids, ok)))
        # a blank before the scheme makes it no URL: a relative path, written as a local-files link under a root
        self.plant(ds, [("sp", 0, 3.0)], step=2, meta={"sp": {"uri": " javascript:alert(1)"}})
        tasks = json.loads(self.ok_export(ds, "label-studio", local_files_root="/srv").body)
        self.assertEqual([t["data"]["image"] for t in tasks if t["data"]["focald_id"] == "sp"],
                         ["/data/local-files/?d=%20javascript%3Aalert%281%29"])
        self.assertNotIn("sp", [t["data"]["focald_id"] for t in json.loads(self.ok_export(ds, "label-studio").body)])
        # the stored meta is untouched: the sample reads back with its uri as given
        self.assertEqual(self.d.get(self.sample_path(ds, "no00")).json()["meta"], {"uri": "javascript:alert(1)"})

    def test_export_label_studio_empty_is_an_empty_array(self):
        ds = self.ds_name()
        self.plant(ds, [("p1", 0, -1.0), ("p2", 1, 0.5)], meta={"p1": {"uri": "/local/p1.png"}})
        body, skipped = self.skipped(ds, "label-studio")
        self.assertEqual((body, skipped), (b"[]\n", 2))
        body, skipped = self.skipped(ds, "label-studio", label="7")
        self.assertEqual((body, skipped), (b"[]\n", 0))
        body, skipped = self.skipped(ds, "label-studio", local_files_root="/local")
        self.assertEqual(body.count(b"\n"), 3, body)  # "[", one task a line, "]"
        self.assertEqual(([t["data"]["image"] for t in json.loads(body)], skipped), (["/data/local-files/?d=p1.png"], 1))

    def test_export_every_format_counts_what_it_leaves_out(self):
        """The count travels in the chunked response's trailer (Focald-Skipped), declared by a Trailer header."""
        items = self.hard_items(status=ALL_STATES)
        uri = lambda it: self.meta.get(it["id"], {}).get("uri")
        want = {"csv": 0, "jsonl": 0,
                "label-studio": sum(1 for it in items if not ls_image(uri(it))),
                "fiftyone": sum(1 for it in items if not fiftyone_path(uri(it))),
                "ohif": sum(1 for it in items if "study_uid" not in self.meta.get(it["id"], {}))}
        for fmt, n in want.items():
            with self.subTest(fmt=fmt):
                self.assertEqual(self.skipped(self.DS, fmt, status=ALL_STATES)[1], n)
                if fmt != "csv" and fmt != "jsonl":
                    self.assertGreater(n, 0)
        # with k, what was looked at before the k-th row written
        body, skipped = self.skipped(self.DS, "ohif", status=ALL_STATES, k=1)
        first = next(i for i, it in enumerate(items) if "study_uid" in self.meta.get(it["id"], {}))
        self.assertEqual((len(parse_jsonl(body)), skipped), (1, first))

    def test_export_csv_guards_formulas_in_text_cells_only(self):
        """OWASP's CSV injection rule: a text cell starting with =, +, -, @, tab or carriage return gets a leading
        single quote and is quoted; numeric cells (a negative aum, score) are numbers and stay as they are."""
        body = self.ok_export(self.DS, "csv", status=ALL_STATES).body
        header, rows = parse_csv(body)
        byid = {r[1]: dict(zip(header, r)) for r in rows}
        for sid in ("@34", "-35", "=SUM(1+1)", "+37"):
            self.assertIn(("'" + sid), byid, sid)
            self.assertIn(b",\"'" + sid.encode() + b"\",", body)
        self.assertEqual(byid["e06"]["patient_id"], "'=1+2")
        self.assertEqual(byid["e12"]["patient_id"], "'\tP12")
        self.assertIn(b",\"'\tP12\",", body)
        self.assertEqual(byid["e14"]["uri"], "'-14.png")
        for r in byid.values():
            for col in ("rank", "score", "seen", "mean_loss", "aum", "label", "first_step"):
                self.assertFalse(r[col].startswith("'"), (col, r[col]))
        # a negative aum (the target's logit below another's) is a number, written as one
        ds = self.ds_name()
        self.plant(ds, [("-n1", 0, -3.5), ("n2", 1, -2.5), ("n3", 2, -1.0)], meta={"-n1": {"uri": "/a/-n1.png"}})
        header, rows2 = parse_csv(self.ok_export(ds, "csv").body)
        aum = {r[1]: r[header.index("aum")] for r in rows2}
        self.assertEqual(aum, {"'-n1": "-1.5", "n2": "-0.5", "n3": "1"})
        _, fo2 = parse_csv(self.ok_export(ds, "fiftyone").body)
        self.assertEqual([(r[0], r[3]) for r in fo2], [("/a/-n1.png", "'-n1")])
        # every text cell of the CSV formats, checked once more over the whole body
        _, fo = parse_csv(self.ok_export(self.DS, "fiftyone", status=ALL_STATES).body)
        for table in (rows, fo):
            for r in table:
                for cell in r:
                    self.assertFalse(cell[:1] in ("=", "+", "@", "\t", "\r") or (cell[:1] == "-" and fnum_or_none(cell) is None),
                                     "unguarded cell %r" % cell)

    def test_export_fiftyone_is_a_csv_dataset(self):
        """FiftyOne's CSVDataset (fiftyone.utils.csv.CSVDatasetImporter): a header row naming the columns, the
        media in "filepath" (absolute, or relative to the importer's data_path), one row per sample whose file
        FiftyOne can find, RFC 4180 quoting that Python's csv module (FiftyOne's reader) reads back."""
        cols = ["filepath", "ground_truth", "hardness", "focald_id", "focald_rank", "focald_status", "mean_loss",
                "label_issue"]
        for q in ({}, {"by": "aum"}, {"status": ALL_STATES}):
            with self.subTest(query=q):
                body, skipped = self.skipped(self.DS, "fiftyone", **q)
                header, rows = parse_csv(body)
                self.assertEqual(header, cols)
                # what FiftyOne's importer does with the file: csv.DictReader over it, filepath required
                records = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
                items = [dict(it, rank=i + 1) for i, it in enumerate(
                    it for it in self.hard_items(**q) if fiftyone_path(self.meta.get(it["id"], {}).get("uri")))]
                self.assertGreater(len(items), 3)
                self.assertEqual(skipped, len(self.hard_items(**q)) - len(items), "the samples without a local file")
                self.assertEqual(len(records), len(items))
                for x, it in zip(records, items):
                    self.assertEqual(len(x), len(cols))
                    self.assertEqual(x["filepath"], fiftyone_path(self.meta[it["id"]]["uri"]))
                    self.assertFalse(has_scheme(x["filepath"]), x)
                    self.assertEqual(x["ground_truth"], "" if it["label"] is None else str(it["label"]))
                    self.assertEqual((fnum(x["hardness"]), fnum(x["mean_loss"])), (it["score"], it["mean_loss"]))
                    self.assertEqual((x["focald_id"], int(x["focald_rank"]), x["focald_status"], x["label_issue"]),
                                     (guarded(it["id"]), it["rank"], it["status"], str(it["label_issue"]).lower()))
        # the media paths as FiftyOne gets them: absolute and relative paths as they are, a file: URL as its path
        _, rows = parse_csv(self.ok_export(self.DS, "fiftyone", status=ALL_STATES).body)
        paths = {r[0] for r in rows}
        self.assertTrue({"/data/scans/2.png", "scans/6 b.png", "/data/scans/10 x.png"} <= paths, paths)
        self.assertFalse({p for p in paths if p.startswith(("s3:", "gs:", "-"))}, paths)

    def test_export_fiftyone_refuses_dot_dot_segments(self):
        """A path with a ".." segment can leave the data_path FiftyOne looks it up under, and "a/link/../b" is not
        always "a/b" on disk: such a sample is left out (counted), never written resolved or as given. A name that
        merely contains dots is a name."""
        ds = self.ds_name()
        refused = ["/data/../etc/passwd", "../up.png", "a/../../b.png", "..", "/a/..", "a/../b.png", "/a/b/../",
                   "file:///data/%2e%2e/etc/passwd", "file:///data/%2E%2E/x.png", "file://localhost/a/../b.png",
                   "a\\..\\b.png", "C:\\data\\..\\x.png", "..\\x.png"]
        kept = ["/a/..b.png", "/a/b..png", "/a/.../c.png", "./c.png", "/a/./b.png", "..png", "a/.x/..y", "/a//b.png",
                "file:///a/%2e%2e.png"]
        ids = ["no%02d" % i for i in range(len(refused))] + ["ok%02d" % i for i in range(len(kept))]
        meta = {sid: {"uri": uri} for sid, uri in zip(ids, refused + kept)}
        self.plant(ds, [(sid, 0, -2.0 + 0.05 * i) for i, sid in enumerate(ids)], meta=meta)
        body, skipped = self.skipped(ds, "fiftyone")
        _, rows = parse_csv(body)
        got = {r[3]: r[0] for r in rows}
        want = {sid: fiftyone_path(uri) for sid, uri in zip(ids, refused + kept) if fiftyone_path(uri)}
        self.assertEqual(set(want), set(ids[len(refused):]), "the model keeps exactly the names with dots")
        self.assertEqual(got, want)
        self.assertEqual(got["ok08"], "/a/...png")
        self.assertEqual(skipped, len(refused))
        # the same rule in Label Studio's local-files links, whatever the root
        tasks = json.loads(self.ok_export(ds, "label-studio", local_files_root="/").body)
        self.assertFalse([t["data"]["image"] for t in tasks if t["data"]["focald_id"].startswith("no")])

    def test_export_ohif_only_studies_with_default_viewer(self):
        lines = parse_jsonl(self.ok_export(self.DS, "ohif", status=ALL_STATES).body)
        items = [it for it in self.hard_items(status=ALL_STATES) if "study_uid" in self.meta.get(it["id"], {})]
        self.assertGreater(len(items), 5)
        self.assertEqual([x["id"] for x in lines], [it["id"] for it in items])
        self.assertEqual([x["rank"] for x in lines], list(range(1, len(lines) + 1)))
        for x, it in zip(lines, items):
            m = self.meta[it["id"]]
            self.assertEqual(set(x), {"id", "rank", "score", "study_uid", "series_uid", "sop_uid", "patient_id", "url"})
            self.assertEqual((x["score"], x["study_uid"], x["series_uid"], x["sop_uid"], x["patient_id"]),
                             (it["score"], m["study_uid"], m.get("series_uid"), m.get("sop_uid"), m.get("patient_id")))
            u = urllib.parse.urlsplit(x["url"])
            self.assertEqual((u.scheme, u.netloc, u.path), ("http", "localhost:3000", "/viewer"))
            qs = urllib.parse.parse_qs(u.query)
            self.assertEqual(qs["StudyInstanceUIDs"], [m["study_uid"]])
            self.assertEqual(qs.get("SeriesInstanceUIDs"), [m["series_uid"]] if "series_uid" in m else None)
            # OHIF v3 opens the study on this instance (docs: configuration/url.md, initialSOPInstanceUID)
            self.assertEqual(qs.get("initialSOPInstanceUID"), [m["sop_uid"]] if "sop_uid" in m else None)

    def test_export_an_empty_study_uid_names_no_study(self):
        """study_uid "" has no viewer link in any format or in the sample's answer, and is not in the ohif
        export (it was: ".../viewer?StudyInstanceUIDs=", a link that opens nothing)."""
        ds = self.ds_name()
        self.plant(ds, [("e", 0, -1.0), ("s", 0, -1.5)], meta={"e": {"study_uid": ""}, "s": {"study_uid": "1.2.3"}})
        self.assertIsNone(self.d.sample(ds, "e").json()["viewer_url"])
        self.assertIn("1.2.3", self.d.sample(ds, "s").json()["viewer_url"])
        self.assertEqual([x["id"] for x in parse_jsonl(self.ok_export(ds, "ohif").body)], ["s"])
        urls = {x["id"]: x["viewer_url"] for x in parse_jsonl(self.ok_export(ds, "jsonl").body)}
        self.assertIsNone(urls["e"])
        self.assertIn("1.2.3", urls["s"])

    def test_export_ohif_viewer_url_is_configurable(self):
        d = self.start_daemon(args=("--viewer-url", "https://pacs.example.org/ohif//"))  # trailing slashes dropped
        ds = self.ds_name()
        self.plant(ds, [("s1", 0, -1.0), ("s2", 1, 0.0)], d=d,
                   meta={"s1": {"study_uid": "1.2.3", "series_uid": "1.2.3.4"}, "s2": {"uri": "x.png"}})
        self.plant(ds, [("s3", 0, -0.5)], d=d, step=2,
                   meta={"s3": {"study_uid": "1.2.9", "series_uid": "1.2.9.1", "sop_uid": "1.2.9.1.7"}})
        lines = parse_jsonl(self.ok_export(ds, "ohif", d=d).body)
        self.assertEqual([(x["id"], x["url"]) for x in lines],
                         [("s1", "https://pacs.example.org/ohif/viewer?StudyInstanceUIDs=1.2.3"
                                 "&SeriesInstanceUIDs=1.2.3.4"),
                          ("s3", "https://pacs.example.org/ohif/viewer?StudyInstanceUIDs=1.2.9"
                                 "&SeriesInstanceUIDs=1.2.9.1&initialSOPInstanceUID=1.2.9.1.7")])
        _, rows = parse_csv(self.ok_export(ds, "csv", d=d).body)
        self.assertEqual([r[-1] for r in rows], [lines[0]["url"], lines[1]["url"], ""])
        j = parse_jsonl(self.ok_export(ds, "jsonl", d=d).body)
        self.assertEqual([x["viewer_url"] for x in j], [lines[0]["url"], lines[1]["url"], None])
        tasks = json.loads(self.ok_export(ds, "label-studio", d=d, local_files_root="/").body)
        self.assertEqual([t["data"].get("viewer_url") for t in tasks], [None])  # only s2 has an image
        self.assertNotIn("//viewer", json.dumps(lines))

    def test_export_queue_in_queue_order(self):
        q = self.get_queue(self.DS, "q").json()
        want = [it["id"] for it in q["items"]]
        self.assertEqual(len(want), 6)
        for fmt, ids_of in (("csv", lambda b: [x[1].lstrip("'") for x in parse_csv(b)[1]]),
                            ("jsonl", lambda b: [x["id"] for x in parse_jsonl(b)]),
                            ("label-studio", lambda b: [t["data"]["focald_id"] for t in json.loads(b)]),
                            ("fiftyone", lambda b: [x[3] for x in parse_csv(b)[1]])):
            uri = lambda s: self.meta.get(s, {}).get("uri")
            expect = {"fiftyone": [guarded(s) for s in want if fiftyone_path(uri(s))],
                      "label-studio": [s for s in want if ls_image(uri(s))]}.get(fmt, want)
            self.assertEqual(ids_of(self.ok_export(self.DS, fmt, queue="q").body), expect, fmt)
            self.assertEqual(ids_of(self.ok_export(self.DS, fmt, queue="q", k=4).body), expect[:4], fmt)
        lines = parse_jsonl(self.ok_export(self.DS, "jsonl", queue="q").body)
        self.assertEqual([(x["rank"], x["score"]) for x in lines],
                         [(it["position"], it["score"]) for it in q["items"]])

    def test_export_k_limits_the_count(self):
        items = self.hard_items(status=ALL_STATES)
        for k in (1, 5, len(items), len(items) + 10):
            n = min(k, len(items))
            with self.subTest(k=k):
                _, rows = parse_csv(self.ok_export(self.DS, "csv", k=k, status=ALL_STATES).body)
                self.assertEqual([x[1] for x in rows], [guarded(it["id"]) for it in items[:n]])
                with_image = [it for it in items if ls_image(self.meta.get(it["id"], {}).get("uri"))]
                self.assertEqual(len(json.loads(self.ok_export(self.DS, "label-studio", k=k,
                                                               status=ALL_STATES).body)), min(k, len(with_image)))
                self.assertEqual(len(parse_jsonl(self.ok_export(self.DS, "jsonl", k=k, status=ALL_STATES).body)), n)
                with_file = [it for it in items if fiftyone_path(self.meta.get(it["id"], {}).get("uri"))]
                self.assertEqual(len(parse_csv(self.ok_export(self.DS, "fiftyone", k=k,
                                                              status=ALL_STATES).body)[1]), min(k, len(with_file)))
        oh = parse_jsonl(self.ok_export(self.DS, "ohif", k=3, status=ALL_STATES).body)
        self.assertEqual(len(oh), 3, "k counts the rows of the ohif export")

    def test_export_errors_before_streaming(self):
        cases = [({}, 400, "bad_query", "format"), ({"format": "xml"}, 400, "bad_query", "format"),
                 ({"format": "CSV"}, 400, "bad_query", "format"),
                 ({"format": "csv", "by": "nope"}, 400, "bad_query", "by"),
                 ({"format": "csv", "status": "nope"}, 400, "bad_query", "status"),
                 ({"format": "csv", "label": "-1"}, 400, "bad_query", "label"),
                 ({"format": "csv", "min_seen": "0"}, 400, "bad_query", "min_seen"),
                 ({"format": "csv", "k": "0"}, 400, "bad_query", "k"),
                 ({"format": "csv", "k": "ten"}, 400, "bad_query", "k"),
                 ({"format": "csv", "run": "a b"}, 400, "bad_query", "run"),
                 ({"format": "csv", "queue": "a b"}, 400, "bad_query", "queue"),
                 ({"format": "csv", "order": "up"}, 400, "bad_query", "order"),
                 ({"format": "csv", "queue": "q", "order": "asc"}, 400, "bad_query", "queue"),
                 ({"format": "jsonl", "queue": "nope"}, 404, "not_found", "queue"),
                 ({"format": "label-studio", "run": "nope"}, 404, "run_not_found", "run"),
                 ({"format": "csv", "local_files_root": "/data"}, 400, "bad_query", "local_files_root"),
                 ({"format": "fiftyone", "local_files_root": "/data"}, 400, "bad_query", "local_files_root"),
                 ({"format": "label-studio", "local_files_root": "data"}, 400, "bad_query", "local_files_root"),
                 ({"format": "label-studio", "local_files_root": ""}, 400, "bad_query", "local_files_root"),
                 ({"format": "label-studio", "local_files_root": "/data/../etc"}, 400, "bad_query", "local_files_root"),
                 ({"format": "label-studio", "local_files_root": "/data/./x"}, 400, "bad_query", "local_files_root")]
        for params, status, code, field in cases:
            with self.subTest(params=params):
                r = self.d.get("/v1/datasets/%s/export?%s" % (self.DS, urllib.parse.urlencode(params)))
                self.assertProblem(r, status, code, field)
                self.assertIsNone(r.header("Content-Disposition"))
        self.assertProblem(self.export("no-such-ds", format="csv"), 404, "dataset_not_found")


class LargeMetaPageTest(ReviewTestCase):
    """Samples with meta near its 64 KiB limit: a page of hard-examples or of a queue ends once its JSON passes
    16 MiB (400 such samples are 24 MB), and the cursor, or the offset moved on by the items returned, gives
    the rest: every sample once, in order."""
    DS = "bigmeta"
    N = 400

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for start in range(0, cls.N, 100):
            sub = ["g%03d" % i for i in range(start, start + 100)]
            cls.d.ok_batch(cls.DS, {"run": "r1", "step": 1, "ids": sub, "targets": [0] * 100,
                                    "logits": [row(0, -4.0 + 0.01 * i, c=2) for i in range(start, start + 100)],
                                    "meta": {s: {"note": s * 15000} for s in sub}})

    def test_hard_examples_page_ends_at_16_mib_and_the_cursor_goes_on(self):
        r = self.d.get("/v1/datasets/%s/hard-examples?k=%d" % (self.DS, self.N))
        self.assertEqual(r.status, 200, r)
        first = r.json()
        self.assertLess(len(first["items"]), self.N)
        self.assertGreater(len(first["items"]), 200)
        self.assertLess(len(r.body), 17 << 20)
        self.assertIsNotNone(first["next_cursor"])
        items = self.d.all_hard(self.DS, page=self.N)
        self.assertEqual([it["id"] for it in items], ["g%03d" % i for i in range(self.N)])
        self.assertEqual([it["rank"] for it in items], list(range(1, self.N + 1)))
        self.assertTrue(all(it["meta"]["note"] == it["id"] * 15000 for it in items))

    def test_queue_page_ends_at_16_mib_and_the_offset_goes_on(self):
        self.ok_queue(self.DS, {"name": "all", "size": self.N})
        self.addCleanup(lambda: self.d.delete("/v1/datasets/%s/queues/all" % self.DS))
        r = self.get_queue(self.DS, "all", limit=self.N)
        self.assertEqual(r.status, 200, r)
        page = r.json()["items"]
        self.assertLess(len(page), self.N)
        self.assertLess(len(r.body), 17 << 20)
        got, offset = [], 0
        while offset < self.N:
            page = self.get_queue(self.DS, "all", offset=offset, limit=self.N).json()["items"]
            self.assertTrue(page)
            self.assertEqual(page[0]["position"], offset + 1)
            got += page
            offset += len(page)
        self.assertEqual([it["id"] for it in got], ["g%03d" % i for i in range(self.N)])


class LargeExportTest(ReviewTestCase):
    """An export spanning several of export.c's internal pages (each one ranking query of a few thousand
    samples), with long runs of tied scores across the page boundaries, is complete and in hard-examples'
    order; so is a queue export of as many positions."""
    DS = "large"
    N = 9000

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        ids = ["x%05d" % ((i * 7919) % cls.N) for i in range(cls.N)]
        for start in range(0, cls.N, 1500):
            sub = ids[start:start + 1500]
            # 13 distinct difficulties: ties of 200 samples, ordered by id
            cls.d.ok_batch(cls.DS, {"run": "r1", "step": 1, "ids": sub, "targets": [0] * len(sub),
                                    "logits": [row(0, -2.0 + 0.25 * (i % 13), c=2) for i in range(start,
                                                                                               start + len(sub))],
                                    "meta": {s: {"uri": "f/%s.png" % s, "study_uid": "1.%s" % s[1:]}
                                             for s in sub[::5]}})
        for sid in ids[:20]:
            r = cls.d.post("/v1/datasets/%s/samples/%s/review" % (cls.DS, sid), {"status": "dismissed"})
            assert r.status == 200, r

    def test_large_export_is_complete_and_in_order(self):
        want = self.hard_ids(self.DS)
        self.assertEqual(len(want), self.N - 20)
        lines = parse_jsonl(self.ok_export(self.DS, "jsonl").body)
        self.assertEqual([x["id"] for x in lines], want)
        self.assertEqual([x["rank"] for x in lines], list(range(1, len(want) + 1)))
        _, rows = parse_csv(self.ok_export(self.DS, "csv", status=ALL_STATES).body)
        self.assertEqual([x[1] for x in rows], self.hard_ids(self.DS, status=ALL_STATES))
        # the samples with a uri (a relative path), as Label Studio's local-files URLs under the root /
        with_uri = {it["id"] for it in self.d.all_hard(self.DS) if "uri" in it["meta"]}
        body, skipped = self.skipped(self.DS, "label-studio", by="confidence", local_files_root="/")
        tasks = json.loads(body)
        want = self.hard_ids(self.DS, by="confidence")
        self.assertEqual([t["data"]["focald_id"] for t in tasks], [s for s in want if s in with_uri])
        self.assertEqual(skipped, len(want) - len(tasks))
        self.assertTrue(all(t["data"]["image"] == "/data/local-files/?d=f/%s.png" % t["data"]["focald_id"] for t in tasks))

    def test_large_export_with_k_across_a_page_boundary(self):
        want = self.hard_ids(self.DS)
        for k in (999, 1000, 1001, 4095, 4096, 4097, 8193):
            lines = parse_jsonl(self.ok_export(self.DS, "jsonl", k=k).body)
            self.assertEqual([x["id"] for x in lines], want[:k], "k=%d" % k)
        studies = {it["id"] for it in self.d.all_hard(self.DS) if "study_uid" in it["meta"]}
        oh = parse_jsonl(self.ok_export(self.DS, "ohif").body)
        self.assertGreater(len(oh), 1700)
        self.assertEqual([x["id"] for x in oh], [s for s in want if s in studies])
        self.assertEqual([x["rank"] for x in oh], list(range(1, len(oh) + 1)))

    def test_large_queue_export_in_queue_order(self):
        ds = self.ds_name()
        ids = ["y%05d" % i for i in range(9500)]
        for start in range(0, len(ids), 1900):
            sub = ids[start:start + 1900]
            self.d.ok_batch(ds, {"run": "r1", "step": 1, "ids": sub, "targets": [0] * len(sub), "logits": [
                row(0, -2.0 + 0.5 * ((start + i) % 9), c=2) for i in range(len(sub))]})
        self.ok_queue(ds, {"name": "big", "size": 9000})
        want = self.queue_ids(ds, "big")
        self.assertEqual(len(want), 9000)
        # scores change after the queue was built; the export follows the queue, not the new ranking
        self.d.ok_batch(ds, {"run": "r1", "step": 2, "ids": want[:500], "targets": [0] * 500,
                             "logits": [row(0, 5.0, c=2)] * 500})
        lines = parse_jsonl(self.ok_export(ds, "jsonl", queue="big").body)
        self.assertEqual([x["id"] for x in lines], want)
        _, rows = parse_csv(self.ok_export(ds, "csv", queue="big", k=4500).body)
        self.assertEqual([x[1] for x in rows], want[:4500])


# ---------------------------------------------------------------------------- restarts

class PersistenceTest(ReviewTestCase):
    """Each test runs its own daemons on its own database."""
    class_daemon = False

    IDS = ["p%d" % i for i in range(12)]

    def first_phase(self, d, ds):
        """Batches only: the history the review changes act on."""
        self.plant(ds, [(s, i % 3, -2.0 + 0.3 * i) for i, s in enumerate(self.IDS)], d=d,
                   meta={"p0": {"uri": "a.png", "patient_id": "A"}, "p1": {"patient_id": "A"}})
        self.plant(ds, [(s, i % 3, -2.0 + 0.35 * i) for i, s in enumerate(self.IDS)], run="r2", step=2, d=d)

    def review_phase(self, d, ds):
        """Reviews, a relabel and its withdrawal, meta by PUT, two queues (one deleted), stale labels."""
        self.ok_review(ds, "p0", "in_review", d=d, reviewer="ann", note="first look")
        self.ok_review(ds, "p0", "relabelled", d=d, label=2, reviewer="ann")
        self.ok_review(ds, "p3", "relabelled", d=d, label="cat")
        self.ok_review(ds, "p3", "open", d=d, reviewer="bob", note="undo")
        self.ok_review(ds, "p4", "confirmed", d=d)
        self.ok_review(ds, "p5", "dismissed", d=d, note="blurred")
        self.assertEqual(self.put_meta(ds, "p6", {"study_uid": "9.8.7", "uri": "p6.dcm"}, d=d).status, 200)
        self.assertEqual(self.put_meta(ds, "p1", {"patient_id": "B"}, d=d).status, 200)
        self.ok_queue(ds, {"name": "work", "size": 4, "dedupe_by": "patient_id", "max_per_label": 2}, d=d)
        self.ok_queue(ds, {"name": "gone", "size": 2}, d=d)
        self.assertEqual(d.delete("/v1/datasets/%s/queues/gone" % ds).status, 200)
        q = self.queue_ids(ds, "work", d=d)
        self.ok_review(ds, q[0], "confirmed", d=d)
        self.ok_review(ds, q[1], "in_review", d=d)
        # a batch after the relabel that still sends p0's old label (0): one stale label in r1
        self.plant(ds, [("p0", 0, -1.0), ("p7", 1, -1.0)], step=3, d=d)

    def state(self, d, ds):
        out = {"queues": d.get("/v1/datasets/%s/queues" % ds).json(),
               "work": self.get_queue(ds, "work", d=d).json(),
               "gone": self.get_queue(ds, "gone", d=d).status,
               "feed": self.feed_all(ds, d=d),
               "hard": d.all_hard(ds),
               "hard all": d.all_hard(ds, status=ALL_STATES),
               "csv": self.ok_export(ds, "csv", d=d, status=ALL_STATES).body,
               "label-studio": self.ok_export(ds, "label-studio", d=d, queue="work").body}
        for sid in self.IDS:
            out["sample " + sid] = d.sample(ds, sid).json()
            out["audit " + sid] = self.audit(ds, sid, d=d)
        return out

    def check_state(self, before):
        """The state a review phase must have left (independent of restarts)."""
        self.assertEqual(before["sample p0"]["corrected_label"], 2)
        self.assertEqual({r["run"]: r["stale_labels"] for r in before["sample p0"]["runs"]}, {"r1": 1, "r2": 0})
        self.assertEqual(before["sample p6"]["meta"], {"study_uid": "9.8.7", "uri": "p6.dcm"})
        self.assertEqual([(e["id"], e["withdrawn"]) for e in before["feed"][0]],
                         [("p0", False), ("p3", False), ("p3", True)])
        self.assertEqual(len(before["audit p0"]["reviews"]), 2)
        self.assertEqual(before["work"]["reviewed"], 1)
        self.assertEqual(before["gone"], 404)

    def compare(self, before, after):
        for k in before:
            self.assertEqual(after[k], before[k], "after restart: %s differs" % k)

    def test_restart_after_sigterm_keeps_reviews_audit_queues_meta_and_corrections(self):
        d = self.start_daemon()
        ds = "keep"
        self.first_phase(d, ds)
        self.review_phase(d, ds)
        before = self.state(d, ds)
        self.check_state(before)
        self.assertEqual(d.stop(), 0)
        d2 = self.start_daemon(db_dir=d.db_dir)
        self.compare(before, self.state(d2, ds))
        # and it carries on: the feed's cursor from before the restart, queue names, transitions
        cursor = before["feed"][1]
        self.ok_review(ds, "p8", "relabelled", d=d2, label=0)
        got = self.feed(ds, d=d2, since=cursor).json()["relabels"]
        self.assertEqual([(e["id"], e["label"]) for e in got], [("p8", 0)])
        self.assertProblem(self.make_queue(ds, {"name": "work"}, d=d2), 409, "conflict", "/name")
        self.assertProblem(self.review(ds, "p4", "dismissed", d=d2), 409, "conflict", "/status")
        self.plant(ds, [("p0", 0, 0.0)], step=4, d=d2)
        self.assertEqual(d2.sample(ds, "p0", run="r1").json()["runs"][0]["stale_labels"], 2)

    def test_restart_after_sigkill_keeps_reviews_audit_queues_meta_and_corrections(self):
        d = self.start_daemon(args=("--snapshot-interval", "3600"))
        ds = "killed"
        self.first_phase(d, ds)
        # the batches' history reaches the history tables; the review phase then lives in the log only
        self.assertEqual(d.stop(), 0)
        d = self.start_daemon(db_dir=d.db_dir, args=("--snapshot-interval", "3600"))
        self.review_phase(d, ds)
        before = self.state(d, ds)
        self.check_state(before)
        self.assertEqual(d.kill9(), -signal.SIGKILL)
        d2 = self.start_daemon(db_dir=d.db_dir)
        self.compare(before, self.state(d2, ds))

    def test_sigkill_right_after_a_review_keeps_it(self):
        d = self.start_daemon()
        ds = "kill-now"
        self.plant(ds, [("s", 0, 0.0), ("t", 1, 0.0)], d=d)
        j = self.ok_review(ds, "s", "relabelled", d=d, label=1, reviewer="z", note="n")
        self.assertEqual(self.put_meta(ds, "t", {"uri": "t.png"}, d=d).status, 200)
        self.assertEqual(d.kill9(), -signal.SIGKILL)
        d2 = self.start_daemon(db_dir=d.db_dir)
        a = self.audit(ds, "s", d=d2)
        self.assertEqual((a["status"], a["corrected_label"], a["reviews"][-1]["at"]), ("relabelled", 1, j["at"]))
        self.assertEqual(d2.sample(ds, "t").json()["meta"], {"uri": "t.png"})

    def test_meta_put_survives_replay_of_an_older_batch_meta(self):
        d = self.start_daemon(args=("--snapshot-interval", "3600"))
        ds = "meta-replay"
        self.plant(ds, [("s", 0, 0.0)], d=d, meta={"s": {"uri": "from-batch.png"}})
        self.assertEqual(self.put_meta(ds, "s", {"uri": "from-put.png"}, d=d).status, 200)
        self.plant(ds, [("s", 0, 0.5)], step=2, d=d)  # a later batch without meta keeps the PUT's
        self.assertEqual(d.kill9(), -signal.SIGKILL)
        d2 = self.start_daemon(db_dir=d.db_dir)
        self.assertEqual(d2.sample(ds, "s").json()["meta"], {"uri": "from-put.png"})
        self.assertEqual(d2.sample(ds, "s").json()["runs"][0]["seen"], 2)

    def test_stale_labels_after_sigkill_count_only_batches_after_the_relabel(self):
        """Batches replayed from the log after a crash are judged by the review state of their time: the
        batch before the relabel is not stale, the one after it is, and one after the withdrawal is not."""
        d = self.start_daemon(args=("--snapshot-interval", "3600"))
        ds = "stale-replay"
        self.plant(ds, [("s", 0, 0.0), ("t", 0, 0.0)], step=1, d=d)
        self.ok_review(ds, "s", "relabelled", d=d, label=2)
        self.ok_review(ds, "t", "relabelled", d=d, label=2)
        self.plant(ds, [("t", 0, 0.0)], step=2, d=d)
        self.ok_review(ds, "t", "open", d=d)
        before = {sid: d.sample(ds, sid).json()["runs"][0]["stale_labels"] for sid in ("s", "t")}
        self.assertEqual(before, {"s": 0, "t": 1})
        self.assertEqual(d.kill9(), -signal.SIGKILL)
        d2 = self.start_daemon(db_dir=d.db_dir)
        self.assertIn("replayed 2 batches", d2.log_text(), "the batches were not replayed from the log")
        after = {sid: d2.sample(ds, sid).json()["runs"][0]["stale_labels"] for sid in ("s", "t")}
        self.assertEqual(after, before)


# ---------------------------------------------------------------------------- line separators

LS, PS = "\u2028", "\u2029"


class LineSeparatorTest(ReviewTestCase):
    """U+2028 and U+2029 are valid in JSON strings, but JavaScript before ES2019 and Python's str.splitlines()
    end a line at them, which cuts a JSON Lines record in two. Every JSON body focald writes, whether the
    text came from an id, a meta value or key, or a label, holds them only escaped, and means the same."""
    DS = "seps"
    IDS = ["a" + LS + "b", "c" + PS, "plain"]
    META = {"a" + LS + "b": {"uri": "s3://b/x" + PS + ".png", "study_uid": "1.2.3", "note" + LS: "n" + PS + LS},
            "plain": {"uri": "/data/p.png", "study_uid": "1.2.4", "tags": ["t" + LS]}}
    LABEL = "dog" + PS + "cat"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.d.ok_batch(cls.DS, {"run": "r1", "step": 1, "ids": cls.IDS, "targets": [0, 1, 2],
                                "logits": [row(0, 0.0), row(1, 0.5), row(2, 1.0)], "meta": cls.META})
        r = cls.d.post("/v1/datasets/%s/samples/%s/review" % (cls.DS, harness.q(cls.IDS[0])),
                       {"status": "relabelled", "label": cls.LABEL})
        assert r.status == 200, r

    def assertNoRawSeparators(self, body, ctx):
        self.assertNotIn(LS.encode(), body, ctx)
        self.assertNotIn(PS.encode(), body, ctx)

    def test_json_bodies_escape_line_separators(self):
        ds, sid = self.DS, harness.q(self.IDS[0])
        bodies = {
            "sample": self.d.get("/v1/datasets/%s/samples/%s" % (ds, sid)),
            "hard-examples": self.d.get("/v1/datasets/%s/hard-examples?status=%s" % (ds, ALL_STATES)),
            "reviews": self.d.get("/v1/datasets/%s/samples/%s/reviews" % (ds, sid)),
            "relabels": self.d.get("/v1/datasets/%s/relabels" % ds),
        }
        for name, r in bodies.items():
            with self.subTest(route=name):
                self.assertEqual(r.status, 200, r)
                self.assertNoRawSeparators(r.body, name)
        one = bodies["sample"].json()
        self.assertEqual((one["id"], one["meta"], one["corrected_label"]), (self.IDS[0], self.META[self.IDS[0]], self.LABEL))
        items = {it["id"]: it for it in bodies["hard-examples"].json()["items"]}
        self.assertEqual(set(items), set(self.IDS))
        self.assertEqual(items["plain"]["meta"], self.META["plain"])
        self.assertEqual(bodies["reviews"].json()["reviews"][-1]["label_after"], self.LABEL)
        self.assertEqual([e["label"] for e in bodies["relabels"].json()["relabels"]], [self.LABEL])
        r = self.put_meta(ds, "c" + PS, {"k" + PS: LS})
        self.assertEqual(r.status, 200, r)
        self.assertNoRawSeparators(r.body, "PUT meta")
        self.assertEqual(r.json(), {"id": "c" + PS, "meta": {"k" + PS: LS}})
        self.assertEqual(self.put_meta(ds, "c" + PS, {}).status, 200)

    def test_json_lines_exports_split_into_their_records(self):
        for fmt, want in (("jsonl", set(self.IDS)), ("ohif", {self.IDS[0], "plain"})):
            with self.subTest(format=fmt):
                body = self.ok_export(self.DS, fmt, status=ALL_STATES).body
                self.assertNoRawSeparators(body, fmt)
                lines = body.decode("utf-8").splitlines()
                self.assertEqual(len(lines), len(want), "str.splitlines() finds one record per line")
                recs = {x["id"]: x for x in map(json.loads, lines)}
                self.assertEqual(set(recs), want)
                if fmt == "jsonl":
                    self.assertEqual(recs[self.IDS[0]]["meta"], self.META[self.IDS[0]])
                    self.assertEqual(recs[self.IDS[0]]["corrected_label"], self.LABEL)

    def test_label_studio_tasks_escape_line_separators(self):
        body = self.ok_export(self.DS, "label-studio", status=ALL_STATES).body
        self.assertNoRawSeparators(body, "label-studio")
        tasks = {t["data"]["focald_id"]: t for t in json.loads(body)}
        self.assertEqual(tasks[self.IDS[0]]["data"]["note" + LS], "n" + PS + LS)


if __name__ == "__main__":
    sys.exit(harness.main())
