#!/usr/bin/python3
"""Integration tests of focald's binary tensor framing (README "Binary tensors"), against the real daemon.

usage: BUILD=build /usr/bin/python3 tests/integration/test_binary.py [-v] [unittest names...]

Binary bodies (Content-Type: application/octet-stream, Inference-Header-Content-Length: the length of a
JSON header, then each tensor's raw little-endian bytes in the order of the header's `inputs`) are built
here with numpy and checked against the JSON API on the same data: the same losses and scores, bit for
bit, for every input datatype (FP32, and FP16, BF16, FP64 converted to float32; INT64, INT32, UINT8, BOOL
targets; INT64 and BYTES ids), and binary responses (Accept: application/octet-stream,
parameters.binary_data_output, a chosen `outputs` list) against the JSON response. Every malformed or
inconsistent body gets its documented status, code and field and leaves the dataset as it was.

Uses tests/integration/harness.py (Daemon, FocaldTestCase, the runner): each test
class starts $BUILD/focald on a free loopback port with a fresh database. The last line of output is
"ok N" when all N tests passed, or "failed K" when K failed, preceded by "ok P" for the P that passed
(tests/suites/integration sums them with test_api.py's).

Needs numpy (the system /usr/bin/python3 has it).
"""
import json
import os
import struct
import sys
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ANY = harness.ANY
OCTET = "application/octet-stream"
OUTPUT_NAMES = ["losses", "p_t", "p_max", "margin", "norm_margin", "entropy", "cw_entropy", "el2n", "correct", "pred"]
SCORE_NAMES = OUTPUT_NAMES[1:]

# numpy dtypes of the binary datatypes (BF16 travels as the top 16 bits of float32: uint16 here)
NP_DTYPES = {
    "FP32": "<f4", "FP16": "<f2", "BF16": "<u2", "FP64": "<f8",
    "INT64": "<i8", "INT32": "<i4", "UINT8": "u1", "BOOL": "?",
}


# ---------------------------------------------------------------------------- building binary bodies

class T:
    """One input tensor: name, datatype, shape and its raw bytes (each may be overridden to break it)."""

    def __init__(self, name, datatype, shape, data, size=None):
        self.name = name
        self.datatype = datatype
        self.shape = list(shape)
        self.data = data
        self.size = len(data) if size is None else size

    def spec(self):
        return {"name": self.name, "datatype": self.datatype, "shape": self.shape,
                "parameters": {"binary_data_size": self.size}}


def tensor(name, values, datatype):
    """A numeric tensor: values converted to datatype's little-endian layout (BF16: values must be
    uint16 bit patterns, see bf16_bits)."""
    a = np.ascontiguousarray(np.asarray(values).astype(NP_DTYPES[datatype]))
    return T(name, datatype, a.shape, a.tobytes())


def bytes_tensor(name, strings):
    """A BYTES tensor: each element a 4-byte little-endian length, then its bytes (str: UTF-8)."""
    parts = []
    for s in strings:
        b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
        parts.append(struct.pack("<I", len(b)) + b)
    return T(name, "BYTES", [len(strings)], b"".join(parts))


def bf16_bits(f32_values):
    """The BF16 bit patterns of float32 values whose low 16 bits are zero."""
    a = np.asarray(f32_values, dtype=np.float32)
    bits = a.view(np.uint32)
    assert not np.any(bits & 0xFFFF), "values must be exactly representable in bfloat16"
    return (bits >> 16).astype(np.uint16)


def build(header, tensors):
    """(body, header_len): header (a dict, or raw bytes) with `inputs` from tensors, then their bytes."""
    if isinstance(header, (bytes, bytearray)):
        hb = bytes(header)
    else:
        h = dict(header)
        if tensors is not None and "inputs" not in h:
            h["inputs"] = [t.spec() for t in tensors]
        hb = json.dumps(h, separators=(",", ":")).encode("utf-8")
    return hb + b"".join(t.data for t in tensors or []), len(hb)


def parse_binary(r):
    """A binary response: (header dict, {output name: numpy array}), checking the framing as it goes."""
    assert r.status == 200, "expected 200, got %r" % r
    ct = r.header("Content-Type") or ""
    assert ct.split(";")[0].strip().lower() == OCTET, "Content-Type %r, expected %s; %r" % (ct, OCTET, r)
    hl = r.header("Inference-Header-Content-Length")
    assert hl is not None and hl.isdigit(), "Inference-Header-Content-Length %r" % hl
    hl = int(hl)
    assert hl <= len(r.body), "Inference-Header-Content-Length %d beyond the %d-byte body" % (hl, len(r.body))
    head = json.loads(r.body[:hl].decode("utf-8"))
    out, off = {}, hl
    for o in head["outputs"]:
        n = o["parameters"]["binary_data_size"]
        dt = {"FP32": "<f4", "INT32": "<i4"}[o["datatype"]]
        a = np.frombuffer(r.body[off:off + n], dtype=dt)
        assert a.size == int(np.prod(o["shape"])), "%s: %d bytes for shape %r" % (o["name"], n, o["shape"])
        a = a.reshape(o["shape"])
        out[o["name"]] = a
        off += n
    assert off == len(r.body), "the outputs take %d bytes; the body has %d" % (off, len(r.body))
    return head, out


def as_f32(values):
    """Nested lists of Python floats, each exactly a float32 (what JSON sends for float32 data)."""
    return np.asarray(values, dtype=np.float32).astype(np.float64).tolist()


# ---------------------------------------------------------------------------- the base class

class BinaryTestCase(harness.FocaldTestCase):

    def post_bin(self, path, header, tensors, ihcl=ANY, accept=None, headers=None, d=None):
        """POSTs a binary body. ihcl: the Inference-Header-Content-Length to send (default: the header's
        length; None omits it)."""
        body, hl = build(header, tensors)
        h = {"Content-Type": OCTET}
        if ihcl is ANY:
            h["Inference-Header-Content-Length"] = str(hl)
        elif ihcl is not None:
            h["Inference-Header-Content-Length"] = str(ihcl)
        if accept:
            h["Accept"] = accept
        h.update(headers or {})
        return (d or self.d).post(path, body, headers=h)

    def loss_bin(self, header, tensors, **kw):
        return self.post_bin("/v1/loss", header, tensors, **kw)

    def batch_bin(self, ds, header, tensors, **kw):
        return self.post_bin("/v1/datasets/%s/batches" % harness.q(ds), header, tensors, **kw)

    def ok_json(self, r):
        self.assertEqual(r.status, 200, "response: %r" % r)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/json"), r.header("Content-Type"))
        return r.json()

    # -- comparisons

    def assertSameResult(self, got, want, msg=""):
        """Two JSON scoring responses with the same numbers, exactly (both are float32 data formatted
        so that they read back exactly)."""
        ctx = "%s\n got: %s\nwant: %s" % (msg, json.dumps(got)[:1500], json.dumps(want)[:1500])
        for k in ("accepted", "duplicate", "loss", "losses", "hardest", "dataset", "run", "batch_id"):
            self.assertEqual(got.get(k), want.get(k), "%s: %s" % (k, ctx))
        self.assertEqual(set(got["scores"]), set(SCORE_NAMES), ctx)
        for k in SCORE_NAMES:
            self.assertEqual(got["scores"][k], want["scores"][k], "scores.%s: %s" % (k, ctx))

    def assertBinaryMatchesJson(self, head, outs, want, names=OUTPUT_NAMES, msg=""):
        """A parsed binary response against the JSON response to the same data: the outputs `names`
        in order, each value the JSON number as float32 exactly; NaN (pred: -1) where JSON has null."""
        ctx = "%s\nbinary header: %s\nJSON: %s" % (msg, json.dumps(head)[:1500], json.dumps(want)[:1500])
        self.assertEqual([o["name"] for o in head["outputs"]], list(names), ctx)
        for k in ("dataset", "run", "accepted", "duplicate", "hardest"):
            self.assertEqual(head[k], want[k], "%s: %s" % (k, ctx))
        self.assertEqual(head["loss"], want["loss"], "loss: " + ctx)
        n = want["accepted"]
        for o in head["outputs"]:
            name = o["name"]
            self.assertEqual(o["shape"], [n], ctx)
            self.assertEqual(o["datatype"], "INT32" if name == "pred" else "FP32", ctx)
            self.assertEqual(o["parameters"]["binary_data_size"], 4 * n, ctx)
            got = outs[name]
            ref = want["losses"] if name == "losses" else want["scores"][name]
            for i in range(n):
                if name == "pred":
                    self.assertEqual(int(got[i]), -1 if ref[i] is None else ref[i], "pred[%d]: %s" % (i, ctx))
                elif ref[i] is None:
                    self.assertTrue(np.isnan(got[i]), "%s[%d] = %r, expected NaN: %s" % (name, i, got[i], ctx))
                else:
                    self.assertEqual(got[i], np.float32(ref[i]), "%s[%d]: %s" % (name, i, ctx))


def json_body(ids, x, targets, x_name="logits", **extra):
    b = {"ids": ids, x_name: as_f32(x), "targets": targets}
    b.update(extra)
    return b


def bin_tensors(ids, x, targets, x_name="logits", ids_type="BYTES", x_type="FP32", t_type=None, weights=None,
                w_type="FP32"):
    """ids, x and targets (and weights) as binary tensors; targets' datatype from t_type, else FP32 for
    floats and INT64 for integers."""
    ts = [bytes_tensor("ids", ids) if ids_type == "BYTES" else tensor("ids", ids, ids_type),
          tensor(x_name, x, x_type)]
    t = np.asarray(targets)
    if t_type is None:
        t_type = "INT64" if t.dtype.kind in "iub" else "FP32"
    ts.append(tensor("targets", t, t_type))
    if weights is not None:
        ts.append(tensor("weights", weights, w_type))
    return ts


def rng(seed):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------- JSON and binary agree

