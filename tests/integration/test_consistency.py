#!/usr/bin/python3
"""Consistency tests of focald: a 2xx stays true through full disks, I/O errors, kills, races and shutdowns.

usage: BUILD=build /usr/bin/python3 tests/integration/test_consistency.py [-v] [unittest names...]

Each test names a way the promise "a 2xx means committed, an error means nothing changed" was once broken,
and drives the whole family of that mechanism, not one scenario. Faults come from the fault-injection
harness's library (tests/fault/faultvfs.c, preloaded: a full disk or an I/O error at SQLite's VFS, a SIGKILL
at a chosen step of focald's writer) and, as root, from a real tmpfs that fills up. Several requests are
made to land in one group of the writer by holding the writer (the library's hold file) until they are
all queued (focald_writer_queue_depth in /metrics).

- DiskFullSnapshotTest: snapshot steps that fail for a while (disk full) under ingest, then SIGTERM or
  SIGKILL and a restart: every acknowledged observation is there exactly once (through the VFS; and on a
  real 24 MiB tmpfs when root).
- KillDuringSnapshotTest: SIGKILL at each step of a snapshot pass that spans several transactions, while
  batches bring new samples and meta and reviews change some of them: every restart starts, holds every
  acknowledged change once and answers every query.
- SameGroupTest: a dataset deleted, re-created and given a queue in one group; reviews, meta and queue
  builds grouped after its deletion: nothing of the deleted dataset comes back, before or after a restart.
- AnswerAfterCommitTest: every allocation where a committed change is answered fails, and each kind of
  write is answered as without the fault; memory runs out while an answer is built: the change is refused
  and changes nothing; each allocation of a change's decoding, then of its group, fails in turn.
- DrainTest: SIGTERM with far more queued scoring work than --drain-timeout covers: exit 0, every request
  answered 200 or 503 draining, and exactly the batches answered 200 stored.
- ExportPinnedTest: an export whose dataset is deleted (or deleted and re-created) while it streams ends
  with an error, never a well-formed short document.
- RefusedStartTest: a read error while loading, or a database with a hole in a dataset's keys, a history
  row without its sample, a batch of a run that does not exist: focald refuses to start and says why.
- ConcurrencyTest: several clients interleaving delete, re-create, queue build, review, meta, export and
  ingest on the same two dataset names; invariants checked as it goes; the state survives a restart
  exactly. Run under ASan and TSan by CI.

The state dumps include every sample's series (each daemon keeps 2 points: FOCALD_SERIES_POINTS).

Uses harness.py's daemon and runner. The last line is "ok N" or "failed K".
"""
import http.client
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# Every daemon here keeps series of 2 points (unless the environment says otherwise): the samples of these
# workloads are observed a few times each, which then fills their series and doubles the stride, so the
# state dumps compared across faults and restarts hold down-sampled series, not only their first points.
os.environ.setdefault("FOCALD_SERIES_POINTS", "2")

ALL = harness.ALL_STATES
SHIM = os.path.join(os.path.dirname(harness.FOCALD), "tests", "libfaultvfs.so")


def shim_env(fault=None, hold=None, trace=None):
    env = {"LD_PRELOAD": SHIM, "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", "")}
    if fault:
        env["FOCALD_FAULT"] = fault
    if hold:
        env["FOCALD_FAULT_HOLD"] = hold
    if trace:
        env["FOCALD_FAULT_TRACE"] = trace
    return env


def batch_body(ids, step, run="r", c=3, batch_id=None, meta=None, seed=0):
    rng = random.Random(seed * 7919 + step)
    body = {"run": run, "ids": ids, "step": step, "logits": [[rng.uniform(-2, 2) for _ in range(c)] for _ in ids],
            "targets": [rng.randrange(c) for _ in ids]}
    if batch_id:
        body["batch_id"] = batch_id
    if meta:
        body["meta"] = meta
    return body


def observations(d, ds):
    r = d.dataset(ds)
    return r.json()["observations"] if r.status == 200 else 0


def writer_queue_depth(d):
    for line in d.get("/metrics").body.decode().splitlines():
        if line.startswith("focald_writer_queue_depth "):
            return int(float(line.split()[1]))
    return -1


def summary(d):
    """What a large dataset's state comes to: every dataset's detail and every sample's ranked item."""
    return {x["name"]: (d.dataset(x["name"]).json(), d.all_hard(x["name"], page=5000, status=ALL))
            for x in d.get("/v1/datasets").json()["datasets"]}


def dump(d):
    """The API-visible state of every dataset (timestamps left out), as tests/fault/torture.py compares it."""
    strip = lambda v: ({k: strip(x) for k, x in v.items() if k not in ("at", "created_at", "request_id")}  # noqa: E731
                       if isinstance(v, dict) else [strip(x) for x in v] if isinstance(v, list) else v)
    out = {}
    for name in sorted(x["name"] for x in d.get("/v1/datasets").json()["datasets"]):
        items = d.all_hard(name, page=1000, status=ALL)
        ds = {"detail": strip(d.dataset(name).json()), "samples": {}}
        for it in items:
            sid = harness.q(it["id"])
            ds["samples"][it["id"]] = (strip(d.get("/v1/datasets/%s/samples/%s" % (name, sid)).json()),
                                       strip(d.get("/v1/datasets/%s/samples/%s/reviews" % (name, sid)).json()))
        ds["queues"] = {q["name"]: strip(d.get("/v1/datasets/%s/queues/%s?limit=10000" % (name, q["name"])).json())
                        for q in d.get("/v1/datasets/%s/queues" % name).json()["queues"]}
        ds["relabels"] = strip(d.get("/v1/datasets/%s/relabels?limit=10000" % name).json())
        out[name] = ds
    return out


def answer(r):
    """A response as compared: its status and its JSON, timestamps and request ids left out."""
    return r.status, {k: v for k, v in r.json().items() if k not in ("at", "created_at", "request_id")}


class ConsistencyTestCase(harness.HardeningTestCase):
    """No class daemon: each test starts its own, with the harness's library preloaded where it needs it."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(SHIM):
            raise AssertionError("%s is not built (run make)" % SHIM)

    def daemon(self, db_dir=None, args=(), env=None, log_dir=None):
        d = harness.Daemon(self.id(), db_dir=db_dir, args=args, env=env, log_dir=log_dir)
        self.addCleanup(lambda: d.running() and d.kill9())
        return d

    def restart(self, d, args=(), env=None):
        """A new daemon on d's database."""
        return self.daemon(db_dir=d.db_dir, args=args, env=env, log_dir=d.log_dir).start()


# ---------------------------------------------------------------------------- 1. disk full during snapshots

