"""Tests of focald.Client against a real focald: every call, JSON and binary bodies giving identical
results, FocaldError's fields, keep-alive, token and URL handling.

usage: BUILD=build /usr/bin/python3 clients/python/tests/test_client.py [-v] [names...]
"""
import csv
import http.server
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import stat
import tempfile
import threading
import time
import unittest

import _daemon
from _daemon import Daemon, DaemonTestCase

import numpy as np
import torch

import focald.client
from focald import Client, FocaldConnectionError, FocaldError, Miner
from focald._retry import Backoff

SCORE_NAMES = ["p_t", "p_max", "margin", "norm_margin", "entropy", "cw_entropy", "el2n", "correct", "pred"]


def close(a, b, tol=1e-6):
    return abs(a - b) <= tol * max(1.0, abs(b))


class JsonVsBinaryTest(DaemonTestCase):
    """The same batch sent as JSON and in the binary framing gives the same answer, bit for bit."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.cb = Client(cls.url, binary=True)
        cls.cj = Client(cls.url, binary=False)

    def both(self, method, *args, **kw):
        a = getattr(self.cb, method)(*args, **kw)
        b = getattr(self.cj, method)(*args, **kw)
        return a, b

    def test_client_binary_default_with_numpy(self):
        self.assertTrue(Client(self.url).binary)
        self.assertFalse(Client(self.url, binary=False).binary)

    def test_client_evaluate_identical_softmax(self):
        rng = np.random.default_rng(1)
        logits = rng.normal(size=(64, 7)).astype(np.float32) * 3
        targets = rng.integers(0, 7, size=64)
        a, b = self.both("evaluate", logits, targets, loss="softmax_focal", ohem_k=5)
        self.assertEqual(a, b)
        self.assertEqual(len(a["losses"]), 64)
        self.assertEqual(len(a["hardest"]), 5)
        self.assertEqual(a["hardest"][0], int(np.argmax(a["losses"])))
        self.assertEqual(sorted(a["scores"]), sorted(SCORE_NAMES))

    def test_client_evaluate_identical_dtypes(self):
        """float64, float16 and bfloat16 torch tensors, int32/uint8/bool targets: one answer either way."""
        rng = np.random.default_rng(2)
        base = rng.normal(size=(16, 4)) * 2
        cases = [
            (base, rng.integers(0, 4, size=16)),
            (torch.tensor(base, dtype=torch.float16), torch.tensor(rng.integers(0, 4, size=16), dtype=torch.int32)),
            (torch.tensor(base, dtype=torch.bfloat16), torch.tensor(rng.integers(0, 4, size=16), dtype=torch.uint8)),
            (torch.tensor(base, dtype=torch.float32, requires_grad=True) * 1,
             torch.tensor(rng.integers(0, 4, size=16))),
            (base.astype(np.float32).tolist(), rng.integers(0, 4, size=16).tolist()),
        ]
        for logits, targets in cases:
            a, b = self.both("evaluate", logits, targets)
            self.assertEqual(a, b, "dtype %s" % getattr(logits, "dtype", type(logits)))
        a, b = self.both("evaluate", base[:, :1], torch.tensor(rng.integers(0, 2, size=16), dtype=torch.bool))
        self.assertEqual(a, b)

    def test_client_evaluate_identical_multihot_dense_probs_weights(self):
        rng = np.random.default_rng(3)
        logits = rng.normal(size=(8, 5)).astype(np.float32)
        multihot = (rng.random(size=(8, 5)) < 0.3).astype(np.float32)
        self.assertEqual(*self.both("evaluate", logits, multihot))
        soft = rng.random(size=(8, 5)).astype(np.float32)
        weights = rng.random(size=(8, 5)).astype(np.float32)
        self.assertEqual(*self.both("evaluate", logits, soft, weights=weights))
        dense = rng.normal(size=(4, 6, 3)).astype(np.float32)
        dense_t = rng.integers(-1, 3, size=(4, 6))
        a, b = self.both("evaluate", dense, dense_t, loss="softmax_focal")
        self.assertEqual(a, b)
        self.assertIsNone(a["scores"]["pred"][0])  # dense samples have no single prediction
        probs = rng.dirichlet(np.ones(4), size=6).astype(np.float32)
        a, b = self.both("evaluate", probs=probs, targets=rng.integers(0, 4, size=6), loss="softmax_focal")
        self.assertEqual(a, b)
        all_ignored = np.full((2, 6), -1)
        a, b = self.both("evaluate", dense[:2], all_ignored, loss="softmax_focal")
        self.assertEqual(a, b)
        self.assertIsNone(a["scores"]["p_t"][0])  # nothing scored: null in JSON, NaN in binary

    def test_client_evaluate_grad_nested_as_the_input_either_framing(self):
        """grad comes back nested as the input was ((N, C) and dense (N, M, C)), grad_norm per sample, equal
        bit for bit from JSON and binary, and equal to torch's autograd of the same loss."""
        rng = np.random.default_rng(7)
        cases = [(rng.normal(size=(6, 4)).astype(np.float32) * 2, rng.integers(0, 4, size=6)),
                 (rng.normal(size=(3, 5, 4)).astype(np.float32) * 2, rng.integers(0, 4, size=(3, 5)))]
        for x, t in cases:
            with self.subTest(shape=x.shape):
                a, b = self.both("evaluate", x, t, loss="cross_entropy", outputs=["losses", "grad", "grad_norm"])
                self.assertEqual(a["grad"], b["grad"])
                self.assertEqual(a["grad_norm"], b["grad_norm"])
                g = np.array(a["grad"])
                self.assertEqual(g.shape, x.shape)
                xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
                per = torch.nn.functional.cross_entropy(xt.reshape(-1, x.shape[-1]), torch.tensor(t).reshape(-1),
                                                        reduction="none").reshape(x.shape[:-1])
                if per.dim() > 1:
                    per = per.sum(1)  # a dense sample's loss: the sum over its positions (reduction "sum")
                per.sum().backward()
                want = xt.grad.numpy()
                np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(a["grad_norm"], np.sqrt((want.reshape(len(x), -1) ** 2).sum(1)),
                                           rtol=1e-5, atol=1e-6)
        a = self.cb.evaluate(cases[0][0], cases[0][1], outputs=["losses"])
        self.assertNotIn("grad", a)

    def test_client_post_batch_identical_and_stored(self):
        rng = np.random.default_rng(4)
        logits = rng.normal(size=(10, 3)).astype(np.float32)
        targets = rng.integers(0, 3, size=10)
        ids_int = np.arange(10)
        ids_str = ["img/%d.png" % i for i in range(10)]
        a = self.cb.post_batch("jb", ids_int, logits, targets, run="bin", step=1, epoch=0, batch_id="b1", ohem_k=3)
        b = self.cj.post_batch("jb", ids_int, logits, targets, run="json", step=1, epoch=0, batch_id="b1", ohem_k=3)
        self.assertEqual({k: v for k, v in a.items() if k != "run"}, {k: v for k, v in b.items() if k != "run"})
        self.assertEqual((a["run"], b["run"], a["batch_id"], a["accepted"], a["duplicate"]),
                         ("bin", "json", "b1", 10, False))
        a = self.cb.post_batch("jb", ids_str, torch.tensor(logits), torch.tensor(targets), run="bin2")
        b = self.cj.post_batch("jb", ids_str, torch.tensor(logits), torch.tensor(targets), run="json2")
        self.assertEqual(a["losses"], b["losses"])
        self.assertEqual(a["scores"], b["scores"])
        mixed = [1, "two", 3, "four", 5, 6, 7, 8, 9, "ten"]
        a = self.cb.post_batch("jb", mixed, logits, targets, run="bin3")
        b = self.cj.post_batch("jb", mixed, logits, targets, run="json3")
        self.assertEqual(a["losses"], b["losses"])
        for run in ("bin", "json", "bin2", "json2"):
            h = self.cj.sample("jb", "3" if run in ("bin", "json") else "img/3.png", run=run)
            self.assertEqual(h["runs"][0]["seen"], 1)
        # the history the two runs built is the same
        hb = self.cj.hard_examples("jb", run="bin", k=10)["items"]
        hj = self.cj.hard_examples("jb", run="json", k=10)["items"]
        self.assertEqual([(i["id"], i["mean_loss"]) for i in hb], [(i["id"], i["mean_loss"]) for i in hj])

    def test_client_uint64_ids_beyond_int64_keep_their_value(self):
        """uint64 ids (hashes, say) beyond int64 are stored as those integers' samples (their decimal
        strings, README "Names"), in either framing and from arrays or lists: never wrapped to negative."""
        big = [(1 << 63) + 5, (1 << 64) - 1, 7]
        logits = np.zeros((3, 2), np.float32)
        for c, how in ((self.cb, "binary"), (self.cj, "json")):
            for k, ids in enumerate((np.array(big, dtype=np.uint64), big)):
                run = "%s-%d" % (how, k)
                r = c.post_batch("u64", ids, logits, [0, 1, 0], run=run, loss="cross_entropy")
                self.assertEqual(r["accepted"], 3)
                for i in big:
                    self.assertEqual(self.cj.sample("u64", str(i), run=run)["runs"][0]["seen"], 1, (run, i))
        with self.assertRaises(FocaldError) as cm:  # wrapped, it would have been this sample
            self.cj.sample("u64", str(((1 << 63) + 5) - (1 << 64)))
        self.assertEqual(cm.exception.status, 404)

    def test_client_numpy_and_torch_scalars_in_arguments(self):
        """step, epoch, ohem_k, a loss's numbers and meta (keys and values) may be NumPy or torch scalars,
        as a training loop holds them: the batch is stored as with Python numbers, in both framings."""
        logits = np.zeros((2, 3), np.float32)
        for c, how in ((self.cb, "binary"), (self.cj, "json")):
            r = c.post_batch("npscalar", np.array([1, 2]), logits, [0, 1], run=how, step=np.int64(7),
                             epoch=torch.tensor(2), ohem_k=np.int32(1),
                             loss={"type": "softmax_focal", "gamma": np.float32(2.0)},
                             meta={np.int64(1): {"w": np.float64(0.25), "n": np.int16(3), "v": np.arange(2)}})
            self.assertEqual((r["accepted"], r["hardest"]), (2, [0]))
            s1 = self.cj.sample("npscalar", 1, run=how)
            self.assertEqual(s1["meta"], {"w": 0.25, "n": 3, "v": [0, 1]})
            recent = s1["runs"][0]["recent"][0]
            self.assertEqual((recent["step"], recent["epoch"]), (7, 2))

    def test_client_binary_outputs_subset(self):
        logits = np.zeros((3, 2), np.float32)
        r = self.cb.evaluate(logits, [0, 1, 1], outputs=["losses"])
        self.assertEqual(len(r["losses"]), 3)
        self.assertNotIn("scores", r)

    def test_client_values_match_reference(self):
        """CONVENTIONS.md's fixed values, through both encodings."""
        for c in (self.cb, self.cj):
            r = c.evaluate([[0.0]], [1.0])
            self.assertTrue(close(r["losses"][0], 0.04332170), r)
            r = c.evaluate([[0.0]], [0.0])
            self.assertTrue(close(r["losses"][0], 0.12996510), r)
            r = c.evaluate([[1.0, 2.0, 3.0]], [2], loss={"type": "softmax_focal", "gamma": 2})
            self.assertTrue(close(r["losses"][0], 0.04567780), r)