class JsonBinaryEquivalenceTest(BinaryTestCase):
    """The same FP32 data as JSON and as binary tensors: identical losses and scores."""

    def check_same(self, header, ids, x, targets, x_name="logits", weights=None, path="/v1/loss", **kw):
        body = json_body([str(i) for i in ids], x, np.asarray(targets).tolist(), x_name, **header)
        if weights is not None:
            body["weights"] = as_f32(weights)
        want = self.ok_json(self.d.post(path, body))
        got = self.ok_json(self.post_bin(path, header, bin_tensors([str(i) for i in ids], x, targets, x_name,
                                                                  weights=weights, **kw)))
        self.assertSameResult(got, want, "%s %s" % (path, header))
        return want

    def test_class_indices_sigmoid(self):
        g = rng(1)
        x = g.normal(0, 3, (6, 5)).astype(np.float32)
        t = np.array([0, 4, 2, 5, 1, -1])  # 5 = background, -1 ignored
        self.check_same({"ohem_k": 3}, list(range(6)), x, t)

    def test_class_indices_softmax(self):
        g = rng(2)
        x = g.normal(0, 2, (5, 4)).astype(np.float32)
        self.check_same({"loss": {"type": "softmax_focal", "gamma": 1.5, "reduction": "mean"}}, ["a", "b", "c", "d", "e"],
                        x, np.array([3, 0, 1, 2, 2]))

    def test_multi_hot(self):
        g = rng(3)
        x = g.normal(0, 2, (4, 6)).astype(np.float32)
        t = (g.random((4, 6)) < 0.3).astype(np.float32)
        t[0] = 0
        self.check_same({"loss": {"reduction": "positives"}}, ["m1", "m2", "m3", "m4"], x, t)

    def test_soft_rows(self):
        g = rng(4)
        x = g.normal(0, 2, (3, 4)).astype(np.float32)
        t = g.random((3, 4)).astype(np.float32)
        self.check_same({"loss": {"profile": "monai"}}, ["s1", "s2", "s3"], x, t)

    def test_dense_indices_with_ignore(self):
        g = rng(5)
        x = g.normal(0, 2, (3, 7, 4)).astype(np.float32)
        t = g.integers(0, 4, (3, 7))
        t[0, 2] = t[1, 0] = -1
        t[2, :] = -1  # nothing scored: null scores
        want = self.check_same({"loss": {"type": "softmax_focal", "reduction": "mean"}}, ["d1", "d2", "d3"], x, t)
        self.assertIsNone(want["scores"]["p_t"][2])
        self.assertIsNone(want["scores"]["pred"][0])

    def test_dense_ignore_index_custom(self):
        g = rng(6)
        x = g.normal(0, 2, (2, 5, 3)).astype(np.float32)
        t = g.integers(0, 3, (2, 5))
        t[0, 1] = 255
        self.check_same({"loss": {"ignore_index": 255}}, ["e1", "e2"], x, t, t_type="UINT8")

    def test_dense_rows(self):
        g = rng(7)
        x = g.normal(0, 2, (2, 3, 4)).astype(np.float32)
        t = (g.random((2, 3, 4)) < 0.5).astype(np.float32)
        self.check_same({}, ["r1", "r2"], x, t)

    def test_binary_c1_targets(self):
        x = np.array([[1.5], [-2.0], [0.3], [0.0]], dtype=np.float32)
        t = np.array([1.0, 0.0, 0.5, 1.0], dtype=np.float32)
        self.check_same({"ohem_k": 2}, ["p", "q", "r", "s"], x, t)

    def test_probs_input(self):
        g = rng(8)
        p = g.random((4, 3)).astype(np.float32)
        p[0, 0], p[1, 1] = 0.0, 1.0
        self.check_same({}, ["a", "b", "c", "d"], p, np.array([0, 1, 2, 3]), x_name="probs")
        q = (p / p.sum(1, keepdims=True)).astype(np.float32)
        self.check_same({"loss": {"type": "softmax_focal"}}, ["a", "b", "c", "d"], q, np.array([0, 1, 2, 1]),
                        x_name="probs")

    def test_softmax_poly1_and_asl(self):
        g = rng(9)
        x = g.normal(0, 2, (3, 4)).astype(np.float32)
        self.check_same({"loss": {"type": "poly1_softmax_focal", "epsilon": 0.5}}, ["a", "b", "c"], x, np.array([1, 0, 3]))
        t = (g.random((3, 4)) < 0.4).astype(np.float32)
        self.check_same({"loss": {"type": "asl"}}, ["a", "b", "c"], x, t)

    def test_weights(self):
        g = rng(10)
        x = g.normal(0, 2, (3, 4)).astype(np.float32)
        w = g.random((3, 4)).astype(np.float32) * 2
        self.check_same({}, ["a", "b", "c"], x, np.array([1, 0, 4]), weights=w)
        ws = g.random(3).astype(np.float32)
        self.check_same({"loss": {"type": "softmax_focal", "alpha": [0.1, 0.2, 0.3, 0.4]}}, ["a", "b", "c"], x,
                        np.array([1, 0, 3]), weights=ws)
        xd = g.normal(0, 2, (2, 3, 4)).astype(np.float32)
        wd = g.random((2, 3)).astype(np.float32)
        self.check_same({"loss": {"type": "softmax_focal"}}, ["a", "b"], xd, g.integers(0, 4, (2, 3)), weights=wd)

    def test_batches_store_the_same(self):
        """A JSON batch in one dataset and the same batch as binary in another record the same history."""
        g = rng(11)
        x = g.normal(0, 2, (4, 3)).astype(np.float32)
        t = np.array([0, 2, 1, 1])
        ids = ["i0", "i1", "i2", "i3"]
        hdr = {"run": "r1", "batch_id": "b1", "epoch": 2, "step": 40, "ohem_k": 2}
        a, b = self.ds_name("-json"), self.ds_name("-bin")
        want = self.ok_json(self.d.post("/v1/datasets/%s/batches" % a, json_body(ids, x, t.tolist(), **hdr)))
        got = self.ok_json(self.batch_bin(b, hdr, bin_tensors(ids, x, t)))
        self.assertEqual(got["dataset"], b)
        got["dataset"] = a
        self.assertSameResult(got, want)
        self.assertEqual(got["batch_id"], "b1")
        ha, hb = self.d.all_hard(a, run="r1"), self.d.all_hard(b, run="r1")
        self.assertEqual(ha, hb)
        sa = self.d.sample(a, "i2").json()
        sb = self.d.sample(b, "i2").json()
        sa["dataset"] = sb["dataset"] = None
        self.assertEqual(sa, sb)


# ---------------------------------------------------------------------------- datatypes