class DiskFullSnapshotTest(ConsistencyTestCase):

    def _ingest_through_full_snapshots(self, end):
        """Snapshot steps fail (disk full) while batches are acknowledged; space returns; then end
        (SIGTERM or SIGKILL) and a restart. Every acknowledged observation is there once."""
        root = harness.temp_dir()
        full = os.path.join(root, "disk-is-full")
        open(full, "w").close()
        env = shim_env(fault="kind=write,at=1,span=1000000000,do=full,in=snapshot,while=%s" % full)
        d = self.daemon(db_dir=root, args=("--snapshot-interval", "0"), env=env).start()
        acked = {}
        ds = "snapfull"
        for j in range(40):
            ids = ["s%d" % ((j * 7 + i) % 60) for i in range(8)]  # new samples and seen ones
            meta = {ids[0]: {"uri": "/m/%d.png" % j}} if j % 5 == 0 else None
            r = d.batch(ds, batch_body(ids, j, meta=meta, batch_id="b%d" % j))
            self.assertEqual(r.status, 200, r)
            for sid in ids:
                acked[sid] = acked.get(sid, 0) + 1
            if j == 25:
                os.unlink(full)  # space returns: the next passes write what the failed ones could not
        # the failed passes were counted: the metric says so
        m = d.get("/metrics").body.decode()
        self.assertRegex(m, r"focald_snapshot_failures_total [1-9]")
        live = dump(d)
        if end == "term":
            self.assertEqual(d.stop(), 0)
        else:
            d.kill9()
        d2 = self.restart(d)
        seen = {it["id"]: it["seen"] for it in d2.all_hard(ds, page=1000, status=ALL)}
        self.assertEqual(seen, acked)
        self.assertEqual(observations(d2, ds), sum(acked.values()))
        self.assertEqual(dump(d2), live)
        self.assertEqual(d2.stop(), 0)

    def test_consistency_snapshot_steps_failing_with_a_full_disk_then_sigterm(self):
        self._ingest_through_full_snapshots("term")

    def test_consistency_snapshot_steps_failing_with_a_full_disk_then_sigkill(self):
        self._ingest_through_full_snapshots("kill")

    def test_consistency_disk_full_on_a_small_tmpfs_keeps_every_acknowledged_observation(self):
        """As measured from outside: a 24 MiB tmpfs, a filler leaving about 1.5 MB, two clients ingesting
        with snapshots every second, 507s while full; the filler removed; SIGTERM; restart."""
        mnt, logs = harness.mount_tmpfs(self, "24m")
        d = self.daemon(db_dir=mnt, log_dir=logs, args=("--snapshot-interval", "1")).start()
        filler = os.path.join(mnt, "filler")
        st = os.statvfs(mnt)
        free = st.f_bavail * st.f_frsize
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, free - 1500 * 1024))
        acked = {}
        lock = threading.Lock()
        stop = threading.Event()
        counts = {"ok": 0, "507": 0, "other": []}

        def client(tag):
            j = 0
            while not stop.is_set():
                ids = ["%s-%d" % (tag, (j * 13 + i) % 2000) for i in range(64)]
                r = d.batch("tmpfull", batch_body(ids, j, batch_id="%s-%d" % (tag, j)))
                with lock:
                    if r.status == 200:
                        counts["ok"] += 1
                        for sid in ids:
                            acked[sid] = acked.get(sid, 0) + 1
                    elif r.status == 507:
                        counts["507"] += 1
                    else:
                        counts["other"].append(r)
                j += 1

        threads = [threading.Thread(target=client, args=(t,)) for t in ("a", "b")]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and counts["507"] < 20:
            time.sleep(0.2)
        time.sleep(3)  # a few snapshot passes meet the full disk
        os.unlink(filler)
        time.sleep(3)  # and then room again
        stop.set()
        for t in threads:
            t.join()
        self.assertEqual(counts["other"], [])
        self.assertGreater(counts["507"], 0, "the disk never filled")
        self.assertEqual(d.stop(), 0)
        d2 = self.daemon(db_dir=mnt, log_dir=logs).start()
        seen = {it["id"]: it["seen"] for it in d2.all_hard("tmpfull", page=10000, status=ALL)}
        self.assertEqual(len(seen), len(acked))
        self.assertEqual(seen, acked)
        self.assertEqual(observations(d2, "tmpfull"), sum(acked.values()))
        self.assertEqual(d2.stop(), 0)


# ---------------------------------------------------------------------------- 2. SIGKILL during a snapshot pass

class KillDuringSnapshotTest(ConsistencyTestCase):

    def test_consistency_sigkill_at_each_step_of_a_long_snapshot_pass(self):
        """A first batch of 60,000 new samples makes a pass of tens of steps (3 ms each); while it
        runs, batches bring more new samples with meta, and PUT meta and reviews touch brand-new ones.
        SIGKILL at the kth step's sync, for k spread over the pass: every restart starts and holds exactly
        what was acknowledged. A batch in flight when focald died is sent again with its batch_id, as a
        client would: it is then stored once, whether or not its first attempt was."""
        big = ["big-%06d" % i for i in range(60000)]
        for k in (1, 2, 3, 5, 9, 16, 28):
            with self.subTest(step=k):
                root = harness.temp_dir()
                env = shim_env(fault="kind=sync,at=%d,do=kill-before,in=snapshot" % k)
                d = self.daemon(db_dir=root, args=("--snapshot-interval", "0"), env=env).start()
                sent = [("big", {"batch_id": "big", "ids": big, "logits": [[0.1, -0.1]] * len(big),
                                 "targets": [1] * len(big)})]
                for j in range(30):
                    ids = ["new-%d-%d" % (j, i) for i in range(5)]
                    sent.append(("new%d" % j, batch_body(ids, j, c=2, batch_id="new%d" % j,
                                                         meta={ids[0]: {"uri": "/b/%d" % j}})))
                changes = []
                answered = set()
                try:
                    for bid, body in sent:
                        r = d.batch("long", body)
                        self.assertEqual(r.status, 200, r)
                        answered.add(bid)
                        if bid == "big":
                            continue
                        ids = body["ids"]
                        r = d.request("PUT", "/v1/datasets/long/samples/%s/meta" % ids[1], {"uri": "/put/" + bid})
                        if r.status == 200:
                            changes.append(("meta", ids[1], "/put/" + bid))
                        r = d.post("/v1/datasets/long/samples/%s/review" % ids[2], {"status": "confirmed"})
                        if r.status == 200:
                            changes.append(("review", ids[2], "confirmed"))
                except (OSError, http.client.HTTPException):
                    pass  # killed
                try:
                    status = d.proc.wait(10)
                except subprocess.TimeoutExpired:
                    status = "running"
                self.assertEqual(status, -signal.SIGKILL, "the kill at snapshot sync %d did not happen" % k)
                d2 = self.restart(d)
                expected = 0
                for bid, body in sent:
                    if bid in answered:
                        expected += len(body["ids"])
                    else:
                        r = d2.batch("long", body)  # sent again, as its client would: stored once either way
                        self.assertEqual(r.status, 200, r)
                        expected += len(body["ids"])
                        break  # the rest were never sent
                self.assertEqual(observations(d2, "long"), expected, "kill at snapshot sync %d" % k)
                for kind, sid, want in changes:
                    s = d2.sample("long", sid).json()
                    if kind == "meta":
                        self.assertEqual(s["meta"]["uri"], want)
                    else:
                        self.assertEqual(s["status"], want)
                for by in harness.HISTORY_FIELDS:
                    r = d2.hard("long", by=by, k=50, status=ALL)
                    self.assertEqual(r.status, 200, r)
                    self.assertEqual(d2.hard("long", by=by, k=50, run="default", status=ALL).status, 200)
                before = summary(d2)
                self.assertEqual(d2.stop(), 0)
                d3 = self.restart(d2)
                self.assertEqual(summary(d3), before)
                self.assertEqual(d3.stop(), 0)


# ---------------------------------------------------------------------------- 3, 4. one group