class CallsTest(DaemonTestCase):
    """Every call of the client, on one dataset built here."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.c = Client(cls.url)
        cls.build("calls")  # only read by the tests; those that change things build their own

    @classmethod
    def build(cls, name):
        """A dataset of 60 samples s000..s059 (labels i % 4, two per patient, a uri each): three steps
        of run r1 and one of run r2 for the first ten."""
        rng = np.random.default_rng(7)
        ids = ["s%03d" % i for i in range(60)]
        for step in range(3):
            logits = rng.normal(size=(60, 4)).astype(np.float32) * 2
            labels = np.arange(60) % 4
            meta = {i: {"patient_id": "p%d" % (k // 2), "uri": "file:///data/%s.png" % i}
                    for k, i in enumerate(ids)} if step == 0 else None
            cls.c.post_batch(name, ids, logits, labels, run="r1", step=step, epoch=0, loss="softmax_focal", meta=meta)
        cls.c.post_batch(name, ids[:10], rng.normal(size=(10, 4)).astype(np.float32), np.arange(10) % 4,
                         run="r2", step=0, loss="softmax_focal")
        return name

    def test_client_hard_examples_filters(self):
        c = self.c
        page = c.hard_examples("calls", k=5)
        self.assertEqual((page["dataset"], page["run"], page["by"], page["order"]), ("calls", "*", "mean_loss", "desc"))
        self.assertEqual([it["rank"] for it in page["items"]], [1, 2, 3, 4, 5])
        self.assertIsNotNone(page["next_cursor"])
        scores = [it["score"] for it in page["items"]]
        self.assertEqual(scores, sorted(scores, reverse=True))
        conf = c.hard_examples("calls", by="confidence", k=5, run="r1")
        self.assertEqual((conf["order"], conf["run"]), ("asc", "r1"))
        self.assertTrue(all(it["label"] == 2 for it in c.hard_examples("calls", label=2, k=100, run="r1")["items"]))
        self.assertEqual(len(c.hard_examples("calls", label=2, k=100, run="r1")["items"]), 15)
        self.assertEqual(len(c.hard_examples("calls", min_seen=2, k=100, run="r1")["items"]), 60)
        self.assertEqual(len(c.hard_examples("calls", min_seen=4, k=100)["items"]), 10)  # r1 + r2, summed
        self.assertEqual(c.hard_examples("calls", status="dismissed", k=10)["items"], [])
        self.assertEqual(len(c.hard_examples("calls", status=["open", "queued"], k=100, run="r1")["items"]), 60)

    def test_client_numpy_and_torch_integers_in_queries(self):
        """k, label, min_seen, limit and offset given as NumPy or torch integers are sent as their numbers
        (str() of a torch scalar is "tensor(2)"): the answers are those of Python ints."""
        c = self.c
        for kind in (np.int64, np.int32, np.uint8, torch.tensor):
            with self.subTest(kind=kind.__name__):
                page = c.hard_examples("calls", k=kind(20), label=kind(2), min_seen=kind(2), run="r1")
                self.assertEqual(page, c.hard_examples("calls", k=20, label=2, min_seen=2, run="r1"))
                self.assertEqual(len(page["items"]), 15)
                self.assertEqual(b"".join(c.iter_export("calls", "jsonl", k=kind(3), label=kind(1))),
                                 b"".join(c.iter_export("calls", "jsonl", k=3, label=1)))
                self.assertEqual(len(c.relabels("calls", limit=kind(5))["relabels"]), 0)

    def test_client_hard_examples_cursor_iteration(self):
        c = self.c
        whole = c.hard_examples("calls", k=60, run="r1")["items"]
        paged = list(c.iter_hard_examples("calls", run="r1", page_size=7))
        self.assertEqual(paged, whole)
        self.assertEqual([it["rank"] for it in paged], list(range(1, 61)))
        limited = list(c.iter_hard_examples("calls", run="r1", page_size=7, limit=10))
        self.assertEqual(limited, whole[:10])
        first = c.hard_examples("calls", k=3, run="r1")
        second = c.hard_examples("calls", k=3, run="r1", cursor=first["next_cursor"])
        self.assertEqual(second["items"], whole[3:6])
        with self.assertRaises(FocaldError) as e:
            c.hard_examples("calls", k=3, run="r2", cursor=first["next_cursor"])  # a cursor of another query
        self.assertEqual((e.exception.status, e.exception.code, e.exception.field), (400, "bad_query", "cursor"))

    def test_client_sample_detail(self):
        s = self.c.sample("calls", "s001")
        self.assertEqual((s["id"], s["dataset"], s["status"], s["corrected_label"]), ("s001", "calls", "open", None))
        self.assertEqual(s["meta"]["patient_id"], "p0")
        self.assertEqual(sorted(r["run"] for r in s["runs"]), ["r1", "r2"])
        r1 = [r for r in s["runs"] if r["run"] == "r1"][0]
        self.assertEqual(r1["seen"], 3)
        self.assertEqual([o["step"] for o in r1["recent"]], [2, 1, 0])
        only = self.c.sample("calls", "s001", run="r2")
        self.assertEqual([r["run"] for r in only["runs"]], ["r2"])

    def test_client_sample_ids_are_path_encoded(self):
        odd = ["a/b", "sp ace", "per%cent", "plus+sign", "ünï", "q?x=1#f"]
        self.c.post_batch("enc", odd, np.zeros((6, 2), np.float32), [0, 1, 0, 1, 0, 1])
        for i in odd:
            self.assertEqual(self.c.sample("enc", i)["id"], i)
            self.assertEqual(self.c.reviews("enc", i)["id"], i)
        self.assertEqual(self.c.review("enc", "a/b", "dismissed")["id"], "a/b")

    def test_client_review_and_audit_trail(self):
        c = self.c
        ds = self.build("review")
        r = c.review(ds, "s010", "in_review", reviewer="ann")
        self.assertEqual((r["id"], r["from"], r["status"], r["reviewer"]), ("s010", "open", "in_review", "ann"))
        r = c.review(ds, "s010", "relabelled", label=3, reviewer="ann", note="it is a 3")
        self.assertEqual((r["from"], r["status"], r["label"], r["label_before"], r["note"]),
                         ("in_review", "relabelled", 3, 2, "it is a 3"))
        with self.assertRaises(FocaldError) as e:
            c.review(ds, "s010", "confirmed")  # a decision is not replaced by another
        self.assertEqual((e.exception.status, e.exception.code), (409, "conflict"))
        trail = c.reviews(ds, "s010")
        self.assertEqual((trail["status"], trail["corrected_label"]), ("relabelled", 3))
        self.assertEqual([(x["from"], x["to"]) for x in trail["reviews"]],
                         [("open", "in_review"), ("in_review", "relabelled")])
        self.assertEqual(trail["reviews"][1]["label_after"], 3)
        self.assertEqual(c.sample(ds, "s010")["status"], "relabelled")
        with self.assertRaises(FocaldError) as e:
            c.review(ds, "nope", "confirmed")
        self.assertEqual((e.exception.status, e.exception.code), (404, "sample_not_found"))
        with self.assertRaises(FocaldError) as e:
            c.review(ds, "s011", "relabelled")  # no label
        self.assertEqual((e.exception.status, e.exception.code, e.exception.field), (422, "missing_field", "/label"))

    def test_client_set_meta(self):
        ds = self.build("meta")
        r = self.c.set_meta(ds, "s020", {"uri": "s3://bucket/s020.png", "study_uid": "1.2.3", "tags": ["x"]})
        self.assertEqual(r["id"], "s020")
        self.assertEqual(self.c.sample(ds, "s020")["meta"],
                         {"uri": "s3://bucket/s020.png", "study_uid": "1.2.3", "tags": ["x"]})
        with self.assertRaises(FocaldError) as e:
            self.c.set_meta(ds, "s020", {"uri": 5})
        self.assertEqual((e.exception.status, e.exception.field), (422, "/uri"))

    def test_client_relabel_feed(self):
        c = self.c
        c.post_batch("feed", list(range(5)), np.zeros((5, 3), np.float32), [0, 1, 2, 0, 1], loss="softmax_focal")
        for i in range(3):
            c.review("feed", i, "relabelled", label=2, reviewer="bob")
        feed = c.relabel_feed("feed", page_size=2)
        entries = list(feed)
        self.assertEqual([e["id"] for e in entries], ["0", "1", "2"])
        self.assertEqual([e["label"] for e in entries], [2, 2, 2])
        self.assertEqual(entries[1]["previous_label"], 1)
        saved = feed.cursor
        self.assertEqual(list(c.relabel_feed("feed", since=saved)), [])
        c.review("feed", 1, "open")  # a withdrawal
        c.review("feed", 4, "relabelled", label=0)
        later = c.relabel_feed("feed", since=saved)
        got = [(e["id"], e["withdrawn"], e["label"]) for e in later]
        self.assertEqual(got, [("1", True, None), ("4", False, 0)])
        page = c.relabels("feed", since=saved, limit=1)
        self.assertEqual([e["id"] for e in page["relabels"]], ["1"])
        self.assertEqual(c.relabels("feed", since=later.cursor)["relabels"], [])

    def test_client_iterators_follow_pages_cut_short_by_large_meta(self):
        # 300 samples with 60 KB of meta each: focald ends a page once its JSON passes 16 MiB, so a page
        # holds fewer than asked; iter_queue and iter_hard_examples go on from where it ended
        c = self.c
        ids = ["m%03d" % i for i in range(300)]
        for start in range(0, 300, 100):
            sub = ids[start:start + 100]
            logits = np.array([[-4.0 + 0.01 * i, 0.0] for i in range(start, start + 100)], dtype=np.float32)
            c.post_batch("bigmeta", sub, logits, np.zeros(100, dtype=np.int64), run="r1", loss="cross_entropy",
                         meta={s: {"note": s * 15000} for s in sub})
        c.create_queue("bigmeta", "all", size=300, run="r1")
        self.assertLess(len(c.queue("bigmeta", "all", limit=1000)["items"]), 300)
        self.assertEqual([it["id"] for it in c.iter_queue("bigmeta", "all", page_size=1000)], ids)
        self.assertLess(len(c.hard_examples("bigmeta", k=300)["items"]), 300)
        self.assertEqual([it["id"] for it in c.iter_hard_examples("bigmeta", page_size=1000)], ids)

    def test_client_queues(self):
        c = self.c
        ds = self.build("queues")
        q = c.create_queue(ds, "q-main", size=8, run="r1", max_per_label=3, dedupe_by="patient_id")
        self.assertEqual((q["name"], q["size"], q["reviewed"]), ("q-main", 8, 0))
        self.assertEqual(q["progress"]["queued"], 8)
        self.assertEqual(q["params"]["dedupe_by"], "patient_id")
        lst = c.queues(ds)["queues"]
        self.assertIn("q-main", [x["name"] for x in lst])
        full = c.queue(ds, "q-main")
        self.assertEqual([it["position"] for it in full["items"]], list(range(1, 9)))
        patients = [it["meta"]["patient_id"] for it in full["items"]]
        self.assertEqual(len(set(patients)), 8)  # one sample per patient
        labels = [it["label"] for it in full["items"]]
        self.assertTrue(all(labels.count(x) <= 3 for x in set(labels)))
        self.assertEqual(c.queue(ds, "q-main", offset=2, limit=3)["items"], full["items"][2:5])
        self.assertEqual(list(c.iter_queue(ds, "q-main", page_size=3)), full["items"])
        c.review(ds, full["items"][0]["id"], "confirmed")
        self.assertEqual(c.queue(ds, "q-main")["reviewed"], 1)
        q2 = c.create_queue(ds, "q-quota", size=6, run="r1", quotas={1: {"max": 1}, 2: {"min": 2}},
                            by="last_loss", min_seen=1)
        items2 = c.queue(ds, "q-quota")["items"]
        self.assertEqual(q2["size"], len(items2))
        self.assertLessEqual([it["label"] for it in items2].count(1), 1)
        d = c.delete_queue(ds, "q-quota")
        self.assertEqual((d["deleted"], d["released"]), ("q-quota", len(items2)))
        with self.assertRaises(FocaldError) as e:
            c.queue(ds, "q-quota")
        self.assertEqual(e.exception.status, 404)
        with self.assertRaises(FocaldError) as e:
            c.create_queue(ds, "bad name!")
        self.assertEqual((e.exception.status, e.exception.field), (422, "/name"))

    def test_client_exports(self):
        c = self.c
        ds = self.build("exports")
        d = _daemon.tempdir()
        path = os.path.join(d, "hard.csv")
        n = c.export(ds, path, "csv", run="r1", k=12)
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(n, os.path.getsize(path))
        self.assertEqual(len(rows), 12)
        self.assertEqual([int(r["rank"]) for r in rows], list(range(1, 13)))
        top = c.hard_examples(ds, run="r1", k=12)["items"]
        self.assertEqual([r["id"] for r in rows], [it["id"] for it in top])
        buf = io.BytesIO()
        c.export(ds, buf, "jsonl", run="r1", by="confidence", k=5)
        lines = [json.loads(x) for x in buf.getvalue().decode().splitlines()]
        ref = c.hard_examples(ds, run="r1", by="confidence", k=5)["items"]
        self.assertEqual([x["id"] for x in lines], [it["id"] for it in ref])
        ls = json.loads(b"".join(c.iter_export(ds, "label-studio", k=4, local_files_root="/data")))
        self.assertEqual(len(ls), 4)
        self.assertIn("predictions", ls[0])
        self.assertTrue(ls[0]["data"]["image"].startswith("/data/local-files/?d=s0"), ls[0]["data"])
        # without the document root, Label Studio could open none of the file: URLs: all are left out, and counted
        stream = c.iter_export(ds, "label-studio", k=4)
        self.assertEqual(json.loads(b"".join(stream)), [])
        self.assertEqual(stream.skipped, 60)
        fo = list(csv.DictReader(io.StringIO(b"".join(c.iter_export(ds, "fiftyone", k=3)).decode())))
        self.assertEqual(len(fo), 3)
        self.assertTrue(fo[0]["filepath"].startswith("/data/"))
        float(fo[0]["hardness"])
        self.assertEqual(c.export(ds, io.BytesIO(), "csv").skipped, 0)
        c.set_meta(ds, "s030", {"study_uid": "1.2.840.1", "series_uid": "1.2.840.1.2"})
        text = b"".join(c.iter_export(ds, "ohif", status="open,queued,in_review,confirmed")).decode()
        ohif = [json.loads(x) for x in text.splitlines()]
        self.assertIn("s030", [x["id"] for x in ohif])
        self.assertTrue(all("StudyInstanceUIDs=" in x["url"] for x in ohif))
        c.create_queue(ds, "q-export", size=4, run="r1")
        qrows = list(csv.DictReader(io.StringIO(b"".join(c.iter_export(ds, "csv", queue="q-export")).decode())))
        self.assertEqual([r["id"] for r in qrows], [it["id"] for it in c.queue(ds, "q-export")["items"]])
        # errors come before any byte, and leave no file behind
        bad = os.path.join(d, "none.csv")
        with self.assertRaises(FocaldError) as e:
            c.export("no-such-dataset", bad)
        self.assertEqual((e.exception.status, e.exception.code), (404, "dataset_not_found"))
        self.assertFalse(os.path.exists(bad))
        self.assertEqual(os.listdir(d), ["hard.csv"])
        with self.assertRaises(FocaldError) as e:
            list(c.iter_export(ds, "xml"))
        self.assertEqual((e.exception.status, e.exception.field), (400, "format"))

    def test_client_datasets(self):
        c = self.c
        c.post_batch("to-delete", [1, 2, 3], np.zeros((3, 2), np.float32), [0, 1, 0])
        names = [d["name"] for d in c.datasets()]
        self.assertIn("calls", names)
        self.assertIn("to-delete", names)
        d = c.dataset("calls")
        self.assertEqual((d["name"], d["samples"]), ("calls", 60))
        self.assertEqual(sorted(r["name"] for r in d["runs"]), ["r1", "r2"])
        r1 = [r for r in d["runs"] if r["name"] == "r1"][0]
        self.assertEqual((r1["classes"], r1["last_step"], r1["observations"]), (4, 2, 180))
        self.assertEqual(sorted(r1["loss_quantiles"]), ["max", "p50", "p90", "p99"])
        gone = c.delete_dataset("to-delete")
        self.assertEqual((gone["deleted"], gone["samples"], gone["observations"]), ("to-delete", 3, 3))
        self.assertNotIn("to-delete", [x["name"] for x in c.datasets()])
        with self.assertRaises(FocaldError) as e:
            c.dataset("to-delete")
        self.assertEqual((e.exception.status, e.exception.code), (404, "dataset_not_found"))

    def test_client_health_and_documents(self):
        c = self.c
        self.assertEqual(c.health(), {"live": True, "ready": True, "status": "ready"})
        self.assertEqual(c.livez(), {"status": "ok"})
        self.assertEqual(c.readyz(), {"status": "ready"})
        self.assertIn("focald_build_info", c.metrics())
        self.assertTrue(c.openapi()["openapi"].startswith("3."))
        self.assertEqual(Client("http://127.0.0.1:%d" % _daemon.free_port()).health(),
                         {"live": False, "ready": False, "status": "unreachable"})

    def test_client_duplicate_batch_and_retries(self):
        c = self.c
        args = ("dup", [1, 2], np.zeros((2, 2), np.float32), [0, 1])
        a = c.post_batch(*args, batch_id="same")
        b = c.post_batch(*args, batch_id="same")
        self.assertEqual((a["duplicate"], b["duplicate"]), (False, True))
        self.assertEqual(c.dataset("dup")["observations"], 2)
        r = c.post_batch(*args, retries=2)  # a batch_id is made up so that a retry is stored once
        self.assertTrue(r["batch_id"].startswith("py-"))

    def test_client_keepalive_reuses_one_connection(self):
        c = Client(self.url)
        for _ in range(20):
            c.livez()
        self.assertEqual(c._t._local.used, 20)
        conn = c._t._local.conn
        c.hard_examples("calls", k=2)
        self.assertIs(c._t._local.conn, conn)
        # each thread has its own
        seen = []
        t = threading.Thread(target=lambda: (c.livez(), seen.append(c._t._local.conn)))
        t.start()
        t.join()
        self.assertIsNot(seen[0], conn)

    def test_client_forked_child_opens_its_own_connection(self):
        """A forked child (a DataLoader worker) does not use the parent's kept-alive connection, on which
        the two would read each other's answers, and a lock held at the fork does not block it."""
        c = Client(self.url)
        c.livez()
        parent_port = c._t._local.conn.sock.getsockname()[1]
        r, w = os.pipe()
        with c._t._position_lock:  # held by this thread while the child is forked
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    import faulthandler
                    faulthandler.dump_traceback_later(20, exit=True)  # a child that hangs fails the test
                    c.post_batch("forked", [1], np.zeros((1, 2), np.float32), [1])
                    os.write(w, b"%d" % c._t._local.conn.sock.getsockname()[1])
                    code = 0
                finally:
                    os._exit(code)
        os.close(w)
        with os.fdopen(r, "rb") as f:
            child_port = f.read()
        _, status = os.waitpid(pid, 0)
        self.assertTrue(os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status)
        self.assertNotEqual(int(child_port), parent_port)
        c.livez()  # the parent's connection is still its own, and open
        self.assertEqual(c._t._local.conn.sock.getsockname()[1], parent_port)
        self.assertEqual(c.dataset("forked")["observations"], 1)


