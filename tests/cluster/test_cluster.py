"""focald as a cluster of nodes on one shared log in a real PostgreSQL 15 server (tests/cluster/pgtemp.py).

Every test gets a database of its own and starts its nodes on it. Batches go to different nodes; every
node must then give the same answers, and those answers must agree with a model built from the
acknowledged requests alone: each sample seen once per acknowledged batch that holds it, never twice
(a retried batch_id), never for a batch that was refused, and its mean loss the mean of the losses the
batches' answers gave. The faults: a node SIGKILLed in the middle of the load and started again, a new
node started late, PostgreSQL stopped as a crash would stop it (pg_ctl stop -m immediate) in the
middle of the load and started again, with clients that retry what got 503 under the same batch_id, a
node whose connections to PostgreSQL stop carrying packets (nftables drops them: no reset, no error), and
PostgreSQL frozen (every process of it SIGSTOPped: its kernel acknowledges everything, nothing answers).
"""
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import Daemon, FocaldTestCase, main, q  # noqa: E402
from pgtemp import PostgreSQL  # noqa: E402

PG = None
C = 3
IDS = ["s%02d" % i for i in range(40)]


def setUpModule():
    global PG
    PG = PostgreSQL()


def tearDownModule():
    if PG:
        PG.close()


def batch_body(rng, n=8, batch_id=None, run="r", classes=C):
    ids = rng.sample(IDS, n)
    b = {"run": run, "ids": ids, "targets": [rng.randrange(classes) for _ in ids],
         "logits": [[round(rng.uniform(-3, 3), 3) for _ in range(classes)] for _ in ids],
         "loss": {"type": "cross_entropy"}}
    if batch_id:
        b["batch_id"] = batch_id
    return b