class SameGroupTest(ConsistencyTestCase):

    def _grouped(self, d, hold, requests):
        """Holds the writer, sends requests (method, path, body) from one thread each, waits until all
        are queued for the writer, releases it. Returns the responses in request order."""
        open(hold, "w").close()
        out = [None] * len(requests)

        def send(i, req):
            out[i] = d.request(*req, timeout=30)

        threads = []
        for i, req in enumerate(requests):
            t = threading.Thread(target=send, args=(i, req))
            t.start()
            threads.append(t)
            # in order: each is queued before the next is sent
            deadline = time.monotonic() + 10
            while writer_queue_depth(d) < i + 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            self.assertEqual(writer_queue_depth(d), i + 1, "request %d did not reach the writer" % i)
        os.unlink(hold)
        for t in threads:
            t.join(30)
        return out

    def _assertGroupedIsSequential(self, seed, reqs, after_group=None):
        """reqs sent one after the other, and as one group of the writer, each on a new daemon that seed(d)
        prepared: the answers and the state are the same, and each state survives a restart.
        after_group(d) checks the grouped daemon further."""
        results = []
        for grouped in (False, True):
            root = harness.temp_dir()
            hold = os.path.join(root, "hold")
            d = self.daemon(db_dir=root, env=shim_env(hold=hold)).start()
            seed(d)
            rs = self._grouped(d, hold, reqs) if grouped else [d.request(*r) for r in reqs]
            results.append(([answer(r) for r in rs], dump(d)))
            if grouped and after_group:
                after_group(d)
            self.assertEqual(d.stop(), 0)
            d2 = self.restart(d)
            self.assertEqual(dump(d2), results[-1][1], "after a restart")
            self.assertEqual(d2.stop(), 0)
        self.assertEqual(results[1], results[0])

    def _seed(self, d, ds, n=50):
        ids = ["o%d" % i for i in range(n)]
        self.assertEqual(d.batch(ds, batch_body(ids, 1, meta={"o0": {"patient_id": "p"}})).status, 200)
        self.assertEqual(d.post("/v1/datasets/%s/samples/o1/review" % ds, {"status": "confirmed"}).status, 200)
        self.assertEqual(d.post("/v1/datasets/%s/queues" % ds, {"name": "old", "size": 19}).status, 201)
        return ids

    def test_consistency_delete_recreate_and_queue_build_in_one_group(self):
        root = harness.temp_dir()
        hold = os.path.join(root, "hold")
        d = self.daemon(db_dir=root, env=shim_env(hold=hold)).start()
        self._seed(d, "g")
        rs = self._grouped(d, hold, [
            ("DELETE", "/v1/datasets/g", None),
            ("POST", "/v1/datasets/g/batches", batch_body(["n0", "n1"], 2)),
            ("POST", "/v1/datasets/g/queues", {"name": "q", "size": 10}),
        ])
        self.assertEqual(rs[0].status, 200, rs[0])
        self.assertEqual(rs[1].status, 200, rs[1])
        self.assertEqual(rs[2].status, 201, rs[2])
        self.assertEqual(rs[2].json()["size"], 2)  # built from the new dataset, not the deleted one
        items = d.get("/v1/datasets/g/queues/q").json()["items"]
        self.assertEqual(sorted(it["id"] for it in items), ["n0", "n1"])
        self.assertEqual(d.dataset("g").json()["samples"], 2)
        live = dump(d)
        self.assertEqual(d.stop(), 0)
        d2 = self.restart(d)
        self.assertEqual(dump(d2), live)
        self.assertEqual(d2.stop(), 0)

    def test_consistency_ops_grouped_after_a_delete_do_not_resurrect_it(self):
        root = harness.temp_dir()
        hold = os.path.join(root, "hold")
        d = self.daemon(db_dir=root, env=shim_env(hold=hold)).start()
        self._seed(d, "g")
        rs = self._grouped(d, hold, [
            ("DELETE", "/v1/datasets/g", None),
            ("POST", "/v1/datasets/g/samples/o2/review", {"status": "confirmed"}),
            ("PUT", "/v1/datasets/g/samples/o3/meta", {"uri": "/x.png"}),
            ("POST", "/v1/datasets/g/queues", {"name": "q2", "size": 5}),
            ("DELETE", "/v1/datasets/g/queues/old", None),
        ])
        self.assertEqual(rs[0].status, 200, rs[0])
        for r in rs[1:]:
            self.assertProblem(r, 404, ("dataset_not_found",))
        # a new dataset of the same name: only its own two samples, before and after a restart
        self.assertEqual(d.batch("g", batch_body(["n0", "n1"], 5)).status, 200)
        for dd in (d, None):
            if dd is None:
                self.assertEqual(d.stop(), 0)
                dd = self.restart(d)
            g = dd.dataset("g").json()
            self.assertEqual((g["samples"], g["observations"]), (2, 2))
            self.assertEqual(dd.get("/v1/datasets/g/queues").json()["queues"], [])
            self.assertEqual(dd.get("/v1/datasets/g/relabels").json()["relabels"], [])
            self.assertProblem(dd.get("/v1/datasets/g/samples/o1"), 404, "sample_not_found")
            for sid in ("n0", "n1"):
                s = dd.get("/v1/datasets/g/samples/%s/reviews" % sid).json()
                self.assertEqual((s["status"], s["reviews"]), ("open", []))
        self.assertEqual(dd.stop(), 0)

    def test_consistency_reviews_and_meta_of_many_samples_in_one_group(self):
        """Reviews and meta puts on different samples of one dataset share a group (one commit); samples
        whose rows the table does not have yet come first and out of key order. The answers and the state
        equal those of the same requests sent one after the other, before and after a restart."""
        ids = ["m%02d" % i for i in range(30)]
        reqs = []
        for i, k in enumerate([20, 5, 25, 3, 28, 11, 29, 0]):
            reqs.append(("POST", "/v1/datasets/m/samples/%s/review" % ids[k],
                         {"status": ["confirmed", "relabelled", "dismissed", "in_review"][i % 4],
                          **({"label": 2} if i % 4 == 1 else {})}))
        reqs.append(("PUT", "/v1/datasets/m/samples/%s/meta" % ids[27], {"uri": "/27.png"}))
        reqs.append(("PUT", "/v1/datasets/m/samples/%s/meta" % ids[9], {"uri": "/9.png"}))
        reqs.append(("POST", "/v1/datasets/m/samples/%s/review" % ids[9], {"status": "confirmed"}))  # waits: same sample

        def one_commit(d):
            m = d.get("/metrics").body.decode()
            one = int(re.search(r'focald_commit_ops_bucket\{le="1"\} (\d+)', m).group(1))
            total = int(re.search(r'focald_commit_ops_count (\d+)', m).group(1))
            self.assertGreater(total - one, 0, "no commit held more than one change")

        # snapshots every 5 s: the samples rows are not written yet
        self._assertGroupedIsSequential(lambda d: self.assertEqual(d.batch("m", batch_body(ids, 1)).status, 200),
                                        reqs, after_group=one_commit)

    def test_consistency_a_group_that_fails_changes_nothing(self):
        """A group of several changes (batches on a dataset and on a new one, a review, a meta put, a
        deletion) whose transaction fails at its first write, sync or allocation: every change of it is
        refused (507 or 500), nothing of it shows, before or after a restart; sent again once the fault is
        gone, the answers and the state equal those of a daemon that never met the fault."""
        # in this order they form one group: the review and the meta put come before any op on their dataset
        reqs = [
            ("POST", "/v1/datasets/a/samples/a3/review", {"status": "relabelled", "label": 1}),
            ("PUT", "/v1/datasets/a/samples/a4/meta", {"uri": "/4.png"}),
            ("POST", "/v1/datasets/a/batches", batch_body(["a1", "a2", "new"], 3, meta={"new": {"uri": "/n.png"}})),
            ("POST", "/v1/datasets/n/batches", batch_body(["n1", "n2"], 4)),
            ("DELETE", "/v1/datasets/b", None),
        ]

        def seed(d):
            self.assertEqual(d.batch("a", batch_body(["a%d" % i for i in range(8)], 1)).status, 200)
            self.assertEqual(d.batch("b", batch_body(["b1", "b2"], 2)).status, 200)

        ref = self.daemon().start()
        seed(ref)
        want = ([answer(ref.request(*r)) for r in reqs], dump(ref))
        self.assertEqual(ref.stop(), 0)
        for fault in ("kind=write,at=1,span=1000000,do=full", "kind=write,at=1,span=1000000,do=ioerr",
                      "kind=sync,at=1,span=1000000,do=ioerr", "kind=alloc,at=1,span=1000000,do=nomem"):
            with self.subTest(fault=fault):
                root = harness.temp_dir()
                hold, armed = os.path.join(root, "hold"), os.path.join(root, "armed")
                d = self.daemon(db_dir=root, env=shim_env(fault="%s,in=group,while=%s" % (fault, armed), hold=hold)).start()
                seed(d)
                before = dump(d)
                open(armed, "w").close()
                rs = self._grouped(d, hold, reqs)
                self.assertEqual(sorted({r.status for r in rs}) in ([507], [500]), True, [r.status for r in rs])
                m = d.get("/metrics").body.decode()
                self.assertIn("focald_commit_failures_total 1\n", m)  # one group, one failed transaction
                self.assertEqual(dump(d), before)
                os.unlink(armed)
                got = ([answer(d.request(*r)) for r in reqs], dump(d))
                self.assertEqual(got, want)
                self.assertEqual(d.stop(), 0)
                d2 = self.restart(d)
                self.assertEqual(dump(d2), want[1])
                self.assertEqual(d2.stop(), 0)

    def test_consistency_every_pair_of_ops_on_one_dataset_in_one_group(self):
        """Each ordered pair of writer ops on one dataset, grouped: the answers and the state equal those
        of the same two requests sent one after the other, and survive a restart."""
        ops = {
            "batch": ("POST", "/v1/datasets/p/batches", batch_body(["o1", "new"], 9)),
            "delete": ("DELETE", "/v1/datasets/p", None),
            "review": ("POST", "/v1/datasets/p/samples/o2/review", {"status": "dismissed"}),
            "meta": ("PUT", "/v1/datasets/p/samples/o3/meta", {"uri": "/m.png"}),
            "queue": ("POST", "/v1/datasets/p/queues", {"name": "q", "size": 4}),
            "unqueue": ("DELETE", "/v1/datasets/p/queues/old", None),
        }
        for a in ops:
            for b in ops:
                with self.subTest(first=a, then=b):
                    self._assertGroupedIsSequential(lambda d: self._seed(d, "p", n=8), [ops[a], ops[b]])


