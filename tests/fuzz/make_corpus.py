#!/usr/bin/env python3
"""make_corpus.py — writes the fuzz targets' seed corpora under tests/fuzz/corpus/<target>/.

Each seed is small and means something: a valid request of each shape and target kind, each binary
datatype, each loss type, profile and reduction, the boundary values, and a few refusals worth
reaching (duplicate keys, duplicate ids, a truncated body). Run it after changing a target's input
format or adding a case, and commit the result; the directories are replaced as a whole.

usage: tests/fuzz/make_corpus.py [OUTDIR]   (default: tests/fuzz/corpus next to this file)
"""
import hashlib
import json
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def compact(obj):
    return json.dumps(obj, separators=(",", ":")).encode()


class Corpus:
    """The seeds of one target: name -> bytes, written as <name> (names say what a seed is)."""

    def __init__(self, target):
        self.target = target
        self.seeds = {}

    def add(self, name, data):
        assert name not in self.seeds, name
        self.seeds[name] = bytes(data)

    def write(self, outdir):
        d = os.path.join(outdir, self.target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in sorted(self.seeds.items()):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        return len(self.seeds), sum(len(v) for v in self.seeds.values())


# ----------------------------------------------------------------------------- JSON requests

def json_seeds():
    c = Corpus("fuzz_json_batch")
    base = {"ids": ["a", "b"], "logits": [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]], "targets": [2, 0]}
    c.add("index-targets.json", compact(base))
    c.add("store-fields.json", compact(dict(base, run="r1", batch_id="b-1", epoch=2, step=7, ohem_k=1,
                                            meta={"a": {"patient_id": "p1", "uri": "s3://x/a.dcm"}})))
    c.add("segments.json", compact(dict(base, ids=["a", "b", "a"], logits=base["logits"] + [[0.0, 1.0, 2.0]],
                                        targets=[2, 0, 1], epoch=1, meta={"a": {"uri": "s3://x/a"}},
                                        segments=[{"n": 2, "step": 4}, {"n": 1, "step": 5, "epoch": None}])))
    c.add("integer-ids.json", compact({"ids": [7, -8, 9223372036854775807], "logits": [[0.0], [1.0], [-1.0]],
                                       "targets": [1, 0, 1]}))
    c.add("ignored-label.json", compact({"ids": ["a", "b"], "logits": [[1, 2], [3, 4]], "targets": [-1, 2]}))
    c.add("multi-hot-rows.json", compact({"ids": ["a", "b"], "logits": [[1, -1, 0], [2, 0, -2]],
                                          "targets": [[1, 0, 1], [0, 0, 0]]}))
    c.add("soft-rows.json", compact({"ids": ["a"], "logits": [[0.3, -0.2]], "targets": [[0.25, 0.75]]}))
    c.add("binary-targets.json", compact({"ids": ["a", "b", "c"], "logits": [[2.0], [-3.0], [0.0]],
                                          "targets": [1, 0, 0.5]}))
    c.add("probs.json", compact({"ids": ["a", "b"], "probs": [[0.2, 0.7, 0.1], [0.0, 1.0, 0.0]], "targets": [0, 1]}))
    c.add("dense-index.json", compact({"ids": ["img1", "img2"],
                                       "logits": [[[1, 0], [0, 1], [2, 2]], [[0, 0], [1, -1], [3, 0]]],
                                       "targets": [[0, 1, 2], [1, -1, 0]]}))
    c.add("dense-rows.json", compact({"ids": ["img1"], "logits": [[[1, 0], [0, 1]]], "targets": [[[1, 0], [0, 0.5]]]}))
    c.add("dense-binary.json", compact({"ids": ["m1", "m2"], "logits": [[[0.5], [-0.5]], [[3], [-3]]],
                                        "targets": [[1, 0], [0, 1]]}))
    c.add("sigmoid-weights.json", compact(dict(base, weights=[[1, 0.5, 2], [0, 1, 1]])))
    c.add("softmax-weights.json", compact(dict(base, loss={"type": "softmax_focal"}, weights=[1.0, 0.25])))
    c.add("dense-softmax-weights.json", compact({"ids": ["x"], "logits": [[[1, 2], [3, 4]]], "targets": [[0, 1]],
                                                 "loss": {"type": "softmax_focal"}, "weights": [[1, 2]]}))
    losses = {
        "sigmoid_focal": {"gamma": 2, "alpha": None, "reduction": "mean"},
        "softmax_focal": {"gamma": 0, "alpha": [0.2, 0.3, 0.5], "reduction": "sum"},
        "sigmoid_focal_star": {"gamma": 1.5, "alpha": 0.25, "reduction": "positives"},
        "poly1_sigmoid_focal": {"epsilon": -1, "gamma": 2},
        "poly1_softmax_focal": {"epsilon": 2.5, "gamma": 0.5, "ignore_index": 255},
        "asl": {"gamma_pos": 0, "gamma_neg": 4, "clip": 0.05},
        "cross_entropy": {"alpha": [0.5, 0.25, 1], "reduction": "mean"},
        "binary_cross_entropy": {"gamma": 0, "alpha": 0.25},
    }
    for name, params in losses.items():
        c.add("loss-%s.json" % name, compact(dict(base, loss=dict(params, type=name))))
    for profile in ("torchvision", "monai", "kornia", "keras", "kornia_legacy"):
        for kind in ("sigmoid_focal", "softmax_focal"):
            c.add("profile-%s-%s.json" % (profile, kind), compact(dict(base, loss={"type": kind, "profile": profile})))
    c.add("keras-probs.json", compact({"ids": ["a"], "probs": [[0.0, 0.0, 0.0]], "targets": [[0, 1, 0]],
                                       "loss": {"type": "softmax_focal", "profile": "keras"}}))
    c.add("float-edges.json", compact({"ids": ["a", "b"], "logits": [[3.4028234e38, -3.4028234e38, 1e-45],
                                                                     [-0.0, 1e-400, 0]], "targets": [3, 0]}))
    c.add("integer-edges.json", compact(dict(base, epoch=65534, step=140737488355327,
                                             loss={"ignore_index": -9223372036854775808})))
    c.add("unicode-ids.json", '{"ids":["\u00e9","\u65e5\u672c","a b","x/y"],"logits":[[1],[2],[3],[4]],'
                              '"targets":[0,1,0,1]}'.encode("utf-8"))
    c.add("long-id.json", compact({"ids": ["L" * 256], "logits": [[1]], "targets": [1]}))
    # refusals worth reaching
    c.add("bad-duplicate-key.json", b'{"ids":["a"],"ids":["b"],"logits":[[1]],"targets":[1]}')
    c.add("bad-duplicate-id.json", compact({"ids": ["a", "a"], "logits": [[1], [2]], "targets": [1, 0]}))
    c.add("bad-shape.json", compact({"ids": ["a", "b"], "logits": [[1, 2], [3]], "targets": [0, 1]}))
    c.add("bad-label.json", compact({"ids": ["a"], "logits": [[1, 2]], "targets": [5]}))
    c.add("bad-nan.json", b'{"ids":["a"],"logits":[[NaN]],"targets":[1]}')
    c.add("bad-nesting.json", b'{"ids":["a"],"logits":' + b"[" * 40 + b"1" + b"]" * 40 + b',"targets":[1]}')
    c.add("bad-unknown-field.json", compact(dict(base, logit=[[1]])))
    c.add("bad-scalar.json", b"42")
    return c


