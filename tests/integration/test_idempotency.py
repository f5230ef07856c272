#!/usr/bin/python3
"""Integration tests of the Idempotency-Key of the review loop's writes (README "Retrying the review loop's
writes"), against the real daemon.

Every write of the review loop (a decision to each status, a meta put, a queue's creation and its removal)
sent twice with one key: the second answer is the first, byte for byte, marked Idempotent-Replayed, and
nothing is written again (the audit trail, the relabel feed and the queue list have one entry). A key sent
with another request is refused (422 idempotency_key_reused) and changes nothing; a malformed key is 400
bad_idempotency_key before anything is queued. The key survives a restart after SIGTERM and after SIGKILL
right after the answer; keys belong to their dataset (another dataset's same key is a new key; deleting the
dataset forgets them); a refused change keeps no key; the same key sent many times at once is applied once.

usage: BUILD=build /usr/bin/python3 tests/integration/test_idempotency.py [-v] [unittest names...]
"""
import json
import os
import sqlite3
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from test_review import PLANTED, ReviewTestCase, run_together  # noqa: E402

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def new_key():
    return str(uuid.uuid4())


class IdemTestCase(ReviewTestCase):

    def send(self, method, path, body, key, d=None):
        headers = {KEY: key} if key is not None else None
        return self._d(d).request(method, path, body, headers=headers)

    def review_k(self, ds, sid, body, key, d=None):
        return self.send("POST", self.sample_path(ds, sid) + "/review", body, key, d=d)

    def queue_k(self, ds, body, key, d=None):
        return self.send("POST", "/v1/datasets/%s/queues" % harness.q(ds), body, key, d=d)

    def queues(self, ds, d=None):
        r = self._d(d).get("/v1/datasets/%s/queues" % harness.q(ds))
        self.assertEqual(r.status, 200, r)
        return [x["name"] for x in r.json()["queues"]]

    def assertReplay(self, first, again, ctx=""):
        """again answers as first did, byte for byte, marked as a replay; first was not marked."""
        self.assertIsNone(first.header(REPLAYED), ctx)
        self.assertEqual(again.status, first.status, "%s: %r" % (ctx, again))
        self.assertEqual(again.body, first.body, ctx)
        self.assertEqual(again.header(REPLAYED), "true", ctx)
        self.assertEqual(again.header("Content-Type"), first.header("Content-Type"), ctx)

    def effects(self, ds, d=None):
        """What the review loop recorded of a dataset: every sample's audit trail, the feed, the queues."""
        out = {"queues": self.queues(ds, d=d), "feed": self.feed_all(ds, d=d)[0]}
        for sid, _, _ in PLANTED:
            out[sid] = self.audit(ds, sid, d=d)
        return out