# ---------------------------------------------------------------------------- 4b. answers of committed changes

def write_requests():
    """One request of each kind of write, in an order that makes each succeed: batches (JSON and binary bodies,
    JSON and binary answers, with and without a batch_id, a duplicate, hardest samples asked for), reviews (one
    with an Idempotency-Key, sent twice: the second is a replay), a meta put, a queue built and removed, and
    a dataset deleted."""
    import numpy as np
    import test_binary as tb
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 4)).astype(np.float32)
    ids = ["w%d" % i for i in range(6)]
    bin_body, hl = tb.build({"run": "r", "batch_id": "bin-1"}, tb.bin_tensors(ids, x, np.arange(6) % 4))
    bin_headers = {"Content-Type": tb.OCTET, "Inference-Header-Content-Length": str(hl)}
    key = {"Idempotency-Key": "review-w1"}
    return [
        ("POST", "/v1/datasets/w/batches", batch_body(ids, 1, c=4, batch_id="json-1"), None),
        ("POST", "/v1/datasets/w/batches", batch_body(ids, 1, c=4, batch_id="json-1"), None),
        ("POST", "/v1/datasets/w/batches", dict(batch_body(ids, 2, c=4), ohem_k=3), None),
        ("POST", "/v1/datasets/w/batches", bin_body, bin_headers),
        ("POST", "/v1/datasets/w/batches", bin_body, dict(bin_headers, Accept=tb.OCTET)),
        ("POST", "/v1/datasets/v/batches", batch_body(["v1", "v2"], 1), None),
        ("POST", "/v1/datasets/w/samples/w1/review", {"status": "relabelled", "label": 2}, key),
        ("POST", "/v1/datasets/w/samples/w1/review", {"status": "relabelled", "label": 2}, key),
        ("POST", "/v1/datasets/w/samples/w2/review", {"status": "dismissed"}, None),
        ("PUT", "/v1/datasets/w/samples/w3/meta", {"uri": "/3.png"}, None),
        ("POST", "/v1/datasets/w/queues", {"name": "q", "size": 3}, None),
        ("DELETE", "/v1/datasets/w/queues/q", None, None),
        ("DELETE", "/v1/datasets/v", None, None),
    ]


def sent(d, reqs):
    """Each request's answer as compared: status, the headers a client reads, and the body (JSON without
    timestamps, or a binary answer's bytes)."""
    out = []
    for method, path, body, headers in reqs:
        r = d.request(method, path, body, headers=headers)
        keep = {k: r.header(k) for k in ("Content-Type", "Inference-Header-Content-Length", "Idempotent-Replayed")}
        if (r.header("Content-Type") or "").startswith("application/octet-stream"):
            out.append((r.status, keep, r.body))
        else:
            out.append((r.status, keep) + answer(r)[1:])
    return out