# ----------------------------------------------------------------------------- binary requests

FLOAT_FMT = {"FP32": "<f", "FP64": "<d"}


def half(x):
    return struct.pack("<e", x)


def bf16(x):
    return struct.pack("<f", x)[2:]


def encode(dtype, values):
    if dtype in FLOAT_FMT:
        return b"".join(struct.pack(FLOAT_FMT[dtype], v) for v in values)
    if dtype == "FP16":
        return b"".join(half(v) for v in values)
    if dtype == "BF16":
        return b"".join(bf16(v) for v in values)
    if dtype == "INT64":
        return b"".join(struct.pack("<q", int(v)) for v in values)
    if dtype == "INT32":
        return b"".join(struct.pack("<i", int(v)) for v in values)
    if dtype in ("UINT8", "BOOL"):
        return bytes(int(v) & 0xFF for v in values)
    if dtype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in values)
    raise ValueError(dtype)


def framed(fields, tensors):
    """A binary body: the JSON header (fields plus inputs[]) and then each tensor's bytes.
    tensors: [(name, dtype, shape, values)]. Returns (header_len, body)."""
    inputs, data = [], b""
    for name, dtype, shape, values in tensors:
        raw = encode(dtype, values)
        inputs.append({"name": name, "datatype": dtype, "shape": shape, "parameters": {"binary_data_size": len(raw)}})
        data += raw
    header = compact(dict(fields, inputs=inputs))
    return len(header), header + data


