"""Tests of focald.Miner: against a real focald, everything observed arrives with exactly the history a
request per step gives, observe() never blocks or raises when focald is down or slow, drops are counted,
close() keeps its timeout, the miner recovers when focald comes back, and a retried request is stored
once; against a recording client (no timing asserted), coalescing keeps the order, steps and epochs,
buffers are reused, a request refused for one call's data is split so only the call at fault is refused
while one refused for what every call shares (the loss) is refused whole, and the backoff is never woken
by observe().

usage: BUILD=build /usr/bin/python3 clients/python/tests/test_miner.py [-v] [names...]
"""
import http.server
import json
import os
import statistics
import sys
import threading
import time
import unittest
import weakref

import _daemon
from _daemon import Daemon, DaemonTestCase, Proxy

import numpy as np
import torch

from focald import Client, FocaldError, Miner
from focald import miner as miner_module
from focald.errors import FocaldConnectionError


def wait_for(cond, timeout=10.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(interval)
    return cond()


def batch(step, n=32, c=5, seed=None):
    g = torch.Generator().manual_seed(step if seed is None else seed)
    ids = torch.arange(step * n, step * n + n)
    logits = torch.randn(n, c, generator=g, requires_grad=True) * 2
    targets = torch.randint(0, c, (n,), generator=g)
    return ids, logits, targets


class MinerTest(DaemonTestCase):

    def setUp(self):
        self.client = Client(self.url)

    def test_miner_sends_everything(self):
        m = Miner("m-all", url=self.url, run="r", loss="softmax_focal")
        for step in range(20):
            ids, logits, targets = batch(step)
            m.observe(ids, logits * 1.0, targets, step=step, epoch=step // 10)
        self.assertTrue(m.close())
        s = m.stats()
        self.assertEqual((s["observed"], s["sent"], s["dropped"], s["rejected"], s["pending"]), (640, 640, 0, 0, 0))
        self.assertIsNone(s["last_error"])
        d = self.client.dataset("m-all")
        self.assertEqual((d["samples"], d["observations"]), (640, 640))
        self.assertEqual(d["runs"][0]["name"], "r")
        self.assertEqual(d["runs"][0]["last_step"], 19)
        sample = self.client.sample("m-all", 100, run="r")["runs"][0]
        self.assertEqual((sample["seen"], sample["recent"][0]["step"], sample["recent"][0]["epoch"]), (1, 3, 0))
        # the losses focald stored are the ones of the logits observed
        ids, logits, targets = batch(3)
        ref = self.client.evaluate(logits, targets, loss="softmax_focal")["losses"]
        self.assertAlmostEqual(sample["last_loss"], ref[100 - 96], places=5)

    def test_miner_warns_once_when_class_indices_meet_the_default_loss(self):
        """Class-index targets over C >= 2 logits and no loss: most likely a softmax classifier, which
        focald's default (sigmoid focal) would score differently; the Miner warns once. A given loss, or
        multi-hot targets, draw no warning."""
        import warnings
        ids, logits, targets = batch(0)
        for loss, tgt, want in ((None, targets, 1), ("cross_entropy", targets, 0), ("sigmoid_focal", targets, 0),
                                (None, torch.nn.functional.one_hot(targets, logits.shape[1]).float(), 0)):
            with self.subTest(loss=loss, targets=tuple(tgt.shape)):
                m = Miner("m-warn", url=self.url, loss=loss, flush_interval=30)
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    for step in range(3):
                        m.observe(ids, logits * 1.0, tgt, step=step)
                self.assertTrue(m.close())
                got = [x for x in w if issubclass(x.category, UserWarning) and "cross_entropy" in str(x.message)]
                self.assertEqual(len(got), want, [str(x.message) for x in w])
                if got:
                    self.assertEqual(got[0].filename, __file__)  # it points at the caller's observe()

    def test_miner_merges_observations_into_one_request(self):
        m = Miner("m-merge", url=self.url, flush_interval=30)
        with m._cond:  # hold the sender back so that everything is queued before it looks
            for i in range(10):
                ids, logits, targets = batch(i, n=8)
                m.observe(ids, logits, targets, step=7)
            m.observe(*batch(0, n=8), step=7)  # the same ids again: a segment of their own
            m.observe(*batch(20, n=8), step=8)
        self.assertTrue(m.close())
        s = m.stats()
        self.assertEqual((s["sent"], s["rejected"], s["batches"]), (96, 0, 1))
        self.assertEqual(self.client.dataset("m-merge")["observations"], 96)
        self.assertEqual(self.client.sample("m-merge", 3)["runs"][0]["seen"], 2)

    def test_miner_history_equals_a_request_per_step(self):
        """A small dataset seen over several epochs: the same samples many times, often within one
        request of the Miner. Every sample's every field equals what Client.post_batch per step gives."""
        rng = np.random.default_rng(4)
        m = Miner("m-eq", url=self.url, run="r", loss="softmax_focal", flush_interval=0.05, max_batch=200)
        meta_at = {}
        for step in range(150):
            ids = rng.choice(60, size=16, replace=False)
            logits = torch.from_numpy(rng.normal(size=(16, 4)).astype(np.float32))
            targets = torch.from_numpy(rng.integers(0, 4, size=16))
            meta = {int(ids[0]): {"uri": "mem://%d/%d" % (ids[0], step)}} if step % 9 == 0 else None
            m.observe(torch.from_numpy(ids), logits, targets, step=step, epoch=step // 50, meta=meta)
            self.client.post_batch("m-ref", ids, logits, targets, run="r", step=step, epoch=step // 50,
                                   loss="softmax_focal", meta=meta)
            if meta:
                meta_at.update(meta)
        self.assertTrue(m.close())
        self.assertLess(m.batches, 100)  # coalesced
        self.assertEqual((m.sent, m.rejected, m.dropped), (150 * 16, 0, 0))
        a, b = self.client.dataset("m-eq"), self.client.dataset("m-ref")
        for k in ("samples", "observations", "runs"):
            self.assertEqual(a[k], b[k], k)
        for i in range(60):
            self.assertEqual(self.client.sample("m-eq", i), dict(self.client.sample("m-ref", i), dataset="m-eq"),
                             "sample %d" % i)
        for i, v in meta_at.items():
            self.assertEqual(self.client.sample("m-eq", i)["meta"], meta_at[i])

    def test_miner_refused_call_is_refused_alone(self):
        m = Miner("m-split", url=self.url, flush_interval=30)
        with m._cond:
            m.observe(*batch(0, n=4), step=0)
            m.observe([100, 101, 100], np.zeros((3, 5), np.float32), [0, 1, 2], step=1)  # an id twice in a call
            m.observe(*batch(1, n=4), step=2)
        self.assertTrue(m.close())
        self.assertEqual((m.sent, m.rejected, m.batches), (8, 3, 2))
        self.assertEqual(m.last_error.code, "duplicate_id")
        self.assertEqual(self.client.dataset("m-split")["observations"], 8)

    def refused_requests(self, status):
        """How many batches focald has answered with status so far (its /metrics)."""
        line = 'focald_http_requests_total{route="/v1/datasets/{dataset}/batches",method="POST",status="%d"} ' % status
        for row in self.client.metrics().splitlines():
            if row.startswith(line):
                return int(row[len(line):])
        return 0

    def test_miner_refused_config_costs_a_request_per_slab(self):
        """A loss config focald refuses refuses every call alike: each slab of calls is refused in one
        request, not re-sent a call at a time (which cost one request more than there were calls), and
        rejected counts every sample. The same for calls whose class count conflicts with the run's, and
        for a dataset name focald refuses."""
        calls, n, max_batch = 60, 8, 64
        slabs = -(-calls * n // max_batch)  # observe() fills a slab of max_batch rows before the next
        self.client.post_batch("m-cfg", [0], [[0.0, 1.0, 2.0]], [0], run="three", loss="softmax_focal")
        cases = [("m-cfg", None, {"type": "softmax_focal", "gamma": -1}, 422, "invalid_loss", "/loss/gamma"),
                 ("m-cfg", "three", "softmax_focal", 409, "class_count_conflict", "/inputs/1")]
        # (a dataset name focald refuses never gets this far: Miner() refuses it, test_miner_checks_its_arguments)
        for dataset, run, loss, status, code, field in cases:
            before = self.refused_requests(status)
            m = Miner(dataset, run=run, url=self.url, loss=loss, flush_interval=3600, max_batch=max_batch)
            for step in range(calls):
                m.observe(*batch(step, n=n), step=step)
            self.assertTrue(m.close(15))
            self.assertEqual((m.observed, m.rejected, m.sent, m.batches), (calls * n, calls * n, 0, 0))
            self.assertEqual((m.last_error.status, m.last_error.code, m.last_error.field), (status, code, field))
            self.assertEqual(self.refused_requests(status) - before, slabs, code)
        self.assertEqual(self.client.dataset("m-cfg")["observations"], 1)

    def test_miner_bad_label_is_refused_alone(self):
        """A label out of range in one call (a field inside the targets: /inputs/2 in a binary body,
        /targets/k in JSON) still splits the request: only that call is refused, the others are stored,
        at the cost of one request per call."""
        for binary, field in ((True, "/inputs/2"), (False, "/targets/2")):
            dataset = "m-label-%s" % ("binary" if binary else "json")
            before = self.refused_requests(422)
            m = Miner(dataset, url=self.url, loss="softmax_focal", binary=binary, flush_interval=3600)
            with m._cond:  # the sender takes all six calls as one request
                for step in range(6):
                    ids, logits, targets = batch(step, n=4)
                    if step == 3:
                        targets = targets.clone()
                        targets[2] = 5  # 5 classes: 0..4
                    m.observe(ids, logits, targets, step=step)
            self.assertTrue(m.close(15))
            self.assertEqual((m.sent, m.rejected, m.batches), (20, 4, 5))
            self.assertEqual((m.last_error.code, m.last_error.field), ("label_out_of_range", field))
            self.assertEqual(self.refused_requests(422) - before, 2)  # the request, then the call alone
            self.assertEqual(self.client.dataset(dataset)["observations"], 20)
            with self.assertRaises(FocaldError):
                self.client.sample(dataset, 3 * 4 + 2)  # the bad call's ids were not stored

    def test_miner_non_finite_call_is_refused_alone(self):
        """A NaN in one call is that call's refusal alone, in JSON as in binary: focald refuses it in a
        binary body (422 not_finite), and JSON cannot carry it, so the client cannot encode the request
        (not_encodable). The other calls are stored; the refusals are logged sparingly, with no traceback."""
        for binary, code in ((True, "not_finite"), (False, "not_encodable")):
            dataset = "m-nan-%s" % ("binary" if binary else "json")
            m = Miner(dataset, url=self.url, loss="softmax_focal", binary=binary, flush_interval=3600)
            with self.assertLogs("focald.miner", "INFO") as logs:
                for request in range(2):
                    with m._cond:  # the sender takes the five calls as one request
                        for step in range(5 * request, 5 * request + 5):
                            ids, logits, targets = batch(step, n=4, c=3)
                            if step % 5 == 2:
                                logits = logits.detach().clone()
                                logits[1, 1] = float("nan")
                            m.observe(ids, logits, targets, step=step)
                    self.assertTrue(m.flush(15))
                self.assertTrue(m.close(15))
            self.assertEqual((m.sent, m.rejected, m.batches), (32, 8, 8), code)
            self.assertEqual((m.last_error.code, m.last_error.retryable), (code, False))
            self.assertEqual([r.levelname for r in logs.records], ["WARNING", "WARNING"],
                             [r.getMessage() for r in logs.records])  # the first refusal, then the summary
            self.assertIn("1 more requests (4 samples)", logs.records[1].getMessage())
            self.assertEqual(self.client.dataset(dataset)["observations"], 32)

    def test_miner_takes_numpy_and_torch_integers_for_step_epoch_and_meta(self):
        """A training loop's step and epoch are often NumPy or torch integers, its meta keys NumPy ids and
        its meta values NumPy scalars: every such call is stored with its step and epoch, in binary and
        in JSON, and none poisons the request it shares with other calls."""
        kinds = [int] + [getattr(np, n) for n in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                                                   "uint64")] \
            + [lambda v, dt=dt: torch.tensor(v, dtype=dt) for dt in (torch.uint8, torch.int8, torch.int16,
                                                                       torch.int32, torch.int64)]
        for binary in (True, False):
            dataset = "m-npint-%s" % ("binary" if binary else "json")
            m = Miner(dataset, url=self.url, run="r", loss="softmax_focal", binary=binary, flush_interval=3600)
            with m._cond:  # every call in one request
                for k, kind in enumerate(kinds):
                    ids, logits, targets = batch(k, n=4, c=3)
                    meta = {np.int64(i): {"w": np.float32(0.5), "k": np.int64(k)} for i in ids.tolist()}
                    m.observe(ids, logits, targets, step=kind(k + 1), epoch=kind(k % 3), meta=meta)
            self.assertTrue(m.close(15))
            self.assertEqual((m.sent, m.rejected, m.batches, m.last_error), (4 * len(kinds), 0, 1, None), binary)
            for k in range(len(kinds)):
                sample = self.client.sample(dataset, 4 * k + 1, run="r")
                recent = sample["runs"][0]["recent"][0]
                self.assertEqual((recent["step"], recent["epoch"]), (k + 1, k % 3), (binary, k))
                self.assertEqual(sample["meta"], {"w": 0.5, "k": k})

    def test_miner_refuses_a_wrong_step_or_epoch_in_observe(self):
        """A step or epoch that is not an integer, or out of focald's range, is the caller's bug:
        observe() raises naming it and keeps nothing of the call, rather than losing it (and the calls
        sent with it) to a refusal in the background."""
        m = Miner("m-badstep", url=self.url, loss="softmax_focal", flush_interval=3600)
        ids, logits, targets = batch(0, n=4, c=3)
        for arg, value, exc in (("step", 1.0, TypeError), ("step", "1", TypeError), ("step", True, TypeError),
                                ("step", torch.tensor(1.0), TypeError), ("step", np.float64(1), TypeError),
                                ("step", torch.tensor([1, 2]), TypeError), ("step", -1, ValueError),
                                ("step", 1 << 47, ValueError), ("step", np.int64(-1), ValueError),
                                ("epoch", 2.5, TypeError), ("epoch", -1, ValueError), ("epoch", 65535, ValueError)):
            with self.subTest(arg=arg, value=value):
                with self.assertRaises(exc) as cm:
                    m.observe(ids, logits, targets, **{arg: value})
                self.assertIn(arg, str(cm.exception))
        m.observe(ids, logits, targets, step=(1 << 47) - 1, epoch=65534)  # the bounds themselves pass
        self.assertTrue(m.close(15))
        self.assertEqual((m.observed, m.sent, m.rejected), (4, 4, 0))

    def test_miner_refuses_wrong_ids_in_observe_and_counts_nothing(self):
        """ids that are not N sample ids (2-D, 0-d, floats, booleans, None in a list) raise in observe(),
        count nothing and leave the buffers as they were: the calls around them are sent whole."""
        m = Miner("m-badids", url=self.url, loss="softmax_focal", flush_interval=3600)
        _, logits, targets = batch(0, n=4, c=3)
        bad = [(torch.arange(4).reshape(4, 1), ValueError), (np.arange(4).reshape(4, 1), ValueError),
               (torch.tensor(3), ValueError), (torch.arange(4).float(), TypeError), (np.arange(4.0), TypeError),
               (torch.tensor([True, False, True, False]), TypeError), ([0, 1, None, 3], TypeError),
               ([0.0, 1.0, 2.0, 3.0], TypeError), ("abcd", TypeError)]
        with m._cond:
            m.observe(torch.arange(4), logits, targets, step=0)
            for ids, exc in bad:
                with self.subTest(ids=ids):
                    with self.assertRaises(exc) as cm:
                        m.observe(ids, logits, targets, step=1)
                    self.assertIn("ids", str(cm.exception))
                    self.assertEqual((m.observed, m.pending), (4, 4))
            m.observe(torch.arange(4, 8), logits, targets, step=2)
        self.assertTrue(m.close(15))
        self.assertEqual((m.observed, m.sent, m.rejected, m.batches), (8, 8, 0, 1))
        self.assertEqual(self.client.dataset("m-badids")["samples"], 8)

    def test_miner_float_class_indices_raise_in_observe(self):
        """Targets of the shape of class indices over C >= 2 classes but not integers (floats, booleans:
        labels read as floats, say) are refused by focald in every call, so every step would be lost in
        the background: observe() raises TypeError naming them instead. The shapes focald takes as
        floats (C = 1 binary targets, multi-hot or soft rows) pass and are stored."""
        m = Miner("m-floatidx", url=self.url, loss="softmax_focal", flush_interval=3600)
        labels = [0, 2, 1, 2]
        x2, x3 = torch.randn(4, 3), torch.randn(4, 5, 3)
        bad = [(x2, torch.tensor(labels, dtype=dt)) for dt in (torch.float16, torch.float32, torch.float64, torch.bool)] \
            + [(x2, np.array(labels, dtype=dt)) for dt in (np.float32, np.float64, np.bool_)] \
            + [(x2, [float(v) for v in labels]), (x2.numpy(), np.array(labels, np.float32)),
               (x3, torch.zeros(4, 5)), (x3, np.zeros((4, 5), np.float64))]
        for k, (x, t) in enumerate(bad):
            with self.subTest(k=k, targets=type(t).__name__, dtype=str(getattr(t, "dtype", "list"))):
                with self.assertRaises(TypeError) as cm:
                    m.observe(torch.arange(4), x, t, step=k)
                self.assertIn("targets", str(cm.exception))
                self.assertEqual(m.observed, 0)
        m.observe(torch.arange(4), x2, torch.tensor(labels), step=0)
        m.observe(torch.arange(4, 8), x2, torch.nn.functional.one_hot(torch.tensor(labels), 3).float(), step=1)
        b = Miner("m-floatidx-bce", url=self.url, loss="binary_cross_entropy", flush_interval=3600)
        b.observe(torch.arange(4), torch.randn(4, 1), torch.tensor([0.0, 1.0, 1.0, 0.0]), step=0)
        self.assertTrue(m.close(15) and b.close(15))
        self.assertEqual((m.sent, m.rejected, b.sent, b.rejected), (8, 0, 4, 0))

    def test_miner_meta_json_cannot_carry_loses_its_call_alone(self):
        """A meta value JSON has no form for (an object of the caller's) cannot be sent: that call is
        refused (not_encodable), the others of its request are stored, and the sender goes on."""
        m = Miner("m-badmeta", url=self.url, loss="softmax_focal", flush_interval=3600)
        with m._cond:
            for step in range(3):
                ids, logits, targets = batch(step, n=4, c=3)
                meta = {int(ids[0]): {"x": object()}} if step == 1 else None
                m.observe(ids, logits, targets, step=step, meta=meta)
        with self.assertLogs("focald.miner", "WARNING"):
            self.assertTrue(m.close(15))
        self.assertEqual((m.sent, m.rejected, m.last_error.code), (8, 4, "not_encodable"))

    def test_miner_checks_its_arguments(self):
        """A Miner's wrong argument raises when it is made, naming it, rather than refusing every
        request in the background (or retrying a down focald in a busy loop)."""
        for kw, exc, arg in (({"dataset": None}, TypeError, "dataset"), ({"dataset": "a b"}, ValueError, "dataset"),
                             ({"dataset": ".."}, ValueError, "dataset"), ({"run": 5}, TypeError, "run"),
                             ({"run": "a/b"}, ValueError, "run"), ({"client": "http://x"}, TypeError, "client"),
                             ({"flush_interval": "x"}, TypeError, "flush_interval"),
                             ({"flush_interval": -1}, ValueError, "flush_interval"),
                             ({"max_queue_bytes": 0}, ValueError, "max_queue_bytes"),
                             ({"max_queue_bytes": 1.5}, TypeError, "max_queue_bytes"),
                             ({"max_batch": 0}, ValueError, "max_batch"),
                             ({"retry_initial": 0}, ValueError, "retry_initial"),
                             ({"retry_max": 0}, ValueError, "retry_max"),
                             ({"close_timeout": None}, TypeError, "close_timeout"),
                             ({"request_timeout": 0}, ValueError, "request_timeout"),
                             ({"batch_id_prefix": 5}, TypeError, "batch_id_prefix")):
            with self.subTest(kw=kw):
                args = dict({"dataset": "m-args2", "url": self.url}, **kw)
                with self.assertRaises(exc) as cm:
                    Miner(args.pop("dataset"), **args)
                self.assertIn(arg, str(cm.exception))

    def test_miner_merges_bfloat16_and_lists(self):
        m = Miner("m-bf16", url=self.url, loss="softmax_focal")
        parts = [batch(i, n=4) for i in range(3)]
        with m._cond:
            for ids, logits, targets in parts:
                m.observe(ids, logits.to(torch.bfloat16), targets, step=1)
            m.observe([100, 101], [[0.0, 1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0]], [1, 0], step=2)
            m.observe(np.array([102]), np.zeros((1, 5), np.float32), np.array([4]), step=2)
        self.assertTrue(m.close())
        self.assertEqual((m.sent, m.batches, m.rejected), (15, 2, 0))
        ids, logits, targets = parts[1]
        ref = self.client.evaluate(logits.to(torch.bfloat16), targets, loss="softmax_focal")["losses"]
        stored = self.client.sample("m-bf16", int(ids[2]))["runs"][0]["last_loss"]
        self.assertAlmostEqual(stored, ref[2], delta=1e-6 * ref[2])  # 9 significant digits of the same float32

    def test_miner_flushes_at_exit(self):
        """A program that never calls close() still delivers what it observed (an atexit hook)."""
        code = ("import sys; sys.path.insert(0, %r)\n"
                "import numpy as np, focald\n"
                "m = focald.Miner('m-exit', url=%r)\n"
                "for s in range(5):\n"
                "    m.observe(np.arange(10) + 10 * s, np.zeros((10, 3), np.float32), np.zeros(10, int), step=s)\n"
                % (_daemon.PYDIR, self.url))
        import subprocess
        p = subprocess.run([_daemon.PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.client.dataset("m-exit")["observations"], 50)

    def test_miner_copies_what_it_observes(self):
        logits = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
        original = logits.copy()
        targets = np.array([0, 1, 2, 0])
        m = Miner("m-copy", url=self.url, loss="softmax_focal")
        with m._cond:
            m.observe(np.arange(4), logits, targets, step=0)
            logits[:] = 100.0  # the caller reuses its buffer
            targets[:] = 1
        self.assertTrue(m.close())
        ref = self.client.evaluate(original, [0, 1, 2, 0], loss="softmax_focal")["losses"]
        got = [self.client.sample("m-copy", i)["runs"][0]["last_loss"] for i in range(4)]
        for g, r in zip(got, ref):
            self.assertAlmostEqual(g, r, places=5)

    def test_miner_counts_rejected_batches_and_goes_on(self):
        m = Miner("m-rej", url=self.url, loss="softmax_focal")
        m.observe([1, 2], np.zeros((2, 3), np.float32), [0, 7], step=0)  # label out of range
        self.assertTrue(m.flush(10))
        self.assertEqual(m.rejected, 2)
        self.assertIsInstance(m.last_error, FocaldError)
        self.assertEqual((m.last_error.status, m.last_error.code), (422, "label_out_of_range"))
        m.observe([1, 2], np.zeros((2, 3), np.float32), [0, 2], step=1)
        self.assertTrue(m.close())
        self.assertEqual((m.sent, m.rejected), (2, 2))

    def test_miner_json_without_binary(self):
        m = Miner("m-json", url=self.url, binary=False)
        m.observe(["a", "b"], [[0.5, -1.0], [2.0, 0.0]], [1, 0], step=0)
        m.observe(["c"], [[0.5, -1.0]], [[1.0, 0.0]], step=1)  # multi-hot rows
        self.assertTrue(m.close())
        self.assertEqual((m.sent, m.batches), (3, 2))

    def test_miner_argument_errors(self):
        m = Miner("m-args", url=self.url)
        with self.assertRaises(ValueError):
            m.observe([1, 2], np.zeros((3, 2), np.float32), [0, 1, 0])
        with self.assertRaises(ValueError):
            m.observe([1], None, [0])
        m.observe([], np.zeros((0, 2), np.float32), [])  # nothing to do
        self.assertTrue(m.close())
        self.assertTrue(m.close())  # idempotent
        with self.assertRaises(RuntimeError):
            m.observe([1], np.zeros((1, 2), np.float32), [0])
        self.assertEqual(m.observed, 0)

    def test_miner_retried_batch_is_stored_once(self):
        """focald commits a batch but its answer is lost: the retry carries the same batch_id."""
        proxy = Proxy(self.d.port, drop_next=1)
        try:
            m = Miner("m-once", url=proxy.url, retry_initial=0.05)
            ids, logits, targets = batch(0, n=16)
            m.observe(ids, logits, targets, step=0)
            self.assertTrue(m.close(15))
        finally:
            proxy.close()
        self.assertEqual(proxy.drops, 1)
        self.assertEqual((m.sent, m.duplicates, m.retries, m.batches), (16, 16, 1, 1))
        self.assertEqual(self.client.dataset("m-once")["observations"], 16)

    def test_miner_sharing_a_batch_id_prefix_is_refused_not_dropped_as_duplicates(self):
        """Two processes given one batch_id_prefix (DDP ranks set up alike): the second's batches reuse the
        first's batch_ids with other samples. focald used to answer them duplicate: true and store nothing;
        they are refused now, counted in rejected and named in last_error, so the mistake shows."""
        first = Miner("m-prefix", url=self.url, batch_id_prefix="rank", loss="cross_entropy")
        second = Miner("m-prefix", url=self.url, batch_id_prefix="rank", loss="cross_entropy")
        for step in range(3):
            first.observe(*batch(step, n=8), step=step)
            self.assertTrue(first.flush(10))
            second.observe(*batch(step + 100, n=8), step=step)
            self.assertTrue(second.flush(10))
        self.assertTrue(first.close() and second.close())
        self.assertEqual((first.sent, first.rejected, first.duplicates), (24, 0, 0))
        self.assertEqual((second.sent, second.rejected, second.duplicates), (0, 24, 0))
        self.assertEqual(second.last_error.code, "batch_id_reused")
        self.assertEqual(self.client.dataset("m-prefix")["observations"], 24)

    def test_miner_in_a_forked_child(self):
        """A forked child (a DataLoader worker) gets a Miner of its own: it does not block on a lock the
        parent's sender held at the fork, sends only what the child observes (the parent sends what it
        had buffered), under batch_ids that are not the parent's, and its close() at exit returns."""
        m = Miner("m-fork", url=self.url, loss="softmax_focal", flush_interval=3600)
        m.observe(*batch(0), step=0)
        self.assertTrue(m.flush(10))                     # the first batch_id is used
        m.observe(*batch(1), step=1)                     # buffered when the child is forked
        held, release = threading.Event(), threading.Event()

        def hold():
            with m._cond:                                # as the sender holds it at times
                held.set()
                release.wait(30)
        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(10)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                import faulthandler
                faulthandler.dump_traceback_later(20, exit=True)  # a child that hangs fails the test
                m.observe(*batch(2), step=2)
                if m.close(10) and (m.observed, m.sent, m.dropped) == (32, 32, 0):
                    code = 0
            finally:
                os._exit(code)
        release.set()
        holder.join()
        _, status = os.waitpid(pid, 0)
        self.assertTrue(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status)
        m.observe(*batch(3), step=3)
        self.assertTrue(m.close(10))
        self.assertEqual((m.observed, m.sent, m.duplicates), (96, 96, 0))
        self.assertEqual(self.client.dataset("m-fork")["observations"], 128)

    def test_miner_in_dataloader_workers_sends_at_their_exit(self):
        """DataLoader workers that observe and never close their Miner still deliver what they observed:
        a child of multiprocessing ends with os._exit(), which skips the atexit hook, so the Miner closes
        itself in multiprocessing's exit finalizers instead."""
        m = Miner("m-workers", url=self.url, loss="softmax_focal", flush_interval=3600)
        m.observe(np.array([1000]), np.zeros((1, 3), np.float32), np.zeros(1, np.int64), step=0)  # the parent's

        class Observing(torch.utils.data.Dataset):
            def __len__(self):
                return 48

            def __getitem__(self, i):
                m.observe(np.array([i]), np.zeros((1, 3), np.float32), np.zeros(1, np.int64), step=i)
                return i

        loader = torch.utils.data.DataLoader(Observing(), batch_size=8, num_workers=2, multiprocessing_context="fork")
        self.assertEqual(sorted(i for b in loader for i in b.tolist()), list(range(48)))
        del loader  # its workers have ended
        self.assertTrue(m.close(10))
        self.assertEqual((m.observed, m.sent), (1, 1))  # the parent sends only its own
        self.assertEqual(self.client.dataset("m-workers")["observations"], 49)

    def test_miner_overhead_per_observe(self):
        """observe() of a 128 x 10 batch with focald up: the figure reported, and a loose bound."""
        m = Miner("m-speed", url=self.url, run="r")
        times = []
        for step in range(300):
            ids, logits, targets = batch(step, n=128, c=10)
            out = logits * 1.0  # a tensor in the autograd graph, as a model's output is
            t = time.perf_counter()
            m.observe(ids, out, targets, step=step)
            times.append(time.perf_counter() - t)
            time.sleep(0.002)  # the training step's own work
        self.assertTrue(m.close(30))
        times.sort()
        med, p99 = times[len(times) // 2], times[int(0.99 * len(times))]
        sys.stdout.write("\n  miner observe() of 128x10: median %.0f us, mean %.0f us, p99 %.0f us; "
                         "sent %d in %d requests\n"
                         % (1e6 * med, 1e6 * statistics.mean(times), 1e6 * p99, m.sent, m.batches))
        self.assertEqual(m.sent, 300 * 128)
        self.assertLess(med, 0.002)


class MinerSmallBodyTest(DaemonTestCase):
    """focald with a small --max-body: a call larger than a request may be is sent in parts, not lost."""

    daemon_args = ("--max-body", "64K")

    def test_miner_call_past_max_body_is_sent_in_halves(self):
        """A call whose request focald refuses for its size alone (413) is sent in halves, each a segment
        at the call's step and epoch, halved again while still too large: every sample is stored once,
        with the call's step, in binary and JSON, alone or among other calls; only a single row past the
        limit is refused."""
        client = Client(self.url)
        for binary in (True, False):
            for rows in (1000, 3000):  # halved once or twice (binary), more in JSON
                dataset = "m-big-%s-%d" % ("binary" if binary else "json", rows)
                m = Miner(dataset, url=self.url, loss="softmax_focal", binary=binary, flush_interval=3600)
                with m._cond:  # one request: a small call, the large one, a small one, a row too large alone
                    m.observe(torch.arange(0, 4), torch.randn(4, 20), torch.zeros(4, dtype=torch.long), step=1)
                    m.observe(torch.arange(100, 100 + rows), torch.randn(rows, 20),
                              torch.randint(0, 20, (rows,)), step=2, epoch=1)
                    m.observe(torch.arange(4, 8), torch.randn(4, 20), torch.zeros(4, dtype=torch.long), step=3)
                with m._cond:
                    m.observe(torch.arange(50, 51), torch.randn(1, 20000), torch.zeros(1, dtype=torch.long), step=4)
                with self.assertLogs("focald.miner", "WARNING"):
                    self.assertTrue(m.close(30))
                self.assertEqual((m.observed, m.sent, m.rejected, m.duplicates), (rows + 9, rows + 8, 1, 0), dataset)
                self.assertEqual(m.last_error.status, 413)
                d = client.dataset(dataset)
                self.assertEqual((d["samples"], d["observations"]), (rows + 8, rows + 8), dataset)
                for i in (100, 100 + rows // 2, 100 + rows - 1):
                    recent = client.sample(dataset, i)["runs"][0]["recent"]
                    self.assertEqual([(r["step"], r["epoch"]) for r in recent], [(2, 1)], (dataset, i))
                with self.assertRaises(FocaldError):
                    client.sample(dataset, 50)


class Recorder:
    """A client that records what the Miner posts (and can fail like an unreachable focald)."""

    def __init__(self, fail=False):
        self.calls = []
        self.fail = fail
        self.lock = threading.Lock()

    def post_batch(self, dataset, ids, targets=None, **kw):
        with self.lock:
            self.calls.append(dict(kw, dataset=dataset, ids=np.array(ids).tolist(),
                                   targets=np.array(targets).tolist(),
                                   x=np.array(kw.get("logits", kw.get("probs"))).tolist()))
        if self.fail:
            raise FocaldConnectionError("unreachable", "focald is down (a test's client)")
        return {"duplicate": False, "accepted": len(ids)}


class Unreachable:
    """A client that fails like an unreachable focald and keeps nothing of what it was given."""

    def post_batch(self, dataset, ids, targets=None, **kw):
        raise FocaldConnectionError("unreachable", "focald is down (a test's client)")


class Refuser:
    """A client that refuses every request with one problem: by default as focald refuses an invalid
    loss (422, field /loss)."""

    def __init__(self, status=422, code="invalid_loss", field="/loss"):
        self.calls = 0
        self.status, self.code, self.field = status, code, field

    def post_batch(self, dataset, ids, targets=None, **kw):
        self.calls += 1
        raise FocaldError(self.status, self.code, "a test's client refuses everything", field=self.field)


class MinerRecordedTest(unittest.TestCase):
    """The Miner's own logic against a recording client: nothing here asserts a time."""

    def test_miner_starts_its_sender_on_the_first_observe(self):
        """A Miner has no sender thread until it first observes, in the parent and in a forked child (a
        DataLoader worker that never observes keeps no idle thread); one that never observes closes at once."""
        def senders():
            return sum(1 for t in threading.enumerate() if t.name == "focald-miner")
        before = senders()
        idle = Miner("ds", client=Recorder(), flush_interval=3600)
        self.assertEqual(senders(), before)
        self.assertTrue(idle.close(10))
        rec = Recorder()
        m = Miner("ds", client=rec, flush_interval=3600)
        m.observe(np.arange(4), np.zeros((4, 2), np.float32), np.zeros(4, np.int64), step=0)
        self.assertEqual(senders(), before + 1)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                import faulthandler
                faulthandler.dump_traceback_later(20, exit=True)
                idle_in_child = senders() == 0   # the parent's sender is not here, and none was started
                m.observe(np.arange(4), np.zeros((4, 2), np.float32), np.zeros(4, np.int64), step=1)
                if idle_in_child and senders() == 1 and m.close(10) and m.sent == 4:
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertTrue(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status)
        self.assertTrue(m.close(10))
        self.assertEqual((m.sent, len(rec.calls)), (4, 1))

    def test_miner_refusals_are_logged_sparingly(self):
        """focald refusing every call (a wrong loss config) logs the first refusal, then at most one
        summary per interval and one when the sender stops, never a line per request; rejected still
        counts every refused sample. A request of many calls refused for its loss is refused whole."""
        refuser = Refuser()
        m = Miner("ds", client=refuser, flush_interval=3600)
        x, t = np.zeros((4, 2), np.float32), np.zeros(4, np.int64)
        with self.assertLogs("focald.miner", "INFO") as logs:
            for step in range(50):
                m.observe(np.arange(4), x, t, step=step)
            self.assertTrue(m.flush(10))         # one request of 50 calls, refused whole
            self.assertEqual((refuser.calls, m.rejected), (1, 200))
            self.assertEqual(len(logs.records), 1, [r.getMessage() for r in logs.records][:3])
            self.assertIn("refused 200 samples", logs.records[0].getMessage())
            for step in range(50, 100):          # a request per call: 50 refusals, counted, not logged
                m.observe(np.arange(4), x, t, step=step)
                self.assertTrue(m.flush(10))
            self.assertEqual(len(logs.records), 1, [r.getMessage() for r in logs.records][:3])
            m._refusals.interval = 0.2        # a minute in production
            time.sleep(0.3)
            for step in range(100, 110):
                m.observe(np.arange(4), x, t, step=step)
                self.assertTrue(m.flush(10))     # the first of these brings the summary of the interval
            self.assertEqual(len(logs.records), 2, [r.getMessage() for r in logs.records][:3])
            self.assertRegex(logs.records[1].getMessage(),
                             r"refused 51 more requests \(204 samples\) in the last \d+ s: 51 with 422 invalid_loss")
            self.assertTrue(m.close())           # the rest summed up when the sender stops
        self.assertEqual(len(logs.records), 3, [r.getMessage() for r in logs.records][:3])
        self.assertIn("refused 9 more requests (36 samples)", logs.records[2].getMessage())
        self.assertEqual((m.rejected, m.sent, m.observed, refuser.calls), (440, 0, 440, 1 + 50 + 10))
        self.assertEqual(m.last_error.code, "invalid_loss")

    def test_miner_splits_only_refusals_of_one_calls_data(self):
        """A request of many calls refused with a problem whose field points into the calls' data (ids,
        tensors, meta, segments; a binary body's inputs), or with none, is sent again a call at a time;
        one whose field names what every call's request carries alike (the loss, the run, the
        batch_id), a dataset name refused (bad_name without a field: it is in the path), a wrong token,
        a class count conflicting with the run's, or a 500 that persists through the retries (focald may
        have committed the request before failing to answer: parts under other batch_ids would store
        its samples twice) is refused whole; one refused for its size (413) is split
        into calls and the calls into halves. Either way every sample is counted in rejected, once."""
        calls = 7
        split = [(422, "label_out_of_range", "/targets/9"), (422, "not_finite", "/logits/3/1"),
                 (422, "duplicate_id", "/ids/5"), (422, "label_out_of_range", "/inputs/2"),
                 (422, "invalid_field", "/meta/17"), (422, "out_of_range", "/segments/2/step"),
                 (422, "bad_name", "/ids/0"), (400, "bad_json", None)]
        whole = [(422, "bad_name", None), (422, "invalid_loss", "/loss"), (422, "invalid_loss", "/loss/gamma"),
                 (422, "shape_mismatch", "/loss/alpha"), (422, "bad_name", "/run"),
                 (422, "bad_name", "/batch_id"), (422, "unknown_field", "/lossy"), (401, "unauthorized", None),
                 (409, "class_count_conflict", "/inputs/1"), (409, "class_count_conflict", "/logits"),
                 (500, "internal", None)]
        # a call refused alone for its size is then sent in halves, while any half has two rows or more:
        # each call of 3 rows, then its halves of 1 and 2 rows, then the halves of those 2
        halved = [((413, "body_too_large", None), 1 + calls * (1 + 2 + 2))]
        for (status, code, field), requests in [(c, 1 + calls) for c in split] + [(c, 1) for c in whole] + halved:
            refuser = Refuser(status, code, field)
            m = Miner("ds", client=refuser, flush_interval=3600, retry_initial=0.001, retry_max=0.001,
                      loss="sigmoid_focal")
            with self.assertLogs("focald.miner", "INFO"):
                with m._cond:  # one request of all the calls
                    for step in range(calls):
                        m.observe(np.arange(3), np.zeros((3, 2), np.float32), np.zeros(3, np.int64), step=step)
                self.assertTrue(m.close(10))
            self.assertEqual(refuser.calls - m.retries, requests, (status, code, field))  # a 500 is retried first
            self.assertEqual((m.rejected, m.sent, m.last_error.code), (3 * calls, 0, code), (status, code, field))

    def test_miner_close_giving_up_mid_split_counts_each_sample_once(self):
        """close() gives up while a refused request is being sent again call by call: the calls already
        stored or refused stay counted as such, only the rest is dropped, so that observed is sent +
        rejected + dropped."""
        class SplitThenDown:
            calls = 0

            def post_batch(self, dataset, ids, targets=None, **kw):
                self.calls += 1
                if self.calls == 1:
                    raise FocaldError(422, "label_out_of_range", "a test's client refuses a label", field="/targets/9")
                if self.calls <= 3:  # the first call stored, the second refused
                    if self.calls == 3:
                        raise FocaldError(422, "label_out_of_range", "a test's client refuses a label", field="/targets/1")
                    return {"duplicate": False, "accepted": len(ids)}
                raise FocaldConnectionError("unreachable", "focald is down (a test's client)")

        client = SplitThenDown()
        m = Miner("ds", client=client, flush_interval=0, retry_initial=3600, loss="sigmoid_focal")
        with self.assertLogs("focald.miner", "INFO"):
            with m._cond:  # one request of five calls
                for step in range(5):
                    m.observe(np.arange(4) + 4 * step, np.zeros((4, 2), np.float32), np.zeros(4, np.int64), step=step)
            self.assertTrue(wait_for(lambda: client.calls >= 4))  # the third call, backing off
            self.assertFalse(m.close(0.2))
        s = m.stats()
        self.assertEqual((s["observed"], s["sent"], s["rejected"], s["dropped"], s["pending"]), (20, 4, 4, 12, 0), s)

    def test_miner_coalescing_keeps_order_steps_and_epochs(self):
        rec = Recorder()
        m = Miner("ds", client=rec, flush_interval=3600, max_batch=50)
        want_ids, want_segs = [], []
        for step in range(40):
            n = 1 + step % 7
            ids = np.arange(n) + 3 * step  # overlapping ids between nearby steps
            m.observe(torch.from_numpy(ids), torch.full((n, 3), float(step)), torch.zeros(n, dtype=torch.long),
                      step=step, epoch=step // 10)
            want_ids += ids.tolist()
            want_segs.append({"n": n, "step": step, "epoch": step // 10})
        self.assertTrue(m.close())
        got_ids = [i for c in rec.calls for i in c["ids"]]
        got_segs = [g for c in rec.calls for g in c["segments"]]
        self.assertEqual(got_ids, want_ids)
        self.assertEqual(got_segs, want_segs)
        for c in rec.calls:
            self.assertLessEqual(len(c["ids"]), 50)
            self.assertEqual(sum(g["n"] for g in c["segments"]), len(c["ids"]))
            row = 0
            for g in c["segments"]:  # each row's logits carry its step
                self.assertEqual({r[0] for r in c["x"][row:row + g["n"]]}, {float(g["step"])})
                row += g["n"]
        self.assertEqual(len({c["batch_id"] for c in rec.calls}), len(rec.calls))
        self.assertEqual((m.sent, m.batches, m.observed), (len(want_ids), len(rec.calls), len(want_ids)))

    def test_miner_flush_sends_what_is_collected_as_one_request(self):
        rec = Recorder()
        m = Miner("ds", client=rec, flush_interval=3600)
        for step in range(5):
            m.observe(np.arange(4), np.zeros((4, 2), np.float32), np.zeros(4, int), step=step)
        self.assertTrue(m.flush(10))
        self.assertEqual([[g["step"] for g in c["segments"]] for c in rec.calls], [[0, 1, 2, 3, 4]])
        m.observe(["a", "b"], np.ones((2, 2), np.float32), np.ones(2, int))  # strings: another layout
        m.observe([7], [[0.5, 0.5]], [[1.0, 0.0]], step=9)  # lists, soft targets: another layout
        self.assertTrue(m.close())
        self.assertEqual([c["ids"] for c in rec.calls[1:]], [["a", "b"], [7]])
        self.assertEqual(rec.calls[1]["segments"], [{"n": 2}])
        self.assertEqual(rec.calls[2]["targets"], [[1.0, 0.0]])

    def test_miner_reuses_its_buffers(self):
        """In steady state observe() allocates no buffers: the same few slabs go round."""
        made = [0]
        init = miner_module._Slab.__init__

        def counting(self, *a, **kw):
            made[0] += 1
            init(self, *a, **kw)
        miner_module._Slab.__init__ = counting
        try:
            # focald keeps up (a flush every ten steps): one slab filling, one being sent
            rec = Recorder()
            m = Miner("ds", client=rec, flush_interval=3600, max_batch=640)
            x = torch.zeros(32, 10)
            t = torch.zeros(32, dtype=torch.long)
            for step in range(2000):
                m.observe(torch.arange(32), x, t, step=step)
                if step % 10 == 9:
                    self.assertTrue(m.flush(10))
            self.assertTrue(m.close())
            self.assertEqual((m.sent, len(rec.calls)), (2000 * 32, 200))
            self.assertLessEqual(made[0], 2)
            # the sender falls behind: never more slabs than max_queue_bytes holds; the oldest are dropped
            made[0] = 0
            rec = Recorder()
            m = Miner("ds", client=rec, flush_interval=0, max_batch=64, max_queue_bytes=8 * 64 * (8 + 40 + 8))
            for step in range(2000):
                m.observe(torch.arange(32), x, t, step=step)
            self.assertTrue(m.close())
            self.assertEqual(m.sent + m.dropped, 2000 * 32)
            self.assertLessEqual(made[0], 8)
        finally:
            miner_module._Slab.__init__ = init

    def test_miner_backoff_is_not_woken_by_observe(self):
        rec = Recorder(fail=True)
        m = Miner("ds", client=rec, flush_interval=0, retry_initial=3600, retry_max=3600)
        m.observe(np.arange(4), np.zeros((4, 2), np.float32), np.zeros(4, int), step=0)
        self.assertTrue(wait_for(lambda: len(rec.calls) == 1))
        for step in range(1, 1001):
            m.observe(np.arange(4), np.zeros((4, 2), np.float32), np.zeros(4, int), step=step)
        self.assertEqual((len(rec.calls), m.retries), (1, 0))  # one attempt, waiting out its backoff
        self.assertFalse(m.close(timeout=0.2))
        s = m.stats()
        self.assertEqual((s["sent"], s["pending"], s["dropped"], s["observed"]), (0, 0, 4004, 4004))
        self.assertEqual(len(rec.calls), 1)

    def test_miner_drops_the_oldest_when_its_buffers_are_full(self):
        rec = Recorder(fail=True)
        # rows of 8 + 4 * 4 + 8 bytes and a slot of 8 in the list of segments: 25 rows a slab, eight slabs
        m = Miner("ds", client=rec, flush_interval=0, retry_initial=3600, max_queue_bytes=32 * 8 * 32)
        m.observe(np.arange(4), np.zeros((4, 4), np.float32), np.zeros(4, int), step=0)
        self.assertTrue(wait_for(lambda: len(rec.calls) == 1))  # stuck in its backoff: 4 samples in flight
        for step in range(1, 401):
            m.observe(np.arange(8), np.zeros((8, 4), np.float32), np.zeros(8, int), step=step)
        s = m.stats()
        self.assertEqual(s["observed"], 4 + 400 * 8)
        self.assertGreater(s["dropped"], 0)
        self.assertEqual(s["dropped"], 8 * s["dropped_observations"])  # whole calls, the oldest first
        self.assertEqual(s["observed"], s["dropped"] + s["pending"])
        self.assertLessEqual(s["pending"] - 4, 8 * 32 + 8)  # what the buffers hold
        with m._cond:
            queued_steps = [g[1] for sl in list(m._ready) + [m._cur] for g in sl.seg[:sl.nseg]]
        self.assertEqual(queued_steps, list(range(401 - len(queued_steps), 401)))  # the newest are kept
        self.assertFalse(m.close(timeout=0.1))
        self.assertEqual(m.dropped, m.observed)

    def test_miner_layouts_changing_every_call_keep_within_the_bound(self):
        """Dense outputs whose length M follows each batch's padding make every call a layout of its own
        (no two share a request). Each used to take a slab sized for thousands of rows, so a bound that
        holds the calls' data many times over dropped them while focald kept up; now a call of a new
        layout takes a slab of a few such calls, and nothing is dropped. The same for two layouts in
        turn, and for layouts that change every few calls."""
        gen = torch.Generator().manual_seed(3)
        patterns = {"every call": [int(v) for v in torch.randint(20, 60, (64,), generator=gen)],
                    "two in turn": [20, 40] * 32, "every third call": [20 + 10 * (k // 3 % 4) for k in range(64)]}
        for name, lengths in patterns.items():
            with self.subTest(pattern=name):
                rec = Recorder()
                # 64 calls of 8 x M x 3 logits and 8 x M targets: about 0.4 MB in all, with 8 MiB of buffers
                m = Miner("ds", client=rec, flush_interval=3600, loss="softmax_focal", max_queue_bytes=8 << 20)
                with m._cond:  # the sender takes nothing until all are observed
                    for step, M in enumerate(lengths):
                        m.observe(torch.arange(8 * step, 8 * step + 8), torch.randn(8, M, 3),
                                  torch.randint(0, 3, (8, M)), step=step)
                    self.assertEqual((m.dropped, m.pending), (0, 8 * len(lengths)))
                    self.assertLessEqual(m._allocated, 8 << 20)
                self.assertTrue(m.close(10))
                self.assertEqual((m.observed, m.sent, m.dropped), (8 * len(lengths),) * 2 + (0,))
                steps = [g["step"] for call in rec.calls for g in call["segments"]]
                self.assertEqual(steps, list(range(len(lengths))))
                self.assertEqual([len(x[0]) for call in rec.calls for x in [call["x"]]],
                                 [lengths[g["step"]] for call in rec.calls for g in call["segments"][:1]])

    def test_miner_soft_targets_in_lists_stay_soft(self):
        """Targets given as nested lists are floats when any number in them is (a soft row after a one-hot
        one, a NumPy float): once the first number decided, and [0.7, 0.3] was sent as [0, 0]."""
        for targets in ([[1, 0], [0.7, 0.3]], [[1, 0], [np.float32(0.25), 1]]):
            rec = Recorder()
            m = Miner("ds", client=rec, loss="binary_cross_entropy", flush_interval=3600)
            m.observe([1, 2], [[0.5, -0.5], [0.1, 0.2]], targets, step=0)
            self.assertTrue(m.close(10))
            self.assertEqual(len(rec.calls), 1)
            np.testing.assert_allclose(rec.calls[0]["targets"], np.array(targets, dtype=np.float64), rtol=1e-6)
        rec = Recorder()
        m = Miner("ds", client=rec, loss="cross_entropy", flush_interval=3600)
        m.observe([1, 2], [[0.5, -0.5], [0.1, 0.2]], [1, 0], step=0)  # class indices stay indices
        self.assertTrue(m.close(10))
        self.assertEqual(rec.calls[0]["targets"], [1, 0])
        self.assertIn(np.array(rec.calls[0]["targets"]).dtype.kind, "iu")

    def test_miner_meta_is_copied_when_observed(self):
        # a sample's meta dict changed or reused after observe() does not change what is sent
        rec = Recorder()
        m = Miner("ds", client=rec, flush_interval=3600, loss="cross_entropy")
        meta = {"uri": "file:///a.png"}
        m.observe([1, 2], torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), step=0, meta={1: meta})
        meta["uri"] = "file:///changed.png"
        m.observe([3], torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), step=1, meta={3: meta})
        self.assertTrue(m.close())
        sent = {}
        for c in rec.calls:
            sent.update(c.get("meta") or {})
        self.assertEqual(sent, {1: {"uri": "file:///a.png"}, 3: {"uri": "file:///changed.png"}})

    def test_miner_bound_counts_string_ids_and_meta(self):
        """String ids and meta take several times the bytes of a small model's logits: the memory the
        buffers hold while focald is down stays near max_queue_bytes with them too (measured by
        tracemalloc, with a generous margin), and what does not fit is dropped and counted."""
        import tracemalloc
        bound = 2 << 20
        x, t = np.zeros((256, 2), np.float32), np.zeros(256, np.int64)
        for kind in ("ids", "meta"):
            with self.subTest(kind=kind):
                m = Miner("ds", client=Unreachable(), flush_interval=0, retry_initial=3600, max_queue_bytes=bound)
                tracemalloc.start()
                try:
                    base = tracemalloc.get_traced_memory()[0]
                    for step in range(400):
                        rows = range(step * 256, step * 256 + 256)
                        if kind == "ids":
                            m.observe(["scans/%08d-axial.png" % i for i in rows], x, t, step=step)
                        else:
                            m.observe(np.array(rows), x, t, step=step,
                                      meta={str(i): {"path": "scans/%08d-axial.png" % i, "site": i % 7} for i in rows})
                    held = tracemalloc.get_traced_memory()[0] - base
                finally:
                    tracemalloc.stop()
                s = m.stats()
                self.assertLess(held, 2 * bound, "the buffers hold %.1f MiB for a bound of %.1f MiB"
                                % (held / 2 ** 20, bound / 2 ** 20))
                self.assertGreater(s["dropped"], 0)
                self.assertEqual(s["observed"], s["dropped"] + s["pending"])
                self.assertEqual(s["dropped"], 256 * s["dropped_observations"])
                self.assertFalse(m.close(timeout=0.1))
                self.assertEqual(m.dropped, m.observed)

    def test_miner_bound_counts_segments(self):
        """Each observe() call's segment (its (n, step, epoch) and a slot in the slab's list of them) is
        counted against max_queue_bytes: with 2-class rows (24 bytes each) the list alone is a third of
        the arrays, and calls of one row take several times their rows in tuples. While focald is down
        the memory the buffers hold (tracemalloc, which sees NumPy's arrays) stays within 10% of the bound."""
        import tracemalloc
        for n, bound in ((64, 1 << 20), (1, 256 << 10)):
            with self.subTest(rows_per_call=n):
                m = Miner("ds", client=Unreachable(), flush_interval=0, retry_initial=3600, max_queue_bytes=bound,
                          loss="cross_entropy")
                x, t = np.zeros((n, 2), np.float32), np.zeros(n, np.int64)
                tracemalloc.start()
                try:
                    base = tracemalloc.get_traced_memory()[0]
                    for step in range(2 * bound // (24 * n)):
                        m.observe(np.arange(step * n, step * n + n), x, t, step=1000 + step, epoch=3)
                    held = tracemalloc.get_traced_memory()[0] - base
                finally:
                    tracemalloc.stop()
                s = m.stats()
                self.assertLess(held, 1.1 * bound, "the buffers hold %.2f times the bound" % (held / bound))
                self.assertGreater(s["dropped"], 0)
                self.assertEqual(s["observed"], s["dropped"] + s["pending"])
                self.assertFalse(m.close(timeout=0.1))
                self.assertEqual(m.dropped, m.observed)


class _Answers(http.server.BaseHTTPRequestHandler):
    """A stand-in for focald behind a proxy: records each batch_id posted and answers it from a script."""

    posted = []
    answer = (200, {"Content-Type": "text/html"}, b"<html>a proxy's page</html>")

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).posted.append(json.loads(body).get("batch_id"))
        status, headers, out = type(self).answer
        self.send_response(status)
        for k, v in dict(headers, **{"Content-Length": str(len(out))}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


class MinerOddAnswersTest(unittest.TestCase):
    """Answers focald does not give but something in front of it can: a request that was taken is never
    sent again under other batch_ids (its samples would be stored twice), one redirected is refused whole."""

    def setUp(self):
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        _Answers.posted = []
        self.addCleanup(self.srv.server_close)
        self.addCleanup(self.srv.shutdown)

    def run_miner(self):
        client = Client("http://127.0.0.1:%d" % self.srv.server_address[1], binary=False)
        m = Miner("ds", client=client, loss="cross_entropy", flush_interval=3600)
        for step in range(3):  # three calls in one request: three segments
            m.observe(np.arange(4) + 10 * step, np.zeros((4, 2), np.float32), np.zeros(4, np.int64), step=step)
        self.assertTrue(m.close(30))
        return m

    def test_miner_answer_that_is_not_json_counts_the_batch_sent_once(self):
        """A 2xx whose body is not JSON (a proxy's page): the batch was stored, so it counts as sent and is
        not sent again call by call (it was, under batch_ids prefix-1.0, .1, .2: stored twice)."""
        for answer in ((200, {"Content-Type": "text/html"}, b"<html>a proxy's page</html>"),
                       (200, {"Content-Type": "application/json"}, b"\xff\xfe"),
                       (200, {"Content-Type": "application/json"}, b"[1, 2]")):
            _Answers.answer, _Answers.posted = answer, []
            m = self.run_miner()
            self.assertEqual(len(_Answers.posted), 1, _Answers.posted)
            self.assertEqual((m.sent, m.rejected, m.dropped), (12, 0, 0))
            self.assertEqual(m.last_error.code, "bad_response")

    def test_miner_redirect_is_refused_whole(self):
        """A 301 (an ingress moving http to https): one request, refused whole, not sent again call by call."""
        _Answers.answer = (301, {"Location": "https://focald.example/v1/datasets/ds/batches"}, b"")
        m = self.run_miner()
        self.assertEqual(len(_Answers.posted), 1, _Answers.posted)
        self.assertEqual((m.sent, m.rejected), (0, 12))
        self.assertEqual((m.last_error.status, m.last_error.code), (301, "redirect"))


class MinerDaemonDownTest(unittest.TestCase):
    """focald stopped, slow, and back: observe() stays fast, drops are counted, close() keeps its timeout."""

    def test_miner_nonblocking_with_focald_stopped(self):
        d = Daemon()
        d.stop()
        # each observation holds 64 x 10 float32 logits plus ids and targets: about 3.6 KiB
        m = Miner("m-down", url=d.url, max_queue_bytes=64 << 10, retry_initial=0.05, retry_max=0.2)
        times = []
        for step in range(200):
            ids, logits, targets = batch(step, n=64, c=10)
            t = time.perf_counter()
            m.observe(ids, logits, targets, step=step)
            times.append(time.perf_counter() - t)
        self.assertLess(max(times), 0.05, "observe() blocked for %.3f s" % max(times))
        self.assertLess(statistics.median(times), 0.002)
        s = m.stats()
        self.assertEqual(s["observed"], 200 * 64)
        self.assertGreater(s["dropped"], 0)
        self.assertGreater(s["dropped_observations"], 150)  # the queue holds about 17 observations
        self.assertEqual(s["dropped"], 64 * s["dropped_observations"])
        self.assertEqual(s["observed"], s["dropped"] + s["pending"])
        self.assertTrue(wait_for(lambda: m.retries >= 2, 5))
        self.assertEqual(m.last_error.code, "unreachable")
        t = time.monotonic()
        flushed = m.close(timeout=1.0)
        took = time.monotonic() - t
        self.assertFalse(flushed)
        self.assertLess(took, 1.5)
        s = m.stats()
        self.assertEqual((s["sent"], s["pending"], s["rejected"]), (0, 0, 0))
        self.assertEqual(s["dropped"], s["observed"])

    def test_miner_exit_waits_for_the_longest_close_timeout_not_their_sum(self):
        # three miners nobody closed, focald down: the exit handler gives each its close_timeout from one
        # start, so the process exits after about one close_timeout (closed one after another: three)
        from focald import miner as miner_module
        miners = [Miner("m-exit-%d" % i, client=Unreachable(), flush_interval=0, retry_initial=3600,
                        close_timeout=1.0, loss="cross_entropy") for i in range(3)]
        for m in miners:
            m.observe(*batch(0, n=8), step=0)
        self.assertTrue(wait_for(lambda: all(m.last_error is not None for m in miners), 5))  # each is backing off
        live, miner_module._live = miner_module._live, weakref.WeakSet(miners)  # other tests' miners are not this test's
        try:
            t = time.monotonic()
            miner_module._close_all()
            took = time.monotonic() - t
        finally:
            miner_module._live = live
        self.assertLess(took, 2.5, "exit took %.2f s for three miners of close_timeout 1 s" % took)
        for m in miners:
            s = m.stats()
            self.assertEqual((s["sent"], s["pending"], s["dropped"]), (0, 0, 8), s)
            self.assertFalse(m.close(), "closed already, having given up")

    def test_miner_recovers_when_focald_returns(self):
        d = Daemon()
        d.stop()
        m = Miner("m-back", url=d.url, retry_initial=0.05, retry_max=0.2)
        for step in range(5):
            m.observe(*batch(step, n=10), step=step)
        self.assertTrue(wait_for(lambda: m.retries >= 3, 5))
        self.assertEqual(m.sent, 0)
        d.start()
        self.assertTrue(m.flush(15), m.stats())
        for step in range(5, 8):
            m.observe(*batch(step, n=10), step=step)
        self.assertTrue(m.close(15))
        s = m.stats()
        self.assertEqual((s["sent"], s["dropped"], s["rejected"]), (80, 0, 0))
        self.assertEqual(Client(d.url).dataset("m-back")["observations"], 80)
        self.assertEqual(d.stop(), 0)

    def test_miner_wrong_token_is_refused_not_retried(self):
        d = Daemon(token="0123456789abcdef" * 2)
        try:
            m = Miner("m-auth", url=d.url, token="not-the-token-at-all")
            m.observe(*batch(0, n=8), step=0)
            self.assertTrue(m.close(10))
            self.assertEqual((m.sent, m.rejected, m.retries), (0, 8, 0))
            self.assertEqual(m.last_error.status, 401)
        finally:
            d.stop()

    def test_miner_request_timeout_is_a_deadline(self):
        """A server trickling its answer a byte every 0.2 s (17 s in all) does not hold a request past
        request_timeout: the request fails with code timeout within 1.5 s of a 1 s timeout."""
        trickler = _daemon.Trickler(interval=0.2)
        try:
            m = Miner("m-trickle", url=trickler.url, request_timeout=1, flush_interval=0, retry_initial=3600,
                      loss="cross_entropy")
            t = time.monotonic()
            m.observe(*batch(0, n=8), step=0)
            self.assertTrue(wait_for(lambda: m.last_error is not None, 5, 0.01))
            self.assertLess(time.monotonic() - t, 1.5)
            self.assertEqual((m.last_error.code, m.sent), ("timeout", 0))
            self.assertFalse(m.close(timeout=0.1))  # waiting out its backoff
            self.assertEqual(m.dropped, 8)
        finally:
            trickler.close()

    def test_miner_retries_an_answer_cut_short(self):
        """An answer whose headers were cut off by the connection closing is a failure to retry, not a
        refusal: nothing is counted as rejected and the samples are still held."""
        answer = _daemon.Trickler.ANSWER
        server = _daemon.Trickler(interval=0, cut=answer.index(b"Content-Length") + 9)
        try:
            m = Miner("m-cut", url=server.url, request_timeout=2, flush_interval=0, retry_initial=0.05,
                      retry_max=0.1, loss="cross_entropy")
            m.observe(*batch(0, n=8), step=0)
            self.assertTrue(wait_for(lambda: m.retries >= 2, 5, 0.01))
            self.assertEqual((m.rejected, m.sent, m.last_error.code), (0, 0, "unreachable"))
            self.assertFalse(m.close(timeout=0.2))
            self.assertEqual(m.dropped, 8)
        finally:
            server.close()

    def test_miner_with_focald_hanging(self):
        """focald accepts connections but never answers: requests time out, observe() stays fast and
        close() returns within its timeout although a request is still waiting."""
        d = Daemon()
        proxy = Proxy(d.port, mode="hang")
        try:
            m = Miner("m-hang", url=proxy.url, request_timeout=0.5, retry_initial=0.05, retry_max=0.1,
                      max_queue_bytes=32 << 10)
            times = []
            for step in range(100):
                t = time.perf_counter()
                m.observe(*batch(step, n=64, c=10), step=step)
                times.append(time.perf_counter() - t)
                time.sleep(0.005)
            self.assertLess(max(times), 0.05)
            self.assertTrue(wait_for(lambda: m.last_error is not None, 5))
            self.assertEqual(m.last_error.code, "timeout")
            self.assertGreater(m.dropped, 0)
            t = time.monotonic()
            self.assertFalse(m.close(timeout=0.3))
            self.assertLess(time.monotonic() - t, 0.6)
            self.assertEqual(m.dropped, m.observed)
        finally:
            proxy.close()
            d.stop()


if __name__ == "__main__":
    import run_tests
    sys.exit(run_tests.main([__name__] + sys.argv[1:], modules=[sys.modules[__name__]]))