class DatatypesTest(BinaryTestCase):
    """FP16, BF16 and FP64 logits are converted to float32; integer and BOOL targets; INT64 and BYTES ids."""

    def loss_json(self, x, targets, header=None, x_name="logits"):
        n = len(targets)
        return self.ok_json(self.d.post("/v1/loss", json_body(["s%d" % i for i in range(n)], x,
                                                              np.asarray(targets).tolist(), x_name, **(header or {}))))

    def loss_bin_json(self, tensors, header=None):
        return self.ok_json(self.loss_bin(header or {}, tensors))

    def ids(self, n):
        return ["s%d" % i for i in range(n)]

    def fp32_result(self, f, targets, header=None, x_name="logits"):
        """The result for float32 values f sent as FP32 tensors (checked equal to JSON's)."""
        want = self.loss_json(f, targets, header, x_name)
        got = self.loss_bin_json(bin_tensors(self.ids(len(targets)), f, targets, x_name=x_name), header)
        self.assertSameResult(got, want, "FP32 tensors against JSON")
        return got

    def test_fp16_logits(self):
        g = rng(20)
        h = g.normal(0, 4, (5, 6)).astype(np.float16)
        h[0, :4] = [65504, -65504, 6e-8, -0.0]  # extremes, a subnormal, negative zero
        h[1, 0] = np.float16(1e-5)  # subnormal in half
        f = h.astype(np.float32)  # exact
        t = np.array([0, 1, 5, 3, 6])
        for hdr in ({}, {"loss": {"type": "softmax_focal"}}):
            want = self.fp32_result(f, np.minimum(t, 5) if hdr else t, hdr)
            got = self.loss_bin_json(bin_tensors(self.ids(5), h, np.minimum(t, 5) if hdr else t, x_type="FP16"), hdr)
            self.assertSameResult(got, want, "FP16 %s" % hdr)

    def test_bf16_logits(self):
        g = rng(21)
        f = g.normal(0, 5, (4, 3)).astype(np.float32)
        f = (f.view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)  # exactly bfloat16
        f[0, 0] = np.float32(-0.0)
        t = np.array([2, 0, 1, 3])
        want = self.fp32_result(f, t)
        got = self.loss_bin_json(bin_tensors(self.ids(4), bf16_bits(f), t, x_type="BF16"))
        self.assertSameResult(got, want, "BF16")
        # probabilities in BF16
        p = (g.random((4, 3)).astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)
        want = self.fp32_result(p, t, x_name="probs")
        got = self.loss_bin_json(bin_tensors(self.ids(4), bf16_bits(p), t, x_name="probs", x_type="BF16"))
        self.assertSameResult(got, want, "BF16 probs")

    def test_fp64_logits(self):
        g = rng(22)
        d = g.normal(0, 10, (4, 5))  # not representable in float32: conversion rounds
        d[0, 0] = 3.0e38  # within float32's range
        d[0, 1] = -1e-42  # a float32 subnormal after rounding
        d[1, 0] = 1.0 / 3.0
        f = d.astype(np.float32)
        t = np.array([4, 0, 2, 5])
        want = self.fp32_result(f, t)
        got = self.loss_bin_json(bin_tensors(self.ids(4), d, t, x_type="FP64"))
        self.assertSameResult(got, want, "FP64")

    def test_float32_max_as_printed_is_float32_max(self):
        """FLT_MAX as focald prints it (3.40282347e+38) and as shortest round-trip printers do
        (3.4028235e+38) is a little above FLT_MAX as a double, and rounds to FLT_MAX in float32: accepted, in
        JSON and as FP64, with the results of FLT_MAX itself; from FLT_MAX + half an ulp on it is refused."""
        fmax = float(np.finfo(np.float32).max)
        f = np.array([[fmax, -fmax, 0.5], [0.0, 1.0, -2.0]], dtype=np.float32)
        t = np.array([0, 2])
        want = self.fp32_result(f, t)
        for printed in (3.40282347e38, 3.4028235e38):
            d = f.astype(np.float64)
            d[0, 0], d[0, 1] = printed, -printed
            got = self.ok_json(self.d.post("/v1/loss", {"ids": self.ids(2), "logits": d.tolist(),
                                                        "targets": t.tolist()}))
            self.assertSameResult(got, want, "JSON %r" % printed)
            got = self.loss_bin_json(bin_tensors(self.ids(2), d, t, x_type="FP64"))
            self.assertSameResult(got, want, "FP64 %r" % printed)
        d = f.astype(np.float64)
        d[0, 0] = 3.4028235677973366e38  # halfway to 2^128: rounds to infinity
        r = self.d.post("/v1/loss", {"ids": self.ids(2), "logits": d.tolist(), "targets": t.tolist()})
        self.assertProblem(r, 422, "out_of_range", "/logits/0/0")
        r = self.loss_bin({}, bin_tensors(self.ids(2), d, t, x_type="FP64"))
        self.assertEqual(r.status, 422, "response: %r" % r)
        self.assertEqual(r.json()["code"], "out_of_range")

    def test_fp64_and_fp16_weights_and_dense_rows(self):
        g = rng(23)
        x = g.normal(0, 2, (2, 3, 4)).astype(np.float32)
        rows = (g.random((2, 3, 4)) < 0.5)
        w = g.random((2, 3, 4))
        want = self.ok_json(self.d.post("/v1/loss", {"ids": ["a", "b"], "logits": as_f32(x),
                                                     "targets": rows.astype(float).tolist(),
                                                     "weights": as_f32(w.astype(np.float16))}))
        got = self.loss_bin_json(bin_tensors(["a", "b"], x, rows, t_type="BOOL", weights=w.astype(np.float16),
                                             w_type="FP16"))
        self.assertSameResult(got, want, "BOOL rows, FP16 weights")
        want = self.ok_json(self.d.post("/v1/loss", {"ids": ["a", "b"], "logits": as_f32(x),
                                                     "targets": rows.astype(float).tolist(),
                                                     "weights": as_f32(w.astype(np.float32))}))
        got = self.loss_bin_json(bin_tensors(["a", "b"], x.astype(np.float64), rows.astype(np.float64),
                                             x_type="FP64", t_type="FP64", weights=w, w_type="FP64"))
        self.assertSameResult(got, want, "FP64 logits, rows and weights")

    def test_target_integer_types(self):
        g = rng(24)
        x = g.normal(0, 2, (6, 2)).astype(np.float32)
        t = np.array([0, 1, 1, 0, 2, 1])  # 2: background for the sigmoid family
        want = self.loss_json(x, t)
        for dt in ("INT64", "INT32", "UINT8"):
            got = self.loss_bin_json(bin_tensors(self.ids(6), x, t, t_type=dt))
            self.assertSameResult(got, want, "targets %s" % dt)
        tb = np.array([0, 1, 1, 0, 0, 1])
        want = self.loss_json(x, tb, {"loss": {"type": "softmax_focal"}})
        for dt in ("INT64", "INT32", "UINT8", "BOOL"):
            got = self.loss_bin_json(bin_tensors(self.ids(6), x, tb, t_type=dt), {"loss": {"type": "softmax_focal"}})
            self.assertSameResult(got, want, "softmax targets %s" % dt)

    def test_dense_integer_targets(self):
        g = rng(25)
        x = g.normal(0, 2, (3, 4, 3)).astype(np.float32)
        t = g.integers(0, 3, (3, 4))
        t[1, 2] = -1
        hdr = {"loss": {"type": "softmax_focal"}}
        want = self.loss_json(x, t, hdr)
        for dt in ("INT64", "INT32"):
            got = self.loss_bin_json(bin_tensors(self.ids(3), x, t, t_type=dt), hdr)
            self.assertSameResult(got, want, "dense targets %s" % dt)

    def test_c1_binary_targets_types(self):
        x = np.array([[1.5], [-2.0], [0.3]], dtype=np.float32)
        t = np.array([1, 0, 1])
        want = self.loss_json(x, t.astype(float))
        for dt in ("FP32", "INT64", "INT32", "UINT8", "BOOL", "FP16", "FP64"):
            got = self.loss_bin_json(bin_tensors(self.ids(3), x, t, t_type=dt))
            self.assertSameResult(got, want, "C=1 targets %s" % dt)

    def test_ids_int64_equal_string_ids(self):
        ds = self.ds_name()
        x = np.array([[0, 1, 2], [2, -1, 0.5]], dtype=np.float32)
        self.d.ok_batch(ds, {"run": "r1", "ids": ["7", "-8"], "logits": as_f32(x), "targets": [2, 0]})
        r = self.ok_json(self.batch_bin(ds, {"run": "r1"}, bin_tensors([7, -8], x, np.array([2, 0]), ids_type="INT64")))
        self.assertEqual(r["accepted"], 2)
        info = self.d.dataset(ds).json()
        self.assertEqual((info["samples"], info["observations"]), (2, 4), info)
        for sid in ("7", "-8"):
            s = self.d.sample(ds, sid).json()
            self.assertEqual(s["runs"][0]["seen"], 2, s)
        # the largest and smallest int64
        big = [2 ** 63 - 1, -2 ** 63]
        self.ok_json(self.batch_bin(ds, {"run": "r1"}, bin_tensors(big, x, np.array([2, 0]), ids_type="INT64")))
        for sid in big:
            self.assertEqual(self.d.sample(ds, str(sid)).status, 200)

    def test_ids_bytes_equal_string_ids(self):
        ds = self.ds_name()
        long_id = "é" * 128  # 256 bytes of UTF-8, the longest id
        ids = ["img/1.png", "日本語のサンプル", long_id, "🙂 x", "7"]
        g = rng(26)
        x = g.normal(0, 2, (5, 3)).astype(np.float32)
        t = np.array([0, 1, 2, 0, 1])
        want = self.d.ok_batch(ds, {"ids": ids, "logits": as_f32(x), "targets": t.tolist(), "batch_id": "j"})
        got = self.ok_json(self.batch_bin(ds, {"batch_id": "b"}, bin_tensors(ids, x, t)))
        got["batch_id"] = want["batch_id"]
        self.assertSameResult(got, want)
        info = self.d.dataset(ds).json()
        self.assertEqual((info["samples"], info["observations"]), (5, 10), info)
        for sid in ids:
            s = self.d.sample(ds, sid)
            self.assertEqual(s.status, 200, "%r: %r" % (sid, s))
            self.assertEqual(s.json()["id"], sid)
            self.assertEqual(s.json()["runs"][0]["seen"], 2)
        # INT64 7 is the sample "7"
        self.ok_json(self.batch_bin(ds, {}, bin_tensors([7], x[:1], t[:1], ids_type="INT64")))
        self.assertEqual(self.d.sample(ds, "7").json()["runs"][0]["seen"], 3)
        self.assertEqual(self.d.dataset(ds).json()["samples"], 5)

    def test_bytes_ids_misalign_the_tensors_after_them(self):
        """BYTES ids of 13 bytes put FP32 logits and INT64/INT32 targets at unaligned offsets."""
        ids = ["abc", "de"]  # 4+3 + 4+2 = 13 bytes
        g = rng(27)
        x = g.normal(0, 2, (2, 3)).astype(np.float32)
        t = np.array([2, 0])
        for hdr in ({}, {"loss": {"type": "softmax_focal"}}):
            want = self.ok_json(self.d.post("/v1/loss", dict(json_body(ids, x, t.tolist()), **hdr)))
            for dt in ("INT64", "INT32", "UINT8"):
                ts = bin_tensors(ids, x, t, t_type=dt)
                self.assertEqual(len(ts[0].data) % 4, 1)
                got = self.ok_json(self.loss_bin(hdr, ts))
                self.assertSameResult(got, want, "misaligned, targets %s %s" % (dt, hdr))
            # dense, with FP32 weights after the targets, all misaligned
            xd = g.normal(0, 2, (2, 5, 3)).astype(np.float32)
            td = g.integers(0, 3, (2, 5))
            wd = g.random((2, 5) if hdr else (2, 5, 3)).astype(np.float32)
            want = self.ok_json(self.d.post("/v1/loss", dict(json_body(ids, xd, td.tolist(), weights=as_f32(wd)), **hdr)))
            got = self.ok_json(self.loss_bin(hdr, bin_tensors(ids, xd, td, t_type="UINT8", weights=wd)))
            self.assertSameResult(got, want, "misaligned dense %s" % hdr)

    def test_readme_worked_example(self):
        """The README's example: its header is 279 bytes and the body 321."""
        header = (b'{"run":"r1","inputs":[{"name":"ids","datatype":"INT64","shape":[2],"parameters":{"binary_data_size":16}},'
                  b'{"name":"logits","datatype":"FP32","shape":[2,3],"parameters":{"binary_data_size":24}},'
                  b'{"name":"targets","datatype":"UINT8","shape":[2],"parameters":{"binary_data_size":2}}]}')
        data = bytes.fromhex("0700000000000000 0800000000000000"
                             "00000000 0000803f 00000040 00000040 000080bf 0000003f 0200".replace(" ", ""))
        self.assertEqual((len(header), len(header) + len(data)), (279, 321))
        r = self.d.post("/v1/datasets/%s/batches" % self.ds_name(), header + data,
                        headers={"Content-Type": OCTET, "Inference-Header-Content-Length": "279"})
        got = self.ok_json(r)
        want = self.d.loss({"ids": [7, 8], "logits": [[0, 1, 2], [2, -1, 0.5]], "targets": [2, 0]})
        self.assertEqual(got["losses"], want["losses"])
        self.assertEqual(got["run"], "r1")
        self.assertEqual(self.d.sample(self.ds_name(), "8").json()["runs"][0]["run"], "r1")


# ---------------------------------------------------------------------------- binary responses