MODE_STORE, MODE_ACCEPT, MODE_MISALIGN, MODE_EXPLICIT, MODE_GENERATED = 1, 2, 4, 8, 16


def binary_seeds():
    c = Corpus("fuzz_binary_batch")
    ids2 = ("ids", "INT64", [2], [7, 8])
    logits23 = [0, 1, 2, 2, -1, 0.5]
    # README's worked example, byte for byte (279-byte header, 42 bytes of tensors)
    hl, body = framed({"run": "r1"}, [ids2, ("logits", "FP32", [2, 3], logits23), ("targets", "UINT8", [2], [2, 0])])
    assert hl == 279 and len(body) == 321, (hl, len(body))
    c.add("readme-example.bin", bytes([MODE_STORE]) + body)
    c.add("readme-explicit-length.bin", bytes([MODE_EXPLICIT]) + struct.pack("<i", hl) + body)
    c.add("readme-misaligned.bin", bytes([MODE_MISALIGN]) + body)
    c.add("bad-missing-length.bin", bytes([MODE_EXPLICIT]) + struct.pack("<i", -1) + body)
    c.add("bad-malformed-length.bin", bytes([MODE_EXPLICIT]) + struct.pack("<i", -2) + body)
    c.add("bad-length-too-long.bin", bytes([MODE_EXPLICIT]) + struct.pack("<i", len(body) + 1) + body)
    c.add("bad-truncated.bin", bytes([0]) + body[:-1])
    for dt in ("FP16", "BF16", "FP64"):
        _, b = framed({}, [ids2, ("logits", dt, [2, 3], logits23), ("targets", "INT64", [2], [2, 0])])
        c.add("logits-%s.bin" % dt, bytes([0]) + b)
    for dt in ("INT64", "INT32", "UINT8", "BOOL"):
        _, b = framed({}, [ids2, ("logits", "FP32", [2, 3], logits23), ("targets", dt, [2], [1, 0])])
        c.add("targets-%s.bin" % dt, bytes([0]) + b)
    for dt in ("FP32", "FP16", "BF16", "FP64"):
        _, b = framed({}, [ids2, ("logits", "FP32", [2, 3], logits23), ("targets", dt, [2, 3], [1, 0, 1, 0, 0, 0.5])])
        c.add("target-rows-%s.bin" % dt, bytes([0]) + b)
    _, b = framed({}, [("ids", "BYTES", [3], [b"a", "\u00e9".encode(), b"x/y"]),
                       ("probs", "FP32", [3, 2], [0.2, 0.8, 1, 0, 0.5, 0.5]), ("targets", "INT32", [3], [1, 0, -1])])
    c.add("bytes-ids-probs.bin", bytes([0]) + b)
    _, b = framed({}, [ids2, ("logits", "FP32", [2, 1], [0.5, -2]), ("targets", "FP32", [2], [1, 0])])
    c.add("binary-targets.bin", bytes([0]) + b)
    _, b = framed({}, [ids2, ("logits", "FP16", [2, 2, 2], [1, 0, 0, 1, 2, 2, -1, 1]),
                       ("targets", "UINT8", [2, 2], [0, 1, 255, 0]), ("weights", "FP32", [2, 2, 2], [1] * 8)])
    c.add("dense-weights.bin", bytes([0]) + b)
    _, b = framed({"loss": {"type": "softmax_focal", "alpha": [0.5, 0.25, 0.25]}},
                  [("weights", "BF16", [2], [1, 0.5]), ids2, ("logits", "FP32", [2, 3], logits23),
                   ("targets", "INT64", [2], [2, 0])])
    c.add("softmax-weights-first.bin", bytes([0]) + b)
    _, b = framed({"run": "r2", "batch_id": "b7", "epoch": 1, "step": 9, "ohem_k": 1, "meta": {"7": {"uri": "s3://x"}},
                   "outputs": [{"name": "losses"}, {"name": "pred", "parameters": {"binary_data": True}}],
                   "parameters": {"binary_data_output": True}},
                  [ids2, ("logits", "FP32", [2, 3], logits23), ("targets", "UINT8", [2], [2, 0])])
    c.add("store-outputs.bin", bytes([MODE_STORE | MODE_ACCEPT]) + b)
    _, b = framed({"run": "r2", "epoch": 1, "segments": [{"n": 1, "step": 3}, {"n": 1, "step": 4}], "outputs": []},
                  [ids2, ("logits", "FP32", [2, 3], logits23), ("targets", "UINT8", [2], [2, 0])])
    c.add("store-segments.bin", bytes([MODE_STORE]) + b)
    _, b = framed({}, [ids2, ("logits", "FP32", [2, 3], [float("nan")] + logits23[1:]), ("targets", "UINT8", [2], [2, 0])])
    c.add("bad-nan-logit.bin", bytes([0]) + b)
    # recipes for the generator: shapes, datatypes and target kinds spread over the recipe's bits
    for i, recipe in enumerate([b"\x00\x00\x00\x01\x02", b"\x01\x15\x06\x02\x03\x02", b"\x05\x3c\x7e\x03\x01\x02",
                                b"\x61\xc5\x0f\x04\x04\x03", b"\xa2\x2a\xf7\x02\x00\x01", b"\x24\x81\x21\x05\x05",
                                b"\xe7\xff\x50\x01\x03\x04", b"\x10\x40\x80\x00\x02"]):
        c.add("generated-%d.bin" % i, bytes([MODE_GENERATED | (i & 3)]) + recipe + hashlib.sha256(recipe).digest())
    return c