class ReadYourWritesTest(DaemonTestCase):
    """Log positions: a write's answer gives one (Focald-Log-Position), and a client with read_your_writes
    has every read of the data wait for the newest it has seen (after=)."""

    daemon_args = ("--read-wait", "200")

    def test_client_log_position_and_read_your_writes(self):
        c = Client(self.url)
        self.assertEqual(c.log_position, 0)
        rng = np.random.default_rng(3)
        c.post_batch("ryw", ["a", "b"], rng.normal(size=(2, 3)).astype(np.float32), [0, 1], loss="cross_entropy")
        first = c.log_position
        self.assertGreater(first, 0)
        c.post_batch("ryw", ["a", "c"], rng.normal(size=(2, 3)).astype(np.float32), [2, 1], loss="cross_entropy")
        self.assertGreater(c.log_position, first)
        reader = Client(self.url, read_your_writes=True)
        reader.observe_position(c.log_position)
        self.assertEqual(reader.sample("ryw", "a")["runs"][0]["seen"], 2)
        # a position no write has reached: the read is refused after --read-wait, naming after
        reader.observe_position(c.log_position + 1000)
        with self.assertRaises(FocaldError) as e:
            reader.hard_examples("ryw", k=1)
        self.assertEqual((e.exception.status, e.exception.code, e.exception.field), (503, "not_caught_up", "after"))
        with self.assertRaises(FocaldError):
            b"".join(reader.iter_export("ryw", "jsonl"))
        # only the reads of the data wait; a client without read_your_writes never sends after
        self.assertTrue(reader.health()["ready"])
        plain = Client(self.url)
        plain.observe_position(c.log_position + 1000)
        self.assertEqual(plain.sample("ryw", "c")["runs"][0]["seen"], 1)
        for client in (c, reader, plain):
            client.close()