class AnswerAfterCommitTest(ConsistencyTestCase):
    """A committed change is answered 2xx whatever memory does: the answer is built before the commit, and
    running out of memory there refuses the change and changes nothing."""

    def test_consistency_a_committed_change_is_answered_without_taking_memory(self):
        """Every allocation where a committed change is answered fails (the harness's library fails every
        malloc of the reply step): each kind of write is still answered exactly as by a daemon that met no
        fault, and nothing was allocated there (no fault fired), before or after a restart."""
        reqs = write_requests()
        ref = self.daemon().start()
        want = (sent(ref, reqs), dump(ref))
        self.assertEqual(ref.stop(), 0)
        self.assertEqual([w[0] for w in want[0]], [200] * 10 + [201, 200, 200])
        self.assertEqual(want[0][7][1]["Idempotent-Replayed"], "true")
        root = harness.temp_dir()
        trace = os.path.join(root, "trace")
        d = self.daemon(db_dir=root, env=shim_env(fault="kind=malloc,at=1,span=1000000000,do=nomem,in=reply",
                                                  trace=trace)).start()
        got = (sent(d, reqs), dump(d))
        self.assertEqual(got, want)
        self.assertEqual(d.stop(), 0)
        with open(trace) as f:
            lines = f.read().splitlines()
        self.assertEqual(sum(1 for x in lines if x.startswith("step reply ")), len(reqs), "each write named the reply")
        self.assertEqual([x for x in lines if x.startswith("fired")], [])
        self.assertEqual(dump(self.restart(d)), want[1])

    def test_consistency_an_answer_goes_out_whole_or_not_at_all(self):
        """Each allocation made where an answer is handed to libmicrohttpd (the respond step: the response and
        each of its headers) fails in turn, one per attempt, for reads, a streamed export, a problem, and
        writes whose answer does not change when sent again (a duplicate batch, JSON and binary, and a
        replayed review): each attempt gets no answer (the connection closes, as documented) or the whole
        answer, every header and byte as without the fault. A header that could not be added was once left
        out of an answer sent anyway."""
        writes = write_requests()
        again = [writes[1], writes[4], writes[7]]
        reads = [("GET", p, None, None) for p in (
            "/v1/datasets", "/v1/datasets/w", "/v1/datasets/w/hard-examples?k=4",
            "/v1/datasets/w/export?format=csv", "/v1/datasets/w/export?format=jsonl", "/v1/datasets/nope")]
        root = harness.temp_dir()
        armed, trace = os.path.join(root, "armed"), os.path.join(root, "trace")
        d = self.daemon(db_dir=root, env=shim_env(fault="kind=malloc,at=1,do=nomem,in=respond,while=%s" % armed,
                                                  trace=trace)).start()
        sent(d, writes)

        def whole(method, path, body, headers):
            """The answer as compared, every header but the request's id and the date; None for none."""
            try:
                r = d.request(method, path, body, headers=headers)
            except (OSError, http.client.HTTPException):
                return None
            rid = (r.header("X-Request-Id") or "").encode()
            return (r.status, sorted((k.lower(), v) for k, v in r.headers if k.lower() not in ("x-request-id", "date")),
                    r.body.replace(rid, b"<request id>") if rid else r.body)

        def fired():
            with open(trace) as f:
                return sum(1 for x in f if x.startswith("fired malloc"))

        refused = 0
        for req in again + reads:
            want = whole(*req)
            self.assertIsNotNone(want)
            self.assertIn("content-type", dict(want[1]), req)
            for n in range(1, 1000):
                with open(armed, "w") as f:
                    f.write(str(n))
                before = fired()
                got = whole(*req)
                os.unlink(armed)
                if fired() == before:
                    self.assertEqual(got, want, "%s %s: no fault" % req[:2])
                    break
                refused += got is None
                self.assertIn(got, (None, want), "%s %s, allocation %d failing" % (req[0], req[1], n))
            else:
                self.fail("%s %s: the respond step never ran out of allocations" % req[:2])
        self.assertGreater(refused, 3 * len(again + reads), "too few allocations failed to mean anything")
        self.assertEqual(d.stop(), 0)

    def test_consistency_a_change_whose_answer_cannot_be_built_is_refused_and_changes_nothing(self):
        """Memory runs out while a change's answer is built (every malloc of the pool's answer step for a
        batch, or of the writer's group for the other changes): each is refused with a 500 and nothing of it
        shows; sent again once memory is back, the answers and the state equal those of a daemon that never
        met the fault."""
        reqs = write_requests()
        ref = self.daemon().start()
        want = (sent(ref, reqs), dump(ref))
        self.assertEqual(ref.stop(), 0)
        for step in ("answer", "group"):
            with self.subTest(step=step):
                root = harness.temp_dir()
                armed, trace = os.path.join(root, "armed"), os.path.join(root, "trace")
                d = self.daemon(db_dir=root, env=shim_env(
                    fault="kind=malloc,at=1,span=1000000000,do=nomem,in=%s,while=%s" % (step, armed),
                    trace=trace)).start()
                for i, (method, path, body, headers) in enumerate(reqs):
                    before = dump(d)
                    open(armed, "w").close()
                    r = d.request(method, path, body, headers=headers)
                    os.unlink(armed)
                    if step == "answer" and "/batches" not in path:
                        self.assertEqual(r.status, want[0][i][0], r)  # only batches build on the pool
                        continue
                    self.assertEqual(r.status, 500, (i, r))
                    self.assertEqual(r.json()["code"], "internal", r)
                    self.assertEqual(dump(d), before, "request %d changed the state" % i)
                    self.assertEqual(sent(d, [reqs[i]]), [want[0][i]])
                self.assertEqual(dump(d), want[1])
                with open(trace) as f:
                    self.assertTrue(any(x.startswith("fired malloc") for x in f), "no allocation failed")
                self.assertEqual(d.stop(), 0)
                self.assertEqual(dump(self.restart(d)), want[1])


    def test_consistency_each_allocation_of_a_change_failing_in_turn_changes_nothing(self):
        """Each allocation made for a change fails in turn, one per attempt, and the change is sent again after
        each: those of the HTTP thread that decodes and checks it (the request step), then those the writer
        makes for it (its group: its statements, its preparation, its answer, its apply). An attempt answered
        500 changed nothing, and the first one answered 2xx is answered as by a daemon that met no fault, with
        the same state after it; the end state survives a restart. Among the changes, batches add
        samples past a dataset's capacity in each of its two runs, so that growing the dataset's arrays fails
        after some of them are grown (a run left shorter than its dataset once wrote past its arrays)."""
        def growth(run, lo, hi, step):
            return ("POST", "/v1/datasets/g/batches", batch_body(["g%d" % i for i in range(lo, hi)], step, run=run), None)

        seed = [growth("a", 0, 10, 1), growth("b", 0, 6, 2)]
        reqs = [growth("a", 10, 30, 3), growth("b", 30, 41, 4), growth("b", 0, 70, 5)] + write_requests()
        ref = self.daemon().start()
        sent(ref, seed)
        want = []
        for req in reqs:
            want.append((sent(ref, [req])[0], dump(ref)))
        self.assertEqual(ref.stop(), 0)
        for step in ("request", "group"):
            with self.subTest(step=step):
                root = harness.temp_dir()
                armed = os.path.join(root, "armed")
                d = self.daemon(db_dir=root, env=shim_env(fault="kind=malloc,at=1,do=nomem,in=%s,while=%s" % (step, armed))).start()
                sent(d, seed)
                failed = 0
                for i, req in enumerate(reqs):
                    before = summary(d)
                    for n in range(1, 100000):
                        with open(armed, "w") as f:
                            f.write(str(n))
                        got = sent(d, [req])[0]
                        os.unlink(armed)
                        if got[0] == 500:
                            self.assertEqual(got[2]["code"], "internal", (i, n, got))
                            self.assertEqual(summary(d), before, "request %d with allocation %d failing changed the state" % (i, n))
                            failed += 1
                            continue
                        self.assertEqual(got, want[i][0], "request %d, allocation %d failing" % (i, n))
                        self.assertEqual(dump(d), want[i][1], "request %d, after allocation %d failed" % (i, n - 1))
                        break
                self.assertGreater(failed, len(reqs), "the sweep failed too few allocations to mean anything")
                self.assertEqual(d.stop(), 0)
                self.assertEqual(dump(self.restart(d)), want[-1][1])


# ---------------------------------------------------------------------------- 5. drain