class BinaryResponseTest(BinaryTestCase):

    def data(self):
        g = rng(30)
        x = g.normal(0, 2, (4, 5, 3)).astype(np.float32)
        t = g.integers(0, 3, (4, 5))
        t[2, :] = -1  # sample 2: every position ignored
        return ["a", "b", "c", "d"], x, t

    def test_accept_octet_stream(self):
        ids, x, t = self.data()
        hdr = {"loss": {"type": "softmax_focal"}, "ohem_k": 2}
        want = self.d.loss(json_body(ids, x, t.tolist(), **hdr))
        head, outs = parse_binary(self.loss_bin(hdr, bin_tensors(ids, x, t), accept=OCTET))
        self.assertBinaryMatchesJson(head, outs, want)
        self.assertTrue(np.all(np.isnan([outs[k][2] for k in SCORE_NAMES[:-1]])), outs)
        self.assertEqual(int(outs["pred"][2]), -1)
        self.assertEqual(set(head), {"dataset", "run", "accepted", "duplicate", "loss", "hardest", "outputs"}, head)
        self.assertIsNone(head["dataset"])
        self.assertEqual(len(head["hardest"]), 2)

    def test_accept_with_several_types(self):
        ids, x, t = self.data()
        want = self.d.loss(json_body(ids, x, t.tolist()))
        head, outs = parse_binary(self.loss_bin({}, bin_tensors(ids, x, t),
                                                accept="application/json;q=0.5, application/octet-stream"))
        self.assertBinaryMatchesJson(head, outs, want)

    def test_json_request_is_answered_in_json_whatever_it_accepts(self):
        # the binary framing answers binary requests only: a JSON body asking for octet-stream gets JSON
        ids, x, t = self.data()
        body = json_body(ids, x, t.tolist())
        for path in ("/v1/loss", "/v1/datasets/%s/batches" % self.ds_name()):
            r = self.d.post(path, body, headers={"Accept": OCTET})
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.header("Content-Type").startswith("application/json"), r.header("Content-Type"))
            self.assertIsNone(r.header("Inference-Header-Content-Length"))
            self.assertEqual(r.json()["accepted"], 4)

    def test_binary_data_output_parameter(self):
        ids, x, t = self.data()
        hdr = {"parameters": {"binary_data_output": True}}
        want = self.d.loss(json_body(ids, x, t.tolist()))
        head, outs = parse_binary(self.loss_bin(hdr, bin_tensors(ids, x, t)))
        self.assertBinaryMatchesJson(head, outs, want)
        # false, or no Accept: JSON
        r = self.loss_bin({"parameters": {"binary_data_output": False}}, bin_tensors(ids, x, t))
        self.assertSameResult(self.ok_json(r), want)
        self.assertSameResult(self.ok_json(self.loss_bin({}, bin_tensors(ids, x, t))), want)

    def test_outputs_selection(self):
        ids, x, t = self.data()
        want = self.d.loss(json_body(ids, x, t.tolist()))
        # listed in any order, returned in the documented order
        hdr = {"outputs": [{"name": "pred"}, {"name": "losses"}]}
        head, outs = parse_binary(self.loss_bin(hdr, bin_tensors(ids, x, t), accept=OCTET))
        self.assertBinaryMatchesJson(head, outs, want, names=["losses", "pred"])
        hdr = {"outputs": [{"name": "losses"}]}
        head, outs = parse_binary(self.loss_bin(hdr, bin_tensors(ids, x, t), accept=OCTET))
        self.assertBinaryMatchesJson(head, outs, want, names=["losses"])
        hdr = {"outputs": [{"name": "el2n", "parameters": {"binary_data": True}}, {"name": "correct"}]}
        head, outs = parse_binary(self.loss_bin(hdr, bin_tensors(ids, x, t)))
        self.assertBinaryMatchesJson(head, outs, want, names=["el2n", "correct"])

    def test_losses_only_on_batches_still_records_scores(self):
        ds = self.ds_name()
        ids, x, t = self.data()
        hdr = {"outputs": [{"name": "losses"}], "loss": {"type": "softmax_focal"}, "step": 3}
        head, outs = parse_binary(self.batch_bin(ds, hdr, bin_tensors(ids, x, t), accept=OCTET))
        self.assertEqual((head["dataset"], head["run"]), (ds, "default"))
        want = self.d.loss(json_body(ids, x, t.tolist(), loss={"type": "softmax_focal"}))
        self.assertEqual([np.float32(v) for v in want["losses"]], list(outs["losses"]))
        s = self.d.sample(ds, "a").json()["runs"][0]
        self.assertEqual(s["confidence"], want["scores"]["p_t"][0])

    def test_batches_binary_response_and_dense_pred(self):
        ds = self.ds_name()
        ids, x, t = self.data()
        hdr = {"run": "r9", "batch_id": "z1"}
        want = self.ok_json(self.d.post("/v1/datasets/%s/batches" % (ds + "-j"), json_body(ids, x, t.tolist(), **hdr)))
        head, outs = parse_binary(self.batch_bin(ds, hdr, bin_tensors(ids, x, t), accept=OCTET))
        want["dataset"] = ds
        self.assertBinaryMatchesJson(head, outs, want)
        self.assertEqual(list(outs["pred"]), [-1, -1, -1, -1])  # dense samples: no single prediction
        head, _ = parse_binary(self.batch_bin(ds, hdr, bin_tensors(ids, x, t), accept=OCTET))
        self.assertTrue(head["duplicate"])
        # the same batch_id with other samples is another batch: refused, whichever body carries it
        r = self.batch_bin(ds, hdr, bin_tensors(["a", "b", "c", "e"], x, t), accept=OCTET)
        self.assertProblem(r, 422, "batch_id_reused", "/batch_id")
        r = self.d.post("/v1/datasets/%s/batches" % ds, json_body(["d", "c", "b", "a"], x, t.tolist(), **hdr))
        self.assertProblem(r, 422, "batch_id_reused", "/batch_id")
        self.assertEqual(self.d.dataset(ds).json()["observations"], 4)
        self.assertEqual(self.d.sample(ds, "e").status, 404)

    def test_classification_pred_and_nan(self):
        g = rng(31)
        x = g.normal(0, 2, (3, 4)).astype(np.float32)
        t = np.array([1, -1, 3])  # sample 1 ignored
        want = self.d.loss(json_body(["a", "b", "c"], x, t.tolist(), loss={"type": "softmax_focal"}))
        head, outs = parse_binary(self.loss_bin({"loss": {"type": "softmax_focal"}}, bin_tensors(["a", "b", "c"], x, t),
                                                accept=OCTET))
        self.assertBinaryMatchesJson(head, outs, want)
        self.assertEqual(int(outs["pred"][0]), int(np.argmax(x[0])))
        self.assertEqual(int(outs["pred"][1]), -1)
        self.assertTrue(np.isnan(outs["p_t"][1]) and np.isnan(outs["correct"][1]))
        self.assertEqual(outs["losses"][1], 0.0)

    def test_unknown_output_name(self):
        ids, x, t = self.data()
        r = self.loss_bin({"outputs": [{"name": "losses"}, {"name": "logits"}]}, bin_tensors(ids, x, t), accept=OCTET)
        self.assertProblem(r, 422, "invalid_field", "/outputs/1/name")
        r = self.loss_bin({"outputs": ["losses", 7]}, bin_tensors(ids, x, t), accept=OCTET)
        self.assertProblem(r, 422, "invalid_field", "/outputs/1")

    def test_error_is_problem_json_even_when_binary_asked(self):
        ids, x, t = self.data()
        ts = bin_tensors(ids, x, t)
        ts[1].size += 4
        r = self.loss_bin({}, ts, accept=OCTET)
        self.assertProblem(r, 400, "bad_framing")


# ---------------------------------------------------------------------------- bad framing and inconsistent bodies

def _good(n=2, c=3):
    """A valid batch for run r1 of BadInputTest's dataset: its header and its tensors, ids (BYTES), logits
    (FP32) and targets (INT64)."""
    x = (np.arange(n * c, dtype=np.float32).reshape(n, c) - 2) / 2
    return {"run": "r1", "batch_id": "bad"}, bin_tensors(["g%d" % i for i in range(n)], x, np.arange(n) % c)


def _mod(f):
    """A case: the good batch, changed by f(header, tensors)."""
    def send(self):
        h, t = _good()
        f(h, t)
        return self.batch_bin(self.DS, h, t)
    return send


def _set(i, **kw):
    """A case: tensor i of the good batch with attributes changed (name, datatype, shape, data, size)."""
    return _mod(lambda h, t: [setattr(t[i], k, v) for k, v in kw.items()])


def _put(i, new):
    """A case: tensor i of the good batch replaced (i == len: appended)."""
    return _mod(lambda h, t: t.append(new) if i == len(t) else t.__setitem__(i, new))


def _hdr(**kw):
    """A case: header fields of the good batch changed."""
    return _mod(lambda h, t: h.update(kw))


def _ihcl(value):
    """A case: the good batch with this Inference-Header-Content-Length (None: without one)."""
    def send(self):
        h, t = _good()
        return self.batch_bin(self.DS, h, t, ihcl=value)
    return send


def _ihcl_text(fmt):
    """A case: the good batch with its true header length written by fmt (such as "+%d")."""
    def send(self):
        h, t = _good()
        body, hl = build(h, t)
        return self.batch_bin(self.DS, h, t, ihcl=fmt % hl)
    return send


def _ihcl_delta(delta):
    def send(self):
        h, t = _good()
        body, hl = build(h, t)
        return self.batch_bin(self.DS, h, t, ihcl=hl + delta)
    return send


def _ihcl_body(delta):
    """A case: Inference-Header-Content-Length the body's length plus delta."""
    def send(self):
        h, t = _good()
        body, hl = build(h, t)
        return self.batch_bin(self.DS, h, t, ihcl=len(body) + delta)
    return send


def _raw_header(make):
    """A case: the good batch's tensors after a header of raw bytes make(specs of the tensors)."""
    def send(self):
        h, t = _good()
        return self.batch_bin(self.DS, make([u.spec() for u in t]), t)
    return send


def _body(f):
    """A case: the good batch's body bytes changed by f(body, header_len), sent with the header length."""
    def send(self):
        h, t = _good()
        body, hl = build(h, t)
        return self.d.post("/v1/datasets/%s/batches" % self.DS, f(body, hl),
                           headers={"Content-Type": OCTET, "Inference-Header-Content-Length": str(hl)})
    return send


def _resize(i, delta):
    """binary_data_size of tensor i off by delta, the bytes unchanged."""
    def f(h, t):
        t[i].size += delta
    return _mod(f)


def _bytes_past(h, t):
    t[0] = bytes_tensor("ids", ["g0", "g1"])  # 4+2 + 4+2 bytes
    t[0].data = t[0].data[:6] + struct.pack("<I", 400) + t[0].data[10:]  # element 1 claims 400 bytes of 2


def _bytes_left_over(h, t):
    t[0] = bytes_tensor("ids", ["g0", "g1"])
    t[0].data += b"\0\0\0"
    t[0].size += 3


def _x_with(value, datatype="FP32", name="logits"):
    """A case: logits [[0, 1, 2], [2, -1, v]] (or probabilities) in datatype, targets [2, 0]."""
    def send(self):
        a = np.array([[0, 1, 2], [2, -1, 0.5]], dtype=np.float64)
        if name == "probs":
            a = np.array([[0, 1, 0.25], [0.5, 0.125, 1]])
        a[1, 2] = value
        return self.batch_bin(self.DS, {"run": "r1"}, bin_tensors(["g0", "g1"], a, np.array([2, 0]), x_name=name,
                                                                  x_type=datatype))
    return send


def _bytes_targets(h, t):
    # one output per sample (c = 1), where a BYTES tensor of shape [n] has the shape of binary targets
    t[1] = tensor("logits", np.array([[0.5], [-1.0]]), "FP32")
    t[2] = bytes_tensor("targets", ["x", "y"])


def _bf16_nan(h, t):
    bits = bf16_bits(np.array([0, 1, 2, 2, -1, 0.5], dtype=np.float32))
    bits[5] = 0x7FC0  # quiet NaN
    t[1] = T("logits", "BF16", [2, 3], bits.astype("<u2").tobytes())


def _without(name):
    return _mod(lambda h, t: t.__setitem__(slice(None), [u for u in t if u.name != name]))


def _no_size(h, t):
    h["inputs"] = [u.spec() for u in t]
    del h["inputs"][1]["parameters"]