class StaleConnectionTest(DaemonTestCase):
    """focald closes idle connections after --connection-timeout; the client reconnects unnoticed."""

    daemon_args = ("--connection-timeout", "1")

    def test_client_reconnects_after_idle_close(self):
        c = Client(self.url)
        c.livez()
        time.sleep(1.6)
        c.post_batch("idle", [1], np.zeros((1, 2), np.float32), [1])
        c.livez()
        self.assertEqual(c.dataset("idle")["observations"], 1)


class IdempotencyTest(DaemonTestCase):
    """review(), create_queue() and delete_queue() send an Idempotency-Key; review() and create_queue()
    send a write whose answer was lost again with the same key, and focald applies it once."""

    def setUp(self):
        self.c = Client(self.url)
        self.ds = "idem-" + self.id().rsplit(".", 1)[-1][-30:]
        self.c.post_batch(self.ds, ["a", "b", "c", "d"], np.zeros((4, 3), np.float32), [0, 1, 2, 0], run="r")

    def through(self, drop):
        proxy = _daemon.Proxy(self.d.port, drop_next=drop)
        self.addCleanup(proxy.close)
        return proxy, Client(proxy.url)

    def test_client_review_answer_lost_after_commit_is_retried_with_its_key_once(self):
        for drops, status, extra in ((1, "relabelled", {"label": 2}), (2, "confirmed", {}), (1, "in_review", {})):
            sid = {"relabelled": "a", "confirmed": "b", "in_review": "c"}[status]
            with self.subTest(status=status, drops=drops):
                proxy, c = self.through(drops)
                got = c.review(self.ds, sid, status, reviewer="ann", **extra)
                self.assertEqual(proxy.drops, drops, "the answers were lost after focald committed")
                self.assertEqual((got["id"], got["status"], got["from"]), (sid, status, "open"))
                trail = self.c.reviews(self.ds, sid)["reviews"]
                self.assertEqual(len(trail), 1, "one decision in the audit trail: %r" % trail)
                self.assertEqual(trail[0]["at"], got["at"], "the answer is the first one's")
        feed = self.c.relabels(self.ds)["relabels"]
        self.assertEqual([e["id"] for e in feed], ["a"], "one relabel in the feed")

    def test_client_review_retries_give_up_after_retries(self):
        proxy, c = self.through(5)
        with self.assertRaises(FocaldConnectionError):
            c.review(self.ds, "d", "dismissed", retries=2)
        self.assertEqual(proxy.drops, 3)
        self.assertEqual(len(self.c.reviews(self.ds, "d")["reviews"]), 1, "applied once, for all three sends")
        with self.assertRaises(FocaldConnectionError):
            c.review(self.ds, "d", "open", retries=0)
        self.assertEqual(proxy.drops, 4)

    def test_client_create_queue_answer_lost_is_retried_not_409(self):
        proxy, c = self.through(1)
        q = c.create_queue(self.ds, "q1", size=2)
        self.assertEqual(proxy.drops, 1)
        self.assertEqual((q["name"], q["size"]), ("q1", 2))
        self.assertEqual([x["name"] for x in self.c.queues(self.ds)["queues"]], ["q1"])
        with self.assertRaises(FocaldError) as cm:
            self.c.create_queue(self.ds, "q1", size=2)  # a new call is a new request: the name is taken
        self.assertEqual((cm.exception.status, cm.exception.code), (409, "conflict"))
        proxy.drop_next = 1
        self.assertEqual(c.delete_queue(self.ds, "q1")["deleted"], "q1")
        self.assertEqual(self.c.queues(self.ds)["queues"], [])

    def test_client_explicit_key_replays_and_reuse_is_refused(self):
        first = self.c.review(self.ds, "a", "relabelled", label=1, idempotency_key="k-1")
        again = self.c.review(self.ds, "a", "relabelled", label=1, idempotency_key="k-1")
        self.assertEqual(again, first)
        with self.assertRaises(FocaldError) as cm:
            self.c.review(self.ds, "b", "relabelled", label=1, idempotency_key="k-1")
        self.assertEqual((cm.exception.status, cm.exception.code), (422, "idempotency_key_reused"))
        self.assertFalse(cm.exception.retryable)
        self.assertEqual(len(self.c.reviews(self.ds, "a")["reviews"]), 1)
        self.assertEqual(self.c.reviews(self.ds, "b")["reviews"], [])