class DrainTest(ConsistencyTestCase):

    def test_consistency_sigterm_with_more_queued_work_than_drain_timeout(self):
        """Batches queue behind a scoring pool held by the harness (a pool that cannot keep up, on any
        machine), then SIGTERM. After --drain-timeout the batches not yet started are answered 503 draining,
        a change sent during the drain is refused the same way, the batch being scored finishes and is
        answered 200, and the process exits 0. After a restart every 200 is stored and no 503 is."""
        root = harness.temp_dir()
        hold = os.path.join(root, "hold-scoring")
        open(hold, "w").close()
        env = shim_env()
        env["FOCALD_FAULT_HOLD_SCORE"] = hold
        d = self.daemon(db_dir=root, args=("--workers", "1", "--drain-timeout", "1"), env=env).start()
        k = 6
        bodies = {"b%d" % j: batch_body(["b%d-%d" % (j, i) for i in range(5)], j, batch_id="b%d" % j)
                  for j in range(k)}
        answers = {}
        lock = threading.Lock()

        def client(bid):
            r = d.request("POST", "/v1/datasets/drain/batches", bodies[bid], timeout=60)
            with lock:
                answers[bid] = r

        threads = [threading.Thread(target=client, args=(bid,)) for bid in bodies]
        for t in threads:
            t.start()

        def queue_depth():
            for line in d.get("/metrics").body.decode().splitlines():
                if line.startswith("focald_queue_depth "):
                    return int(float(line.split()[1]))
            return -1

        deadline = time.monotonic() + 30
        while queue_depth() < k and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(queue_depth(), k, "the batches did not queue behind the held pool")
        d.send_signal(signal.SIGTERM)
        # after the drain timeout, those not started are refused; the one being scored is still held
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with lock:
                if len(answers) >= k - 1:
                    break
            time.sleep(0.02)
        self.assertIn("still in flight", d.log_text())
        with lock:
            refused = dict(answers)
        self.assertEqual(len(refused), k - 1, refused)
        for r in refused.values():
            self.assertProblem(r, 503, "draining")
        late = d.request("POST", "/v1/datasets/drain/batches", batch_body(["late"], 9, batch_id="late"))
        self.assertProblem(late, 503, "draining")
        os.unlink(hold)
        self.assertEqual(d.proc.wait(30), 0, d.log_text()[-2000:])
        for t in threads:
            t.join(30)
        self.assertEqual(sorted(r.status for r in answers.values()), [200] + [503] * (k - 1))
        d2 = self.restart(d)
        for bid, body in list(bodies.items()) + [("late", batch_body(["late"], 9, batch_id="late"))]:
            r = d2.request("POST", "/v1/datasets/drain/batches", body)
            self.assertEqual(r.status, 200, r)
            stored = bid in answers and answers[bid].status == 200
            self.assertEqual(r.json()["duplicate"], stored, bid)
        self.assertEqual(observations(d2, "drain"), 5 * k + 1)
        self.assertEqual(d2.stop(), 0)


# ---------------------------------------------------------------------------- 6. exports

class ExportPinnedTest(ConsistencyTestCase):

    def _ranked_with_pad(self, d, prefix, n, pad):
        """Stores samples prefix00000.. with pad bytes of meta each (the lines an export writes), ranked by
        last_loss with the first hardest; returns their ids and ranked(sign), a batch that ranks them so
        (sign 1) or the other way round (sign -1)."""
        ids = ["%s%05d" % (prefix, i) for i in range(n)]

        def ranked(sign):
            return {"run": "r", "ids": ids, "targets": [0] * n,
                    "logits": [[sign * (-3 + 6 * i / n), 0.0] for i in range(n)]}
        meta = {sid: {"pad": "x" * pad} for sid in ids}
        # tens of MB of meta: under the thread sanitizer its decoding takes more than a request's usual wait
        self.assertEqual(d.batch("ex", dict(ranked(1), meta=meta), timeout=120).status, 200)
        return ids, ranked

    def _stream_then(self, d, action, fmt):
        """Starts an export, reads a little, does action, reads the rest. Returns (complete, data)."""
        c = d.conn(timeout=30)
        c.request("GET", "/v1/datasets/ex/export?format=%s" % fmt)
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        data = r.read(65536)
        action()
        try:
            data += r.read()
            return True, data
        except (http.client.IncompleteRead, OSError, http.client.HTTPException) as e:
            return False, data + getattr(e, "partial", b"")
        finally:
            c.close()

    def test_consistency_export_ends_with_an_error_when_its_dataset_goes(self):
        d = self.daemon().start()
        ids = ["e%06d" % i for i in range(60000)]
        meta = {sid: {"uri": "/data/%s.png" % sid} for sid in ids[:20000]}
        self.assertEqual(d.batch("ex", {"ids": ids, "logits": [[0.3, -0.2]] * len(ids), "targets": [0] * len(ids),
                                        "meta": meta}).status, 200)
        # label-studio: the /data paths become Label Studio's local-files URLs (without a root they are left out)
        for fmt in ("label-studio&local_files_root=/data", "jsonl", "csv"):
            with self.subTest(fmt=fmt, then="delete"):
                complete, data = self._stream_then(d, lambda: self.assertEqual(d.delete("/v1/datasets/ex").status, 200),
                                                   fmt)
                self.assertFalse(complete, "an export of a deleted dataset looked complete (%d bytes)" % len(data))
                if fmt.startswith("label-studio"):
                    with self.assertRaises(ValueError):
                        json.loads(data)
                self.assertEqual(d.batch("ex", {"ids": ids, "logits": [[0.3, -0.2]] * len(ids),
                                                "targets": [0] * len(ids), "meta": meta}).status, 200)
            with self.subTest(fmt=fmt, then="delete and re-create"):
                def recreate():
                    self.assertEqual(d.delete("/v1/datasets/ex").status, 200)
                    self.assertEqual(d.batch("ex", {"ids": ids, "logits": [[0.3, -0.2]] * len(ids),
                                                    "targets": [0] * len(ids), "meta": meta}).status, 200)
                complete, data = self._stream_then(d, recreate, fmt)
                self.assertFalse(complete, "an export went on into a re-created dataset of the same name")
        # undisturbed, the same export completes: a task for each sample with a uri
        complete, data = self._stream_then(d, lambda: None, "label-studio&local_files_root=/data")
        self.assertTrue(complete)
        self.assertEqual(len(json.loads(data)), len(meta))
        self.assertEqual(d.stop(), 0)

    def test_consistency_export_lists_each_sample_once_while_batches_move_them(self):
        """Training goes on while an export streams: a batch reverses the ranking after the first of export.c's
        pages is written. Every sample is still written exactly once (a page continued after the last sample
        sent would send the samples that fell below it again and never the ones that rose above it), the
        ranks count 1..N, and the first page is the ranking as it was."""
        d = self.daemon().start()
        n = 10000
        # about 2 KB a line: a page of 4096 is more than the sockets' buffers take
        ids, ranked = self._ranked_with_pad(d, "m", n, 2000)
        for fmt in ("jsonl&by=last_loss", "jsonl&by=last_loss&run=*"):
            with self.subTest(fmt=fmt):
                self.assertEqual(d.batch("ex", ranked(1)).status, 200)
                complete, data = self._stream_then(d, lambda: self.assertEqual(d.batch("ex", ranked(-1)).status, 200),
                                                   fmt)
                self.assertTrue(complete)
                lines = [json.loads(line) for line in data.decode().splitlines()]
                got = [x["id"] for x in lines]
                self.assertEqual(len(got), len(set(got)), "%d samples written twice" % (len(got) - len(set(got))))
                self.assertEqual(sorted(got), ids, "%d samples never written" % len(set(ids) - set(got)))
                self.assertEqual([x["rank"] for x in lines], list(range(1, n + 1)))
                self.assertEqual(got[:4096], ids[:4096])
        self.assertEqual(d.stop(), 0)

    def test_consistency_export_rows_written_after_a_change_are_the_samples_as_they_are_then(self):
        """A page of an export is one query's 4096 hits, written in parts of about 1 MiB, each under a lock of
        its own. Rows written after a change are as the samples are then: each row's score is its field's
        value in the same row, and a sample that no longer matches the filters (here: reviewed) is not
        written. (The parts after a page's first wrote the query's old score beside the fields as they were
        then, and samples the query had matched whatever became of them.)"""
        d = self.daemon().start()
        # about 8 KB a line: the first page's 4096 lines (32 MiB) are far more than the sockets' buffers take,
        # so its last parts are written after the change
        ids, ranked = self._ranked_with_pad(d, "w", 5000, 8000)
        reviewed = ids[4000:4010]

        def change():
            self.assertEqual(d.batch("ex", ranked(-1)).status, 200)
            for sid in reviewed:
                self.assertEqual(d.post("/v1/datasets/ex/samples/%s/review" % sid, {"status": "confirmed"}).status, 200)
        complete, data = self._stream_then(d, change, "jsonl&by=last_loss&status=open")
        self.assertTrue(complete)
        lines = [json.loads(line) for line in data.decode().splitlines()]
        got = [x["id"] for x in lines]
        self.assertEqual(len(got), len(set(got)), "%d samples written twice" % (len(got) - len(set(got))))
        self.assertEqual(sorted(got), [sid for sid in ids if sid not in reviewed])
        self.assertEqual([x["status"] for x in lines], ["open"] * len(lines))
        stale = [x["id"] for x in lines if x["score"] != x["last_loss"]]
        self.assertEqual(stale, [], "%d rows whose score is not their last_loss" % len(stale))
        self.assertEqual(d.stop(), 0)

    def test_consistency_queue_export_ends_with_an_error_when_its_queue_is_rebuilt(self):
        """A queue's export follows the queue it started on: removed, or removed and built again under the
        same name (other samples, another order), the stream ends with an error rather than go on into
        the new queue's positions (a file of 10,000 lines with thousands of ids twice)."""
        d = self.daemon().start()
        ids = ["k%05d" % i for i in range(10000)]
        # about 1 KB a line: each page of 4096 is more than the sockets' buffers take
        meta = {sid: {"uri": "/data/%s.png" % sid, "pad": "x" * 1000} for sid in ids}
        self.assertEqual(d.batch("ex", batch_body(ids, 1, meta=meta)).status, 200)

        def remove():
            self.assertEqual(d.delete("/v1/datasets/ex/queues/q").status, 200)

        def rebuild():
            remove()
            self.assertEqual(d.post("/v1/datasets/ex/queues", {"name": "q", "size": 10000, "order": "asc"}).status, 201)

        for then in (remove, rebuild):
            with self.subTest(then=then.__name__):
                self.assertEqual(d.post("/v1/datasets/ex/queues", {"name": "q", "size": 10000}).status, 201)
                complete, data = self._stream_then(d, then, "jsonl&queue=q")
                self.assertFalse(complete, "an export of queue q went on after q was removed (%d bytes)" % len(data))
                if then is rebuild:
                    self.assertEqual(d.delete("/v1/datasets/ex/queues/q").status, 200)
        self.assertEqual(d.post("/v1/datasets/ex/queues", {"name": "q", "size": 10000}).status, 201)
        complete, data = self._stream_then(d, lambda: None, "jsonl&queue=q")
        self.assertTrue(complete)
        self.assertEqual(sorted(json.loads(line)["id"] for line in data.decode().splitlines()), ids)
        self.assertEqual(d.stop(), 0)