# (name, case, status, code, field); field None: absent; ANY: not checked
BAD_CASES = [
    # framing: 400 bad_framing (README: sizes that do not add up, a truncated body, no Inference-Header-Content-Length)
    ("no_inference_header_content_length", _ihcl(None), 400, "bad_framing", None),
    ("inference_header_content_length_not_a_number", _ihcl("12x"), 400, "bad_framing", None),
    ("inference_header_content_length_negative", _ihcl("-5"), 400, "bad_framing", None),
    # the length in digits only: strtoll would read "+N", " N" or "N" in the same way, so a sign, an empty value
    # and a number past 2^63 are refused rather than read as some length
    ("inference_header_content_length_with_a_sign", _ihcl_text("+%d"), 400, "bad_framing", None),
    ("inference_header_content_length_negative_zero", _ihcl("-0"), 400, "bad_framing", None),
    ("inference_header_content_length_empty", _ihcl(""), 400, "bad_framing", None),
    ("inference_header_content_length_past_2_64", _ihcl("18446744073709551616"), 400, "bad_framing", None),
    ("header_length_beyond_the_body", _ihcl_delta(+10000), 400, "bad_framing", None),
    ("header_length_one_beyond_the_body", _ihcl_body(+1), 400, "bad_framing", None),
    ("header_length_the_whole_body", _ihcl_body(0), 400, "bad_json", None),
    ("binary_data_size_larger_than_shape_times_dtype", _resize(1, +4), 400, "bad_framing",
     "/inputs/1/parameters/binary_data_size"),
    ("binary_data_size_smaller_than_shape_times_dtype", _resize(2, -8), 400, "bad_framing",
     "/inputs/2/parameters/binary_data_size"),
    ("binary_data_size_beyond_the_body", _resize(2, +8), 400, "bad_framing", "/inputs/2/parameters/binary_data_size"),
    ("extra_bytes_after_the_tensors", _mod(lambda h, t: setattr(t[2], "data", t[2].data + b"\0" * 8)), 400,
     "bad_framing", "/inputs"),
    ("truncated_body", _mod(lambda h, t: setattr(t[2], "data", t[2].data[:-3])), 400, "bad_framing",
     "/inputs/2/parameters/binary_data_size"),
    ("bytes_element_running_past_its_tensor", _mod(_bytes_past), 400, "bad_framing",
     "/inputs/0/parameters/binary_data_size"),
    ("bytes_tensor_with_bytes_left_over", _mod(_bytes_left_over), 400, "bad_framing",
     "/inputs/0/parameters/binary_data_size"),
    # the header
    ("header_not_json", _body(lambda b, hl: b"{not json" + b[9:]), 400, "bad_json", None),
    ("header_length_short_of_the_header", _ihcl_delta(-10), 400, "bad_json", None),
    ("header_with_duplicate_keys", _raw_header(lambda s: b'{"run":"a","run":"b","inputs":' + json.dumps(s).encode() + b"}"),
     400, "bad_json", None),
    ("header_a_json_array", _raw_header(lambda s: json.dumps(s).encode()), 422, "invalid_field", (None, "")),
    ("header_unknown_field", _hdr(colour="red"), 422, "unknown_field", "/colour"),
    ("header_bad_run_name", _hdr(run="no spaces"), 422, "bad_name", "/run"),
    ("header_ohem_k_above_n", _hdr(ohem_k=3), 422, "out_of_range", "/ohem_k"),
    ("header_negative_gamma", _hdr(loss={"gamma": -1}), 422, "invalid_loss", "/loss/gamma"),
    ("header_meta_for_an_id_not_in_the_batch", _hdr(meta={"zz": {}}), 422, "invalid_field", "/meta/zz"),
    ("header_unknown_output", _hdr(outputs=[{"name": "grad"}]), 422, "invalid_field", "/outputs/0/name"),
    # inputs: 422 as for JSON
    ("unknown_datatype", _set(1, datatype="FP8"), 422, "invalid_field", "/inputs/1/datatype"),
    ("targets_as_bytes", _mod(_bytes_targets), 422, "invalid_field", "/inputs/2"),
    ("unknown_tensor_name", _set(2, name="labels"), 422, "unknown_field", "/inputs/2/name"),
    ("duplicate_tensor_names", _set(2, name="logits"), 422, "invalid_field", "/inputs/2/name"),
    ("no_inputs", _hdr(inputs=[]), 422, "missing_field", "/inputs"),
    ("missing_ids", _without("ids"), 422, "missing_field", "/inputs"),
    ("missing_logits", _without("logits"), 422, "missing_field", "/inputs"),
    ("missing_targets", _without("targets"), 422, "missing_field", "/inputs"),
    ("logits_and_probs_both", _put(3, tensor("probs", np.full((2, 3), 0.5), "FP32")), 422, "invalid_field", "/inputs"),
    ("no_binary_data_size", _mod(_no_size), 422, "missing_field", "/inputs/1/parameters/binary_data_size"),
    ("ids_shape_3_but_logits_2", _put(0, bytes_tensor("ids", ["a", "b", "c"])), 422, "shape_mismatch",
     "/inputs/1/shape"),
    ("logits_rank_1", _put(1, tensor("logits", np.zeros(2), "FP32")), 422, "shape_mismatch", "/inputs/1/shape"),
    ("ids_shape_2x1", _put(0, tensor("ids", [[1], [2]], "INT64")), 422, "shape_mismatch", "/inputs/0"),
    ("ids_as_fp32", _put(0, tensor("ids", [1, 2], "FP32")), 422, "invalid_field", "/inputs/0"),
    ("empty_id", _put(0, bytes_tensor("ids", ["", "x"])), 422, "bad_name", "/inputs/0"),
    ("id_of_257_bytes", _put(0, bytes_tensor("ids", ["\u00e9" * 128 + "x", "x"])), 422, "bad_name", "/inputs/0"),
    ("id_not_utf8", _put(0, bytes_tensor("ids", [b"\xff\xfe", b"x"])), 422, "bad_name", "/inputs/0"),
    ("id_with_control_character", _put(0, bytes_tensor("ids", ["a\nb", "x"])), 422, "bad_name", "/inputs/0"),
    ("duplicate_ids", _put(0, tensor("ids", [5, 5], "INT64")), 422, "duplicate_id", "/inputs/0"),
    ("targets_shape_3", _put(2, tensor("targets", [0, 1, 2], "INT64")), 422, "shape_mismatch", "/inputs/2"),
    ("targets_shape_2x2", _put(2, tensor("targets", np.zeros((2, 2)), "FP32")), 422, "shape_mismatch", "/inputs/2"),
    ("class_index_targets_as_fp32", _put(2, tensor("targets", [0, 1], "FP32")), 422, "invalid_field", "/inputs/2"),
    ("weights_of_the_wrong_shape", _put(3, tensor("weights", np.ones(2), "FP32")), 422, "shape_mismatch", "/inputs/3"),
    ("weights_as_int64", _put(3, tensor("weights", np.ones((2, 3)), "INT64")), 422, "invalid_field", "/inputs/3"),
    # values the loss library checks as it computes: `field` points at the tensor in `inputs`, as for the
    # decoder's own checks (an FP64 value beyond float32 is /inputs/1); `detail` names the element
    ("label_out_of_range", _put(2, tensor("targets", [1, 4], "INT64")), 422, "label_out_of_range", "/inputs/2"),
    ("label_out_of_range_uint8", _put(2, tensor("targets", [200, 1], "UINT8")), 422, "label_out_of_range", "/inputs/2"),
    # INT64 labels are compared at their full width: none is read as its low 32 bits (2^32 + 1 as 1)
    ("label_2_pow_32_plus_1_int64", _put(2, tensor("targets", [1, 2 ** 32 + 1], "INT64")), 422, "label_out_of_range",
     "/inputs/2"),
    ("label_2_pow_31_int64", _put(2, tensor("targets", [2 ** 31, 1], "INT64")), 422, "label_out_of_range", "/inputs/2"),
    ("label_minus_2_pow_31_int32", _put(2, tensor("targets", [1, -2 ** 31], "INT32")), 422, "label_out_of_range",
     "/inputs/2"),
    ("bool_targets_neither_0_nor_1", _put(2, T("targets", "BOOL", [2], bytes([1, 2]))), 422, "invalid_field", "/inputs/2"),
    ("nan_in_fp32_logits", _x_with(np.nan), 422, "not_finite", "/inputs/1"),
    ("inf_in_fp32_logits", _x_with(np.inf), 422, "not_finite", "/inputs/1"),
    ("minus_inf_in_fp16_logits", _x_with(-np.inf, "FP16"), 422, "not_finite", "/inputs/1"),
    ("nan_in_bf16_logits", _mod(_bf16_nan), 422, "not_finite", "/inputs/1"),
    ("nan_in_fp64_logits", _x_with(np.nan, "FP64"), 422, "not_finite", "/inputs/1"),
    ("fp64_value_beyond_float32", _x_with(1e39, "FP64"), 422, "out_of_range", "/inputs/1"),
    ("fp64_value_below_minus_float32_max", _x_with(-3.5e38, "FP64"), 422, "out_of_range", "/inputs/1"),
    ("probability_above_1", _x_with(1.5, name="probs"), 422, "out_of_range", "/inputs/1"),
    ("probability_below_0", _x_with(-0.25, name="probs"), 422, "out_of_range", "/inputs/1"),
    ("probability_nan", _x_with(np.nan, name="probs"), 422, "not_finite", "/inputs/1"),
    ("class_count_conflict", _put(1, tensor("logits", np.zeros((2, 4)), "FP32")), 409, "class_count_conflict",
     "/inputs/1"),
]