# ----------------------------------------------------------------------------- review bodies

def review_seeds():
    c = Corpus("fuzz_review")
    for st in ("open", "queued", "in_review", "confirmed", "dismissed"):
        c.add("review-%s.json" % st, compact({"status": st, "reviewer": "ann", "note": "checked"}))
    c.add("review-relabel-index.json", compact({"status": "relabelled", "label": 3}))
    c.add("review-relabel-name.json", compact({"status": "relabelled", "label": "cat", "reviewer": None}))
    c.add("review-relabel-list.json", compact({"status": "relabelled", "label": [1, "dog", [2]]}))
    c.add("review-bad-label.json", compact({"status": "confirmed", "label": 2}))
    c.add("meta-dicom.json", compact({"study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_uid": "1.2.3.4.5",
                                      "patient_id": "p1", "uri": "s3://b/1.dcm", "tags": ["hard", "ct"]}))
    c.add("meta-tags-object.json", compact({"tags": {"site": "a", "n": 2}, "extra": {"z": [1, 2.5, None]}}))
    c.add("meta-unicode.json", '{"note":"\u00e9\u65e5","patient_id":null}'.encode("utf-8"))
    c.add("queue-minimal.json", compact({"name": "q1"}))
    c.add("queue-full.json", compact({"name": "q2", "by": "aum", "run": "r1", "size": 10000, "label": 2147483647,
                                      "min_seen": 4294967295, "max_per_label": 10, "min_per_label": 1,
                                      "quotas": {"0": {"min": 1, "max": 3}, "7": {"max": 2}},
                                      "dedupe_by": "patient_id"}))
    c.add("queue-star.json", compact({"name": "q.3-x_", "by": "forgetting", "run": "*", "label": None, "quotas": None}))
    c.add("bad-duplicate-key.json", b'{"status":"open","status":"queued"}')
    c.add("bad-not-object.json", b"[1,2]")
    return c