class ErrorTest(DaemonTestCase):
    """FocaldError carries focald's problem body; connection failures are FocaldConnectionError."""

    def test_client_error_fields(self):
        c = Client(self.url)
        with self.assertRaises(FocaldError) as cm:
            c.hard_examples("nothing-here", k=0)
        e = cm.exception
        self.assertEqual((e.status, e.code, e.field), (400, "bad_query", "k"))
        self.assertTrue(e.detail)
        self.assertTrue(e.request_id)
        self.assertEqual(e.problem["request_id"], e.request_id)
        self.assertEqual(e.problem["type"], "urn:focald:problem:bad_query")
        self.assertEqual(e.problem["status"], 400)
        self.assertTrue(e.client_error)
        self.assertFalse(e.retryable)
        self.assertIn("400 bad_query", str(e))
        self.assertIn(e.request_id, str(e))
        self.assertEqual(e.method, "GET")
        self.assertIn("/v1/datasets/nothing-here/hard-examples", e.url)
        again = pickle.loads(pickle.dumps(e))
        self.assertEqual((again.status, again.code, again.field, again.problem), (e.status, e.code, e.field, e.problem))

    def test_client_error_on_invalid_batch(self):
        for binary in (True, False):
            c = Client(self.url, binary=binary)
            with self.assertRaises(FocaldError) as cm:
                c.post_batch("bad", [1, 2], np.zeros((2, 3), np.float32), [0, 4])  # 3 is background
            e = cm.exception
            self.assertEqual((e.status, e.code), (422, "label_out_of_range"), str(e))
            # JSON points at the element; the binary framing at the tensor in the header's inputs
            self.assertEqual(e.field, "/inputs/2" if binary else "/targets/1")
            with self.assertRaises(FocaldError) as cm:
                c.post_batch("bad", [1, 1], np.zeros((2, 3), np.float32), [0, 1])
            self.assertEqual(cm.exception.code, "duplicate_id")
        with self.assertRaises(FocaldError):
            Client(self.url).dataset("bad")  # nothing was stored

    def test_client_connection_error(self):
        c = Client("http://127.0.0.1:%d" % _daemon.free_port(), timeout=2)
        with self.assertRaises(FocaldConnectionError) as cm:
            c.datasets()
        e = cm.exception
        self.assertIsInstance(e, FocaldError)
        self.assertIsInstance(e, ConnectionError)  # code that handles connection failures catches it
        with self.assertRaises(ConnectionError):
            c.datasets()
        self.assertEqual((e.status, e.code), (None, "unreachable"))
        self.assertTrue(e.retryable)
        self.assertFalse(e.client_error)
        self.assertIsInstance(e.__cause__, OSError)
        again = pickle.loads(pickle.dumps(e))
        self.assertEqual((type(again), again.code, str(again)), (FocaldConnectionError, "unreachable", str(e)))

    def test_client_timeout_error(self):
        proxy = _daemon.Proxy(self.d.port, mode="hang")
        try:
            c = Client(proxy.url, timeout=0.5)
            t = time.monotonic()
            with self.assertRaises(FocaldConnectionError) as cm:
                c.livez()
            self.assertEqual(cm.exception.code, "timeout")
            self.assertLess(time.monotonic() - t, 3)
        finally:
            proxy.close()

    def test_client_timeout_is_a_deadline_for_the_whole_request(self):
        """A server that trickles its answer a byte every 0.2 s satisfies a per-read timeout forever (the
        answer would take 17 s); the timeout bounds the whole request: a read and a batch both fail with
        code timeout within 1.5 s of a 1 s timeout."""
        trickler = _daemon.Trickler(interval=0.2)
        try:
            c = Client(trickler.url, timeout=1)
            for call in (c.datasets, lambda: c.post_batch("d", [1], [[0.5, -0.5]], [0], batch_id="b1")):
                t = time.monotonic()
                with self.assertRaises(FocaldConnectionError) as cm:
                    call()
                took = time.monotonic() - t
                self.assertEqual(cm.exception.code, "timeout")
                self.assertLess(took, 1.5)
                self.assertGreater(took, 0.9)
        finally:
            trickler.close()

    def test_client_answer_cut_short_is_a_connection_error(self):
        """An answer cut off by the connection closing is never taken for a whole one: cut inside the
        status line, inside the headers (so the Content-Length is lost and http.client would read an
        empty body to the close), before the blank line, or inside the body, a read and a batch both
        raise FocaldConnectionError, which a caller retries, rather than returning a 200."""
        answer = _daemon.Trickler.ANSWER
        head = answer.index(b"\r\n\r\n")
        for cut in (5, answer.index(b"Content-Type") + 7, answer.index(b"Content-Length") + 9, head + 2,
                    len(answer) - 3):
            with self.subTest(cut=answer[:cut][-20:]):
                server = _daemon.Trickler(interval=0, cut=cut)
                try:
                    c = Client(server.url, timeout=5)
                    for call in (c.datasets, lambda: c.post_batch("d", [1], [[0.5, -0.5]], [0], batch_id="b1")):
                        with self.assertRaises(FocaldConnectionError) as cm:
                            call()
                        self.assertEqual(cm.exception.code, "unreachable")
                finally:
                    server.close()
        server = _daemon.Trickler(interval=0)  # whole, as a control
        try:
            self.assertEqual(Client(server.url, timeout=5).datasets(), [])
        finally:
            server.close()

    def test_client_bad_arguments(self):
        c = Client(self.url)
        with self.assertRaises(ValueError):
            c.evaluate(None, [1])
        with self.assertRaises(ValueError):
            c.post_batch("x", [1], [[0.0]], [1], probs=[[0.5]])
        with self.assertRaises(ValueError):
            Client("ftp://example.org")