def _typed(values, datatype):
    """A tensor's values in datatype (BF16: float32 values cut to their top halves; NaN and +-inf keep theirs)."""
    if datatype == "BF16":
        return (np.asarray(values, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return values


class NonFiniteTest(BinaryTestCase):
    """A value that is not a number or infinite is not_finite, whichever tensor carries it (logits,
    probabilities, weights, targets), in whichever datatype (FP16, BF16, FP32, FP64), for the sigmoid and the
    softmax family; a finite value outside what the tensor takes is out_of_range, in every datatype and in
    JSON (which carries no NaN or infinity at all: a body with one is not JSON). An infinite FP16 or BF16
    weight used to be out_of_range where an infinite logit was not_finite. Each refusal names the tensor and
    changes nothing."""
    DS = "binary-nonfinite"

    def state(self):
        return self.d.get("/v1/datasets").json()

    def _send(self, loss, which, value, datatype):
        """The batch with value at element (1, 2) (softmax weights: element 1) of tensor which, in datatype."""
        softmax = loss == "softmax_focal"
        x = np.array([[0.0, 1.0, 2.0], [2.0, -1.0, 0.5]])
        probs = np.array([[0.0, 1.0, 0.25], [0.5, 0.125, 1.0]])
        targets = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]) if which == "targets" else np.array([2, 0])
        weights = np.array([1.0, 0.5]) if softmax else np.array([[1.0, 0.5, 2.0], [0.25, 1.0, 0.5]])
        arrays = {"logits": x, "probs": probs, "targets": targets, "weights": weights}
        a = arrays[which].copy()
        if a.ndim == 2:
            a[1, 2] = value
        else:
            a[1] = value
        arrays[which] = a
        x_name = "probs" if which == "probs" else "logits"
        ts = [bytes_tensor("ids", ["g0", "g1"]),
              tensor(x_name, _typed(arrays[x_name], datatype if which == x_name else "FP32"),
                     datatype if which == x_name else "FP32"),
              tensor("targets", _typed(arrays["targets"], datatype if which == "targets" else "FP32"),
                     datatype if which == "targets" else ("FP32" if arrays["targets"].dtype.kind == "f" and which == "targets" else "INT64"))
              if which == "targets" else tensor("targets", arrays["targets"], "INT64"),
              tensor("weights", _typed(arrays["weights"], datatype if which == "weights" else "FP32"),
                     datatype if which == "weights" else "FP32")]
        header = {"run": "r1", "loss": {"type": loss}}
        index = {"logits": 1, "probs": 1, "targets": 2, "weights": 3}[which]
        return self.batch_bin(self.DS, header, ts), index

    def test_every_non_finite_value_in_every_tensor_and_datatype_is_not_finite(self):
        before = self.state()
        for loss in ("sigmoid_focal", "softmax_focal"):
            for which in ("logits", "probs", "weights", "targets"):
                for datatype in ("FP16", "BF16", "FP32", "FP64"):
                    for value in (np.nan, np.inf, -np.inf):
                        with self.subTest(loss=loss, tensor=which, datatype=datatype, value=value):
                            r, index = self._send(loss, which, value, datatype)
                            p = self.assertProblem(r, 422, "not_finite", "/inputs/%d" % index)
                            self.assertIn(which, p["detail"])
                            self.assertIn("not finite", p["detail"])
        self.assertEqual(self.state(), before)

    def test_finite_values_a_tensor_does_not_take_are_out_of_range(self):
        before = self.state()
        cases = [("weights", -0.5), ("probs", 1.5), ("probs", -0.25), ("targets", 1.5), ("targets", -0.5)]
        for loss in ("sigmoid_focal", "softmax_focal"):
            for which, value in cases:
                for datatype in ("FP16", "BF16", "FP32", "FP64"):
                    with self.subTest(loss=loss, tensor=which, datatype=datatype, value=value):
                        r, index = self._send(loss, which, value, datatype)
                        p = self.assertProblem(r, 422, "out_of_range", "/inputs/%d" % index)
                        self.assertIn(which, p["detail"])
                        self.assertNotIn("not finite", p["detail"])
            for which in ("logits", "probs", "weights", "targets"):  # finite in FP64 and JSON, past float32
                with self.subTest(loss=loss, tensor=which, datatype="FP64", value=1e39):
                    r, index = self._send(loss, which, 1e39, "FP64")
                    self.assertProblem(r, 422, "out_of_range", "/inputs/%d" % index)
        # JSON: the same values by name
        for loss in ("sigmoid_focal", "softmax_focal"):
            softmax = loss == "softmax_focal"
            good = {"run": "r1", "ids": ["g0", "g1"], "logits": [[0, 1, 2], [2, -1, 0.5]], "targets": [2, 0],
                    "weights": [1, 0.5] if softmax else [[1, 0.5, 2], [0.25, 1, 0.5]], "loss": {"type": loss}}
            for which, value, code in (("weights", -0.5, "out_of_range"), ("weights", 1e39, "out_of_range"),
                                       ("logits", 1e39, "out_of_range"), ("probs", 1.5, "out_of_range"),
                                       ("targets", 1.5, "out_of_range")):
                with self.subTest(loss=loss, json=which, value=value):
                    b = json.loads(json.dumps(good))
                    if which == "probs":
                        b["probs"] = [[0, 1, 0.25], [0.5, 0.125, 1]]
                        del b["logits"]
                    if which == "targets":
                        b["targets"] = [[0, 0, 1], [1, 0, 0]]
                    a = b[which]
                    if isinstance(a[1], list):
                        a[1][2] = value
                    else:
                        a[1] = value
                    p = self.assertProblem(self.d.batch(self.DS, b), 422, code)
                    self.assertIn(which, p["detail"] + (p.get("field") or ""))
            for literal in ("NaN", "Infinity", "-Infinity", "1e400"):
                with self.subTest(loss=loss, json_literal=literal):
                    text = json.dumps(good).replace('"weights": [1, 0.5', '"weights": [1, %s' % literal) \
                        .replace('"weights": [[1, 0.5', '"weights": [[1, %s' % literal)
                    self.assertIn(literal, text)
                    r = self.d.post("/v1/datasets/%s/batches" % self.DS, text.encode(),
                                    headers={"Content-Type": "application/json"})
                    self.assertProblem(r, 400, "bad_json")
        self.assertEqual(self.state(), before)


class BadInputTest(BinaryTestCase):
    """Every malformed or inconsistent binary body gets its status, code and field, and changes nothing
    (README: "A request that gets an error changes nothing")."""
    DS = "binary-bad"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        hdr, ts = _good()
        body, hl = build(dict(hdr, batch_id="seed", meta={"g0": {"k": 1}}), ts)
        r = cls.d.post("/v1/datasets/%s/batches" % cls.DS, body,
                       headers={"Content-Type": OCTET, "Inference-Header-Content-Length": str(hl)})
        if r.status != 200:
            raise AssertionError("seeding %s: %r" % (cls.DS, r))

    def state(self):
        return (self.d.dataset(self.DS).json(), self.d.get("/v1/datasets").json(), self.d.all_hard(self.DS, run="*"),
                self.d.sample(self.DS, "g0").json(), self.d.sample(self.DS, "g1").json())

    def run_case(self, send, status, code, field):
        before = self.state()
        r = send(self)
        self.assertProblem(r, status, code, field)
        self.assertEqual(self.state(), before, "the rejected request changed the stored state")

    def test_good_batch_is_accepted(self):
        """The batch every case breaks is itself valid (as a duplicate of the seed it changes nothing)."""
        before = self.state()
        h, t = _good()
        r = self.ok_json(self.batch_bin(self.DS, dict(h, batch_id="seed"), t))
        self.assertTrue(r["duplicate"])
        self.assertEqual(self.state(), before)

    def test_malformed_inference_header_content_length_is_named_as_sent(self):
        """A malformed Inference-Header-Content-Length is refused as malformed, quoted as sent: not taken for a
        missing header, nor for another length (a value past 2^63 was reported as 9223372036854775807)."""
        h, t = _good()
        for value in ("-5", "12x", "+%d" % build(h, t)[1], "", "18446744073709551616"):
            with self.subTest(value=value):
                p = self.assertProblem(self.batch_bin(self.DS, h, t, ihcl=value), 400, "bad_framing", None)
                self.assertIn("Inference-Header-Content-Length", p["detail"])
                self.assertIn('"%s"' % value, p["detail"])
                self.assertNotIn("needs an Inference-Header-Content-Length", p["detail"])

    def test_inference_header_content_length_with_surrounding_whitespace(self):
        """Whitespace around a field's value is not part of it (RFC 9110 section 5.5): the length with a space
        after it is the length (as a duplicate of the seed, the batch changes nothing)."""
        before = self.state()
        h, t = _good()
        h = dict(h, batch_id="seed")
        for fmt in ("%d ", "%d\t", " %d"):
            with self.subTest(fmt=fmt):
                r = self.ok_json(self.batch_bin(self.DS, h, t, ihcl=fmt % build(h, t)[1]))
                self.assertTrue(r["duplicate"])
        self.assertEqual(self.state(), before)

    def test_content_type_charset_is_utf8_or_none(self):
        """A binary body's JSON header is read as UTF-8, as a JSON body is: application/octet-stream with another
        charset (any case, quoted or not), one given twice or parameters that cannot be read, is 415 naming
        Content-Type, and changes nothing; utf-8 and other parameters are taken (the seed again: a duplicate)."""
        before = self.state()
        h, t = _good()
        h = dict(h, batch_id="seed")
        body, hl = build(h, t)
        for ct in (OCTET + "; charset=latin1", OCTET + '; charset="ISO-8859-1"', OCTET + "; charset=utf-16",
                   OCTET + "; charset=utf-8; charset=latin1", OCTET + "; charset=", OCTET + "; charset",
                   OCTET + " x", OCTET + "x"):
            for path in ("/v1/datasets/%s/batches" % self.DS, "/v1/loss"):
                with self.subTest(ct=ct, path=path):
                    r = self.d.post(path, body, headers={"Content-Type": ct, "Inference-Header-Content-Length": str(hl)})
                    p = self.assertProblem(r, 415, "unsupported_media_type")
                    self.assertIn("Content-Type", p["detail"])
                    self.assertIn(OCTET, r.header("Accept-Post") or "")
        self.assertEqual(self.state(), before)
        for ct in (OCTET + "; charset=utf-8", OCTET + '; charset="UTF-8"', "Application/Octet-Stream",
                   OCTET + "; padding=0", OCTET + ";"):
            with self.subTest(ct=ct):
                r = self.d.post("/v1/datasets/%s/batches" % self.DS, body,
                                headers={"Content-Type": ct, "Inference-Header-Content-Length": str(hl)})
                self.assertTrue(self.ok_json(r)["duplicate"], ct)
        self.assertEqual(self.state(), before)

    def test_loss_endpoint_bad_framing(self):
        h, t = _good()
        self.assertProblem(self.post_bin("/v1/loss", h, t, ihcl=None), 400, "bad_framing", None)
        t[2].size = 99
        self.assertProblem(self.post_bin("/v1/loss", h, t), 400, "bad_framing", "/inputs/2/parameters/binary_data_size")

    def test_loss_endpoint_label_out_of_range(self):
        h, t = _good()
        t[2] = tensor("targets", [1, 4], "INT64")
        self.assertProblem(self.post_bin("/v1/loss", h, t), 422, "label_out_of_range", "/inputs/2")


def _make_bad_case(send, status, code, field):
    def test(self):
        self.run_case(send, status, code, field)
    return test


for _name, _send, _status, _code, _field in BAD_CASES:
    _t = _make_bad_case(_send, _status, _code, _field)
    _t.__name__ = "test_bad_" + _name
    _t.__doc__ = "%s -> %s %s" % (_name.replace("_", " "), _status, _code)
    setattr(BadInputTest, _t.__name__, _t)