# ---------------------------------------------------------------------------- 7. errors at start-up

class RefusedStartTest(ConsistencyTestCase):

    def _build(self, root):
        d = self.daemon(db_dir=root).start()
        for j in range(3):
            ids = ["s%d" % ((j * 3 + i) % 7) for i in range(4)]
            self.assertEqual(d.batch("a", batch_body(ids, j)).status, 200)
        self.assertEqual(d.post("/v1/datasets/a/samples/s1/review", {"status": "confirmed"}).status, 200)
        self.assertEqual(d.post("/v1/datasets/a/queues", {"name": "q", "size": 3}).status, 201)
        state = dump(d)
        self.assertEqual(d.stop(), 0)
        return d, state

    def _refused(self, d, say):
        dd = self.daemon(db_dir=d.db_dir, log_dir=d.log_dir)
        with self.assertRaises(AssertionError) as cm:
            dd.start(timeout=10)
        self.assertIn("exited with status", str(cm.exception))
        self.assertIn(say, dd.log_text())

    def _edit(self, db, sql):
        c = sqlite3.connect(db)
        c.executescript(sql)
        c.commit()
        c.close()

    def test_consistency_a_database_focald_did_not_write_is_refused_naming_the_row(self):
        cases = [
            ("DELETE FROM samples WHERE key = 2", "the samples table has a hole"),
            ("DELETE FROM samples WHERE key = (SELECT max(key) FROM samples)", "which is no sample"),
            ("UPDATE batches SET run_id = 999 WHERE seq = (SELECT max(seq) FROM batches);"
             "UPDATE snapshot SET applied_seq = 0", "do not exist together"),
            ("UPDATE batches SET payload = x'00' WHERE seq = (SELECT max(seq) FROM batches);"
             "UPDATE snapshot SET applied_seq = 0", "malformed payload"),
            # the payload's observations (codec.c, version 3: 8 bytes, then columns of n: loss, p_t, p_max,
            # margin, correct, el2n, grad_norm as float32, pred and label as int32): a label or a prediction
            # outside the run's classes, a non-finite loss or margin
        ] + [("UPDATE batches SET payload = substr(payload, 1, %s) || x'%s' || substr(payload, %s + 5) "
              "WHERE seq = (SELECT max(seq) FROM batches); UPDATE snapshot SET applied_seq = 0" % (at, value, at),
              "malformed payload")
             for at, value in (("8 + 32 * n", "feffffff"), ("8 + 32 * n", "03000000"), ("8 + 28 * n", "e8030000"),
                               ("8", "0000c07f"), ("8 + 12 * n", "0000807f"))] + [
            ("INSERT INTO review_log (dataset_id, key, at, from_status, to_status) VALUES (1, 99, 0, 0, 4)",
             "which is no sample"),
            ("INSERT INTO runs (dataset_id, name, classes, created_at) VALUES (77, 'x', 3, 0)", "does not exist"),
        ]
        for sql, say in cases:
            with self.subTest(sql=sql):
                d, _ = self._build(harness.temp_dir())
                self._edit(d.db, sql)
                self._refused(d, say)

    def test_consistency_a_read_error_while_loading_refuses_to_start(self):
        """Every read of the load step, failed in turn: focald either refuses to start, saying it cannot
        read the database, or (when SQLite retried the read) starts with the whole state: never half."""
        d, state = self._build(harness.temp_dir())
        trace = os.path.join(d.db_dir, "trace")
        probe = self.restart(d, env=shim_env(trace=trace))
        self.assertEqual(probe.stop(), 0)
        steps = [line.split() for line in open(trace) if line.startswith("step")]
        load_reads = [int(s[2]) for s in steps if s[1] == "load"]
        after_load = next(int(s[2]) for s in steps if s[1] != "load")
        self.assertGreater(after_load, 0)
        refused = 0
        for n in range(1, after_load + 1):
            with self.subTest(read=n):
                dd = self.daemon(db_dir=d.db_dir, log_dir=d.log_dir,
                                 env=shim_env(fault="kind=read,at=%d,do=ioerr,in=load" % n))
                try:
                    dd.start(timeout=10)
                except AssertionError as e:
                    self.assertIn("exited with status", str(e))
                    self.assertRegex(dd.log_text(), r"cannot (read|open) the database|refusing|I/O|disk")
                    refused += 1
                    continue
                self.assertEqual(dump(dd), state)
                self.assertEqual(dd.stop(), 0)
        self.assertGreater(refused, 0, "no read error was ever reported (load reads: %r)" % load_reads)