# ----------------------------------------------------------------------------- URLs

def cursor(by, run, label, min_seen, status_mask, reconsider, rank, score, sample):
    """A hard-examples cursor as api.c makes it: hex of 'v1|by|run|label|min_seen|status|reconsider|rank|score|id'."""
    plain = "v1|%d|%s|%s|%u|%u|%d|%d|%s|%s" % (by, run, label, min_seen, status_mask, reconsider, rank, score, sample)
    return plain.encode().hex()


def query_seeds():
    c = Corpus("fuzz_query")
    urls = [
        "GET /livez", "GET /readyz", "GET /openapi.json", "GET /v1/datasets", "GET /v1/datasets/d", "GET /v1/datasets/e",
        "GET /v1/datasets/nope", "GET /v1/datasets/d/hard-examples", "GET /v1/datasets/d/hard-examples?by=aum&k=3",
        "GET /v1/datasets/d/hard-examples?run=a&by=confidence&k=2&label=1&min_seen=2",
        "GET /v1/datasets/d/hard-examples?status=open,confirmed,relabelled&k=5",
        "GET /v1/datasets/d/hard-examples?run=*&by=forgetting&k=10000",
        "GET /v1/datasets/d/hard-examples?by=mean_loss&k=2&cursor=" + cursor(2, "*", "", 1, 7, 1, 2, "1.5", "s3"),
        "GET /v1/datasets/d/hard-examples?k=0&by=nope&run=..%2Fx&label=-1&min_seen=0&cursor=zz",
        "GET /v1/datasets/d/samples/x%2Fy", "GET /v1/datasets/d/samples/a%20b?run=b", "GET /v1/datasets/d/samples/a+b",
        "GET /v1/datasets/d/samples/%C3%A9", "GET /v1/datasets/d/samples/%25", "GET /v1/datasets/d/samples/%00",
        "GET /v1/datasets/d/samples/s1/reviews", "GET /v1/datasets/d/samples/s3/reviews",
        "GET /v1/datasets/d/relabels?since=0&limit=2", "GET /v1/datasets/d/relabels?since=x",
        "GET /v1/datasets/d/queues", "GET /v1/datasets/d/queues/q1?offset=1&limit=1", "GET /v1/datasets/d/queues/nope",
        "GET /v1/datasets/d/export?format=csv", "GET /v1/datasets/d/export?format=jsonl&by=aum&k=5",
        "GET /v1/datasets/d/export?format=label-studio&status=open", "GET /v1/datasets/d/export?format=fiftyone&run=a",
        "GET /v1/datasets/d/export?format=ohif&queue=q1", "GET /v1/datasets/d/export?format=xml",
        "POST /v1/datasets/d/hard-examples", "DELETE /v1/datasets/d", "PUT /v1/datasets/d/samples/s1/meta",
        "GET /v1//datasets", "GET /v1/datasets/d/samples/%ZZ", "Bearer s3cr3t-T0ken",
    ]
    for i, u in enumerate(urls):
        c.add("url-%02d" % i, u.encode())
    return c


# ----------------------------------------------------------------------------- kernel recipes

LOSSES = ["sigmoid_focal", "softmax_focal", "sigmoid_focal_star", "poly1_sigmoid_focal", "poly1_softmax_focal", "asl",
          "cross_entropy", "binary_cross_entropy"]
PROFILES = ["torchvision", "monai", "kornia", "keras", "kornia_legacy"]