class ArgumentsTest(unittest.TestCase):
    """Every public method given a wrong argument raises TypeError or ValueError naming it, before any
    request: not a 422, not a request to a dataset called "None", not a traceback from json or http.client."""

    def test_client_wrong_arguments_are_refused_before_any_request(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        try:
            c = Client("http://127.0.0.1:%d" % listener.getsockname()[1], timeout=1)
            cj = Client(c.url, timeout=1, binary=False)
            ids, x, t = [1, 2], [[0.0, 1.0], [1.0, 0.0]], [0, 1]
            nan = float("nan")
            cases = [
                ("dataset", TypeError, lambda: c.post_batch(None, ids, x, t)),
                ("dataset", TypeError, lambda: c.post_batch(3, ids, x, t)),
                ("run", TypeError, lambda: c.post_batch("d", ids, x, t, run=5)),
                ("batch_id", TypeError, lambda: c.post_batch("d", ids, x, t, batch_id=5)),
                ("step", TypeError, lambda: c.post_batch("d", ids, x, t, step="5")),
                ("step", TypeError, lambda: c.post_batch("d", ids, x, t, step=1.5)),
                ("step", TypeError, lambda: c.post_batch("d", ids, x, t, step=True)),
                ("step", TypeError, lambda: c.post_batch("d", ids, x, t, step=torch.tensor(1.0))),
                ("step", ValueError, lambda: c.post_batch("d", ids, x, t, step=-1)),
                ("step", ValueError, lambda: c.post_batch("d", ids, x, t, step=1 << 47)),
                ("epoch", ValueError, lambda: c.post_batch("d", ids, x, t, epoch=65535)),
                ("epoch", TypeError, lambda: c.post_batch("d", ids, x, t, epoch="1")),
                ("ohem_k", TypeError, lambda: c.post_batch("d", ids, x, t, ohem_k="2")),
                ("retries", TypeError, lambda: c.post_batch("d", ids, x, t, retries="3")),
                ("retries", ValueError, lambda: c.post_batch("d", ids, x, t, retries=-1)),
                ("meta", TypeError, lambda: c.post_batch("d", ids, x, t, meta=[1])),
                ("meta", TypeError, lambda: c.post_batch("d", ids, x, t, meta={1.5: {}})),
                ("outputs", TypeError, lambda: c.post_batch("d", ids, x, t, outputs="losses")),
                ("segments", TypeError, lambda: c.post_batch("d", ids, x, t, segments=5)),
                ("segments[0]", TypeError, lambda: c.post_batch("d", ids, x, t, segments=[5])),
                ("segments[0]['n']", ValueError, lambda: c.post_batch("d", ids, x, t, segments=[{"n": 0}])),
                ("segments[1]['step']", TypeError,
                 lambda: c.post_batch("d", ids, x, t, segments=[{"n": 1}, {"n": 1, "step": "2"}])),
                ("ids", TypeError, lambda: c.post_batch("d", None, x, t)),
                ("ids", TypeError, lambda: c.post_batch("d", 5, x, t)),
                ("ids", TypeError, lambda: c.post_batch("d", "ab", x, t)),
                ("ids[0]", TypeError, lambda: c.post_batch("d", [1.0, 2.0], x, t)),
                ("ids[1]", TypeError, lambda: c.post_batch("d", [1, None], x, t)),
                ("ids[0]", TypeError, lambda: c.post_batch("d", [True, False], x, t)),
                ("ids", TypeError, lambda: c.post_batch("d", torch.tensor([1.0, 2.0]), x, t)),
                ("ids", TypeError, lambda: c.post_batch("d", np.array([True, False]), x, t)),
                ("ids", ValueError, lambda: c.post_batch("d", np.array([[1], [2]]), x, t)),
                ("ids", ValueError, lambda: c.post_batch("d", torch.tensor(1), x, t)),
                ("logits", TypeError, lambda: c.post_batch("d", ids, "abc", t)),
                ("logits", ValueError, lambda: c.post_batch("d", ids, torch.tensor(1.0), t)),
                ("logits", ValueError, lambda: c.post_batch("d", [1, 2, 3], x, t)),
                ("targets", TypeError, lambda: c.post_batch("d", ids, x, "ab")),
                ("targets", ValueError, lambda: c.post_batch("d", ids, x, [0])),
                ("weights", ValueError, lambda: c.post_batch("d", ids, x, t, weights=[1.0])),
                ("probs", TypeError, lambda: c.evaluate(probs="ab", targets=t)),
                # what JSON cannot carry, named (json itself says only "Out of range float values")
                ("logits", ValueError, lambda: cj.post_batch("d", ids, [[nan, 0.0], [0.0, 0.0]], t)),
                ("probs", ValueError, lambda: cj.evaluate(probs=np.array([[0.5, np.inf]]), targets=[0])),
                ("targets", ValueError, lambda: cj.evaluate(x, [[nan, 0.0], [0.0, 1.0]])),
                ("weights", ValueError, lambda: cj.evaluate(x, t, weights=[1.0, -np.inf])),
                ("loss", ValueError, lambda: c.evaluate(x, t, loss={"type": "softmax_focal", "gamma": nan})),
                ("loss", ValueError, lambda: cj.evaluate(x, t, loss={"type": "softmax_focal", "gamma": nan})),
                ("meta", ValueError, lambda: c.post_batch("d", ids, x, t, meta={1: {"w": np.float32(nan)}})),
                ("ohem_k", TypeError, lambda: c.evaluate(x, t, ohem_k=1.0)),
                ("dataset", TypeError, lambda: c.post_batch_body(None, {})),
                ("dataset", TypeError, lambda: c.hard_examples(None)),
                ("k", TypeError, lambda: c.hard_examples("d", k="5")),
                ("by", TypeError, lambda: c.hard_examples("d", by=5)),
                ("label", TypeError, lambda: c.hard_examples("d", label="3")),
                ("label_issue", TypeError, lambda: c.hard_examples("d", label_issue="yes")),
                ("min_seen", TypeError, lambda: c.hard_examples("d", min_seen=1.5)),
                ("status", TypeError, lambda: c.hard_examples("d", status=5)),
                ("cursor", TypeError, lambda: c.hard_examples("d", cursor=5)),
                ("limit", TypeError, lambda: next(c.iter_hard_examples("d", limit="5"))),
                ("page_size", ValueError, lambda: next(c.iter_hard_examples("d", page_size=0))),
                ("sample_id", TypeError, lambda: c.sample("d", None)),
                ("sample_id", TypeError, lambda: c.sample("d", [1])),
                ("run", TypeError, lambda: c.sample("d", 1, run=5)),
                ("status", TypeError, lambda: c.review("d", 1, 5)),
                ("reviewer", TypeError, lambda: c.review("d", 1, "confirmed", reviewer=5)),
                ("sample_id", TypeError, lambda: c.reviews("d", 1.5)),
                ("meta", TypeError, lambda: c.set_meta("d", 1, 5)),
                ("limit", TypeError, lambda: c.relabels("d", limit="x")),
                ("since", TypeError, lambda: c.relabels("d", since=5)),
                ("dataset", TypeError, lambda: next(iter(c.relabel_feed(None)))),
                ("name", TypeError, lambda: c.create_queue("d", None)),
                ("size", TypeError, lambda: c.create_queue("d", "q", size="x")),
                ("quotas", TypeError, lambda: c.create_queue("d", "q", quotas=5)),
                ("quotas[1]", TypeError, lambda: c.create_queue("d", "q", quotas={1: 5})),
                ("dataset", TypeError, lambda: c.queues(None)),
                ("offset", TypeError, lambda: c.queue("d", "q", offset="x")),
                ("name", TypeError, lambda: next(c.iter_queue("d", None))),
                ("name", TypeError, lambda: c.delete_queue("d", None)),
                ("format", TypeError, lambda: c.iter_export("d", 5)),
                ("k", TypeError, lambda: c.iter_export("d", k="5")),
                ("dest", TypeError, lambda: c.export("d", 5)),
                ("name", TypeError, lambda: c.dataset(None)),
                ("name", TypeError, lambda: c.delete_dataset(None)),
                ("position", TypeError, lambda: c.observe_position("x")),
                ("url", TypeError, lambda: Client(5)),
                ("timeout", TypeError, lambda: Client("http://127.0.0.1:1", timeout="x")),
                ("timeout", ValueError, lambda: Client("http://127.0.0.1:1", timeout=0)),
                ("binary", TypeError, lambda: Client("http://127.0.0.1:1", binary="yes")),
            ]
            for arg, exc, call in cases:
                with self.subTest(arg=arg, exc=exc.__name__):
                    with self.assertRaises(exc) as cm:
                        call()
                    self.assertIn(arg, str(cm.exception))
            listener.setblocking(False)
            with self.assertRaises(BlockingIOError):  # no call connected
                listener.accept()
        finally:
            listener.close()


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A stand-in server that records each request's headers and answers from a script."""

    seen = []
    answer = (200, "application/json", b'{"datasets": []}')

    def do_GET(self):
        type(self).seen.append((self.path, dict(self.headers)))
        status, ctype, body = type(self).answer
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", "rid-123")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class _RecorderTestCase(unittest.TestCase):
    """Tests against the stand-in server _Recorder, started once for the class (self.port, self.url)."""

    @classmethod
    def setUpClass(cls):
        cls.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
        cls.port = cls.srv.server_address[1]
        cls.url = "http://127.0.0.1:%d" % cls.port
        threading.Thread(target=cls.srv.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.shutdown()
        cls.srv.server_close()

    def setUp(self):
        _Recorder.seen = []
        _Recorder.answer = (200, "application/json", b'{"datasets": []}')


class OddAnswersTest(_RecorderTestCase):
    """What a client meets when something other than focald answers, or a caller asks for the extreme."""

    def test_client_answer_that_is_not_json_is_bad_response(self):
        """A 200 that is not JSON, or not UTF-8: FocaldError bad_response with the status, never a
        ValueError (which the Miner reads as a batch it could not encode)."""
        for body in (b"<html>a proxy's page</html>", b"\xff\xfe"):
            _Recorder.answer = (200, "text/html", body)
            with self.assertRaises(FocaldError) as cm:
                Client(self.url).datasets()
            self.assertEqual((cm.exception.status, cm.exception.code), (200, "bad_response"))
            self.assertNotIsInstance(cm.exception, ValueError)

    def test_client_redirect_is_an_error(self):
        """focald never redirects: a 3xx is FocaldError redirect naming where it points, not an empty success."""
        _Recorder.answer = (302, "text/html", b"")
        with self.assertRaises(FocaldError) as cm:
            Client(self.url).datasets()
        self.assertEqual((cm.exception.status, cm.exception.code), (302, "redirect"))

    def test_client_timeout_is_finite(self):
        """An infinite timeout is refused at once (it failed every request in the socket, an OverflowError)."""
        for bad in (float("inf"), 1e300, 0, -1):
            with self.assertRaises(ValueError):
                Client(self.url, timeout=bad)
        Client(self.url, timeout=1e6)

    def test_client_page_size_is_at_most_focalds_largest_page(self):
        """The iterators ask for at most 10000 items a page, focald's limit (a page_size above it was a 400)."""
        _Recorder.answer = (200, "application/json", b'{"items": [], "next_cursor": null}')
        self.assertEqual(list(Client(self.url).iter_hard_examples("d", page_size=20000)), [])
        self.assertIn("k=10000", _Recorder.seen[-1][0])

    def test_client_export_writes_through_links_and_fifos_and_keeps_permissions(self):
        """export(path): a symlink's target is written and the link kept; a FIFO is written through (it was
        replaced by a file, its reader got nothing); a file it replaces keeps its mode (0600 became 0644)."""
        data = b"id,loss\n1,0.5\n"
        _Recorder.answer = (200, "text/csv", data)
        c = Client(self.url)
        with tempfile.TemporaryDirectory() as d:
            private = os.path.join(d, "private.csv")
            with open(private, "wb") as f:
                f.write(b"old")
            os.chmod(private, 0o600)
            self.assertEqual(c.export("d", private), len(data))
            self.assertEqual(os.stat(private).st_mode & 0o777, 0o600)
            link = os.path.join(d, "link.csv")
            os.symlink(private, link)
            c.export("d", link)
            self.assertTrue(os.path.islink(link))
            with open(private, "rb") as f:
                self.assertEqual(f.read(), data)
            fifo = os.path.join(d, "fifo")
            os.mkfifo(fifo)
            got = []
            reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
            reader.start()
            c.export("d", fifo)
            reader.join(30)
            self.assertEqual(got, [data])
            self.assertTrue(stat.S_ISFIFO(os.stat(fifo).st_mode))


class ConfigTest(_RecorderTestCase):
    """URL and token from arguments or FOCALD_URL / FOCALD_TOKEN; a URL prefix is kept."""

    def setUp(self):
        super().setUp()
        self.env = {k: os.environ.pop(k) for k in ("FOCALD_URL", "FOCALD_TOKEN") if k in os.environ}

    def tearDown(self):
        os.environ.pop("FOCALD_URL", None)
        os.environ.pop("FOCALD_TOKEN", None)
        os.environ.update(self.env)

    def test_client_default_url(self):
        self.assertEqual(Client().url, "http://127.0.0.1:8765")

    def test_client_env_url_and_token(self):
        os.environ["FOCALD_URL"] = "http://127.0.0.1:%d/prefix/" % self.port
        os.environ["FOCALD_TOKEN"] = "s3cret"
        self.assertEqual(Client().datasets(), [])
        path, headers = _Recorder.seen[-1]
        self.assertEqual(path, "/prefix/v1/datasets")
        self.assertEqual(headers.get("Authorization"), "Bearer s3cret")

    def test_client_argument_wins_over_env(self):
        os.environ["FOCALD_URL"] = "http://127.0.0.1:1"
        os.environ["FOCALD_TOKEN"] = "from-env"
        Client("http://127.0.0.1:%d" % self.port, token="from-arg").datasets()
        self.assertEqual(_Recorder.seen[-1][1].get("Authorization"), "Bearer from-arg")
        Client("http://127.0.0.1:%d" % self.port, token="").datasets()
        self.assertNotIn("Authorization", _Recorder.seen[-1][1])

    def test_client_error_without_problem_body(self):
        _Recorder.answer = (502, "text/html", b"<html>bad gateway</html>")
        with self.assertRaises(FocaldError) as cm:
            Client("http://127.0.0.1:%d" % self.port).datasets()
        e = cm.exception
        self.assertEqual((e.status, e.code, e.request_id, e.problem), (502, "http_502", "rid-123", {}))
        self.assertIn("bad gateway", e.detail)
        self.assertTrue(e.retryable)


TOKEN = "0123456789abcdef" * 2


class BackoffTest(unittest.TestCase):
    """The one backoff both retrying paths use (post_batch(retries=...) and the Miner)."""

    def test_backoff_doubles_to_its_maximum(self):
        b = Backoff(0.1, 1.0)
        self.assertEqual([round(b.delay(a), 6) for a in range(1, 7)], [0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
        self.assertEqual(b.delay(10 ** 6), 1.0)  # no overflow for a long outage

    def test_backoff_honours_retry_after_up_to_its_bound(self):
        b = Backoff(0.1, 1.0, retry_after_max=30.0)
        self.assertEqual(b.delay(1, retry_after=7.0), 7.0)
        self.assertEqual(b.delay(1, retry_after=3600.0), 30.0)
        self.assertEqual(b.delay(5, retry_after=0.05), 1.0)  # never shorter than the backoff itself
        self.assertEqual(Backoff(0.2, 5.0).delay(1, retry_after=60.0), 5.0)  # the Miner's bound: its maximum

    def test_backoff_is_written_once(self):
        """No other module of the package computes a doubling wait of its own."""
        pkg = os.path.join(_daemon.PYDIR, "focald")
        for name in sorted(os.listdir(pkg)):
            if not name.endswith(".py") or name == "_retry.py":
                continue
            with open(os.path.join(pkg, name), encoding="utf-8") as f:
                text = f.read()
            for pattern in ("2 **", "2.0 **", "<< attempt"):
                self.assertNotIn(pattern, text, "%s computes a backoff of its own" % name)

    def test_client_and_miner_use_it(self):
        self.assertIsInstance(focald.client.RETRY_BACKOFF, Backoff)
        m = Miner("backoff", url="http://127.0.0.1:9", retry_initial=0.3, retry_max=2.0)
        try:
            self.assertEqual((m._backoff.initial, m._backoff.maximum), (0.3, 2.0))
        finally:
            m.close(0.1)


class EarlyAnswerTest(DaemonTestCase):
    """focald refuses a body that is too large from its Content-Length, before reading it, and closes
    the connection: the client reports that answer (413), not the broken pipe of the unsent body."""

    daemon_args = ("--max-body", "4K")

    def test_client_body_too_large(self):
        logits = np.zeros((2000, 10), np.float32)  # 80 KB
        for binary in (True, False):
            c = Client(self.url, binary=binary)
            for _ in range(5):
                with self.assertRaises(FocaldError) as cm:
                    c.post_batch("big", np.arange(2000), logits, np.zeros(2000, np.int64))
                self.assertEqual((cm.exception.status, cm.exception.code), (413, "body_too_large"))
            c.post_batch("big", [1], logits[:1], [0])  # and the next request goes through
        self.assertEqual(Client(self.url).dataset("big")["observations"], 2)


class AuthTest(unittest.TestCase):
    """A focald that requires a bearer token: the client sends it from its argument or FOCALD_TOKEN."""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(token=TOKEN)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_client_token(self):
        c = Client(self.d.url, token=TOKEN)
        c.post_batch("auth", [1, 2], np.zeros((2, 2), np.float32), [0, 1])
        self.assertEqual([d["name"] for d in c.datasets()], ["auth"])
        self.assertIn("focald_build_info", c.metrics())
        with self.assertRaises(FocaldError) as cm:
            Client(self.d.url, token="").datasets()
        e = cm.exception
        self.assertEqual((e.status, e.code), (401, "unauthorized"))
        self.assertFalse(e.retryable)
        with self.assertRaises(FocaldError) as cm:
            wrong = Client(self.d.url, token="wrong-token-wrong-token")
            wrong.post_batch("auth", [3], np.zeros((1, 2), np.float32), [0])
        self.assertEqual(cm.exception.status, 401)
        self.assertEqual(Client(self.d.url, token="").health()["status"], "ready")  # probes need no token

    def test_client_token_from_env(self):
        old = os.environ.get("FOCALD_TOKEN")
        os.environ["FOCALD_TOKEN"] = TOKEN
        try:
            self.assertIsInstance(Client(self.d.url).datasets(), list)
        finally:
            if old is None:
                del os.environ["FOCALD_TOKEN"]
            else:
                os.environ["FOCALD_TOKEN"] = old


class TlsTest(unittest.TestCase):
    """focald serving https with a self-signed certificate: trusted through ca_file or FOCALD_CA_FILE."""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(tls=True)

    @classmethod
    def tearDownClass(cls):
        cls.d.stop()

    def test_client_https_keepalive(self):
        c = Client(self.d.url, ca_file=self.d.cert)
        r = c.post_batch("tls", np.arange(4), np.zeros((4, 3), np.float32), [0, 1, 2, 0], loss="softmax_focal")
        self.assertEqual(r["accepted"], 4)
        conn = c._t._local.conn
        for _ in range(10):
            c.hard_examples("tls", k=2)
        self.assertIs(c._t._local.conn, conn)  # one TLS connection for all of them
        self.assertEqual(c._t._local.used, 11)
        self.assertEqual(len(b"".join(c.iter_export("tls", "csv")).splitlines()), 5)

    def test_client_https_untrusted(self):
        with self.assertRaises(FocaldConnectionError) as cm:
            Client(self.d.url).datasets()
        self.assertIn("CERTIFICATE", str(cm.exception).upper())
        old = os.environ.get("FOCALD_CA_FILE")
        os.environ["FOCALD_CA_FILE"] = self.d.cert
        try:
            self.assertIsInstance(Client(self.d.url).datasets(), list)
        finally:
            if old is None:
                del os.environ["FOCALD_CA_FILE"]
            else:
                os.environ["FOCALD_CA_FILE"] = old


class NoNumpyTest(DaemonTestCase):
    """Without NumPy the client sends JSON, and gets the same answers as with the binary framing."""

    def test_client_without_numpy(self):
        rng = np.random.default_rng(9)
        logits = rng.normal(size=(12, 5)).astype(np.float32)
        targets = rng.integers(0, 5, size=12)
        ref = Client(self.url, binary=True).evaluate(logits, targets, loss="softmax_focal")
        code = (
            "import sys, json\n"
            "sys.modules['numpy'] = None\n"
            "sys.path.insert(0, %r)\n"
            "import focald\n"
            "c = focald.Client(%r)\n"
            "assert c.binary is False\n"
            "d = json.load(sys.stdin)\n"
            "r = c.evaluate(d['logits'], d['targets'], loss='softmax_focal')\n"
            "r2 = c.post_batch('nonumpy', list(range(12)), d['logits'], d['targets'], loss='softmax_focal')\n"
            "print(json.dumps([r, r2['accepted']]))\n" % (_daemon.PYDIR, self.url))
        data = json.dumps({"logits": logits.tolist(), "targets": targets.tolist()})
        p = subprocess.run([_daemon.PYTHON, "-c", code], input=data, capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        got, accepted = json.loads(p.stdout)
        self.assertEqual(got, ref)
        self.assertEqual(accepted, 12)


if __name__ == "__main__":
    import run_tests
    sys.exit(run_tests.main([__name__] + sys.argv[1:], modules=[sys.modules[__name__]]))