class BodyLimitsTest(BinaryTestCase):
    """411 for a binary body without Content-Length; 413 from Content-Length over --max-body."""
    daemon_args = ("--max-body", "4096")

    def chunked(self, path, body, headers):
        c = self.d.conn()
        try:
            c.putrequest("POST", path, skip_accept_encoding=True)
            c.putheader("Content-Type", OCTET)
            c.putheader("Transfer-Encoding", "chunked")
            for k, v in headers.items():
                c.putheader(k, v)
            c.endheaders()
            try:
                for i in range(0, len(body), 100):
                    part = body[i:i + 100]
                    c.send(b"%x\r\n" % len(part) + part + b"\r\n")
                c.send(b"0\r\n\r\n")
            except OSError:
                pass  # answered and closed before the whole body went out: the answer is what counts
            r = c.getresponse()
            return harness.Resp(r.status, r.getheaders(), r.read())
        finally:
            c.close()

    def test_length_required(self):
        ds = self.ds_name()
        hdr, ts = _good()
        body, hl = build(hdr, ts)
        for path in ("/v1/datasets/%s/batches" % ds, "/v1/loss"):
            with self.subTest(path):
                r = self.chunked(path, body, {"Inference-Header-Content-Length": str(hl)})
                self.assertProblem(r, 411, "length_required")
        self.assertProblem(self.d.dataset(ds), 404, "dataset_not_found")

    def test_too_large_from_content_length(self):
        ds = self.ds_name()
        g = rng(40)
        x = g.normal(0, 1, (40, 30)).astype(np.float32)  # 4800 bytes of logits
        hdr, ts = {"run": "r1"}, bin_tensors(["s%d" % i for i in range(40)], x, np.zeros(40, dtype=np.int64))
        body, hl = build(hdr, ts)
        self.assertGreater(len(body), 4096)
        # the answer comes from Content-Length alone: send only the headers, then read
        t0 = time.monotonic()
        c = self.d.conn(timeout=5)
        try:
            c.putrequest("POST", "/v1/datasets/%s/batches" % ds, skip_accept_encoding=True)
            for k, v in (("Content-Type", OCTET), ("Inference-Header-Content-Length", str(hl)),
                         ("Content-Length", str(len(body)))):
                c.putheader(k, v)
            c.endheaders()
            resp = c.getresponse()
            r = harness.Resp(resp.status, resp.getheaders(), resp.read())
        finally:
            c.close()
        self.assertLess(time.monotonic() - t0, 4.0, "413 must not wait for the body")
        self.assertProblem(r, 413, "body_too_large")
        # and with the body sent (the client does not wait)
        r = self.post_bin("/v1/datasets/%s/batches" % ds, hdr, ts)
        self.assertProblem(r, 413, "body_too_large")
        self.assertProblem(self.d.dataset(ds), 404, "dataset_not_found")
        # just under the limit is fine
        hdr, ts = {"run": "r1"}, bin_tensors(["s%d" % i for i in range(20)], x[:20, :20], np.zeros(20, dtype=np.int64))
        self.assertLessEqual(len(build(hdr, ts)[0]), 4096)
        self.ok_json(self.batch_bin(ds, hdr, ts))


# ---------------------------------------------------------------------------- stored batches

class StoredBatchTest(BinaryTestCase):

    def test_duplicate_batch_id_counts_once(self):
        ds = self.ds_name()
        g = rng(50)
        x = g.normal(0, 2, (3, 4)).astype(np.float32)
        ts = bin_tensors([1, 2, 3], x, np.array([0, 3, 1]), ids_type="INT64")
        hdr = {"run": "r1", "batch_id": "e0-s1", "step": 1, "epoch": 0}
        first = self.ok_json(self.batch_bin(ds, hdr, ts))
        self.assertFalse(first["duplicate"])
        before = (self.d.dataset(ds).json(), self.d.all_hard(ds))
        second = self.ok_json(self.batch_bin(ds, hdr, ts))
        self.assertTrue(second["duplicate"])
        self.assertEqual(second["losses"], first["losses"])
        head, _ = parse_binary(self.batch_bin(ds, hdr, ts, accept=OCTET))
        self.assertTrue(head["duplicate"])
        # the same batch_id as JSON is the same batch too
        dup = self.d.ok_batch(ds, dict(json_body(["1", "2", "3"], x, [0, 3, 1]), **hdr))
        self.assertTrue(dup["duplicate"])
        self.assertEqual((self.d.dataset(ds).json(), self.d.all_hard(ds)), before)
        info = self.d.dataset(ds).json()
        self.assertEqual((info["samples"], info["observations"]), (3, 3))
        self.assertEqual(self.d.sample(ds, "2").json()["runs"][0]["seen"], 1)
        # another run is another history
        self.assertFalse(self.ok_json(self.batch_bin(ds, dict(hdr, run="r2"), ts))["duplicate"])

    def test_meta_and_fields_stored(self):
        ds = self.ds_name()
        x = np.array([[0, 1, 2], [2, -1, 0.5]], dtype=np.float32)
        meta = {"a/1": {"path": "scans/a1.dcm", "site": 3, "tags": ["x", "y"]}, "b": {"z": None}}
        hdr = {"run": "r1", "step": 1200, "epoch": 3, "meta": meta}
        self.ok_json(self.batch_bin(ds, hdr, bin_tensors(["a/1", "b"], x, np.array([2, 0]))))
        s = self.d.sample(ds, "a/1").json()
        self.assertEqual(s["meta"], meta["a/1"])
        self.assertEqual(self.d.sample(ds, "b").json()["meta"], meta["b"])
        run = s["runs"][0]
        self.assertEqual((run["run"], run["first_step"], run["last_step"], run["label"]), ("r1", 1200, 1200, 2))
        self.assertEqual((run["recent"][0]["step"], run["recent"][0]["epoch"]), (1200, 3))
        # meta stays until new meta is given
        self.ok_json(self.batch_bin(ds, dict(hdr, step=1201, meta=None), bin_tensors(["a/1", "b"], x, np.array([2, 0]))))
        self.assertEqual(self.d.sample(ds, "a/1").json()["meta"], meta["a/1"])
        self.ok_json(self.batch_bin(ds, dict(hdr, step=1202, meta={"b": {"v": 2}}),
                                    bin_tensors(["a/1", "b"], x, np.array([2, 0]))))
        self.assertEqual(self.d.sample(ds, "b").json()["meta"], {"v": 2})
        self.assertEqual(self.d.sample(ds, "a/1").json()["runs"][0]["seen"], 3)

    def test_loss_endpoint_stores_nothing(self):
        x = np.array([[0, 1, 2]], dtype=np.float32)
        before = self.d.get("/v1/datasets").json()
        r = self.ok_json(self.loss_bin({"run": "r1", "batch_id": "x", "step": 1, "meta": {"a": {"k": 1}}},
                                       bin_tensors(["a"], x, np.array([1]))))
        self.assertEqual((r["dataset"], r["run"], r["batch_id"], r["duplicate"]), (None, None, None, False))
        self.assertEqual(self.d.get("/v1/datasets").json(), before)


# ---------------------------------------------------------------------------- gradients against torch autograd

def _torch():
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
        return True
    except Exception:  # ImportError, or a broken install
        return False


def _torch_reduce(elem, reduction, live, npos):
    """A (n, ...) tensor of element losses reduced per sample as focald's reductions are: sum, mean over the
    live elements, positives (sum / max(1, positives)), mean_elements (mean over every element)."""
    flat = elem.reshape(elem.shape[0], -1)
    s = flat.sum(-1)
    if reduction == "sum":
        return s
    if reduction == "mean":
        return s / live.reshape(live.shape[0], -1).sum(-1).clamp(min=1)
    if reduction == "positives":
        return s / npos.clamp(min=1)
    return s / flat.shape[1]


class TorchCheckCase(BinaryTestCase):
    """Posts a request as JSON and as binary tensors, asking for losses, grad and grad_norm, and holds both
    answers to torch autograd in float64 with the tolerance README "Accuracy" promises: relative 1e-5, or
    absolute 1e-7 below 1e-2 (grad entries: scaled by the sample's largest entry when that is above 1)."""

    def both(self, header, ids, x, targets, weights=None):
        """(JSON response, binary outputs) for the same request asking for losses, grad and grad_norm."""
        hdr = dict(header, outputs=["losses", "grad", "grad_norm"])
        body = json_body(ids, x, np.asarray(targets).tolist(), **hdr)
        if weights is not None:
            body["weights"] = as_f32(weights)
        j = self.d.loss(body)
        head, outs = parse_binary(self.loss_bin(dict(header, outputs=[{"name": "losses"}, {"name": "grad"},
                                                                      {"name": "grad_norm"}]),
                                                bin_tensors(ids, x, targets, weights=weights), accept=OCTET))
        self.assertEqual([o["name"] for o in head["outputs"]], ["losses", "grad", "grad_norm"])
        self.assertEqual(head["outputs"][1]["shape"], list(np.shape(x)))
        return j, outs

    def check(self, what, got_loss, got_grad, got_norm, loss, grad):
        loss, grad = loss.detach().numpy(), grad.detach().numpy()
        n = len(loss)
        got_grad = np.asarray(got_grad, dtype=np.float64).reshape(n, -1)
        grad = grad.reshape(n, -1)
        def bad(g, w, scale):
            g, w = np.asarray(g, dtype=np.float64), np.asarray(w)
            d = np.abs(g - w)
            return ~((d <= 1e-5 * np.abs(w)) | ((d <= 1e-7 * scale) & (np.abs(w) < 1e-2 * scale)))
        ones = np.ones(n)
        for name, g, w, scale in (("loss", got_loss, loss, ones), ("grad_norm", got_norm, np.sqrt((grad * grad).sum(-1)), ones),
                                  ("grad", got_grad, grad, np.maximum(1.0, np.abs(grad).max(-1))[:, None])):
            where = np.argwhere(bad(g, w, scale))
            if len(where):
                k = tuple(where[0])
                self.fail("%s %s%s: focald %r, torch %r (%d wrong)" % (what, name, list(k), np.asarray(g)[k], w[k], len(where)))

    def run_case(self, what, header, x, targets, torch_loss, weights=None):
        """torch_loss(X) gives the (n) per-sample losses of the float64 leaf X."""
        import torch
        ids = ["s%d" % i for i in range(np.shape(x)[0])]
        X = torch.tensor(np.asarray(x, dtype=np.float32).astype(np.float64), requires_grad=True)
        loss = torch_loss(X)
        loss.sum().backward()  # each sample's loss depends on its own rows only
        j, outs = self.both(header, ids, x, targets, weights)
        self.check(what + " (JSON)", j["losses"], j["grad"], j["grad_norm"], loss, X.grad)
        self.check(what + " (binary)", outs["losses"], outs["grad"], outs["grad_norm"], loss, X.grad)