class Model:
    """What the acknowledged batches imply: per sample, how often it was seen and the losses it got."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}  # batch_id -> (body, answer)

    def ack(self, body, answer):
        with self.lock:
            bid = body.get("batch_id")
            if bid in self.acked:
                # a retry of one that was committed: the answer says so, and it counts once
                assert answer["duplicate"], (bid, answer)
                return
            self.acked[bid or object()] = (body, answer)

    def per_sample(self):
        seen, losses = {}, {}
        for body, answer in self.acked.values():
            for sid, loss in zip(body["ids"], answer["losses"]):
                seen[sid] = seen.get(sid, 0) + 1
                losses.setdefault(sid, []).append(loss)
        return seen, {k: sum(v) / len(v) for k, v in losses.items()}


class ClusterTestCase(FocaldTestCase):
    class_daemon = False

    def setUp(self):
        self.dbname = "t_%s" % self.id().rsplit(".", 1)[-1][:50]
        self.uri = PG.new_database(self.dbname)
        self.nodes = []

    def node(self, name, db_dir=None, args=(), start=True):
        d = Daemon(self.id(), db_dir=db_dir, args=["--store", self.uri, "--node-name", name, "--snapshot-interval", "1",
                                                   "--read-wait", "3000", *args])
        self.nodes.append(d)
        self.addCleanup(lambda: d.running() and d.stop())
        return d.start(timeout=20) if start else d

    def post(self, node, body, dataset="d"):
        r = node.batch(dataset, body)
        if r.status == 200:
            pos = r.header("Focald-Log-Position")
            self.assertIsNotNone(pos, "a recorded batch's answer carries its log position")
            return r, int(pos)
        return r, None

    def state(self, node, after, dataset="d"):
        """Everything a client can read of the dataset on node, once it has applied position after."""
        out = {}
        for by in ("mean_loss", "ema_loss", "seen", "forgetting", "aum"):
            r = node.get("/v1/datasets/%s/hard-examples?run=r&by=%s&k=1000&after=%d" % (q(dataset), by, after))
            self.assertEqual(r.status, 200, r)
            out["hard/" + by] = r.json()
        r = node.get("/v1/datasets/%s/export?format=jsonl&after=%d" % (q(dataset), after))
        self.assertEqual(r.status, 200, r)
        out["export"] = r.body
        for sid in IDS[:5]:
            r = node.get("/v1/datasets/%s/samples/%s?after=%d" % (q(dataset), sid, after))
            out["sample/" + sid] = r.json() if r.status == 200 else r.status
        r = node.get("/v1/datasets/%s?after=%d" % (q(dataset), after))
        self.assertEqual(r.status, 200, r)
        ds = r.json()
        for k in ("db_bytes", "wal_bytes", "storage"):
            ds.pop(k, None)
        out["dataset"] = ds
        return out

    def assertSameAsOneFocald(self, node, model, after):
        """The cluster is one state machine: node answers as a focald alone that was sent the same batches in
        the log's order (read from PostgreSQL: each row's batch_id; the bodies are the model's)."""
        rows = PG.sql(self.dbname, "SELECT pos, convert_from(substring(body for position('\\x00'::bytea in body) - 1), "
                                   "'UTF8')::json->>'batch_id' FROM focald_log WHERE kind = 1 ORDER BY pos")
        order = [line.split("\t")[1] for line in rows.splitlines() if line]
        self.assertEqual(sorted(order), sorted(model.acked), "every acknowledged batch is in the log once, and no other")
        alone = Daemon(self.id()).start()
        self.addCleanup(lambda: alone.running() and alone.stop())
        last = 0
        for bid in order:
            body, _ = model.acked[bid]
            r, last = self.post(alone, body)
            self.assertEqual(r.status, 200, r)
        want, got = self.state(alone, last), self.state(node, after)
        for part in ("dataset",):
            for k in ("created_at", "updated_at"):
                want[part].pop(k, None)
                got[part].pop(k, None)
        for key in want:
            self.assertEqual(got[key], want[key], "the cluster differs from one focald in " + key)

    def assertSameEverywhere(self, nodes, after):
        states = [self.state(n, after) for n in nodes]
        for i in range(1, len(states)):
            for key in states[0]:
                self.assertEqual(states[i][key], states[0][key], "node %d differs from node 0 in %s" % (i, key))
        return states[0]

    def assertMatchesModel(self, node, model, after):
        seen, mean = model.per_sample()
        for sid in IDS:
            r = node.get("/v1/datasets/d/samples/%s?run=r&after=%d" % (q(sid), after))
            if sid not in seen:
                self.assertEqual(r.status, 404, (sid, r))
                continue
            self.assertEqual(r.status, 200, r)
            h = r.json()["runs"][0]
            self.assertEqual(h["seen"], seen[sid], "sample %s: seen" % sid)
            self.assertClose(h["mean_loss"], mean[sid], "sample %s: mean_loss" % sid, rel=1e-4)

    def batch_rows(self, node):
        c = sqlite3.connect("file:%s?mode=ro" % node.db, uri=True)
        try:
            return c.execute("SELECT count(*) FROM batches").fetchone()[0]
        finally:
            c.close()

    # ------------------------------------------------------------------ tests

    def test_cluster_batches_on_any_node_give_identical_answers(self):
        nodes = [self.node("n%d" % i) for i in range(3)]
        rng = random.Random(1)
        model, last = Model(), 0
        for i in range(30):
            body = batch_body(rng, batch_id="b%d" % i)
            r, pos = self.post(nodes[i % 3], body)
            self.assertEqual(r.status, 200, r)
            model.ack(body, r.json())
            self.assertGreater(pos, last, "positions grow")
            last = pos
        self.assertEqual(last, 30, "30 batches took positions 1 to 30: no gaps")
        self.assertSameEverywhere(nodes, last)
        for n in nodes:
            self.assertMatchesModel(n, model, last)
        self.assertSameAsOneFocald(nodes[2], model, last)
        # and every answer says how far behind the log its node is, and /metrics where it is
        r = nodes[1].get("/v1/datasets/d?after=%d" % last)
        self.assertEqual(r.header("Focald-Log-Behind"), "0")
        metrics = nodes[1].get("/metrics").body.decode()
        self.assertIn("focald_log_applied_position %d\n" % last, metrics)
        self.assertIn("focald_log_head_position %d\n" % last, metrics)

    def test_cluster_a_batch_id_is_one_across_nodes(self):
        a, b = self.node("a"), self.node("b")
        rng = random.Random(2)
        body = batch_body(rng, batch_id="once")
        r1, p1 = self.post(a, body)
        self.assertEqual(r1.status, 200, r1)
        self.assertFalse(r1.json()["duplicate"])
        r2, p2 = self.post(b, body)
        self.assertEqual(r2.status, 200, r2)
        self.assertTrue(r2.json()["duplicate"], "the same batch_id sent to another node is a duplicate")
        self.assertGreaterEqual(p2, p1)
        # the batch_id with other samples is another batch, refused by every node alike
        other = dict(body, ids=list(reversed(body["ids"])))
        for n in (a, b):
            r, _ = self.post(n, other)
            self.assertEqual((r.status, r.json()["code"], r.json()["field"]), (422, "batch_id_reused", "/batch_id"), r)
        # a request of segments: each node compares a retry with every segment, which the log carries
        segmented = dict(batch_body(rng, batch_id="in-parts"), segments=[{"n": 3, "step": 1}, {"n": 5, "step": 2}])
        r3, p3 = self.post(b, segmented)
        self.assertEqual(r3.status, 200, r3)
        self.assertFalse(r3.json()["duplicate"])
        r4, p4 = self.post(a, segmented)
        self.assertEqual(r4.status, 200, r4)
        self.assertTrue(r4.json()["duplicate"], "the same request of segments sent to another node is a duplicate")
        later_reversed = dict(segmented, ids=segmented["ids"][:3] + segmented["ids"][3:][::-1])
        cut_elsewhere = dict(segmented, segments=[{"n": 3, "step": 1}, {"n": 4, "step": 2}, {"n": 1, "step": 3}])
        for n in (a, b):
            for other in (later_reversed, cut_elsewhere):
                r, _ = self.post(n, other)
                self.assertEqual((r.status, r.json()["code"], r.json()["field"]), (422, "batch_id_reused", "/batch_id"), r)
        model = Model()
        model.ack(body, r1.json())
        model.ack(segmented, r3.json())
        for n in (a, b):
            self.assertMatchesModel(n, model, max(p2, p4))

    def test_cluster_a_runs_class_count_holds_across_nodes(self):
        a, b = self.node("a"), self.node("b")
        rng = random.Random(3)
        r, _ = self.post(a, batch_body(rng, classes=3))
        self.assertEqual(r.status, 200, r)
        r, _ = self.post(b, batch_body(rng, classes=4))
        self.assertProblem(r, 409, "class_count_conflict")

    def test_cluster_reads_wait_for_a_position(self):
        a, b = self.node("a"), self.node("b", args=["--read-wait", "300"])
        rng = random.Random(4)
        body = batch_body(rng)
        r, pos = self.post(a, body)
        self.assertEqual(r.status, 200, r)
        # read-your-writes on the other node
        r = b.get("/v1/datasets/d/samples/%s?run=r&after=%d" % (q(body["ids"][0]), pos))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["runs"][0]["seen"], 1)
        # a position no one wrote: 503 after --read-wait, with Retry-After
        t0 = time.monotonic()
        r = b.get("/v1/datasets/d?after=%d" % (pos + 1000))
        self.assertProblem(r, 503, "not_caught_up", "after")
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        self.assertEqual(r.header("Retry-After"), "1")
        for bad in ("x", "-1", "1.5", ""):
            r = b.get("/v1/datasets/d?after=%s" % bad)
            self.assertProblem(r, 400, "bad_query", "after")
        r = b.get("/v1/datasets/d?after=1&after=2")
        self.assertProblem(r, 400, "bad_query", "after")
        # only the reads of the data take it
        r = b.get("/metrics?after=1")
        self.assertProblem(r, 400, "bad_query", "after")

    def review_state(self, node, after, sids, queues=("q1",)):
        """What the review loop shows on node once it has applied position after."""
        out = {}
        for sid in sids:
            out["sample/" + sid] = node.get("/v1/datasets/d/samples/%s?after=%d" % (q(sid), after)).json()
            out["audit/" + sid] = node.get("/v1/datasets/d/samples/%s/reviews?after=%d" % (q(sid), after)).json()
        out["queues"] = node.get("/v1/datasets/d/queues?after=%d" % after).json()
        for name in queues:
            r = node.get("/v1/datasets/d/queues/%s?after=%d" % (name, after))
            out["queue/" + name] = r.json() if r.status == 200 else r.status
        out["relabels"] = node.get("/v1/datasets/d/relabels?after=%d" % after).json()
        out["export"] = node.get("/v1/datasets/d/export?format=jsonl&after=%d" % after).body
        return out

    def test_cluster_review_loop_on_any_node(self):
        a, b = self.node("a"), self.node("b")
        rng = random.Random(5)
        last = 0
        for i in range(6):
            r, last = self.post(a if i % 2 else b, batch_body(rng, n=10, batch_id="rb%d" % i))
            self.assertEqual(r.status, 200, r)
        sids = [x["id"] for x in a.get("/v1/datasets/d/hard-examples?run=r&k=8&after=%d" % last).json()["items"]]
        x, y, z, w = sids[:4]
        positions = [last]

        def change(node, method, path, body=None, want=200):
            r = node.request(method, "/v1/datasets/d" + path, body)
            self.assertEqual(r.status, want, r)
            pos = r.header("Focald-Log-Position")
            self.assertIsNotNone(pos, "a change's answer on a cluster node carries its log position")
            positions.append(int(pos))
            return r

        # a decision on one node is seen on the other
        change(b, "POST", "/samples/%s/review" % q(x), {"status": "confirmed", "reviewer": "ana", "note": "ok"})
        r = a.get("/v1/datasets/d/samples/%s?after=%d" % (q(x), max(positions)))
        self.assertEqual(r.json()["status"], "confirmed", r)
        change(a, "POST", "/samples/%s/review" % q(w), {"status": "relabelled", "label": 2, "reviewer": "ben"})
        # two conflicting decisions on one sample, sent to two nodes at once: one wins, the other is refused
        answers = {}

        def decide(node, status):
            answers[status] = node.post("/v1/datasets/d/samples/%s/review" % q(y), {"status": status, "reviewer": status})

        for _ in range(5):
            answers.clear()
            ts = [threading.Thread(target=decide, args=(a, "dismissed")), threading.Thread(target=decide, args=(b, "confirmed"))]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            codes = sorted(r.status for r in answers.values())
            self.assertEqual(codes, [200, 409], answers)
            winner = [k for k, r in answers.items() if r.status == 200][0]
            positions.append(int(answers[winner].header("Focald-Log-Position")))
            for n in (a, b):
                got = n.get("/v1/datasets/d/samples/%s?after=%d" % (q(y), max(positions))).json()["status"]
                self.assertEqual(got, winner)
            change(a, "POST", "/samples/%s/review" % q(y), {"status": "open"})
        # meta, a queue and its removal
        change(a, "PUT", "/samples/%s/meta" % q(z), {"uri": "file:///data/z.png", "site": "b"})
        change(b, "POST", "/queues", {"name": "q1", "size": 5, "by": "mean_loss"}, want=201)
        change(a, "POST", "/queues", {"name": "q2", "size": 3, "by": "last_loss"}, want=201)
        change(b, "DELETE", "/queues/q2")
        after = max(positions)
        self.assertEqual(sorted(positions), positions[:1] + sorted(positions[1:]))
        want = self.review_state(a, after, sids)
        self.assertEqual(self.review_state(b, after, sids), want)
        self.assertEqual(want["sample/" + z]["meta"]["site"], "b")
        self.assertEqual(want["queue/q1"]["size"], 5)
        # a restarted node and a new one hold the same
        b.stop()
        b.start(timeout=20)
        late = self.node("late")
        for n in (b, late):
            self.assertEqual(self.review_state(n, after, sids), want)
        self.assertSameEverywhere([a, b, late], after)
        # a dataset deleted on one node is gone on every node
        r = change(b, "DELETE", "")
        self.assertGreater(r.json()["samples"], 0)
        for n in (a, late):
            self.assertEqual(n.get("/v1/datasets/d?after=%d" % max(positions)).status, 404)

    def test_cluster_a_retry_with_its_idempotency_key_is_recognised_on_another_node(self):
        """The key travels with the logged change: a retry sent to another node (the first answer lost on
        the way) gets the first answer again and changes nothing, on every node, a new one included."""
        a, b = self.node("a"), self.node("b")
        r, last = self.post(a, batch_body(random.Random(11), n=10, batch_id="ik0"))
        self.assertEqual(r.status, 200, r)
        sids = [x["id"] for x in a.get("/v1/datasets/d/hard-examples?run=r&k=4&after=%d" % last).json()["items"]]

        def send(node, method, path, body, key):
            return node.request(method, "/v1/datasets/d" + path, body, headers={"Idempotency-Key": key})

        writes = [("POST", "/samples/%s/review" % q(sids[0]), {"status": "relabelled", "label": 2, "reviewer": "ana"}, 200),
                  ("POST", "/samples/%s/review" % q(sids[1]), {"status": "confirmed"}, 200),
                  ("PUT", "/samples/%s/meta" % q(sids[2]), {"uri": "z.png"}, 200),
                  ("POST", "/queues", {"name": "q1", "size": 3}, 201),
                  ("DELETE", "/queues/q1", None, 200)]
        positions = [last]
        for i, (method, path, body, want) in enumerate(writes):
            key = "cluster-key-%d" % i
            first_node, retry_node = (a, b) if i % 2 == 0 else (b, a)
            first = send(first_node, method, path, body, key)
            self.assertEqual(first.status, want, first)
            positions.append(int(first.header("Focald-Log-Position")))
            again = send(retry_node, method, path, body, key)
            self.assertEqual((again.status, again.body), (first.status, first.body), (path, again))
            self.assertEqual(again.header("Idempotent-Replayed"), "true", path)
            # the replay gives a position at or after the change's, so that a read with after= sees it there
            self.assertGreaterEqual(int(again.header("Focald-Log-Position") or 0), positions[-1], path)
            self.assertEqual(retry_node.get("/v1/datasets/d?after=%s" % again.header("Focald-Log-Position")).status, 200)
            if body is not None:
                changed = dict(body, note="other") if "status" in body else dict(body, size=4) if "size" in body else {"x": 1}
                other = send(retry_node, method, path, changed, key)
                self.assertEqual((other.status, other.json()["code"]), (422, "idempotency_key_reused"), other)
        # the same key sent to both nodes at once: one applies it
        answers = {}

        def decide(node):
            answers[node.port] = send(node, "POST", "/samples/%s/review" % q(sids[3]), {"status": "dismissed"}, "both")

        ts = [threading.Thread(target=decide, args=(n,)) for n in (a, b)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        self.assertEqual([r.status for r in answers.values()], [200, 200], answers)
        self.assertEqual(len({r.body for r in answers.values()}), 1, answers)
        positions += [int(r.header("Focald-Log-Position")) for r in answers.values() if r.header("Focald-Log-Position")]
        after = max(positions)
        want = self.review_state(a, after, sids, queues=())
        for sid, n in zip(sids, (1, 1, 0, 1)):  # the decisions, each once (the queue's own entries aside)
            self.assertEqual(len([e for e in want["audit/" + sid]["reviews"] if e["reviewer"] != "focald"]), n, sid)
        self.assertEqual(len(want["relabels"]["relabels"]), 1)
        self.assertEqual(self.review_state(b, after, sids, queues=()), want)
        # a node started later learns the keys from the log too
        late = self.node("late")
        self.assertEqual(self.review_state(late, after, sids, queues=()), want)
        r = send(late, "POST", "/samples/%s/review" % q(sids[0]), writes[0][2], "cluster-key-0")
        self.assertEqual(r.header("Idempotent-Replayed"), "true", r)
        self.assertEqual(self.review_state(late, after, sids, queues=()), want)

    def test_cluster_new_node_catches_up_and_killed_node_converges(self):
        nodes = [self.node("n%d" % i) for i in range(3)]
        model, stop, errors = Model(), threading.Event(), []
        positions = []

        def client(k):
            rng = random.Random(100 + k)
            i, attempt = 0, 0
            body = batch_body(rng, batch_id="c%d-0" % k)
            while not stop.is_set() or attempt:
                target = nodes[(k + i + attempt) % 3]
                try:
                    r = target.batch("d", body, timeout=10)
                except OSError:
                    # the node was killed, perhaps after committing: the same batch goes to the next node
                    attempt += 1
                    time.sleep(0.05)
                    continue
                if r.status == 200:
                    model.ack(body, r.json())
                    positions.append(int(r.header("Focald-Log-Position")))
                    i, attempt = i + 1, 0
                    body = batch_body(rng, batch_id="c%d-%d" % (k, i))
                elif r.status == 503:
                    attempt += 1
                else:
                    errors.append(r)
                    return

        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        nodes[2].kill9()
        time.sleep(0.5)
        nodes[2].start(timeout=20)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertGreater(len(model.acked), 20)
        last = max(positions)
        late = self.node("late")
        state = self.assertSameEverywhere(nodes + [late], last)
        self.assertTrue(state["export"])
        for n in nodes + [late]:
            self.assertMatchesModel(n, model, last)
        self.assertSameAsOneFocald(late, model, last)

    def test_cluster_postgresql_stopped_mid_load(self):
        nodes = [self.node("n%d" % i) for i in range(2)]
        model, stop, errors, refused = Model(), threading.Event(), [], [0]

        def client(k):
            rng = random.Random(200 + k)
            i = 0
            body = batch_body(rng, batch_id="p%d-0" % k)
            while not stop.is_set():
                r = nodes[(k + i) % 2].batch("d", body, timeout=20)
                if r.status == 200:
                    model.ack(body, r.json())
                    i += 1
                    body = batch_body(rng, batch_id="p%d-%d" % (k, i))
                elif r.status == 503:
                    refused[0] += 1
                    if r.json()["code"] != "store_unavailable":
                        errors.append(r)
                        return
                    time.sleep(0.05)  # the same body, the same batch_id: retried until acknowledged
                else:
                    errors.append(r)
                    return
            # the last body may have been refused: retried to the end, so that every batch is known
            deadline = time.monotonic() + 60
            while body.get("batch_id") not in model.acked:
                if time.monotonic() > deadline:
                    errors.append("batch %s still refused a minute after PostgreSQL came back: %r" % (body["batch_id"], r))
                    return
                r = nodes[0].batch("d", body, timeout=20)
                if r.status == 200:
                    model.ack(body, r.json())
                else:
                    time.sleep(0.1)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        PG.stop_immediate()
        time.sleep(0.5)
        # reads go on from memory, and say they cannot know how far behind they are
        r = nodes[0].get("/v1/datasets/d")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Focald-Log-Behind"), "unknown")
        time.sleep(0.5)
        PG.start()
        time.sleep(1.5)
        stop.set()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        self.assertGreater(refused[0], 0, "the stop reached the clients")
        head = int(PG.sql(self.dbname, "SELECT pos FROM focald_log_head").strip())
        self.assertEqual(int(PG.sql(self.dbname, "SELECT count(*) FROM focald_log").strip()), head,
                         "the log has no gaps")
        self.assertSameEverywhere(nodes, head)
        for n in nodes:
            self.assertMatchesModel(n, model, head)
        self.assertSameAsOneFocald(nodes[1], model, head)

    def wait_for(self, what, fn, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(0.1)
        self.fail("timed out waiting for " + what)

    def test_cluster_a_batch_row_a_node_cannot_replay_is_not_stored_and_stops_it_before_it(self):
        """A batch row whose head reads but whose payload or meta the replay cannot (a damaged row, or one
        a newer focald wrote) is refused before the node stores it: the node answers store_unavailable at that
        position, its database holds nothing of it, and it starts again as it was. (Stored first, the row's
        replay failed after the local commit: every later write was 500, its copy again hitting the row it
        had stored.)"""
        rng = random.Random(11)
        a = self.node("a")
        b = self.node("b")
        r, pos = self.post(a, batch_body(rng, batch_id="good"))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(b.get("/v1/datasets/d?after=%d" % pos).status, 200)
        damaged = pos + 1
        # the same head, then the payload cut short by 3 bytes / the meta not JSON; appended as an appender does
        for n, body in enumerate(("substring(body for length(body) - 3)",
                                  "convert_to(replace(convert_from(substring(body for position('\\x00'::bytea in body) "
                                  "- 1), 'UTF8'), '\"batch_id\"', '\"meta\":\"{\",\"batch_id\"'), 'UTF8') || "
                                  "substring(body from position('\\x00'::bytea in body))")):
            with self.subTest(damage=n):
                stored = {node.db: self.batch_rows(node) for node in (a, b)}
                PG.sql(self.dbname, "BEGIN; SELECT pos FROM focald_log_head FOR UPDATE; INSERT INTO focald_log (pos, kind, "
                                    "dataset, body, node) SELECT %d, kind, dataset, %s, 'test' FROM focald_log WHERE pos = %d; "
                                    "UPDATE focald_log_head SET pos = %d; COMMIT" % (damaged, body, pos, damaged))
                for node in (a, b):
                    for attempt in range(2):
                        r = node.batch("d", batch_body(rng, batch_id="after-%d-%d" % (n, attempt)))
                        self.assertEqual((r.status, r.json()["code"]), (503, "store_unavailable"), r)
                        self.assertIn("cannot apply the cluster's log at position %d" % damaged, r.json()["detail"])
                    self.assertEqual(self.batch_rows(node), stored[node.db])
                # started again, it stops at the same row (a node that cannot catch up does not start), its
                # database as it was: nothing of the row was stored
                self.assertEqual(b.stop(), 0)
                again = self.node("b", db_dir=b.db_dir, start=False)
                with self.assertRaises(AssertionError) as refused:
                    again.start(timeout=20)
                self.assertIn("exited with status 1", str(refused.exception))
                self.assertIn("has a row after position %d this focald cannot read" % pos, str(refused.exception))
                self.assertEqual(self.batch_rows(b), stored[b.db])
                PG.sql(self.dbname, "BEGIN; SELECT pos FROM focald_log_head FOR UPDATE; DELETE FROM focald_log WHERE pos = %d; "
                                    "UPDATE focald_log_head SET pos = %d; COMMIT" % (damaged, pos))
                # the row gone (a node of the newer version would have taken it): both restarted nodes carry on
                self.assertEqual(a.stop(), 0)
                a = self.node("a", db_dir=a.db_dir)
                b = self.node("b", db_dir=b.db_dir)
                r, pos = self.post(a, batch_body(rng, batch_id="good-%d" % n))
                self.assertEqual(r.status, 200, r)
                self.assertEqual(b.get("/v1/datasets/d?after=%d" % pos).status, 200)
                damaged = pos + 1

    def test_cluster_new_node_begins_from_a_snapshot_and_the_log_is_pruned(self):
        behind = self.node("behind")
        a = self.node("a", args=["--cluster-snapshot-interval", "1", "--log-retention", "0"])
        b = self.node("b")
        rng = random.Random(7)
        model, last = Model(), 0
        for i in range(4):
            body = batch_body(rng, batch_id="e%d" % i)
            r, last = self.post(behind if i % 2 else a, body)
            model.ack(body, r.json())
        self.assertEqual(behind.get("/v1/datasets/d?after=%d" % last).status, 200)
        behind_at = last  # what behind has applied: nothing was logged after it yet
        # behind stops answering without stopping (SIGSTOP): its hold on the log expires, and the log is pruned
        behind.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: behind.running() and behind.send_signal(signal.SIGCONT))
        for i in range(4, 20):
            body = batch_body(rng, batch_id="e%d" % i)
            r, last = self.post(a if i % 2 else b, body)
            self.assertEqual(r.status, 200, r)
            model.ack(body, r.json())
        sid = a.get("/v1/datasets/d/hard-examples?run=r&k=1&after=%d" % last).json()["items"][0]["id"]
        r = b.post("/v1/datasets/d/samples/%s/review" % q(sid), {"status": "confirmed", "reviewer": "ana"})
        self.assertEqual(r.status, 200, r)
        last = int(r.header("Focald-Log-Position"))

        def snapshot_at_head():
            got = PG.sql(self.dbname, "SELECT coalesce(max(pos), 0) FROM focald_snapshot").strip()
            return int(got) >= last

        self.wait_for("a snapshot at the log's head", snapshot_at_head)
        self.wait_for("the log pruned below it",
                      lambda: int(PG.sql(self.dbname, "SELECT count(*) FROM focald_log WHERE pos <= %d" % last)) == 0)
        self.assertEqual(int(PG.sql(self.dbname, "SELECT count(*) FROM focald_snapshot")), 1, "older snapshots go")
        # behind runs again, and cannot catch up: it refuses writes, and holds back no prune
        behind.send_signal(signal.SIGCONT)
        r = behind.batch("d", batch_body(rng, batch_id="on-behind"))
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json()["code"], "store_unavailable", r)
        self.assertIn("cannot apply the cluster's log at position %d" % (behind_at + 1), r.json()["detail"])
        self.assertIn("start this one again with an empty --db", r.json()["detail"])
        # and says it is not ready, to probes and to metrics
        r = behind.get("/readyz")
        self.assertEqual((r.status, r.json()["code"]), (503, "store_unavailable"), r)
        self.assertIn("position %d" % (behind_at + 1), r.json()["detail"])
        self.assertIn("focald_ready 0\n", behind.get("/metrics").body.decode())
        self.assertEqual(a.get("/readyz").status, 200)
        # the tail after the snapshot
        for i in range(20, 24):
            body = batch_body(rng, batch_id="e%d" % i)
            r, last = self.post(b, body)
            model.ack(body, r.json())
        late = self.node("late")
        self.assertIn("began from the cluster's snapshot", late.log_text())
        state = self.assertSameEverywhere([a, b, late], last)
        for n in (a, b, late):
            self.assertMatchesModel(n, model, last)
        self.assertEqual(self.review_state(late, last, [sid], queues=()), self.review_state(a, last, [sid], queues=()))
        self.assertTrue(state["export"])
        self.wait_for("a snapshot at the new head, and the log pruned below it, while behind runs",
                      lambda: snapshot_at_head() and int(PG.sql(self.dbname, "SELECT count(*) FROM focald_log WHERE "
                                                                           "pos <= %d" % last)) == 0)
        behind.stop()
        # a node whose database is older than what the log keeps cannot catch up, and says what to do
        with self.assertRaises(AssertionError) as e:
            behind.start(timeout=20)
        self.assertIn("start it again with an empty --db", str(e.exception) + behind.log_text())

    def test_cluster_a_prune_takes_no_row_a_running_or_starting_node_needs(self):
        # --log-retention 0 and a snapshot every second, under load: the log below each new snapshot is pruned as
        # soon as it is stored. New nodes begin from a snapshot that a newer one replaces while they load it, a
        # node killed is started again at once, and the node following the log lags a few rows behind its
        # head: each holds the rows it has still to apply, so each starts, every batch is answered 200, and all
        # agree.
        a = self.node("a", args=["--cluster-snapshot-interval", "1", "--log-retention", "0"])
        b = self.node("b")
        model, stop, errors = Model(), threading.Event(), []

        def client(k):
            rng = random.Random(300 + k)
            i = 0
            while not stop.is_set():
                body = batch_body(rng, n=20, batch_id="h%d-%d" % (k, i))
                r = (a, b)[(i + k) % 2].batch("d", body, timeout=20)
                if r.status != 200:
                    errors.append(r)
                    return
                model.ack(body, r.json())
                i += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        started = []
        try:
            self.wait_for("a snapshot", lambda: int(PG.sql(self.dbname, "SELECT count(*) FROM focald_snapshot")) > 0)
            for j in range(3):
                n = self.node("new%d" % j)
                self.assertIn("began from the cluster's snapshot", n.log_text())
                started.append(n)
            started[0].kill9()
            started[0].start(timeout=20)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(errors, [])
        self.assertGreater(int(PG.sql(self.dbname, "SELECT min(pos) FROM focald_log")), 1, "the log was pruned")
        head = int(PG.sql(self.dbname, "SELECT pos FROM focald_log_head").strip())
        self.assertSameEverywhere([a, b] + started, head)
        for n in started:
            self.assertMatchesModel(n, model, head)

    def test_cluster_changes_as_deep_as_a_node_takes_are_applied_everywhere(self):
        # a change is logged as its request: whatever nesting its node accepted (a sample's meta, in a batch or
        # on its own, as deep as the parser goes: 2048 levels), every other node reads the row back and applies it
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, 10000))  # for the answers' JSON
        self.addCleanup(sys.setrecursionlimit, limit)
        a, b = self.node("a"), self.node("b")
        rng = random.Random(23)
        body = batch_body(rng, batch_id="deep")
        sid, sid2 = body["ids"][:2]
        depth = 2048
        tags = "[" * (depth - 1) + "]" * (depth - 1)
        in_batch = "[" * (depth - 3) + "]" * (depth - 3)  # the body, its meta, the sample's meta, then the tags
        raw = json.dumps(body)[:-1] + ', "meta": {"%s": {"tags": %s}}}' % (sid2, in_batch)
        r = a.request("POST", "/v1/datasets/d/batches", raw.encode(), headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        r = a.request("PUT", "/v1/datasets/d/samples/%s/meta" % q(sid), ('{"tags": %s}' % tags).encode(),
                      headers={"Content-Type": "application/json"})
        self.assertEqual(r.status, 200, r)
        pos = int(r.header("Focald-Log-Position"))
        r = a.request("PUT", "/v1/datasets/d/samples/%s/meta" % q(sid), ('{"tags": [%s]}' % tags).encode(),
                      headers={"Content-Type": "application/json"})
        self.assertProblem(r, 400, "bad_json")  # one level deeper is refused, and changes nothing
        for s_ in (sid, sid2):
            want = a.get("/v1/datasets/d/samples/%s?after=%d" % (q(s_), pos)).json()
            got = b.get("/v1/datasets/d/samples/%s?after=%d" % (q(s_), pos))
            self.assertEqual(got.status, 200, "b applied the row: %r" % got)
            self.assertEqual(got.json(), want)
        r, last = self.post(b, batch_body(rng, batch_id="after"))
        self.assertEqual(r.status, 200, "b goes on past the row: %r" % r)
        # a row written before the request was held as a string (as an object) is read as it was
        row = json.dumps({"id": sid2, "req": {"site": "old"}})
        PG.sql(self.dbname, "BEGIN; SELECT pos FROM focald_log_head FOR UPDATE; INSERT INTO focald_log (pos, kind, "
                            "dataset, body, node) SELECT pos + 1, 103, 'd', convert_to('%s', 'UTF8'), 'old' FROM "
                            "focald_log_head; UPDATE focald_log_head SET pos = pos + 1; COMMIT" % row)
        last += 1
        for n in (a, b):
            self.assertEqual(n.get("/v1/datasets/d/samples/%s?after=%d" % (q(sid2), last)).json()["meta"], {"site": "old"})
        late = self.node("late")
        self.assertSameEverywhere([a, b, late], last)

    def test_cluster_changes_logged_but_not_stored_locally_answer_what_they_did(self):
        # a's local disk is full while the file exists (tests/fault/faultvfs.c): each change below commits in
        # the log, its local commit fails, and it is answered 2xx; the node applies it when it catches up
        shim = os.path.join(os.path.dirname(harness.FOCALD), "tests", "libfaultvfs.so")
        b = self.node("b")
        full = os.path.join(b.db_dir, "disk-full")
        rng = random.Random(8)
        for i in range(4):
            r, last = self.post(b, batch_body(rng, batch_id="f%d" % i))
            self.assertEqual(r.status, 200, r)
        ds = b.get("/v1/datasets/d?after=%d" % last).json()
        a = Daemon(self.id(), args=["--store", self.uri, "--node-name", "a", "--read-wait", "3000"],
                   env={"LD_PRELOAD": shim, "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", ""),
                        "FOCALD_FAULT": "kind=write,at=1,do=full,span=1000000000,in=group,while=" + full})
        self.nodes.append(a)
        self.addCleanup(lambda: a.running() and a.stop())
        a.start(timeout=20)
        self.assertEqual(a.get("/v1/datasets/d?after=%d" % last).status, 200)

        def while_full(method, path, body=None):
            open(full, "w").close()
            try:
                r = a.request(method, "/v1/datasets/d" + path, body)
            finally:
                os.unlink(full)
            self.assertLess(r.status, 300, r)
            # with room again, a applies it from the log, as b did
            for n in (a, b):
                self.assertEqual(n.get("/v1/datasets?after=%s" % r.header("Focald-Log-Position")).status, 200)
            return r

        r = while_full("POST", "/queues", {"name": "q1", "size": 5, "by": "mean_loss"})
        self.assertEqual((r.json()["size"], r.json()["progress"]["queued"]), (5, 5), r)
        built = b.get("/v1/datasets/d/queues/q1").json()
        self.assertEqual(r.json(), {k: built[k] for k in r.json()}, "the answer is the queue built")
        r = while_full("DELETE", "/queues/q1")
        self.assertEqual(r.json()["released"], 5, r)
        r = while_full("DELETE", "")
        self.assertEqual((r.json()["samples"], r.json()["observations"]), (ds["samples"], 32), r)
        self.assertIn("the local copy failed", a.log_text(), "the local commits failed after the log's")
        pos = int(r.header("Focald-Log-Position"))
        for n in (a, b):
            self.assertEqual(n.get("/v1/datasets/d?after=%d" % pos).status, 404)

    def test_cluster_node_stalled_with_the_append_lock_holds_it_no_longer_than_its_lock_timeout(self):
        # a stops while it holds the log's append lock (held there while the file exists: tests/fault/faultvfs.c),
        # as a node does when it is frozen or its network is cut in the middle of a group. PostgreSQL ends its
        # session after --cluster-lock-timeout, which frees the lock: b's writes go on. a's batch gets no 2xx
        # while it is stalled; once a runs again it answers, and a retry with the same batch_id is stored once.
        shim = os.path.join(os.path.dirname(harness.FOCALD), "tests", "libfaultvfs.so")
        b = self.node("b")
        rng = random.Random(9)
        r, _ = self.post(b, batch_body(rng, batch_id="before"))
        self.assertEqual(r.status, 200, r)
        hold = os.path.join(b.db_dir, "hold-locked")
        a = Daemon(self.id(), args=["--store", self.uri, "--node-name", "a", "--read-wait", "3000",
                                    "--cluster-lock-timeout", "1000"],
                   env={"LD_PRELOAD": shim, "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", ""),
                        "FOCALD_FAULT_HOLD_LOCKED": hold})
        self.nodes.append(a)
        self.addCleanup(lambda: a.running() and a.stop())
        a.start(timeout=20)
        stalled = batch_body(rng, batch_id="stalled")
        answers = []
        open(hold, "w").close()
        self.addCleanup(lambda: os.path.exists(hold) and os.unlink(hold))
        t = threading.Thread(target=lambda: answers.append(a.batch("d", stalled, timeout=60)))
        t.start()
        holding = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() " \
                  "AND state = 'idle in transaction' AND query LIKE '%focald_log_head FOR UPDATE%'"
        for _ in range(200):  # a takes the lock, then stops there
            if PG.sql(self.dbname, holding).strip() == "1":
                break
            time.sleep(0.05)
        else:
            self.fail("a never held the append lock")
        r = b.batch("d", batch_body(rng, batch_id="while-a-stalls"), timeout=20)
        self.assertEqual(r.status, 200, "b's write waits for a's lock no longer than a's lock timeout: %r" % r)
        self.assertEqual(PG.sql(self.dbname, holding).strip(), "0", "PostgreSQL ended a's session")
        os.unlink(hold)
        t.join(60)
        self.assertFalse(t.is_alive())
        self.assertNotEqual(answers[0].status, 200, "a's group lost its session: no 2xx (%r)" % answers[0])
        for _ in range(60):  # the client's retries, with the same batch_id, after a's pause on failure
            r, pos = self.post(a, stalled)
            if r.status != 503:
                break
            time.sleep(0.25)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(PG.sql(self.dbname, "SELECT count(*) FROM focald_log").strip(), "3", "each batch logged once")
        for n in (a, b):
            self.assertEqual(n.get("/v1/datasets/d?after=%d" % pos).json()["observations"], 3 * 8)

    def connections_to_postgresql(self, node):
        """The local ports of node's connections to the server (ss -tnp)."""
        out = subprocess.run(["ss", "-tnpH", "state", "established"], check=True, stdout=subprocess.PIPE,
                             text=True).stdout
        ports = set()
        for line in out.splitlines():
            if "pid=%d," % node.proc.pid not in line:
                continue
            addrs = [t for t in line.split() if t.count(":") == 1 and t.rsplit(":", 1)[1].isdigit()]
            if len(addrs) >= 2 and int(addrs[1].rsplit(":", 1)[1]) == PG.port:
                ports.add(int(addrs[0].rsplit(":", 1)[1]))
        return sorted(ports)

    def cut(self, ports):
        """Every packet of these connections is dropped from now on, both ways, as when a network fails without
        a word: no reset, no error, the peer just stops answering (nftables, in a table of this test's own)."""
        table = "focald_cut_%d" % os.getpid()
        subprocess.run(["nft", "delete", "table", "inet", table], stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: subprocess.run(["nft", "delete", "table", "inet", table], stderr=subprocess.DEVNULL))
        ps = ", ".join(map(str, ports))
        rules = ("table inet %s {\n chain out {\n  type filter hook output priority 0; policy accept;\n"
                 "  ip saddr 127.0.0.1 tcp sport { %s } tcp dport %d drop\n"
                 "  ip saddr 127.0.0.1 tcp sport %d tcp dport { %s } drop\n }\n}\n") % (table, ps, PG.port, PG.port, ps)
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)

    def test_cluster_node_cut_off_silently_answers_and_reconnects(self):
        # a's connections to PostgreSQL stop carrying packets, with no reset. libpq alone would wait as long as
        # TCP does (about fifteen minutes for a request that is never acknowledged); focald's connection
        # settings (server/pglog.c) bound it, so a's batch is answered well within a minute (503
        # store_unavailable, or 200 once a has reconnected), the batch is stored once whatever the client retries,
        # a follows the log again, and it stops when asked (each node is stopped with SIGTERM at the end).
        a, b = self.node("a"), self.node("b")
        rng = random.Random(13)
        r, _ = self.post(a, batch_body(rng, batch_id="before"))
        self.assertEqual(r.status, 200, r)
        ports = self.connections_to_postgresql(a)
        self.assertGreaterEqual(len(ports), 2, "a's writer and its follower are connected")
        self.cut(ports)
        body = batch_body(rng, batch_id="cut")
        t0 = time.monotonic()
        r = a.batch("d", body, timeout=90)
        waited = time.monotonic() - t0
        # answered: either 503 (nothing stored) or, when a reconnected and wrote the group again in time, 200
        self.assertIn((r.status, r.json().get("code")), ((503, "store_unavailable"), (200, None)), r)
        self.assertLess(waited, 40, "the cut is noticed in about 15 s, not after TCP gives up")
        r2, pos_b = self.post(b, batch_body(rng, batch_id="on-b"))
        self.assertEqual(r2.status, 200, "b never waited on a: %r" % r2)
        for _ in range(100):  # the client's retries, with the same batch_id, while a reconnects
            if r.status != 503:
                break
            time.sleep(0.25)
            r = a.batch("d", body)
        self.assertEqual(r.status, 200, r)
        self.assertFalse(r.json()["duplicate"], "the batch cut off was not stored before")
        r, pos = self.post(a, body)
        self.assertTrue(r.json()["duplicate"], r)
        self.assertEqual(PG.sql(self.dbname, "SELECT count(*) FROM focald_log").strip(), "3", "each batch logged once")
        # a's follower was cut too: it notices, reconnects, and a applies b's rows again
        deadline = time.monotonic() + 60
        r, pos_b2 = self.post(b, batch_body(rng, batch_id="on-b-later"))
        while time.monotonic() < deadline:
            r = a.get("/v1/datasets/d?after=%d" % pos_b2)
            if r.status == 200:
                break
        self.assertEqual(r.status, 200, "a follows the log again: %r" % r)
        for n in (a, b):
            self.assertEqual(n.get("/v1/datasets/d?after=%d" % max(pos, pos_b2)).json()["observations"], 4 * 8)

    def test_cluster_postgresql_frozen_answers_stops_and_recovers(self):
        # Every process of PostgreSQL is stopped (SIGSTOP) while a has a batch in flight and b is idle: the
        # kernel still acknowledges every packet, so no TCP setting notices, and nothing answers. Each round
        # trip has a deadline (--cluster-deadline, short on a), so a's batches are answered within a few
        # deadlines, 2xx only when stored; b (the default deadline, a minute) answers a batch sent during the
        # freeze when it is stopped, and stops on SIGTERM within seconds with that batch in flight, its round
        # trips ended by the stop. Once PostgreSQL runs again, every batch is stored exactly once (a batch
        # whose COMMIT was in flight may be stored without a 2xx: its retry is then a duplicate), and the
        # nodes agree. Each commit in this database waits 0.1 s before its WAL is flushed (commit_delay), and
        # PostgreSQL is frozen while a's COMMIT is running, so that most often the group in flight is given
        # up at its commit and committed once the server runs again.
        deadline = 1.5
        args = ["--cluster-deadline", str(int(deadline * 1000))]
        bound = 3 * deadline + 2  # a statement's deadline, a reconnect's, and room for a slow machine
        for setting in ("commit_delay = 100000", "commit_siblings = 0"):
            PG.sql(self.dbname, "ALTER DATABASE %s SET %s" % (self.dbname, setting))
        a, b = self.node("a", args=args), self.node("b")
        stop_bound = 2 * 2 + 3  # a statement and a reconnection, each ended 2 s into the stop (store_cluster.c)
        rng = random.Random(17)
        model, stop, errors, took = Model(), threading.Event(), [], []
        body = batch_body(rng, batch_id="before")
        r, _ = self.post(b, body)
        self.assertEqual(r.status, 200, r)
        model.ack(body, r.json())

        def client():
            lrng = random.Random(18)
            i = 0
            body = batch_body(lrng, batch_id="load-0")
            try:
                while not stop.is_set():
                    t0 = time.monotonic()
                    r = a.batch("d", body, timeout=60)
                    took.append((time.monotonic() - t0, r.status))
                    if r.status == 200:
                        model.ack(body, r.json())
                        i += 1
                        body = batch_body(lrng, batch_id="load-%d" % i)
                    elif r.status == 503 and r.json()["code"] == "store_unavailable":
                        time.sleep(0.05)  # the same body, the same batch_id: retried until acknowledged
                    else:
                        errors.append(r)
                        return
                    time.sleep(0.02)
            except OSError as e:
                errors.append("a batch of a got no answer within 60 s: %r" % e)
            pending.append(body)

        pending = []
        t = threading.Thread(target=client)
        t.start()
        time.sleep(0.5)
        committing = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' " \
                     "AND query = 'COMMIT'"
        for _ in range(100):
            if PG.sql(self.dbname, committing).strip() == "1":
                break
        pids = PG.freeze()
        try:
            frozen_at = time.monotonic()
            # reads go on from memory; the follower notices at its deadline that it cannot know the head
            r = a.get("/v1/datasets/d", timeout=5)
            self.assertEqual(r.status, 200, r)
            self.wait_for("a's Focald-Log-Behind to say unknown",
                          lambda: a.get("/v1/datasets/d", timeout=5).header("Focald-Log-Behind") == "unknown",
                          timeout=bound)
            # b, idle when PostgreSQL froze: a batch sent now is in flight when b is asked to stop
            answer_b = []
            body_b = batch_body(rng, batch_id="on-b")
            tb = threading.Thread(target=lambda: answer_b.append(b.batch("d", body_b, timeout=60)))
            t0 = time.monotonic()
            tb.start()
            time.sleep(0.3)
            b.send_signal(signal.SIGTERM)
            try:
                status = b.proc.wait(timeout=stop_bound + 5)
            except subprocess.TimeoutExpired:
                self.fail("b did not stop within %.1f s of SIGTERM with PostgreSQL frozen" % (stop_bound + 5))
            stopped_in = time.monotonic() - t0 - 0.3
            tb.join(10)
            self.assertEqual(status, 0)
            self.assertLess(stopped_in, stop_bound, "b stops within a few seconds with PostgreSQL frozen")
            self.assertEqual(len(answer_b), 1, "b answered the batch in flight before it stopped")
            self.assertEqual(answer_b[0].status, 503, answer_b[0])
            # a's client went on through the freeze, for a few deadlines
            while time.monotonic() < frozen_at + 3 * deadline:
                time.sleep(0.1)
            stop.set()
            t.join(60)
            self.assertFalse(t.is_alive(), "a's client got its last answer")
        finally:
            PG.thaw(pids)
        self.assertEqual(errors, [])
        self.assertLess(max(s for s, _ in took), bound, "every batch of a was answered within %.1f s" % bound)
        self.assertIn(503, [st for _, st in took], "the freeze reached a's client")
        # PostgreSQL runs again: what was refused is retried with its batch_id, and is stored once
        for body in pending + [body_b]:
            for _ in range(120):
                r = a.batch("d", body, timeout=20)
                if r.status == 200:
                    model.ack(body, r.json())
                    break
                self.assertEqual((r.status, r.json()["code"]), (503, "store_unavailable"), r)
                time.sleep(0.25)
            self.assertEqual(r.status, 200, "%s still refused after PostgreSQL ran again: %r" % (body["batch_id"], r))
        body = batch_body(rng, batch_id="after")
        r, _ = self.post(a, body)
        self.assertEqual(r.status, 200, r)
        self.assertFalse(r.json()["duplicate"], r)
        model.ack(body, r.json())
        b = self.node("b", db_dir=b.db_dir)
        head = int(PG.sql(self.dbname, "SELECT pos FROM focald_log_head").strip())
        self.assertEqual(int(PG.sql(self.dbname, "SELECT count(*) FROM focald_log").strip()), head, "no gaps")
        ids = PG.sql(self.dbname, "SELECT convert_from(substring(body for position('\\x00'::bytea in body) - 1), "
                                  "'UTF8')::json->>'batch_id' FROM focald_log WHERE kind = 1").split()
        self.assertEqual(sorted(ids), sorted(model.acked), "every batch is in the log once, and no other")
        self.assertSameEverywhere([a, b], head)
        self.assertMatchesModel(b, model, head)

    def test_cluster_nodes_apply_the_log_with_the_same_settings(self):
        # the settings that shape what a node computes from the log's rows: the first node records its own, and a
        # node with any of them different refuses to start (it would rank, queue and export differently)
        a = self.node("a", args=["--ema-alpha", "0.5"])
        for args, want in ((["--ema-alpha", "0.3"], "--ema-alpha is 0.3, the cluster's is 0.5"),
                           (["--ema-alpha", "0.5", "--early-observations", "3"], "--early-observations is 3, the cluster's is 10"),
                           (["--ema-alpha", "0.5", "--reconsider-factor", "3"], "--reconsider-factor is 3, the cluster's is 2"),
                           (["--ema-alpha", "0.5", "--series-points", "4"], "--series-points is 4, the cluster's is 16"),
                           (["--ema-alpha", "0.5", "--idempotency-ttl", "60"], "--idempotency-ttl is 60, the cluster's is 86400")):
            d = self.node("b", args=args, start=False)
            with self.assertRaises(AssertionError) as e:
                d.start(timeout=20)
            self.assertIn("this node's " + want, str(e.exception))
        b = self.node("b", args=["--ema-alpha", ".50"])
        rng = random.Random(19)
        for i in range(6):
            r, last = self.post(a if i % 2 else b, batch_body(rng, batch_id="s%d" % i))
            self.assertEqual(r.status, 200, r)
        self.assertSameEverywhere([a, b], last)

    def test_cluster_new_node_on_a_file_that_holds_nothing_begins_from_the_snapshot(self):
        """A new node whose --db is a file holding nothing (a header page an interrupted creation left, a database
        a standalone focald made and stopped, an older focald's empty database) begins from the cluster's
        snapshot, as on no file. Such a file used to be taken for the node's own database: it began at position
        0, and with the log below the snapshot pruned it could not start. A file with something in it that is not
        the node's (another application's empty tables) is refused and left as it was."""
        a = self.node("a", args=["--cluster-snapshot-interval", "1", "--log-retention", "0"])
        rng = random.Random(11)
        model, last = Model(), 0
        for i in range(6):
            body = batch_body(rng, batch_id="h%d" % i)
            r, last = self.post(a, body)
            self.assertEqual(r.status, 200, r)
            model.ack(body, r.json())
        self.wait_for("a snapshot at the log's head",
                      lambda: int(PG.sql(self.dbname, "SELECT coalesce(max(pos), 0) FROM focald_snapshot")) >= last)
        self.wait_for("the log pruned below it",
                      lambda: int(PG.sql(self.dbname, "SELECT count(*) FROM focald_log WHERE pos <= %d" % last)) == 0)
        schema = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "schema")

        def sqlite_file(path, *scripts):
            c = sqlite3.connect(path)
            for sql in scripts:
                c.executescript(sql)
            c.commit()
            c.close()

        def header_only(path):
            sqlite_file(path, "PRAGMA journal_mode=WAL;")
            self.assertEqual(os.path.getsize(path), 4096)

        def standalone(path):
            alone = Daemon(self.id(), db_dir=os.path.dirname(path)).start()
            self.assertEqual(alone.stop(), 0)

        def older(path):  # schema 6, before the cluster's table
            sqlite_file(path, *[open(os.path.join(schema, "%03d_%s.sql" % (v, n))).read() for v, n in (
                (1, "init"), (2, "review"), (3, "ids_never_reused"), (4, "label_issue_el2n"), (5, "grand"),
                (6, "series"))], "PRAGMA user_version=6;")

        for kind, make in (("a header only", header_only), ("a standalone focald's, empty", standalone),
                           ("an older focald's, empty", older)):
            with self.subTest(kind=kind):
                td = harness.temp_dir()
                make(os.path.join(td, "f.db"))
                n = self.node("n%d" % len(self.nodes), db_dir=td)
                self.assertIn("began from the cluster's snapshot", n.log_text())
                self.assertSameEverywhere([a, n], last)
                self.assertMatchesModel(n, model, last)
                self.assertEqual(n.stop(), 0, n.log_text()[-800:])
        td = harness.temp_dir()
        db = os.path.join(td, "f.db")
        sqlite_file(db, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);")
        before = open(db, "rb").read()
        n = self.node("other", db_dir=td, start=False)
        with self.assertRaises(AssertionError) as e:
            n.start(timeout=20)
        self.assertIn("not focald's", str(e.exception) + n.log_text())
        self.assertEqual(open(db, "rb").read(), before, "a file that is not focald's was changed")

    def test_cluster_node_refuses_a_database_of_another_kind(self):
        # a database focald wrote alone
        alone = Daemon(self.id()).start()
        r = alone.batch("d", batch_body(random.Random(6)))
        self.assertEqual(r.status, 200, r)
        alone.stop()
        d = self.node("a", db_dir=alone.db_dir, start=False)
        with self.assertRaises(AssertionError) as e:
            d.start(timeout=20)
        self.assertIn("recorded alone", str(e.exception))
        # and a node's cache of another cluster's log
        a = self.node("a")
        a.stop()
        other = PG.new_database(self.dbname + "_other")
        d = Daemon(self.id(), db_dir=a.db_dir, args=["--store", other])
        with self.assertRaises(AssertionError) as e:
            d.start(timeout=20)
        self.assertIn("another cluster", str(e.exception))

    def test_cluster_node_leaves_each_database_it_refuses_as_it_was(self):
        """A database focald wrote alone, of today's schema and of every older one (tests/upgrade/fixtures), and a
        node's cache of another cluster's log: each refused, naming why, with its files byte for byte as they
        were. The node used to migrate them first, so that the focald that wrote an older one could no longer
        open it."""
        fixtures = harness.UPGRADE_FIXTURES
        dumps = sorted(f for f in os.listdir(fixtures) if os.path.exists(os.path.join(fixtures, f, "db.sql")))
        self.assertEqual(len(dumps), harness.NEWEST_SCHEMA, dumps)
        alone = Daemon(self.id()).start()
        self.assertEqual(alone.batch("d", batch_body(random.Random(8))).status, 200)
        alone.stop()
        a = self.node("a")
        a.stop()
        other = PG.new_database(self.dbname + "_refusing")

        def files(td):
            return {n: open(os.path.join(td, n), "rb").read() for n in sorted(os.listdir(td))}

        cases = [(k, self.uri, "recorded alone") for k in dumps + ["current"]] + [("cache", other, "another cluster")]
        for kind, store, say in cases:
            with self.subTest(db=kind):
                td = harness.temp_dir()
                db = os.path.join(td, "f.db")
                if kind == "current":
                    shutil.copy(alone.db, db)
                elif kind == "cache":
                    shutil.copy(a.db, db)
                else:
                    harness.load_dump(os.path.join(fixtures, kind, "db.sql"), db)
                before = files(td)
                p = subprocess.run([harness.FOCALD, "--listen", "127.0.0.1:%d" % harness.free_port(), "--db", db,
                                    "--store", store, "--node-name", "r"],
                                   stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
                out = p.stderr.decode("utf-8", "replace")
                self.assertEqual(p.returncode, 1, out)
                self.assertIn(say, out)
                self.assertNotIn("migration", out)
                self.assertEqual(files(td), before, "the database was changed: %s" % out)

    def test_cluster_node_each_thread_that_cannot_start_is_named_and_stops_it(self):
        """A cluster node's threads (the follower and the snapshotter among them), each failing to start in turn
        as under a task limit: the node exits 1 with an error line naming the thread and the reason. The
        follower's and the snapshotter's failures used to stop the node without a word."""
        a = self.node("a")  # the cluster exists: the nodes below begin from it
        a.stop()
        names = harness.each_thread_failing(self, lambda td: [
            "--listen", "127.0.0.1:%d" % harness.free_port(), "--db", os.path.join(td, "f.db"), "--store", self.uri,
            "--node-name", "t", "--cluster-snapshot-interval", "60"])
        self.assertTrue({"follower", "snapshotter", "writer", "checkpointer"} <= names, names)


if __name__ == "__main__":
    sys.exit(main())