class FamilyTest(IdemTestCase):
    """Each write of the review loop, sent twice with one key, is applied once and answered the same twice."""

    def test_every_review_status_replays_and_records_once(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        cases = [("a0", {"status": "relabelled", "label": 2, "reviewer": "ann", "note": "n"}),
                 ("a1", {"status": "confirmed"}), ("a2", {"status": "dismissed", "reviewer": "bob"}),
                 ("a3", {"status": "in_review"}), ("a4", {"status": "queued"})]
        # open is reached from a decision: b0 is confirmed first, then reopened under a key
        self.ok_review(ds, "b0", "confirmed")
        cases.append(("b0", {"status": "open", "note": "again"}))
        # a relabel replaced by another relabel
        self.ok_review(ds, "b1", "relabelled", label=1)
        cases.append(("b1", {"status": "relabelled", "label": [0, 2]}))
        replays = self.d.metric("focald_idempotent_replays_total")
        for sid, body in cases:
            with self.subTest(sample=sid, status=body["status"]):
                key = new_key()
                before = self.audit(ds, sid)
                feed_before = self.feed_all(ds)[0]
                first = self.review_k(ds, sid, body, key)
                self.assertEqual(first.status, 200, first)
                after = self.audit(ds, sid)
                feed_after = self.feed_all(ds)[0]
                self.assertEqual(len(after["reviews"]), len(before["reviews"]) + 1)
                for _ in range(3):
                    again = self.review_k(ds, sid, body, key)
                    self.assertReplay(first, again, sid)
                self.assertEqual(self.audit(ds, sid), after, "a replay writes nothing to the audit trail")
                self.assertEqual(self.feed_all(ds)[0], feed_after, "nor to the relabel feed")
                self.assertEqual(len(feed_after) - len(feed_before),
                                 1 if body["status"] == "relabelled" or before["status"] == "relabelled" else 0)
                # without the key, the same decision is a new request: refused, or a second entry
                plain = self.review(ds, sid, **body)
                self.assertIn(plain.status, (200, 409), plain)
        self.assertEqual(self.d.metric("focald_idempotent_replays_total"), replays + 3 * len(cases))

    def test_meta_put_replays(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        key = new_key()
        path = self.sample_path(ds, "c0") + "/meta"
        first = self.send("PUT", path, {"uri": "x.png"}, key)
        self.assertEqual(first.status, 200, first)
        self.assertEqual(self.put_meta(ds, "c0", {"uri": "y.png"}).status, 200)
        again = self.send("PUT", path, {"uri": "x.png"}, key)
        self.assertReplay(first, again)
        # the replay changed nothing: the later put stands
        self.assertEqual(self.d.sample(ds, "c0").json()["meta"], {"uri": "y.png"})

    def test_queue_create_and_delete_replay(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        key = new_key()
        body = {"name": "q1", "size": 3}
        first = self.queue_k(ds, body, key)
        self.assertEqual(first.status, 201, first)
        state = self.effects(ds)
        for _ in range(3):
            self.assertReplay(first, self.queue_k(ds, body, key))
        self.assertEqual(self.effects(ds), state, "a replayed queue is not built again")
        self.assertEqual(self.queues(ds), ["q1"])
        # without a key the retry is what it always was: the name is taken
        self.assertProblem(self.make_queue(ds, body), 409, "conflict", "/name")
        dkey = new_key()
        path = "/v1/datasets/%s/queues/q1" % harness.q(ds)
        gone = self.send("DELETE", path, None, dkey)
        self.assertEqual(gone.status, 200, gone)
        state = self.effects(ds)
        self.assertReplay(gone, self.send("DELETE", path, None, dkey))
        self.assertEqual(self.effects(ds), state)
        self.assertProblem(self.d.delete(path), 404, "not_found")
        # and the creation's key still replays the creation, although the queue is gone
        self.assertReplay(first, self.queue_k(ds, body, key))
        self.assertEqual(self.queues(ds), [])

    def test_json_spelling_does_not_matter_the_request_does(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        key = new_key()
        path = self.sample_path(ds, "a0") + "/review"
        first = self.send("POST", path, b'{"status":"relabelled","label":1,"note":"n"}', key)
        self.assertEqual(first.status, 200, first)
        again = self.send("POST", path, b'{ "note" : "n",\n "label": 1, "status": "relabelled" }', key)
        self.assertReplay(first, again)
        # the quoted form of the draft and the bare key are one key
        self.assertReplay(first, self.send("POST", path, b'{"status":"relabelled","label":1,"note":"n"}',
                                           '"%s"' % key))


class ReuseTest(IdemTestCase):
    """A key sent with another request is refused and changes nothing."""

    def test_key_reused_for_another_request_is_422_and_changes_nothing(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        key = new_key()
        first = self.review_k(ds, "a0", {"status": "relabelled", "label": 1}, key)
        self.assertEqual(first.status, 200, first)
        state = self.effects(ds)
        others = [
            ("review, another label", lambda: self.review_k(ds, "a0", {"status": "relabelled", "label": 2}, key)),
            ("review, another status", lambda: self.review_k(ds, "a0", {"status": "open"}, key)),
            ("review, a note added", lambda: self.review_k(ds, "a0", {"status": "relabelled", "label": 1,
                                                                      "note": "x"}, key)),
            ("review, another sample", lambda: self.review_k(ds, "a1", {"status": "relabelled", "label": 1}, key)),
            ("queue", lambda: self.queue_k(ds, {"name": "q", "size": 2}, key)),
            ("meta", lambda: self.send("PUT", self.sample_path(ds, "a0") + "/meta", {"k": 1}, key)),
            ("queue delete", lambda: self.send("DELETE", "/v1/datasets/%s/queues/q" % harness.q(ds), None, key)),
        ]
        for name, fn in others:
            with self.subTest(name):
                r = fn()
                p = self.assertProblem(r, 422, "idempotency_key_reused", KEY)
                self.assertIn(key, p["detail"])
                self.assertIsNone(r.header(REPLAYED))
                self.assertEqual(self.effects(ds), state, name)
        # the key still replays its own request
        self.assertReplay(first, self.review_k(ds, "a0", {"status": "relabelled", "label": 1}, key))

    def test_a_refused_change_keeps_no_key(self):
        """Only accepted changes are recorded: a 409 under a key is checked again when retried, and the key
        is free for the request once the state allows it."""
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        self.ok_review(ds, "a0", "confirmed")
        key = new_key()
        r = self.review_k(ds, "a0", {"status": "dismissed"}, key)
        self.assertProblem(r, 409, "conflict")
        self.assertProblem(self.review_k(ds, "a0", {"status": "dismissed"}, key), 409, "conflict")
        self.ok_review(ds, "a0", "open")
        ok = self.review_k(ds, "a0", {"status": "dismissed"}, key)
        self.assertEqual(ok.status, 200, ok)
        self.assertReplay(ok, self.review_k(ds, "a0", {"status": "dismissed"}, key))
        # a 404 keeps none either
        r = self.review_k(ds, "nope", {"status": "confirmed"}, new_key())
        self.assertProblem(r, 404, "sample_not_found")

    def test_keys_are_per_dataset_and_go_with_it(self):
        ds1, ds2 = self.ds_name("-1"), self.ds_name("-2")
        for ds in (ds1, ds2):
            self.plant(ds, PLANTED)
        key = new_key()
        body = {"status": "relabelled", "label": 2}
        r1 = self.review_k(ds1, "a0", body, key)
        r2 = self.review_k(ds2, "a0", body, key)
        for r in (r1, r2):
            self.assertEqual(r.status, 200, r)
            self.assertIsNone(r.header(REPLAYED))
        self.assertEqual(len(self.audit(ds2, "a0")["reviews"]), 1)
        # deleting the dataset forgets its keys: the dataset made again takes the key as new
        self.assertEqual(self.d.delete("/v1/datasets/%s" % harness.q(ds1)).status, 200)
        self.plant(ds1, PLANTED)
        r = self.review_k(ds1, "a0", body, key)
        self.assertEqual(r.status, 200, r)
        self.assertIsNone(r.header(REPLAYED))
        self.assertEqual(len(self.audit(ds1, "a0")["reviews"]), 1)
        self.assertEqual(len(self.feed_all(ds1)[0]), 1)


class BadKeyTest(IdemTestCase):
    """A malformed key is refused before anything is queued, naming the header."""

    BAD = [("empty", ""), ("empty quotes", '""'), ("too long", "k" * 256), ("too long quoted", '"%s"' % ("k" * 256)),
           ("space", "a b"), ("tab", "a\tb"), ("backslash", "a\\b"), ("inner quote", 'a"b'),
           ("unclosed quote", '"abc'), ("non-ASCII", "clé"), ("DEL", "a\x7fb")]

    def test_malformed_keys_400_on_every_write_and_nothing_changes(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        self.ok_queue(ds, {"name": "old", "size": 1})
        state = self.effects(ds)
        sample = self.d.sample(ds, "a1").json()
        writes = [
            ("review", lambda k: self.review_k(ds, "a1", {"status": "confirmed"}, k)),
            ("meta", lambda k: self.send("PUT", self.sample_path(ds, "a1") + "/meta", {"k": 1}, k)),
            ("queue", lambda k: self.queue_k(ds, {"name": "q", "size": 2}, k)),
            ("queue delete", lambda k: self.send("DELETE", "/v1/datasets/%s/queues/old" % harness.q(ds), None, k)),
        ]
        for wname, fn in writes:
            sent = 0
            for name, key in self.BAD:
                with self.subTest(write=wname, key=name):
                    try:
                        r = fn(key.encode("utf-8").decode("latin-1"))
                    except ValueError:  # http.client refuses to send it: nothing to test
                        continue
                    sent += 1
                    p = self.assertProblem(r, 400, "bad_idempotency_key", KEY)
                    self.assertIn(KEY, p["detail"])
            self.assertEqual(sent, len(self.BAD), wname)
            self.assertEqual(self.effects(ds), state, wname)
        self.assertEqual(self.d.sample(ds, "a1").json(), sample)

    def test_longest_key_and_every_allowed_character_pass(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        allowed = "".join(chr(c) for c in range(0x21, 0x7f) if chr(c) not in '"\\')
        for key in ("k" * 255, '"%s"' % ("q" * 255), allowed, '" in quotes "'):
            with self.subTest(key=key[:20]):
                r = self.queue_k(ds, {"name": "q%d" % len(self.queues(ds)), "size": 1}, key)
                self.assertEqual(r.status, 201, r)
                self.assertReplay(r, self.queue_k(ds, json.loads(r.body)["params"], key))


class DurabilityTest(IdemTestCase):
    """The key is committed with the change: it replays after a restart, and after a SIGKILL that follows
    the answer at once."""
    class_daemon = False

    def check_replay_after(self, stop):
        d = self.start_daemon()
        ds = self.ds_name()
        self.plant(ds, PLANTED, d=d)
        rkey, qkey = new_key(), new_key()
        body = {"status": "relabelled", "label": 2, "reviewer": "ann"}
        first = self.review_k(ds, "a0", body, rkey, d=d)
        qfirst = self.queue_k(ds, {"name": "q", "size": 3}, qkey, d=d)
        self.assertEqual((first.status, qfirst.status), (200, 201), (first, qfirst))
        stop(d)
        d2 = self.start_daemon(db_dir=d.db_dir)
        state = self.effects(ds, d=d2)
        self.assertEqual(len(state["a0"]["reviews"]), 1)
        self.assertReplay(first, self.review_k(ds, "a0", body, rkey, d=d2))
        self.assertReplay(qfirst, self.queue_k(ds, {"name": "q", "size": 3}, qkey, d=d2))
        self.assertProblem(self.review_k(ds, "a0", {"status": "open"}, rkey, d=d2), 422, "idempotency_key_reused")
        self.assertEqual(self.effects(ds, d=d2), state)

    def test_replay_after_restart(self):
        self.check_replay_after(lambda d: self.assertEqual(d.stop(), 0))

    def test_replay_after_sigkill_right_after_the_answer(self):
        self.check_replay_after(lambda d: d.kill9())


class ExpiryTest(IdemTestCase):
    """A key is kept --idempotency-ttl seconds: a retry after that is a new request, and the writer removes
    expired keys from the database."""
    class_daemon = False

    def keys_in_db(self, d):
        c = sqlite3.connect("file:%s?mode=ro" % d.db, uri=True)
        try:
            return sorted(r[0] for r in c.execute("SELECT key FROM idempotency_keys"))
        finally:
            c.close()

    def test_expired_key_is_a_new_request_and_is_purged(self):
        d = self.start_daemon(args=("--idempotency-ttl", "1"))
        ds = self.ds_name()
        self.plant(ds, PLANTED, d=d)
        body = {"status": "relabelled", "label": 2}
        first = self.review_k(ds, "a0", body, "old", d=d)
        self.assertEqual(first.status, 200, first)
        self.assertReplay(first, self.review_k(ds, "a0", body, "old", d=d))
        self.assertEqual(self.keys_in_db(d), ["old"])
        time.sleep(1.3)
        # past the key's time: the request is applied again (a relabel may replace a relabel)
        late = self.review_k(ds, "a0", body, "old", d=d)
        self.assertEqual(late.status, 200, late)
        self.assertIsNone(late.header(REPLAYED))
        self.assertEqual(len(self.audit(ds, "a0", d=d)["reviews"]), 2)
        # and another request may take the key now
        r = self.review_k(ds, "a1", {"status": "confirmed"}, "k2", d=d)
        self.assertEqual(r.status, 200, r)
        time.sleep(1.3)
        # the writer purges at its first group, then once a minute: a restart makes the next write purge
        self.assertEqual(d.stop(), 0)
        d2 = self.start_daemon(db_dir=d.db_dir, args=("--idempotency-ttl", "1"))
        self.assertEqual(self.review_k(ds, "a2", {"status": "dismissed"}, "new", d=d2).status, 200)
        self.assertEqual(self.keys_in_db(d2), ["new"], "expired keys are removed, the new one kept")


class ConcurrentKeyTest(IdemTestCase):
    """One key sent many times at once: exactly one is applied, every other gets its answer."""

    def test_same_key_at_once_applies_once(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        for sid, body in (("a0", {"status": "relabelled", "label": 1}), ("a1", {"status": "in_review"}),
                          ("a2", {"status": "confirmed"})):
            with self.subTest(sample=sid):
                key = new_key()
                res = run_together([lambda: self.review_k(ds, sid, body, key)] * 8)
                self.assertTrue(all(isinstance(r, harness.Resp) for r in res), res)
                self.assertEqual({r.status for r in res}, {200}, res)
                self.assertEqual(len({r.body for r in res}), 1, "every answer is the first")
                self.assertEqual(sum(r.header(REPLAYED) is None for r in res), 1)
                self.assertEqual(len(self.audit(ds, sid)["reviews"]), 1)
        self.assertEqual(len(self.feed_all(ds)[0]), 1)

    def test_same_key_queue_at_once_builds_one(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        key = new_key()
        res = run_together([lambda: self.queue_k(ds, {"name": "same", "size": 3}, key)] * 6)
        self.assertEqual([r.status for r in res], [201] * 6, res)
        self.assertEqual(len({r.body for r in res}), 1)
        self.assertEqual(sum(r.header(REPLAYED) is None for r in res), 1)
        self.assertEqual(self.queues(ds), ["same"])

    def test_same_key_different_requests_at_once_one_wins(self):
        ds = self.ds_name()
        self.plant(ds, PLANTED)
        key = new_key()
        sids = ["a0", "a1", "a2", "a3", "a4", "b0"]
        res = run_together([lambda s=s: self.review_k(ds, s, {"status": "dismissed"}, key) for s in sids])
        won = [s for s, r in zip(sids, res) if r.status == 200]
        self.assertEqual(len(won), 1, res)
        for s, r in zip(sids, res):
            if r.status != 200:
                self.assertProblem(r, 422, "idempotency_key_reused", KEY)
            self.assertEqual(self.status_of(ds, s), "dismissed" if s in won else "open")


if __name__ == "__main__":
    sys.exit(harness.main())