# ---------------------------------------------------------------------------- concurrency

class ConcurrencyTest(ConsistencyTestCase):

    def read_while(self, d, reads, change):
        """Runs change() while two readers GET each (path, pick) of reads in turn; returns the set of
        pick(document) values each path gave, after checking every answer was a 200."""
        stop = threading.Event()
        got, problems = [set() for _ in reads], []

        def reader():
            c = d.conn(timeout=30)
            try:
                while not stop.is_set():
                    for (path, pick), out in zip(reads, got):
                        c.request("GET", path)
                        r = c.getresponse()
                        body = r.read()
                        if r.status != 200:
                            problems.append((path, r.status, body[:200]))
                            continue
                        out.add(pick(json.loads(body)))
            finally:
                c.close()
        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            change()
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(problems, [])
        return got

    def test_consistency_a_queue_is_built_and_removed_at_once_for_readers(self):
        """Building a queue makes its samples queued and adds the queue in one step for a reader: the dataset's
        review counts show all of them queued or none, never part (applied a sample at a time, two readers saw
        dozens of counts part of the way over these six rounds). So does removing it."""
        d = self.daemon().start()
        n = 10000
        ids = ["q%05d" % i for i in range(n)]
        self.assertEqual(d.batch("qa", {"ids": ids, "logits": [[0.1, -0.1]] * n, "targets": [0] * n}).status, 200)

        def change():
            for i in range(6):
                self.assertEqual(d.post("/v1/datasets/qa/queues", {"name": "q", "size": n}).status, 201)
                self.assertEqual(d.delete("/v1/datasets/qa/queues/q").status, 200)
        seen, = self.read_while(d, [("/v1/datasets/qa", lambda doc: doc["review"]["queued"])], change)
        self.assertLessEqual(seen, {0, n}, "readers saw %d partial counts" % len(seen - {0, n}))
        self.assertEqual(d.stop(), 0)

    def test_consistency_the_segments_of_a_request_are_applied_at_once_for_readers(self):
        """A request of many segments is one change for a reader as it is for the database: the dataset's
        observations grow by whole requests, never by part of one (applied a segment at a time, two readers
        saw part of a request over these rounds), and so does one sample's seen."""
        d = self.daemon().start()
        nseg, per = 200, 50
        ids = ["s%03d" % i for i in range(per)] * nseg
        body = {"run": "r", "loss": {"type": "cross_entropy"}, "ids": ids, "logits": [[0.2, -0.2]] * len(ids),
                "targets": [0] * len(ids), "segments": [{"n": per, "step": k, "epoch": 0} for k in range(nseg)]}
        self.assertEqual(d.batch("sg", body).status, 200)

        def change():
            for i in range(15):
                self.assertEqual(d.batch("sg", body).status, 200)
        counts, seen = self.read_while(d, [("/v1/datasets/sg", lambda doc: doc["observations"]),
                                           ("/v1/datasets/sg/samples/s007", lambda doc: doc["runs"][0]["seen"])],
                                       change)
        whole = {nseg * per * k for k in range(1, 17)}
        self.assertLessEqual(counts, whole, "readers saw %d partial requests" % len(counts - whole))
        self.assertLessEqual(seen, {nseg * k for k in range(1, 17)})
        self.assertEqual(d.get("/v1/datasets/sg").json()["observations"], 16 * nseg * per)
        self.assertEqual(d.stop(), 0)

    def test_consistency_concurrent_delete_recreate_queue_review_meta_export_ingest(self):
        d = self.daemon(args=("--snapshot-interval", "1")).start()
        names = ["c0", "c1"]
        stop = threading.Event()
        problems = []
        counts = {}
        lock = threading.Lock()

        def note(kind, r):
            with lock:
                counts[(kind, r.status)] = counts.get((kind, r.status), 0) + 1
                if r.status >= 500:
                    problems.append("%s answered %r" % (kind, r))

        def worker(seed):
            rng = random.Random(seed)
            while not stop.is_set():
                ds = rng.choice(names)
                op = rng.random()
                sid = "s%d" % rng.randrange(40)
                try:
                    if op < 0.4:
                        ids = rng.sample(["s%d" % i for i in range(40)], 8)
                        meta = {ids[0]: {"patient_id": "p%d" % rng.randrange(3), "uri": "/u.png"}}
                        note("batch", d.batch(ds, batch_body(ids, rng.randrange(1000), meta=meta, seed=seed)))
                    elif op < 0.5:
                        note("review", d.post("/v1/datasets/%s/samples/%s/review" % (ds, sid),
                                              {"status": rng.choice(["confirmed", "open", "relabelled", "in_review"]),
                                               **({"label": 1} if rng.random() < 0.3 else {})}))
                    elif op < 0.58:
                        note("meta", d.request("PUT", "/v1/datasets/%s/samples/%s/meta" % (ds, sid), {"uri": "/v.png"}))
                    elif op < 0.66:
                        note("queue", d.post("/v1/datasets/%s/queues" % ds,
                                             {"name": rng.choice(["q0", "q1"]), "size": 5, "dedupe_by": "patient_id"}))
                    elif op < 0.72:
                        note("unqueue", d.delete("/v1/datasets/%s/queues/%s" % (ds, rng.choice(["q0", "q1"]))))
                    elif op < 0.78:
                        note("delete", d.delete("/v1/datasets/%s" % ds))
                    elif op < 0.88:
                        r = d.get("/v1/datasets/%s/export?format=%s" % (ds, rng.choice(["jsonl", "label-studio", "csv"])))
                        note("export", r)
                        if r.status == 200 and "json" in (r.header("Content-Type") or "") and "ndjson" not in r.header(
                                "Content-Type"):
                            json.loads(r.body)  # complete, or the read above raised
                    else:
                        r = d.get("/v1/datasets/%s/hard-examples?k=20&status=%s" % (ds, ALL))
                        note("query", r)
                        if r.status == 200:
                            items = r.json()["items"]
                            ranks = [it["rank"] for it in items]
                            if ranks != list(range(1, len(items) + 1)):
                                problems.append("ranks %r" % ranks)
                except (http.client.IncompleteRead, ConnectionError):
                    with lock:
                        counts[("cut", 0)] = counts.get(("cut", 0), 0) + 1  # an export cut when its dataset went
                except (OSError, http.client.HTTPException, ValueError) as e:
                    problems.append("%s: %r" % (type(e).__name__, e))

        threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        time.sleep(float(os.environ.get("FOCALD_IT_CONCURRENCY_SECONDS", "8")))
        stop.set()
        for t in threads:
            t.join(60)
        self.assertEqual(problems, [])
        for kind in ("batch", "review", "queue", "delete", "export"):
            self.assertTrue(any(k == kind and s < 300 for k, s in counts), "no %s succeeded: %r" % (kind, counts))
        live = dump(d)
        self.assertEqual(d.stop(timeout=30), 0)  # a sanitizer's report makes this nonzero
        d2 = self.restart(d)
        self.assertEqual(dump(d2), live)
        self.assertEqual(d2.stop(), 0)


if __name__ == "__main__":
    sys.exit(harness.main())