def kernel_recipe(loss, profile=0, reduction=0, probs=False, targets=False, weights=False, alpha_c=False,
                  grad=True, grad_norm=True, scores=True, label_type=1, n=2, m=1, c=3, gamma0=False, ignore=0,
                  pos_weight=False):
    """Bytes that fuzz_kernels.c's build_case reads back as this case (see its order of reads)."""
    flags = (targets | weights << 1 | alpha_c << 2 | grad << 3 | grad_norm << 4 | scores << 5 | label_type << 6)
    out = bytes([loss, profile, reduction, int(probs), flags, n, m - 1, c - 1])
    out += bytes([0, int(gamma0), 0, 0, 0, 0, 0, ignore])  # parameter toggles: defaults, gamma = 0 if asked
    if alpha_c:
        out += bytes([(k * 5) % 6 for k in range(c)])  # alpha table indices
    grid = lambda k: 0xa0 + (k * 37) % 80  # x on the grid: logits -5 .. 4.9, probabilities 0 .. 1
    out += bytes(grid(k) for k in range(n * m * c))
    softmax = LOSSES[loss] in ("softmax_focal", "poly1_softmax_focal", "cross_entropy")
    if targets:
        out += bytes(k % 7 for k in range(n * m * c))  # 0, 1, 0, 1, 0.5, 0.25, 0.9
    else:
        # a byte b reads as label b % (c + 3) - 1: softmax 0 .. c - 1, sigmoid 0 .. c (c is background)
        out += bytes((k * 3) % (c if softmax else c + 1) + 1 for k in range(n * m))
    if weights:
        out += bytes(k % 6 for k in range(n * m * (1 if softmax else c)))
    if pos_weight:
        out += bytes([1]) + bytes(k % 6 for k in range(c))  # pos_weight table: 1, 2, 0, 0.5, 10, 1e4
    return out


def kernel_seeds():
    cp = Corpus("fuzz_kernels")
    for li, name in enumerate(LOSSES):
        for probs in (False, True):
            for targets in (False, True):
                cp.add("%s-%s-%s" % (name, "probs" if probs else "logits", "rows" if targets else "labels"),
                       kernel_recipe(li, probs=probs, targets=targets))
    for pi, prof in enumerate(PROFILES):
        for li in (0, 1):
            cp.add("profile-%s-%s" % (prof, LOSSES[li]), kernel_recipe(li, profile=pi, reduction=pi % 3, weights=True))
    cp.add("gamma0-sigmoid-bce", kernel_recipe(0, gamma0=True, alpha_c=True, weights=True, c=4))
    cp.add("gamma0-softmax-ce", kernel_recipe(1, gamma0=True, alpha_c=True, c=4, n=3))
    cp.add("rows-c17", kernel_recipe(0, c=17, ignore=1))            # row traversal at every vector width
    cp.add("planar-pairs-m16", kernel_recipe(0, c=2, m=16, n=1, grad=False))  # two-class masks, in registers
    cp.add("dense-m5-c5-mean", kernel_recipe(5, m=5, c=5, reduction=1, targets=True))
    cp.add("mean-elements-ignored", kernel_recipe(1, m=4, c=3, reduction=3, ignore=4))  # ignore_index -100
    cp.add("binary-c1", kernel_recipe(0, c=1, n=6, label_type=2))
    cp.add("softmax-u8-labels", kernel_recipe(1, c=20, n=1, label_type=2, reduction=2))
    cp.add("empty-batch", kernel_recipe(0, n=0))
    for li in (0, 3, 7):  # the losses that take pos_weight, in the row, planar and flat traversals
        cp.add("pos-weight-%s" % LOSSES[li], kernel_recipe(li, pos_weight=True, gamma0=li == 7, weights=True, c=5))
    cp.add("pos-weight-rows-c17", kernel_recipe(0, c=17, pos_weight=True))
    cp.add("pos-weight-kornia-rows", kernel_recipe(0, profile=2, targets=True, m=3, c=4, pos_weight=True))
    cp.add("pos-weight-pairs-m16", kernel_recipe(0, c=2, m=16, n=1, grad=False, pos_weight=True))
    cp.add("pos-weight-softmax-refused", kernel_recipe(1, pos_weight=True))
    return cp


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    for corpus in (json_seeds(), binary_seeds(), review_seeds(), query_seeds(), kernel_seeds()):
        n, size = corpus.write(outdir)
        print("%-18s %3d seeds, %6d bytes" % (corpus.target, n, size))


if __name__ == "__main__":
    main()