@unittest.skipUnless(_torch(), "torch/torchvision not importable")
class GradientOutputsTest(TorchCheckCase):
    """outputs grad and grad_norm on POST /v1/loss against torchvision.ops.sigmoid_focal_loss for the sigmoid
    family and a softmax focal loss written in torch."""

    def test_sigmoid_focal_torchvision_every_reduction(self):
        import torch
        from torchvision.ops import sigmoid_focal_loss
        g = rng(40)
        x = g.normal(0, 3, (6, 5)).astype(np.float32)
        t = (g.random((6, 5)) < 0.3).astype(np.float32)
        t[0] = 0
        T = torch.tensor(t, dtype=torch.float64)
        for red in ("sum", "mean", "positives", "mean_elements"):
            self.run_case("sigmoid_focal %s multi-hot" % red, {"loss": {"reduction": red}}, x, t,
                          lambda X: _torch_reduce(sigmoid_focal_loss(X, T, alpha=0.25, gamma=2, reduction="none"), red,
                                                  torch.ones_like(T), T.sum(-1)))

    def test_sigmoid_focal_class_indices_rows_and_planar(self):
        import torch
        from torchvision.ops import sigmoid_focal_loss
        g = rng(41)
        for c in (3, 20):  # fewer classes than a vector (planar) and more (row by row)
            x = g.normal(0, 2, (5, c)).astype(np.float32)
            y = g.integers(0, c + 1, 5)  # c: background
            T = torch.zeros(5, c, dtype=torch.float64)
            for i, yi in enumerate(y):
                if yi < c:
                    T[i, yi] = 1
            self.run_case("sigmoid_focal c=%d gamma 1.5" % c, {"loss": {"gamma": 1.5, "alpha": 0.4}}, x, y,
                          lambda X: sigmoid_focal_loss(X, T, alpha=0.4, gamma=1.5, reduction="none").sum(-1))

    def test_sigmoid_focal_dense_positives_with_weights(self):
        import torch
        from torchvision.ops import sigmoid_focal_loss
        g = rng(42)
        x = g.normal(0, 2, (3, 4, 2)).astype(np.float32)
        y = g.integers(0, 3, (3, 4))
        w = g.uniform(0, 2, (3, 4, 2)).astype(np.float32)
        T = torch.nn.functional.one_hot(torch.tensor(y), 3)[..., :2].double()  # 2: background
        W = torch.tensor(w.astype(np.float64))
        self.run_case("sigmoid_focal dense positives weighted", {"loss": {"reduction": "positives"}}, x, y,
                      lambda X: _torch_reduce(sigmoid_focal_loss(X, T, reduction="none") * W, "positives", None,
                                              T.sum((1, 2))), weights=w)

    def test_kornia_profile_soft_targets(self):
        import torch
        g = rng(43)
        x = g.normal(0, 2, (4, 6)).astype(np.float32)
        t = g.random((4, 6)).astype(np.float32)
        T = torch.tensor(t.astype(np.float64))
        def kornia(X):  # kornia's binary_focal_loss_with_logits formula, alpha 0.25, gamma 2
            p, lp, ln = torch.sigmoid(X), torch.nn.functional.logsigmoid(X), torch.nn.functional.logsigmoid(-X)
            return (-0.25 * (1 - p) ** 2 * T * lp - 0.75 * p ** 2 * (1 - T) * ln).sum(-1)
        self.run_case("sigmoid_focal kornia soft", {"loss": {"profile": "kornia"}}, x, t, kornia)

    def test_binary_cross_entropy(self):
        import torch
        g = rng(44)
        x = g.normal(0, 4, (5, 4)).astype(np.float32)
        t = (g.random((5, 4)) < 0.5).astype(np.float32)
        T = torch.tensor(t, dtype=torch.float64)
        self.run_case("binary_cross_entropy mean", {"loss": {"type": "binary_cross_entropy", "reduction": "mean"}}, x, t,
                      lambda X: torch.nn.functional.binary_cross_entropy_with_logits(X, T, reduction="none").mean(-1))

    def test_softmax_focal_and_cross_entropy(self):
        import torch
        g = rng(45)
        x = g.normal(0, 2, (6, 5)).astype(np.float32)
        y = g.integers(0, 5, 6)
        Y = torch.tensor(y)
        alpha = [0.1, 0.3, 0.5, 0.7, 0.9]
        def focal(X, gamma, a=None):
            lp = torch.log_softmax(X, -1).gather(-1, Y[:, None])[:, 0]
            el = -(1 - lp.exp()) ** gamma * lp
            return el * torch.tensor(a, dtype=torch.float64)[Y] if a else el
        self.run_case("softmax_focal gamma 2", {"loss": {"type": "softmax_focal"}}, x, y, lambda X: focal(X, 2.0))
        self.run_case("softmax_focal gamma 0.5 per-class alpha", {"loss": {"type": "softmax_focal", "gamma": 0.5, "alpha": alpha}},
                      x, y, lambda X: focal(X, 0.5, alpha))
        self.run_case("cross_entropy", {"loss": {"type": "cross_entropy"}}, x, y,
                      lambda X: torch.nn.functional.cross_entropy(X, Y, reduction="none"))

    def test_softmax_focal_dense_mean_with_ignored_positions(self):
        import torch
        g = rng(46)
        x = g.normal(0, 2, (3, 5, 4)).astype(np.float32)
        y = g.integers(0, 4, (3, 5))
        y[0, 1] = y[2, 4] = -1
        Y = torch.tensor(y)
        live = (Y >= 0)
        def focal(X):
            lp = torch.log_softmax(X, -1).gather(-1, Y.clamp(min=0)[..., None])[..., 0]
            el = torch.where(live, -(1 - lp.exp()) ** 2 * lp, torch.zeros_like(lp))
            return el.sum(-1) / live.sum(-1)
        self.run_case("softmax_focal dense mean ignored", {"loss": {"type": "softmax_focal", "reduction": "mean"}}, x, y, focal)

    def test_large_request_split_across_workers(self):
        import torch
        from torchvision.ops import sigmoid_focal_loss
        g = rng(47)
        x = g.normal(0, 2, (64, 128, 80)).astype(np.float32)  # 655,360 elements: more than one scoring chunk
        y = g.integers(0, 81, (64, 128))
        T = torch.nn.functional.one_hot(torch.tensor(y), 81)[..., :80].double()
        self.run_case("sigmoid_focal dense, chunked", {}, x, y,
                      lambda X: sigmoid_focal_loss(X, T, reduction="none").sum((1, 2)))

    def test_json_without_outputs_has_no_gradients(self):
        x = np.array([[0, 1, 2]], dtype=np.float32)
        j = self.d.loss(json_body(["a"], x, [1]))
        self.assertNotIn("grad", j)
        self.assertNotIn("grad_norm", j)
        j = self.d.loss(json_body(["a"], x, [1], outputs=["grad_norm"]))
        self.assertNotIn("grad", j)
        self.assertEqual(len(j["grad_norm"]), 1)
        self.assertEqual(len(j["scores"]["p_t"]), 1)  # JSON keeps losses and scores whatever outputs says

    def test_batches_refuse_gradients(self):
        ds = self.ds_name()
        x = np.array([[0, 1, 2]], dtype=np.float32)
        r = self.d.post("/v1/datasets/%s/batches" % ds, json_body(["a"], x, [1], outputs=["losses", "grad"]))
        self.assertProblem(r, 422, "invalid_field", "/outputs/1")
        r = self.batch_bin(ds, {"outputs": [{"name": "grad_norm"}]}, bin_tensors(["a"], x, np.array([1])), accept=OCTET)
        self.assertProblem(r, 422, "invalid_field", "/outputs/0/name")
        self.assertEqual(self.d.get("/v1/datasets/%s" % ds).status, 404)  # nothing recorded


@unittest.skipUnless(_torch(), "torch/torchvision not importable")
class PosWeightTest(TorchCheckCase):
    """loss.pos_weight (JSON body and binary header) against torch's BCEWithLogitsLoss(pos_weight=...) and kornia's
    binary_focal_loss_with_logits formula (v0.8.3) in float64, losses and gradients; refused where it has no
    meaning."""

    def test_binary_cross_entropy_matches_torch(self):
        import torch
        g = rng(50)
        x = g.normal(0, 3, (5, 4)).astype(np.float32)
        t = (g.random((5, 4)) < 0.4).astype(np.float32)
        pw = [0.0, 0.5, 3.0, 40.0]
        T, PW = torch.tensor(t, dtype=torch.float64), torch.tensor(pw, dtype=torch.float64)
        self.run_case("binary_cross_entropy pos_weight", {"loss": {"type": "binary_cross_entropy", "pos_weight": pw}},
                      x, t, lambda X: torch.nn.BCEWithLogitsLoss(pos_weight=PW, reduction="none")(X, T).sum(-1))
        # one number weighs every class
        self.run_case("binary_cross_entropy pos_weight 2.5", {"loss": {"type": "binary_cross_entropy", "pos_weight": 2.5}},
                      x, t, lambda X: torch.nn.BCEWithLogitsLoss(pos_weight=torch.full((4,), 2.5), reduction="none")(X, T).sum(-1))

    def test_sigmoid_focal_matches_kornia_formula(self):
        import torch
        F = torch.nn.functional
        g = rng(51)
        x = g.normal(0, 2, (3, 6, 3)).astype(np.float32)
        y = g.integers(0, 4, (3, 6))  # 3: background
        pw = [2.0, 0.25, 7.0]
        T = F.one_hot(torch.tensor(y), 4)[..., :3].double()
        PW = torch.tensor(pw, dtype=torch.float64)
        def kornia(X):
            pos = -F.logsigmoid(-X).exp().pow(2.0) * T * F.logsigmoid(X)
            neg = -F.logsigmoid(X).exp().pow(2.0) * (1 - T) * F.logsigmoid(-X)
            return (PW * 0.25 * pos + 0.75 * neg).sum((1, 2))
        for prof in ("torchvision", "kornia"):  # one loss for hard targets
            self.run_case("sigmoid_focal %s pos_weight" % prof, {"loss": {"profile": prof, "pos_weight": pw}}, x, y, kornia)

    def test_refused_where_meaningless_or_invalid(self):
        x = np.array([[0, 1, 2]], dtype=np.float32)
        for loss in ("softmax_focal", "cross_entropy", "poly1_softmax_focal", "asl", "sigmoid_focal_star"):
            r = self.d.post("/v1/loss", json_body(["a"], x, [1], loss={"type": loss, "pos_weight": [1, 2, 3]}))
            p = self.assertProblem(r, 422, "invalid_loss", "/loss/pos_weight")
            self.assertIn(loss, p["detail"])
        r = self.d.post("/v1/loss", json_body(["a"], x, [1], loss={"pos_weight": [1, -2, 3]}))
        self.assertProblem(r, 422, "invalid_loss", "/loss/pos_weight/1")
        r = self.d.post("/v1/loss", json_body(["a"], x, [1], loss={"pos_weight": [1, 2]}))
        self.assertProblem(r, 422, "shape_mismatch", "/loss/pos_weight")
        r = self.d.post("/v1/loss", json_body(["a"], x, [1], loss={"pos_weight": [1, "2", 3]}))
        self.assertProblem(r, 422, "invalid_field", "/loss/pos_weight/1")
        r = self.loss_bin({"loss": {"type": "softmax_focal", "pos_weight": 2}}, bin_tensors(["a"], x, np.array([1])))
        self.assertProblem(r, 422, "invalid_loss", "/loss/pos_weight")


if __name__ == "__main__":
    sys.exit(harness.main())
