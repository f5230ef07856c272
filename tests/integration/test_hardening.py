#!/usr/bin/python3
"""Hardening tests of focald (issue 6, checks 3 to 6 and the security points), against the real daemon.

usage: BUILD=build /usr/bin/python3 tests/integration/test_hardening.py [-v] [unittest names...]

- BadInputTest: a table of malformed, hostile or out-of-range requests (JSON bodies, names, ids and
  HTTP framing sent over raw sockets). Each case is its own test and asserts the documented status
  and `code` (and `field`), that /livez still answers, and that the database is what it was: the
  logical dump of every table (read through a read-only connection) and the bytes of the database
  file and its WAL. Where libmicrohttpd answers a request itself (an HTML body rather than
  problem+json), only the status is asserted.
- CrashSafetyTest: 20 rounds of four concurrent clients posting unique batches while focald is killed
  with SIGKILL at a random moment, restarted on the same database and checked: every acknowledged
  batch is stored once, a batch is stored whole or not at all, `PRAGMA integrity_check` is ok, and
  retrying each unanswered batch with its batch_id stores it exactly once.
- DiskFullTest: a database on a size-capped tmpfs, and a database under RLIMIT_FSIZE: writes answer
  507 storage_full and never a 2xx while full, reads keep working, and once there is space again
  focald carries on with every acknowledged batch intact.
- LimitsTest: connection timeout against stalled and trickling (slowloris) connections, the connection
  cap, the body limit answered before the body is sent, the header limit.
- StartRefusalTest: what focald refuses to start on (a file that is not focald's database, one it may not
  write, a --db that would keep nothing, a listen address that cannot be had) exits non-zero, says why in
  JSON log lines and leaves every file as it was.
- CreationFaultTest: the database's creation failing at every write and sync (the fault shim), and on a full
  tmpfs at every size, leaves nothing at --db, and the next start creates it.
- SignalTest: each stop signal while the database loads stops focald at once; with batches in flight each drains
  and keeps every acknowledged batch, while the other signals that would end a process are logged and ignored;
  SIGHUP drains unless ignored.
- LogLineTest: every log line is one JSON object, whatever path and method a request brings.
- Token, listen and TLS tests: bearer-token authentication, refusals at start-up, HTTPS.

The random moments of CrashSafetyTest come from FOCALD_IT_SEED when set (the seed in use is part of
every failure message). Uses tests/integration/harness.py's daemon and runner. The last
line of output is "ok N" when all N tests passed, or "failed K" when K failed, preceded by "ok P" for
the P that passed.

Needs root for the tmpfs cases (they fail otherwise), prlimit(1) and openssl(1).
"""
import fcntl
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Daemon, HardeningTestCase, run_focald, temp_dir  # noqa: E402

ANY = harness.ANY
DROP = harness.DROP
MARK = "123456.5"      # harness.MARK as it appears in json.dumps
base_body = harness.base_body
TOKEN = "focald-hardening-0123456789abcdef"
ALL_STATES = harness.ALL_STATES


# ---------------------------------------------------------------------------- helpers

def db_dump(db):
    """The logical content of the database: every table's schema and rows (iterdump), read through a
    read-only connection so that reading changes nothing."""
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=5)
    try:
        return "\n".join(c.iterdump())
    finally:
        c.close()


def db_bytes(db):
    """The bytes of the database file and its WAL (the -shm index is not data)."""
    out = []
    for p in (db, db + "-wal"):
        try:
            with open(p, "rb") as f:
                out.append(f.read())
        except FileNotFoundError:
            out.append(None)
    return out


def integrity_of_copy(db, scratch):
    """PRAGMA integrity_check of a copy of the database and its WAL (as a crash left them): the copy is
    recovered and checked; the files themselves are not touched."""
    os.makedirs(scratch, exist_ok=True)
    copy = os.path.join(scratch, "copy.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(copy + suffix):
            os.unlink(copy + suffix)
    shutil.copyfile(db, copy)
    if os.path.exists(db + "-wal"):
        shutil.copyfile(db + "-wal", copy + "-wal")
    c = sqlite3.connect(copy, timeout=5)
    try:
        return [row[0] for row in c.execute("PRAGMA integrity_check")]
    finally:
        c.close()


def raw_exchange(port, data, timeout=3.0):
    """Sends raw bytes on a fresh connection; returns (Resp or None, seconds until the answer or the
    close, how the connection ended: 'answered', 'closed' (no answer) or 'timeout')."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may answer and close before reading everything
        buf, how = harness.read_response(s, t0 + timeout)
        elapsed = time.monotonic() - t0
    if buf.startswith(b"HTTP/"):
        return harness.parse_raw_response(buf), elapsed, "answered"
    return None, elapsed, how


def raw_json_text(body, old=MARK, new=None):
    """The JSON text of body, with the unique marker old replaced by the raw text new."""
    text = json.dumps(body)
    if new is not None:
        assert text.count(old) == 1, (old, text)
        text = text.replace(old, new)
    return text.encode("utf-8")


# ---------------------------------------------------------------------------- bad input

def body_at(where, token):
    """A batch body with the raw JSON text `token` at one place (see POSITIONS)."""
    make, _ = POSITIONS[where]
    return raw_json_text(make(), MARK, token)


M = float(MARK)
# where: (a body with MARK at that place, the JSON pointer of the place)
POSITIONS = {
    "logits": (lambda: base_body(logits=[[M, -1.0, 0.5], [0.1, 0.2, -0.3], [-1.5, 1.0, 0.0]]), "/logits/0/0"),
    "probs": (lambda: base_body(logits=DROP, probs=[[M, 0.3, 0.5], [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]]), "/probs/0/0"),
    "weights": (lambda: base_body(weights=[[M, 1, 1], [1, 1, 1], [1, 1, 1]]), "/weights/0/0"),
    "soft_targets": (lambda: base_body(targets=[[M, 0, 1], [0, 1, 0], [1, 0, 0]]), "/targets/0/0"),
    "gamma": (lambda: base_body(loss={"gamma": M}), "/loss/gamma"),
    "alpha": (lambda: base_body(loss={"alpha": M}), "/loss/alpha"),
    "step": (lambda: base_body(step=M), "/step"),
    "label": (lambda: base_body(targets=[0, M, 2]), "/targets/1"),
    "id": (lambda: base_body(ids=["s0", M, "s2"]), "/ids/1"),
    "ohem_k": (lambda: base_body(ohem_k=M), "/ohem_k"),
}

NONFINITE_SPELLINGS = ["NaN", "nan", "NAN", "-NaN", "+NaN", "Infinity", "-Infinity", "+Infinity", "infinity",
                       "-infinity", "inf", "-inf", "+inf", "Inf", "INF", "1e400", "-1e400", "1E400", "1e99999"]
NONFINITE_SHORT = ["NaN", "Infinity", "-Infinity", "nan", "inf", "1e400"]
STRING_SPELLINGS = ["NaN", "nan", "Infinity", "-Infinity", "inf", "-inf", "1e400", "", "0.5"]
STRING_SHORT = ["NaN", "Infinity", "-inf", "0.5"]


def _slug(s):
    """A spelling as part of a test name: -Infinity -> minus_Infinity, "" -> empty."""
    if not s:
        return "empty"
    return re.sub(r"[^A-Za-z0-9_]", "_", s.replace("-", "minus_").replace("+", "plus_"))


def _nonfinite_cases():
    out = []
    for sp in NONFINITE_SPELLINGS:
        out.append(("bare_%s_in_logits" % _slug(sp), {"raw": body_at("logits", sp)}, 400, "bad_json", None))
    for where in ("probs", "weights", "soft_targets", "gamma", "alpha", "step"):
        for sp in NONFINITE_SHORT:
            out.append(("bare_%s_in_%s" % (_slug(sp), where), {"raw": body_at(where, sp)}, 400, "bad_json", None))
    # as strings the body is JSON: a string where a number belongs
    num_codes = ("invalid_field", "not_finite")
    for sp in STRING_SPELLINGS:
        out.append(("string_%s_in_logits" % _slug(sp), {"raw": body_at("logits", json.dumps(sp))}, 422, num_codes,
                    "/logits/0/0"))
    for where, codes in (("probs", num_codes), ("weights", num_codes), ("soft_targets", num_codes),
                         ("gamma", ("invalid_loss", "invalid_field")), ("alpha", ("invalid_loss", "invalid_field")),
                         ("step", "invalid_field"), ("label", "invalid_field")):
        for sp in STRING_SHORT:
            out.append(("string_%s_in_%s" % (_slug(sp), where), {"raw": body_at(where, json.dumps(sp))}, 422, codes,
                        POSITIONS[where][1]))
    return out


I63 = 2 ** 63


def _integer_cases():
    out = []
    for where in ("logits", "label", "step", "id", "ohem_k"):
        out.append(("int_2_pow_63_in_%s" % where, {"raw": body_at(where, str(I63))}, 400, "bad_json", None))
        out.append(("int_minus_2_pow_63_minus_1_in_%s" % where, {"raw": body_at(where, str(-I63 - 1))}, 400,
                    "bad_json", None))
    out.append(("int_2_pow_64_in_label", {"raw": body_at("label", str(2 ** 64))}, 400, "bad_json", None))
    out.append(("int_2_pow_63_minus_1_label", {"raw": body_at("label", str(I63 - 1))}, 422, "label_out_of_range",
                "/targets/1"))
    out.append(("int_minus_2_pow_63_label", {"raw": body_at("label", str(-I63))}, 422, "label_out_of_range",
                "/targets/1"))
    # a label that would wrap to a valid class if truncated to 32 bits
    out.append(("int_2_pow_32_label", {"raw": body_at("label", str(2 ** 32))}, 422, "label_out_of_range",
                "/targets/1"))
    out.append(("int_2_pow_32_plus_1_label", {"raw": body_at("label", str(2 ** 32 + 1))}, 422, "label_out_of_range",
                "/targets/1"))
    out.append(("int_2_pow_31_label", {"raw": body_at("label", str(2 ** 31))}, 422, "label_out_of_range",
                "/targets/1"))
    out.append(("int_2_pow_63_minus_1_step", {"raw": body_at("step", str(I63 - 1))}, 422, "out_of_range", "/step"))
    out.append(("int_2_pow_47_step", {"raw": body_at("step", str(2 ** 47))}, 422, "out_of_range", "/step"))
    out.append(("int_minus_2_pow_63_step", {"raw": body_at("step", str(-I63))}, 422, "out_of_range", "/step"))
    out.append(("epoch_65535", {"body": base_body(epoch=65535)}, 422, "out_of_range", "/epoch"))
    out.append(("epoch_negative", {"body": base_body(epoch=-1)}, 422, "out_of_range", "/epoch"))
    out.append(("ohem_k_2_pow_32_plus_1", {"raw": body_at("ohem_k", str(2 ** 32 + 1))}, 422, "out_of_range",
                "/ohem_k"))
    out.append(("minus_1e400_in_probs", {"raw": body_at("probs", "-1e400")}, 400, "bad_json", None))
    # a number token longer than 4096 characters, though its value (0.5) is in range
    for where in ("logits", "weights", "gamma", "step"):
        out.append(("number_of_4097_characters_in_%s" % where, {"raw": body_at(where, "0." + "5" + "0" * 4094)}, 400,
                    "bad_json", None))
    return out


def _dense(rows_m2):
    return base_body(run="dense-fresh", logits=[[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]]] * 3, targets=rows_m2)


RANGE_CASES = [
    ("probs_just_above_one", {"body": base_body(logits=DROP, probs=[[1.0000001, 0.0, 0.0], [0.1] * 3, [0.3] * 3])},
     422, "out_of_range", "/probs/0/0"),
    ("probs_tiny_negative", {"body": base_body(logits=DROP, probs=[[0.2, 0.3, 0.5], [0.1, -1e-30, 0.1], [0.3] * 3])},
     422, "out_of_range", "/probs/1/1"),
    ("probs_1e30", {"body": base_body(logits=DROP, probs=[[0.2, 0.3, 0.5], [0.1] * 3, [0.3, 0.3, 1e30]])},
     422, "out_of_range", "/probs/2/2"),
    ("probs_integer_2", {"body": base_body(logits=DROP, probs=[[2, 0, 0], [0.1] * 3, [0.3] * 3])},
     422, "out_of_range", "/probs/0/0"),
    ("probs_dense_above_one", {"body": base_body(run="dense-fresh", logits=DROP, targets=[[0, 1], [1, 0], [0, 0]],
                                                 probs=[[[0.2, 0.5, 0.3], [0.5, 0.4, 0.1]],
                                                        [[0.1, 0.8, 0.1], [1.5, 0.2, 0.3]],
                                                        [[0.3, 0.3, 0.4], [0.6, 0.2, 0.2]]])},
     422, "out_of_range", "/probs/1/1/0"),
    ("soft_targets_above_one", {"body": base_body(targets=[[1, 0, 0], [0, 1, 1.5], [0, 0, 1]])}, 422,
     "out_of_range", "/targets/1/2"),
    ("soft_targets_negative", {"body": base_body(targets=[[-0.25, 0, 1], [0, 1, 0], [0, 0, 1]])}, 422,
     "out_of_range", "/targets/0/0"),
    ("binary_c1_target_above_one", {"body": base_body(run="c1-fresh", logits=[[0.5], [1.0], [2.0]],
                                                      targets=[0.0, 1.5, 1.0])}, 422, "out_of_range", "/targets/1"),
    ("binary_c1_target_negative", {"body": base_body(run="c1-fresh", logits=[[0.5], [1.0], [2.0]],
                                                     targets=[0.0, 1.0, -0.5])}, 422, "out_of_range", "/targets/2"),
    ("alpha_just_above_one", {"body": base_body(loss={"alpha": 1.0000001})}, 422, "invalid_loss", "/loss/alpha"),
    ("dense_label_out_of_range", {"body": _dense([[0, 1], [2, 5], [0, 0]])}, 422, "label_out_of_range",
     "/targets/1/1"),
    ("dense_label_negative", {"body": _dense([[0, 1], [2, 0], [-3, 0]])}, 422, "label_out_of_range", "/targets/2/0"),
    ("label_minus_one_with_other_ignore_index", {"body": base_body(loss={"ignore_index": 7}, targets=[-1, 1, 2])},
     422, "label_out_of_range", "/targets/0"),
    ("softmax_label_equal_to_c", {"body": base_body(run="softmax-fresh", loss={"type": "softmax_focal"},
                                                    targets=[0, 1, 3])}, 422, "label_out_of_range", "/targets/2"),
]

SHAPE = ("shape_mismatch", "invalid_field")
SHAPE_CASES = [
    ("logits_flat_numbers", {"body": base_body(logits=[2.0, -1.0, 0.5])}, 422, SHAPE, ("/logits", "/logits/0")),
    ("logits_4d", {"body": base_body(logits=[[[[1.0, 0.0, 0.0]]]] * 3)}, 422, SHAPE, ANY),
    ("logits_empty_rows", {"body": base_body(logits=[[], [], []])}, 422, SHAPE, ("/logits", "/logits/0")),
    ("logits_dense_ragged_positions", {"body": base_body(run="dense-fresh", logits=[
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]],
        targets=[[0, 1], [0], [0, 1]])}, 422, "shape_mismatch", "/logits/1"),
    ("logits_dense_ragged_classes", {"body": base_body(run="dense-fresh", logits=[
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0], [0.0, 1.0]], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]],
        targets=[[0, 1], [0, 1], [0, 1]])}, 422, "shape_mismatch", "/logits/1/1"),
    ("logits_row_not_array", {"body": base_body(logits=[[2.0, -1.0, 0.5], 5, [0.0, 0.0, 0.0]])}, 422, SHAPE,
     "/logits/1"),
    ("logits_string", {"body": base_body(logits="2.0")}, 422, "invalid_field", "/logits"),
    ("logits_object", {"body": base_body(logits={"0": [1.0, 2.0, 3.0]})}, 422, "invalid_field", "/logits"),
    ("logits_element_null", {"body": base_body(logits=[[2.0, None, 0.5], [0.1] * 3, [0.0] * 3])}, 422,
     ("invalid_field", "not_finite"), "/logits/0/1"),
    ("logits_element_bool", {"body": base_body(logits=[[2.0, True, 0.5], [0.1] * 3, [0.0] * 3])}, 422,
     "invalid_field", "/logits/0/1"),
    ("more_ids_than_rows", {"body": base_body(ids=["s0", "s1", "s2", "s3"])}, 422, "shape_mismatch",
     ("/logits", "/targets", "/ids")),
    ("more_targets_than_ids", {"body": base_body(targets=[0, 1, 2, 0])}, 422, "shape_mismatch", "/targets"),
    ("multi_hot_row_short", {"body": base_body(targets=[[1, 0, 0], [0, 1], [0, 0, 1]])}, 422, "shape_mismatch",
     "/targets/1"),
    ("targets_mixed_indices_and_rows", {"body": base_body(targets=[0, [0, 1, 0], 2])}, 422, SHAPE,
     ("/targets", "/targets/0", "/targets/1")),
    ("targets_per_position_for_flat_logits", {"body": base_body(targets=[[0], [1], [2]])}, 422, SHAPE, ANY),
    ("targets_empty", {"body": base_body(targets=[])}, 422, "shape_mismatch", "/targets"),
    ("probs_row_short", {"body": base_body(logits=DROP, probs=[[0.2, 0.3, 0.5], [0.5, 0.5], [0.3, 0.3, 0.4]])},
     422, "shape_mismatch", "/probs/1"),
    ("weights_dense_for_flat_logits", {"body": base_body(weights=[[[1, 1, 1]]] * 3)}, 422, SHAPE, ANY),
    ("weights_scalar", {"body": base_body(weights=1.0)}, 422, SHAPE, "/weights"),
    ("alpha_list_too_long", {"body": base_body(loss={"alpha": [0.25] * 4})}, 422, ("invalid_loss", "shape_mismatch"),
     "/loss/alpha"),
    ("ids_nested_array", {"body": base_body(ids=[["s0"], "s1", "s2"])}, 422, "invalid_field", "/ids/0"),
    ("ids_object", {"body": base_body(ids={"s0": 1})}, 422, "invalid_field", "/ids"),
    ("meta_over_64_kib", {"body": base_body(meta={"s0": {"note": "x" * (66 * 1024)}})}, 422, "too_large", "/meta/s0"),
]


def _dup(extra):
    """The base body's JSON text with extra members appended (raw text, may repeat keys)."""
    return harness.raw_json(base_body())[:-1] + extra + b"}"


DUP_CASES = [
    ("dup_key_logits", {"raw": _dup(b', "logits": [[0, 0, 0], [0, 0, 0], [0, 0, 0]]')}, 400, "bad_json", None),
    ("dup_key_identical_value", {"raw": _dup(b', "run": "default"')}, 400, "bad_json", None),
    ("dup_key_spelled_with_escape", {"raw": _dup(b', "\\u0069ds": ["a", "b", "c"]')}, 400, "bad_json", None),
    ("dup_key_in_sample_meta", {"raw": _dup(b', "meta": {"s0": {"k": 1, "k": 2}}')}, 400, "bad_json", None),
    ("dup_sample_in_meta", {"raw": _dup(b', "meta": {"s0": {"k": 1}, "s0": {"k": 2}}')}, 400, "bad_json", None),
]

NUL_CASES = [
    ("nul_in_run", {"body": base_body(run="de\u0000fault")}, 400, "bad_json", None),
    ("nul_at_end_of_id", {"body": base_body(ids=["s0\u0000", "s1", "s2"])}, 400, "bad_json", None),
    ("nul_as_whole_id", {"body": base_body(ids=["\u0000", "s1", "s2"])}, 400, "bad_json", None),
    ("nul_in_batch_id", {"body": base_body(batch_id="b\u0000x")}, 400, "bad_json", None),
    ("nul_in_meta_value", {"body": base_body(meta={"s0": {"k": "a\u0000b"}})}, 400, "bad_json", None),
    ("nul_in_meta_key", {"body": base_body(meta={"s0": {"k\u0000": 1}})}, 400, "bad_json", None),
    ("nul_in_loss_type", {"body": base_body(loss={"type": "sigmoid_focal\u0000x"})}, 400, "bad_json", None),
    ("nul_in_dataset_path", {"path": "/v1/datasets/a%00b/batches"}, 422, "bad_name", ANY),
    ("control_char_in_dataset_path", {"path": "/v1/datasets/a%01b/batches"}, 422, "bad_name", ANY),
    ("control_char_u0001_in_id", {"body": base_body(ids=["s\u0001", "s1", "s2"])}, 422, "bad_name", "/ids/0"),
    ("control_char_newline_in_id", {"body": base_body(ids=["s0", "s\n1", "s2"])}, 422, "bad_name", "/ids/1"),
    ("control_char_del_in_id", {"body": base_body(ids=["s0", "s1", "s\u007f"])}, 422, "bad_name", "/ids/2"),
    ("control_char_c1_in_id", {"body": base_body(ids=["s\u0085", "s1", "s2"])}, 422, "bad_name", "/ids/0"),
]

MALFORMED_CASES = [
    ("invalid_utf8_in_id", {"raw": harness.raw_json(base_body()).replace(b'"s0"', b'"s\xff"')}, 400, "bad_json", None),
    ("overlong_utf8_slash_in_id", {"raw": harness.raw_json(base_body()).replace(b'"s0"', b'"..\xc0\xafx"')}, 400,
     "bad_json", None),
    ("lone_surrogate_escape_in_id", {"raw": harness.raw_json(base_body()).replace(b'"s0"', b'"\\ud800"')}, 400,
     "bad_json", None),
    ("byte_order_mark", {"raw": b"\xef\xbb\xbf" + harness.raw_json(base_body())}, 400, "bad_json", None),
    ("utf16_body", {"raw": json.dumps(base_body()).encode("utf-16")}, 400, "bad_json", None),
    ("trailing_garbage", {"raw": harness.raw_json(base_body()) + b" x"}, 400, "bad_json", None),
    ("two_documents", {"raw": harness.raw_json(base_body()) + harness.raw_json(base_body())}, 400, "bad_json", None),
    ("truncated_in_string", {"raw": harness.raw_json(base_body())[:12]}, 400, "bad_json", None),
    ("truncated_in_number", {"raw": harness.raw_json(base_body()).split(b"2.0")[0] + b"2."}, 400, "bad_json", None),
    ("comment", {"raw": b"/* c */" + harness.raw_json(base_body())}, 400, "bad_json", None),
    ("single_quotes", {"raw": harness.raw_json(base_body()).replace(b'"run"', b"'run'")}, 400, "bad_json", None),
    ("trailing_comma", {"raw": harness.raw_json(base_body())[:-1] + b",}"}, 400, "bad_json", None),
    ("depth_3000_whole_body", {"raw": b"[" * 3000 + b"]" * 3000}, 400, "bad_json", None),
    ("depth_3000_in_logits", {"raw": raw_json_text(base_body(logits=M), MARK, "[" * 3000 + "0" + "]" * 3000)}, 400,
     "bad_json", None),
    ("depth_3000_objects_in_meta", {"raw": _dup(b', "meta": {"s0": ' + b'{"a": ' * 3000 + b"1" + b"}" * 3000 + b"}")},
     400, "bad_json", None),
    ("depth_2100_in_meta", {"raw": _dup(b', "meta": {"s0": {"a": ' + b"[" * 2100 + b"]" * 2100 + b"}}")}, 400,
     "bad_json", None),
]

NAME_CASES = [
    ("dataset_empty", {"path": "/v1/datasets//batches"}, (404, 422), ("not_found", "bad_name"), ANY),
    ("dataset_dot_dot_slash_raw", {"path": "/v1/datasets/../x/batches"}, (404, 422), ("not_found", "bad_name"), ANY),
    ("dataset_encoded_traversal", {"path": "/v1/datasets/..%2F..%2Fetc%2Fpasswd/batches"}, 422, "bad_name", ANY),
    ("dataset_backslash", {"path": "/v1/datasets/a%5Cb/batches"}, 422, "bad_name", ANY),
    ("dataset_1000_chars", {"path": "/v1/datasets/%s/batches" % ("d" * 1000)}, 422, "bad_name", ANY),
    ("run_slash", {"body": base_body(run="x/y")}, 422, "bad_name", "/run"),
    ("run_backslash", {"body": base_body(run="a\\b")}, 422, "bad_name", "/run"),
    ("run_percent_encoded_dots", {"body": base_body(run="%2e%2e")}, 422, "bad_name", "/run"),
    ("run_non_ascii", {"body": base_body(run="\u00e9t\u00e9")}, 422, "bad_name", "/run"),
    ("run_1000_chars", {"body": base_body(run="r" * 1000)}, 422, "bad_name", "/run"),
    ("batch_id_10000_bytes", {"body": base_body(batch_id="b" * 10000)}, 422, "bad_name", "/batch_id"),
    ("id_257_ascii_bytes", {"body": base_body(ids=["i" * 257, "s1", "s2"])}, 422, "bad_name", "/ids/0"),
    ("id_100_kib", {"body": base_body(ids=["s0", "i" * 102400, "s2"])}, 422, "bad_name", "/ids/1"),
    ("id_65_four_byte_chars", {"body": base_body(ids=["s0", "s1", "\U0001F600" * 65])}, 422, "bad_name", "/ids/2"),
    ("get_sample_with_over_long_id", {"method": "GET", "path": "/v1/datasets/hb/samples/%s" % ("i" * 300)}, 404,
     "sample_not_found", ANY),
    ("get_dataset_with_nul", {"method": "GET", "path": "/v1/datasets/hb%00"}, 404, "dataset_not_found", ANY),
]


def _raw_batch(tag):
    """A valid batch body (ids unique to tag, so that storing it would show) and its length."""
    b = harness.raw_json(base_body(ids=["raw-%s-%d" % (tag, i) for i in range(3)]))
    return b, len(b)


def _req(tag, headers, body=b""):
    return (b"POST /v1/datasets/hb/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + headers + b"\r\n" + body)


def _chunked(b):
    return b"%x\r\n" % len(b) + b + b"\r\n0\r\n\r\n"


def _raw_http_cases():
    out = []

    def add(name, data, statuses, code=None):
        out.append((name, {"http": data}, statuses, code, None))

    b, n = _raw_batch("cl2")
    add("content_length_twice_different", _req("cl2", b"Content-Length: %d\r\nContent-Length: %d\r\n" % (n, n + 5), b),
        400)
    b, n = _raw_batch("cl2r")
    add("content_length_twice_different_larger_first",
        _req("cl2r", b"Content-Length: %d\r\nContent-Length: %d\r\n" % (n + 5, n), b), 400)
    b, n = _raw_batch("cllist")
    add("content_length_list_different", _req("cllist", b"Content-Length: %d, %d\r\n" % (n, n + 5), b), 400)
    b, n = _raw_batch("clneg")
    add("content_length_negative", _req("clneg", b"Content-Length: -%d\r\n" % n, b), 400)
    b, n = _raw_batch("cljunk")
    add("content_length_junk", _req("cljunk", b"Content-Length: %dabc\r\n" % n, b), 400)
    b, n = _raw_batch("clplus")
    add("content_length_plus_sign", _req("clplus", b"Content-Length: +%d\r\n" % n, b), 400)
    b, n = _raw_batch("clte")
    add("content_length_and_chunked", _req("clte", b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % n,
                                           _chunked(b)), 400)
    b, n = _raw_batch("tecl")
    add("chunked_and_content_length", _req("tecl", b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % n,
                                           _chunked(b)), 400)
    b, n = _raw_batch("tegzip")
    add("transfer_encoding_gzip", _req("tegzip", b"Transfer-Encoding: gzip\r\n", b), (400, 501))
    b, n = _raw_batch("tecg")
    add("transfer_encoding_chunked_then_gzip", _req("tecg", b"Transfer-Encoding: chunked, gzip\r\n", _chunked(b)),
        (400, 501))
    b, n = _raw_batch("tegc")
    add("transfer_encoding_gzip_then_chunked", _req("tegc", b"Transfer-Encoding: gzip, chunked\r\n", _chunked(b)),
        (400, 415, 501))
    b, n = _raw_batch("tex")
    add("transfer_encoding_unknown", _req("tex", b"Transfer-Encoding: xchunked\r\n", _chunked(b)), (400, 501))
    b, n = _raw_batch("te2")
    add("transfer_encoding_chunked_twice", _req("te2", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                                                _chunked(b)), 400)
    b, n = _raw_batch("tesp")
    add("space_before_header_colon", _req("tesp", b"Transfer-Encoding : chunked\r\nContent-Length: %d\r\n" % n,
                                          _chunked(b)), 400, "bad_request")
    b, n = _raw_batch("tesp2")
    add("space_before_colon_of_length", _req("tesp2", b"Content-Length : %d\r\n" % n, b), 400)
    b, n = _raw_batch("tab")
    add("tab_before_header_colon", _req("tab", b"X-Other\t: 1\r\nContent-Length: %d\r\n" % n, b), 400)
    # two binary header lengths, or two credentials: which one would count is left to chance
    b, n = _raw_batch("ihl2")
    add("inference_header_length_twice", _req("ihl2", b"Inference-Header-Content-Length: 10\r\n"
                                          b"Inference-Header-Content-Length: 12\r\nContent-Length: %d\r\n" % n, b),
        400, "bad_request")
    b, n = _raw_batch("auth2")
    add("authorization_twice", _req("auth2", b"Authorization: Bearer a\r\nAuthorization: Bearer b\r\n"
                                    b"Content-Length: %d\r\n" % n, b), 400, "bad_request")
    # two body types: one server may read the first (JSON, UTF-8), a proxy in front the last (another charset)
    b, n = _raw_batch("ct2")
    add("content_type_twice", _req("ct2", b"Content-Type: application/json; charset=latin1\r\n"
                                   b"Content-Length: %d\r\n" % n, b), 400, "bad_request")
    b, n = _raw_batch("chunkbad")
    add("chunk_size_not_hex", _req("chunkbad", b"Transfer-Encoding: chunked\r\n", b"zz\r\n" + b + b"\r\n0\r\n\r\n"),
        400)
    b, n = _raw_batch("chunkbig")
    add("chunk_size_overflow", _req("chunkbig", b"Transfer-Encoding: chunked\r\n",
                                    b"fffffffffffffffffffff\r\n" + b + b"\r\n0\r\n\r\n"), (400, 413))
    b, n = _raw_batch("clhuge")
    add("content_length_overflow", _req("clhuge", b"Content-Length: 99999999999999999999999\r\n", b), (400, 413))
    b, n = _raw_batch("h300k")
    add("one_300_kib_header", _req("h300k", b"X-Big: " + b"a" * (300 * 1024) + b"\r\nContent-Length: %d\r\n" % n, b),
        431)
    b, n = _raw_batch("hmany")
    add("twenty_thousand_headers", _req("hmany", b"".join(b"X-H%d: v\r\n" % i for i in range(20000))
                                        + b"Content-Length: %d\r\n" % n, b), 431)
    add("request_target_300_kib", b"GET /v1/datasets/" + b"d" * (300 * 1024) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        (414, 431))
    add("body_content_length_over_limit_not_sent", _req("big", b"Content-Length: %d\r\n" % (BadInputTest.MAX_BODY + 1)),
        413, "body_too_large")
    add("body_content_length_over_limit_with_expect",
        _req("bigx", b"Content-Length: %d\r\nExpect: 100-continue\r\n" % (BadInputTest.MAX_BODY * 4)), 413,
        "body_too_large")
    big = harness.raw_json(base_body())[:-1] + b" " * (BadInputTest.MAX_BODY + 10) + b"}"
    add("body_chunked_over_limit", _req("bigc", b"Transfer-Encoding: chunked\r\n",
                                        b"".join(b"%x\r\n" % len(big[i:i + 4096]) + big[i:i + 4096] + b"\r\n"
                                                 for i in range(0, len(big), 4096)) + b"0\r\n\r\n"),
        413, "body_too_large")
    add("body_over_limit_on_meta", b"PUT /v1/datasets/hb/samples/s0/meta HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (BadInputTest.MAX_BODY + 1), 413,
        "body_too_large")
    return out


class BadInputTest(HardeningTestCase):
    """README: "A request that gets an error changes nothing." The database, read back after every
    case, must be exactly what it was."""
    DS = "hb"
    MAX_BODY = 256 * 1024
    RAW_TIMEOUT = 2.5

    @classmethod
    def setUpClass(cls):
        # history first, written out by a clean stop, so that every table has rows to protect
        cls.db_dir = temp_dir()
        d0 = Daemon(cls.__name__, db_dir=cls.db_dir).start()
        d0.ok_batch(cls.DS, base_body(batch_id="first", meta={"s0": {"uri": "a.png"}}))
        d0.ok_batch(cls.DS, base_body(run="other", step=2, batch_id="second", ids=["s0", "s3", 7]))
        rc = d0.stop()
        if rc != 0:
            raise AssertionError("the set-up daemon exited with status %s" % rc)
        # then no snapshot pass while the cases run: an idle pass rewrites snapshot.written_at
        cls.d = Daemon(cls.__name__, db_dir=cls.db_dir,
                       args=("--snapshot-interval", "3600", "--max-body", cls.MAX_BODY,
                             "--connection-timeout", "3")).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        if rc != 0:
            raise AssertionError("%s's focald exited with status %s after SIGTERM" % (cls.__name__, rc))

    def state(self):
        d = self.d
        api = (d.get("/v1/datasets").json(), d.dataset(self.DS).json(), d.all_hard(self.DS, run="*"),
               d.sample(self.DS, "s0").json(), d.sample(self.DS, "7").json())
        return {"dump": db_dump(d.db), "bytes": db_bytes(d.db), "api": api}

    def assertUnchanged(self, before, what):
        after = self.state()
        self.assertEqual(after["api"], before["api"], "%s changed what the API answers" % what)
        self.assertEqual(after["dump"], before["dump"], "%s changed the database's content" % what)
        self.assertTrue(after["bytes"] == before["bytes"], "%s changed the bytes of the database or its WAL" % what)
        r = self.d.get("/livez", timeout=3)
        self.assertEqual(r.status, 200, "/livez after %s: %r" % (what, r))

    def run_case(self, req, status, code, field):
        before = self.state()
        if "http" in req:
            r, elapsed, how = raw_exchange(self.d.port, req["http"], timeout=self.RAW_TIMEOUT)
            statuses = status if isinstance(status, tuple) else (status,)
            self.assertIsNotNone(r, "no HTTP answer (%s after %.1f s); expected %s" % (how, elapsed, statuses))
            stored = self.state()["api"] != before["api"]
            self.assertIn(r.status, statuses, "%r; the batch was %s" % (r, "STORED" if stored else "not stored"))
            if code:
                self.assertProblem(r, status, code)
        else:
            path = req.get("path", "/v1/datasets/%s/batches" % self.DS)
            body = req["raw"] if "raw" in req else req.get("body", base_body())
            r = self.d.request(req.get("method", "POST"), path, None if req.get("method") == "GET" else body)
            self.assertProblem(r, status, code, field)
        self.assertUnchanged(before, "the rejected request")

    def test_bad_input_size_limits_say_too_large(self):
        """Every size limit of a field is too_large, whose title says what is wrong: a meta of 65 KiB was
        "A number is out of range". Each is refused whole and changes nothing."""
        sample = "/v1/datasets/%s/samples/s0" % self.DS
        cases = [
            ("a sample's meta in a batch", "POST", "/v1/datasets/%s/batches" % self.DS,
             base_body(meta={"s0": {"note": "x" * 65536}}), "/meta/s0"),
            ("PUT meta", "PUT", sample + "/meta", {"note": "x" * 65536}, None),
            ("a relabel's label", "POST", sample + "/review", {"status": "relabelled", "label": "x" * 4097}, "/label"),
            ("a review's note", "POST", sample + "/review", {"status": "confirmed", "note": "x" * 4097}, "/note"),
            ("a review's reviewer", "POST", sample + "/review", {"status": "confirmed", "reviewer": "x" * 129},
             "/reviewer"),
            ("a queue's quotas", "POST", "/v1/datasets/%s/queues" % self.DS,
             {"name": "q", "quotas": {str(i): {"max": 1} for i in range(257)}}, "/quotas"),
        ]
        for what, method, path, body, field in cases:
            with self.subTest(what):
                before = self.state()
                r = self.d.request(method, path, body)
                p = self.assertProblem(r, 422, "too_large", field)
                self.assertEqual(p["title"], "A field is larger than focald takes")
                self.assertRegex(p["detail"], r"[0-9]")  # the limit, or the size
                self.assertUnchanged(before, what)

    def test_bad_input_baseline_state_is_byte_stable(self):
        """The comparison itself: with nothing sent, two reads of the state are equal."""
        a = self.state()
        time.sleep(0.3)
        self.assertEqual(self.state(), a)

    def test_bad_input_chunked_body_without_end_is_cut_off(self):
        """A chunked upload that never ends is cut off once it is twice --max-body: libmicrohttpd 0.9.75
        cannot answer in the middle of an upload, so focald reads and drops up to the limit again (enough for
        a body slightly over it to get its 413 when it ends) and then closes the connection, never a 2xx and
        never reading forever."""
        before = self.state()
        s = socket.create_connection(("127.0.0.1", self.d.port), timeout=10)
        sent = [0]
        answered = threading.Event()
        s.sendall(_req("endless", b"Transfer-Encoding: chunked\r\n"))

        def pump():
            chunk = b"10000\r\n" + b" " * 0x10000 + b"\r\n"
            while not answered.is_set() and sent[0] < (64 << 20):
                try:
                    s.sendall(chunk)
                except OSError:
                    return
                sent[0] += 0x10000

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        buf = b""
        try:
            while b"\r\n\r\n" not in buf:
                part = s.recv(65536)
                if not part:
                    break
                buf += part
        except OSError:
            pass
        answered.set()
        at_answer = sent[0]
        t.join(10)
        s.close()
        self.assertFalse(buf.startswith(b"HTTP/1.1 2"), "a 2xx for an endless upload: %r" % buf[:300])
        self.assertTrue(buf == b"" or buf.startswith(b"HTTP/1.1 413"), "neither cut off nor 413: %r" % buf[:300])
        self.assertLess(at_answer, 2 * self.MAX_BODY + (8 << 20), "the connection was cut only after %d bytes of a "
                        "%d-byte limit" % (at_answer, self.MAX_BODY))
        self.assertUnchanged(before, "the endless chunked upload")

    def test_bad_input_content_length_and_chunked_closes_the_connection(self):
        """RFC 9112 section 6.3: a server that processes a request with both Content-Length and
        Transfer-Encoding MUST close the connection after responding (a request smuggled behind it is
        never read). The request here is /v1/loss, which stores nothing."""
        b = harness.raw_json(base_body())
        first = (b"POST /v1/loss HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n" % len(b) + _chunked(b))
        with socket.create_connection(("127.0.0.1", self.d.port), timeout=self.RAW_TIMEOUT) as s:
            s.sendall(first + b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            buf = b""
            try:
                while True:
                    part = s.recv(65536)
                    if not part:
                        break
                    buf += part
            except socket.timeout:
                pass
        answers = re.findall(rb"HTTP/1\.1 (\d{3})", buf)
        self.assertTrue(answers, "no answer at all")
        self.assertEqual(len(answers), 1, "the connection stayed open: the request behind it was answered too "
                         "(statuses %r)" % answers)

    def _operations(self):
        """Every operation openapi.json documents, with its path made concrete and its query parameters."""
        doc = self.d.get("/openapi.json").json()
        for path, ops in doc["paths"].items():
            concrete = path.replace("{dataset}", self.DS).replace("{id}", "s0").replace("{name}", "nq")
            for method, op in ops.items():
                if method not in ("get", "post", "put", "delete"):
                    continue
                params = [p for p in op.get("parameters", []) + ops.get("parameters", [])]
                names = set()
                for prm in params:
                    if "$ref" in prm:
                        prm = doc["components"]["parameters"][prm["$ref"].rsplit("/", 1)[1]]
                    if prm.get("in") == "query":
                        names.add(prm["name"])
                yield method.upper(), concrete, names

    def test_bad_input_unknown_or_repeated_query_parameter_400_on_every_route(self):
        """A parameter the route does not take (a misspelling would be ignored silently) or one given twice
        is 400 bad_query naming it, on every route, and changes nothing."""
        before = self.state()
        n = 0
        for method, path, names in self._operations():
            body = base_body() if method in ("POST", "PUT") else None
            for q, field in (("zz_unknown=1", "zz_unknown"), ("oder=asc", "oder"), ("=1", ANY)):
                with self.subTest(method=method, path=path, query=q):
                    r = self.d.request(method, path + "?" + q, body)
                    p = self.assertProblem(r, 400, "bad_query", field)
                    self.assertIn("unknown query parameter", p["detail"])
                    n += 1
            for name in sorted(names):
                with self.subTest(method=method, path=path, repeated=name):
                    r = self.d.request(method, "%s?%s=1&%s=2" % (path, name, name), body)
                    p = self.assertProblem(r, 400, "bad_query", name)
                    self.assertIn("more than once", p["detail"])
                    # given once it is known (its value may still be refused, but not as unknown)
                    r = self.d.request(method, "%s?%s=1" % (path, name), body)
                    if r.status == 400:
                        self.assertNotIn("unknown query parameter", r.json()["detail"], r)
                    n += 1
        self.assertGreater(n, 60)
        self.assertUnchanged(before, "unknown and repeated query parameters")

    def test_empty_query_components_name_nothing_on_every_route(self):
        """An empty component of the query ("?&k=1", "?k=1&&j=2") names no parameter, as a trailing "&" does:
        every GET answers as it does without it. "?=1" (a value with no name) stays an unknown parameter."""
        n = 0
        for method, path, names in self._operations():
            if method != "GET" or path.endswith("/export") or "/events" in path:
                continue
            plain = self.d.request(method, path)
            for q in ("?&", "?&&", "?" + "&".join(["", ""] + ["%s=1" % nm for nm in sorted(names)[:1]])):
                with self.subTest(path=path, query=q):
                    r = self.d.request(method, path + q)
                    self.assertEqual(r.status, plain.status, r)
                    if r.status == 400:
                        self.assertNotIn("unknown query parameter", r.json()["detail"], r)
                    n += 1
            for name in sorted(names)[:1]:
                with self.subTest(path=path, trailing=name):
                    a = self.d.request(method, "%s?&%s=1" % (path, name))
                    b = self.d.request(method, "%s?%s=1&" % (path, name))
                    self.assertEqual(a.status, b.status, (a, b))
                    n += 1
        self.assertGreater(n, 30)

    def test_bad_input_unreadable_query_values_400_on_every_route(self):
        """Every parameter of every route: a value that is not valid percent-encoding, one longer than focald
        reads (1535 bytes decoded), or none at all ("?k") is 400 bad_query naming it. None of them may be
        taken for an absent parameter, which would serve a different query (a label filter dropped, say)."""
        before = self.state()
        n = 0
        for method, path, names in self._operations():
            body = base_body() if method in ("POST", "PUT") else None
            for name in sorted(names):
                for value, why in (("%zz", "percent-encoding"), ("%4", "percent-encoding"), ("1" * 1536, "longer"),
                                   ("%31" * 1536, "longer"), (None, "no value")):
                    q = name if value is None else "%s=%s" % (name, value)
                    with self.subTest(method=method, path=path, query=q[:40]):
                        p = self.assertProblem(self.d.request(method, path + "?" + q, body), 400, "bad_query", name)
                        self.assertIn(why, p["detail"])
                        n += 1
        self.assertGreater(n, 100)
        # the longest readable value is read whole: a label of 1535 digits is the label 2 (a 1536th is refused)
        r = self.d.get("/v1/datasets/%s/hard-examples?label=%s2" % (self.DS, "0" * 1534))
        self.assertEqual(r.status, 200, r)
        self.assertTrue(all(it["label"] == 2 for it in r.json()["items"]), r.json())
        self.assertUnchanged(before, "unreadable query values")

    def test_bad_input_integer_query_values_are_decimal_integers_only(self):
        """Integer parameters take an optional '-' and digits: no spaces, no '+', no fraction, no overflow,
        with the same message on every route that takes the parameter."""
        ds = self.DS
        self.d.ok_batch(ds, base_body(run="ints", ids=["i0", "i1", "i2"]))
        q = self.d.post("/v1/datasets/%s/queues" % ds, {"name": "ints-q", "by": "mean_loss", "size": 2})
        self.assertIn(q.status, (200, 201), q)
        paths = {"k": ["/v1/datasets/%s/hard-examples" % ds, "/v1/datasets/%s/export?format=csv" % ds],
                 "label": ["/v1/datasets/%s/hard-examples" % ds, "/v1/datasets/%s/export?format=csv" % ds],
                 "min_seen": ["/v1/datasets/%s/hard-examples" % ds, "/v1/datasets/%s/export?format=csv" % ds],
                 "limit": ["/v1/datasets/%s/relabels" % ds, "/v1/datasets/%s/queues/ints-q" % ds],
                 "offset": ["/v1/datasets/%s/queues/ints-q" % ds]}
        for name, where in paths.items():
            details = set()
            for path in where:
                for bad in (" 5", "+5", "5 ", "5.0", "1e3", "0x10", "99999999999999999999", "--1", "-"):
                    sep = "&" if "?" in path else "?"
                    with self.subTest(path=path, name=name, value=bad):
                        p = self.assertProblem(self.d.get(path + sep + name + "=" + urllib.parse.quote(bad)),
                                               400, "bad_query", name)
                        details.add(p["detail"])
                ok = self.d.get(path + ("&" if "?" in path else "?") + name + "=2")
                self.assertEqual(ok.status, 200, (path, name, ok))
            self.assertTrue(all(d.startswith(name + " must be an integer ") for d in details), details)
            if name != "k":  # hard-examples pages at most 10,000; an export's k has no upper bound
                self.assertEqual(len(details), 1, details)  # one message for one mistake, whichever route
        # after=POSITION, which every read of the data takes, the same way
        details = set()
        for path in ("/v1/datasets/%s/hard-examples" % ds, "/v1/datasets/%s" % ds, "/v1/datasets/%s/samples/i0" % ds,
                     "/v1/datasets/%s/export?format=csv" % ds):
            sep = "&" if "?" in path else "?"
            for bad in (" 5", "+5", "5 ", "\t5", "5.0", "1e3", "0x10", "99999999999999999999", "--1", "-", "-5"):
                with self.subTest(path=path, name="after", value=bad):
                    p = self.assertProblem(self.d.get(path + sep + "after=" + urllib.parse.quote(bad)), 400, "bad_query",
                                           "after")
                    details.add(p["detail"].split(", not ")[0])
            for good in ("0", "-0", "00"):
                ok = self.d.get(path + sep + "after=" + good)
                self.assertEqual(ok.status, 200, (path, good, ok))
        self.assertEqual(details, {"after must be a log position (an integer >= 0, from a write's Focald-Log-Position)"})

    def test_bad_input_integer_query_values_past_the_bound_name_it(self):
        """A value past an integer parameter's upper bound is refused with a message giving that bound, and the
        bound itself is taken: "offset must be an integer >= 0" for offset=2147483648 told the client nothing."""
        ds = self.DS
        self.d.ok_batch(ds, base_body(run="bounds", ids=["b0", "b1", "b2"]))
        q = self.d.post("/v1/datasets/%s/queues" % ds, {"name": "bounds-q", "size": 2})
        self.assertIn(q.status, (200, 201), q)
        cases = [("/v1/datasets/%s/hard-examples" % ds, "label", 0, 2 ** 31 - 1),
                 ("/v1/datasets/%s/export?format=csv" % ds, "label", 0, 2 ** 31 - 1),
                 ("/v1/datasets/%s/hard-examples" % ds, "min_seen", 1, 2 ** 32 - 1),
                 ("/v1/datasets/%s/datamap" % ds, "min_seen", 1, 2 ** 32 - 1),
                 ("/v1/datasets/%s/queues/bounds-q" % ds, "offset", 0, 2 ** 31 - 1),
                 ("/v1/datasets/%s/hard-examples" % ds, "k", 1, 10000),
                 ("/v1/datasets/%s/relabels" % ds, "limit", 1, 10000)]
        before = self.state()
        for path, name, lo, hi in cases:
            sep = "&" if "?" in path else "?"
            with self.subTest(path=path, name=name):
                self.assertEqual(self.d.get("%s%s%s=%d" % (path, sep, name, hi)).status, 200)
                p = self.assertProblem(self.d.get("%s%s%s=%d" % (path, sep, name, hi + 1)), 400, "bad_query", name)
                self.assertEqual(p["detail"], "%s must be an integer from %d to %d" % (name, lo, hi))
        self.assertUnchanged(before, "integer parameters past their bound")

    def test_head_on_every_get_route(self):
        """HEAD is GET without the body (RFC 9110 9.3.2): the same status and headers, no body; 405 lists it."""
        for method, path, _ in self._operations():
            if method != "GET":
                continue
            with self.subTest(path=path):
                g = self.d.get(path)
                h = self.d.request("HEAD", path)
                self.assertEqual(h.status, g.status, (h, g))
                self.assertEqual(h.body, b"", h)
                self.assertEqual(h.header("Content-Type"), g.header("Content-Type"))
                if g.header("Content-Length") is not None and path != "/metrics":
                    self.assertEqual(h.header("Content-Length"), g.header("Content-Length"))
        r = self.d.request("POST", "/v1/datasets", {})
        self.assertProblem(r, 405, "method_not_allowed")
        self.assertEqual(r.header("Allow"), "GET, HEAD")
        r = self.d.request("PATCH", "/v1/datasets/%s" % self.DS, {})
        self.assertEqual(r.header("Allow"), "GET, HEAD, DELETE")

    def test_head_answer_is_headers_only_on_a_kept_connection(self):
        """A HEAD answer ends with its headers (RFC 9112 section 6.3): nothing of a body follows, not even a
        chunked stream's last chunk, which a client would read as the status line of its next answer on the
        connection. Every GET route, and each export format (streamed), with a request pipelined after it."""
        ds = self.DS
        q = self.d.post("/v1/datasets/%s/queues" % ds, {"name": "head-q", "size": 2})
        self.assertIn(q.status, (201, 409), q)
        paths = [path for method, path, _ in self._operations() if method == "GET"]
        paths += ["/v1/datasets/%s/export?format=%s" % (ds, f) for f in ("csv", "jsonl", "label-studio", "fiftyone", "ohif")]
        paths += ["/v1/datasets/%s/export?format=csv&queue=head-q" % ds]
        for path in paths:
            with self.subTest(path=path):
                s = socket.create_connection(("127.0.0.1", self.d.port), timeout=5)
                try:
                    s.sendall(b"HEAD %s HTTP/1.1\r\nHost: x\r\n\r\nGET /livez HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n" % path.encode())
                    got = b""
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        got += chunk
                finally:
                    s.close()
                head, sep, rest = got.partition(b"\r\n\r\n")
                self.assertTrue(sep and head.startswith(b"HTTP/1.1 "), got[:300])
                if b"\r\nconnection: close" in head.lower():
                    self.assertEqual(rest, b"", "bytes after a HEAD answer that closes: %r" % rest[:60])
                else:
                    self.assertTrue(rest.startswith(b"HTTP/1.1 200 "), "after the HEAD answer: %r" % rest[:60])
                    self.assertTrue(rest.endswith(b'{"status":"ok"}'), rest[-60:])

    def test_bad_input_dot_names_are_refused_and_old_ones_stay_reachable(self):
        """"." and ".." are dot segments HTTP clients remove from paths (RFC 3986 5.2.4): refused as new
        dataset, run and queue names, changing nothing; "..." is a name like any other. A database from a
        version that accepted them still loads, and its dot-named dataset and run can be read, exported and
        deleted, though they take no new batches."""
        d = self.start_daemon()
        d.ok_batch("real", base_body())
        before = d.get("/v1/datasets").json()
        for name in (".", ".."):
            enc = name.replace(".", "%2E")
            with self.subTest(dataset=name):
                self.assertProblem(d.post("/v1/datasets/%s/batches" % enc, base_body()), 422, "bad_name")
            with self.subTest(run=name):
                self.assertProblem(d.batch("real", base_body(run=name)), 422, "bad_name", "/run")
            with self.subTest(queue=name):
                self.assertProblem(d.post("/v1/datasets/real/queues", {"name": name}), 422, "bad_name", "/name")
        self.assertEqual(d.get("/v1/datasets").json(), before)
        self.assertEqual(d.dataset("real").json()["observations"], 3)
        j = d.ok_batch("...", base_body(run="..."))
        self.assertEqual((j["dataset"], j["run"]), ("...", "..."))
        self.assertEqual(d.post("/v1/datasets/real/queues", {"name": "..."}).status, 201)
        # a database written by an earlier version: rename a dataset and its run to dot segments
        d.ok_batch("old", base_body(run="r"))
        self.assertEqual(d.stop(), 0)
        c = sqlite3.connect(d.db, timeout=5)
        with c:
            c.execute("UPDATE datasets SET name = '..' WHERE name = 'old'")
            c.execute("UPDATE runs SET name = '.' WHERE name = 'r'")
        c.close()
        d2 = self.start_daemon(db_dir=d.db_dir)
        r = d2.get("/v1/datasets/%2E%2E")
        self.assertEqual((r.status, r.json().get("name")), (200, ".."), r)
        r = d2.get("/v1/datasets/%2E%2E/hard-examples?run=%2E")
        self.assertEqual((r.status, len(r.json()["items"])), (200, 3), r)
        r = d2.get("/v1/datasets/%2E%2E/export?format=csv&run=%2E")
        self.assertEqual((r.status, len(r.body.decode().splitlines())), (200, 4), r)
        self.assertProblem(d2.post("/v1/datasets/%2E%2E/batches", base_body()), 422, "bad_name")
        self.assertEqual(d2.delete("/v1/datasets/%2E%2E").status, 200)
        self.assertEqual(sorted(x["name"] for x in d2.get("/v1/datasets").json()["datasets"]), ["...", "real"])

    def test_bad_input_boundary_names_and_ids_are_accepted(self):
        """The limits themselves are valid: 64-character names, 256-byte ids, 128-byte batch ids."""
        d = self.start_daemon()
        ds = "d" * 64
        ids = ["i" * 256, "\u00e9" * 128, "\U0001F600" * 64]
        j = d.ok_batch(ds, base_body(run="r" * 64, batch_id="b" * 128, ids=ids))
        self.assertEqual(j["accepted"], 3)
        for sid in ids:
            self.assertEqual(d.sample(ds, sid).status, 200, sid[:10])

    def test_bad_input_a_name_past_64_characters_names_no_dataset_on_any_route(self):
        """A dataset name longer than any (64 characters) names none on every route of openapi.json that has
        {dataset}: never a 2xx, and the dataset whose name is its first 64 characters is left as it was
        (the export cut the name to 64 characters and streamed that dataset's samples)."""
        d = self.start_daemon()
        real = "d" * 64
        d.ok_batch(real, base_body(run="r", ids=["i0", "i1", "i2"]))
        self.assertEqual(d.post("/v1/datasets/%s/queues" % real, {"name": "q", "size": 1}).status, 201)
        before = [d.get(p).body for p in ("/v1/datasets/" + real, "/v1/datasets/%s/export?format=jsonl" % real,
                                          "/v1/datasets/%s/samples/i0/reviews" % real)]
        with open(os.path.join(harness.ROOT, "server", "openapi.json")) as f:
            paths = json.load(f)["paths"]
        bodies = {"post": {"status": "confirmed", "name": "q2", "size": 1}, "put": {"meta": {"k": 1}}}
        asked = 0
        for long in (real + "X", real + "dd"):
            for path, ops in sorted(paths.items()):
                if "{dataset}" not in path:
                    continue
                for method in ("get", "post", "put", "delete"):
                    if method not in ops:
                        continue
                    url = path.replace("{dataset}", long).replace("{id}", "i0").replace("{name}", "q")
                    if path.endswith("/export"):
                        url += "?format=csv"
                    elif "/sample" in path and "/samples/" not in path:
                        url += "?id=i0"
                    body = base_body(run="r", ids=["i0", "i1", "i2"]) if path.endswith("/batches") else bodies.get(method)
                    r = d.request(method.upper(), url, body)
                    asked += 1
                    self.assertGreaterEqual(r.status, 400, (method, url, r.status, r.body[:200]))
        self.assertGreater(asked, 40)
        after = [d.get(p).body for p in ("/v1/datasets/" + real, "/v1/datasets/%s/export?format=jsonl" % real,
                                         "/v1/datasets/%s/samples/i0/reviews" % real)]
        self.assertEqual(before, after)


def _add_cases(cls, cases):
    for name, req, status, code, field in cases:
        def test(self, req=req, status=status, code=code, field=field):
            self.run_case(req, status, code, field)
        test.__name__ = "test_bad_input_" + name
        test.__doc__ = "%s -> %s %s" % (name, status, code or "(status only)")
        assert not hasattr(cls, test.__name__), test.__name__
        setattr(cls, test.__name__, test)


_add_cases(BadInputTest, _nonfinite_cases() + _integer_cases() + RANGE_CASES + SHAPE_CASES + DUP_CASES + NUL_CASES
           + MALFORMED_CASES + NAME_CASES + _raw_http_cases())


# ---------------------------------------------------------------------------- crash safety

class CrashSafetyTest(HardeningTestCase):
    ROUNDS = 20
    CLIENTS = 4
    CLASSES = 3

    def _body(self, rng, rnd, client, j):
        n = rng.randint(1, 8)
        ids = ["r%02d-c%d-b%04d-%d" % (rnd, client, j, i) for i in range(n)]
        return {"run": "r", "batch_id": "c%d-%d" % (client, j), "step": j, "ids": ids,
                "logits": [[harness.f32(rng.gauss(0, 2)) for _ in range(self.CLASSES)] for _ in ids],
                "targets": [rng.randrange(self.CLASSES) for _ in ids]}

    def _round(self, d, rnd, rng, ctx):
        """Four clients post until focald is killed at a random moment; returns every batch sent with its
        outcome: 200, another status (an answered error: nothing may be stored) or 'lost' (no answer)."""
        ds = "crash-%02d" % rnd
        sent, lock, stop = [], threading.Lock(), threading.Event()
        seeds = [rng.randrange(1 << 30) for _ in range(self.CLIENTS)]

        def client(k):
            crng = random.Random(seeds[k])
            c, j = None, 0
            while not stop.is_set():
                body = self._body(crng, rnd, k, j)
                j += 1
                rec = {"ds": ds, "body": body, "outcome": "lost"}
                with lock:
                    sent.append(rec)
                try:
                    c = c or d.conn(timeout=10)
                    r = d.post("/v1/datasets/%s/batches" % ds, body, conn=c)
                    rec["outcome"] = r.status
                    if r.status == 200:
                        rec["duplicate"] = r.json()["duplicate"]
                    time.sleep(crng.uniform(0, 0.01))  # enough batches in flight; a log that replays quickly
                except (OSError, http.client.HTTPException):
                    if c:
                        c.close()
                    c = None
                    time.sleep(0.01)
            if c:
                c.close()

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(self.CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.2, 1.5))
        rc = d.kill9()
        stop.set()
        for t in threads:
            t.join(15)
        self.assertEqual(rc, -signal.SIGKILL, ctx)
        return sent

    def _stored(self, d, ds):
        """id -> seen for every sample of ds (run r); {} when the dataset does not exist."""
        r = d.dataset(ds)
        if r.status == 404:
            return {}, 0
        self.assertEqual(r.status, 200, r)
        items = d.all_hard(ds, page=10000, run="r")
        return {it["id"]: it["seen"] for it in items}, r.json()["observations"]

    def _check(self, d, sent, ctx, final=False):
        ds = sent[0]["ds"] if sent else None
        if ds is None:
            return
        stored, observations = self._stored(d, ds)
        all_ids = {sid for rec in sent for sid in rec["body"]["ids"]}
        stray = sorted(set(stored) - all_ids)
        self.assertEqual(stray, [], "%s: samples stored that no client sent" % ctx)
        twice = {k: v for k, v in stored.items() if v != 1}
        self.assertEqual(twice, {}, "%s: samples counted more than once" % ctx)
        self.assertEqual(observations, len(stored), "%s: the dataset's observations differ from its samples' seen"
                         % ctx)
        acked = unacked = 0
        for rec in sent:
            ids = rec["body"]["ids"]
            present = [sid in stored for sid in ids]
            self.assertTrue(all(present) or not any(present),
                            "%s: batch %s stored in part: %r" % (ctx, rec["body"]["batch_id"], present))
            rec["present"] = all(present)
            if rec["outcome"] == 200:
                acked += len(ids)
                self.assertFalse(rec.get("duplicate"), "%s: first sending of %s answered duplicate: true"
                                 % (ctx, rec["body"]["batch_id"]))
                self.assertTrue(rec["present"], "%s: acknowledged batch %s is missing (of %d acknowledged)"
                                % (ctx, rec["body"]["batch_id"], sum(x["outcome"] == 200 for x in sent)))
            elif rec["outcome"] == "lost":
                unacked += len(ids)
            elif not final:
                self.assertFalse(rec["present"], "%s: batch %s answered %s is stored" % (ctx, rec["body"]["batch_id"],
                                                                                         rec["outcome"]))
        self.assertTrue(acked <= observations <= acked + unacked,
                        "%s: %d observations; acknowledged %d, unanswered %d" % (ctx, observations, acked, unacked))

    def _retry(self, d, sent, ctx):
        """Sends every batch without a 200 again, with its batch_id: committed ones are duplicates."""
        retried = 0
        for rec in sent:
            if rec["outcome"] == 200:
                continue
            r = d.batch(rec["ds"], rec["body"])
            self.assertEqual(r.status, 200, "%s: retry of %s: %r" % (ctx, rec["body"]["batch_id"], r))
            self.assertEqual(r.json()["duplicate"], rec["present"],
                             "%s: retry of %s (stored before: %s) answered duplicate=%s"
                             % (ctx, rec["body"]["batch_id"], rec["present"], r.json()["duplicate"]))
            rec["outcome"] = 200
            retried += 1
        return retried

    def test_crash_sigkill_rounds_keep_every_acknowledged_batch_once(self):
        seed = int(os.environ.get("FOCALD_IT_SEED") or int(time.time() * 1000) % (1 << 31))
        rng = random.Random(seed)
        db_dir = temp_dir()
        scratch = os.path.join(temp_dir(), "check")
        rounds, prev = [], None
        stats = {"acked": 0, "lost": 0, "lost_committed": 0, "retried": 0}
        for rnd in range(self.ROUNDS + 1):
            full = rnd % 4 == 3
            ctx = "seed %d, round %d (durability %s)" % (seed, rnd, "full" if full else "normal")
            if prev is not None:
                ok = integrity_of_copy(os.path.join(db_dir, "f.db"), scratch)
                self.assertEqual(ok, ["ok"], "%s: integrity_check after SIGKILL" % ctx)
            t_start = time.monotonic()
            d = Daemon(self.id(), db_dir=db_dir,
                       args=("--durability", "full" if full else "normal",
                             "--snapshot-interval", "1" if rnd % 2 else "5")).start()
            self.addCleanup(lambda d=d: d.running() and d.kill9())
            if prev is not None:
                self._check(d, prev, ctx + ", after restart")
                stats["acked"] += sum(r["outcome"] == 200 for r in prev)
                stats["lost"] += sum(r["outcome"] == "lost" for r in prev)
                stats["lost_committed"] += sum(r["outcome"] == "lost" and r["present"] for r in prev)
                stats["retried"] += self._retry(d, prev, ctx)
                self._check(d, prev, ctx + ", after the retries", final=True)
                stored, obs = self._stored(d, prev[0]["ds"])
                self.assertEqual(obs, sum(len(r["body"]["ids"]) for r in prev),
                                 "%s: after the retries every batch must be stored once" % ctx)
            t_checked = time.monotonic()
            if os.environ.get("FOCALD_IT_DEBUG"):
                print("  round %d: start+check %.2f s" % (rnd, t_checked - t_start))
            if rnd == self.ROUNDS:
                break
            prev = self._round(d, rnd, rng, ctx)
            rounds.append(prev)
        # every round's dataset still holds exactly its batches, and a clean stop leaves a sound file
        for rec in rounds:
            if rec:
                stored, obs = self._stored(d, rec[0]["ds"])
                self.assertEqual(obs, sum(len(r["body"]["ids"]) for r in rec), "seed %d: %s" % (seed, rec[0]["ds"]))
        self.assertEqual(d.stop(), 0)
        self.assertEqual(integrity_of_copy(os.path.join(db_dir, "f.db"), scratch), ["ok"])
        self.assertGreater(stats["acked"], self.ROUNDS, "seed %d: too few batches acknowledged to test anything: %r"
                           % (seed, stats))
        if os.environ.get("FOCALD_IT_DEBUG"):
            print("\n  crash rounds (seed %d): %r" % (seed, stats))


# ---------------------------------------------------------------------------- disk full

class DiskFullTest(HardeningTestCase):
    """Batches carry 16 samples with 2 KiB of meta each, so that a small limit is reached quickly."""

    def _body(self, tag, j):
        ids = ["%s-%04d-%02d" % (tag, j, i) for i in range(16)]
        return {"run": "r", "batch_id": "%s-%d" % (tag, j), "step": j, "ids": ids,
                "logits": [[0.5, -0.5, 0.1]] * 16, "targets": [i % 3 for i in range(16)],
                "meta": {sid: {"uri": "/data/%s.png" % sid, "note": "%s" % ("n" * 2048)} for sid in ids}}

    def _fill(self, d, ds, tag, limit=400):
        """Posts batches until one answers 507. Returns (acknowledged bodies, the 507 response, its body)."""
        acked = []
        for j in range(limit):
            body = self._body(tag, j)
            r = d.batch(ds, body)
            if r.status == 200:
                acked.append(body)
                continue
            return acked, r, body
        self.fail("no 507 after %d batches" % limit)

    def _assert_full(self, d, ds, acked, rejected, ctx):
        """While full: batches answer 507 and never a 2xx, reads answer from what was acknowledged.
        Returns the sample whose meta and review state were tried, and what they must be from now on."""
        first = rejected[0][0]
        p = self.assertProblem(first, 507, "storage_full")
        self.assertRegex(p["detail"], r"(?i)database|disk|space|storage|full", "507 detail: %r" % p["detail"])
        for j in range(8):
            body = self._body("again", j)
            r = d.batch(ds, body)
            self.assertProblem(r, 507, "storage_full")
            rejected.append((r, body))
        # Small writes: the frames a failed batch left at the end of the WAL may hold them, so 200 is
        # possible; either they answer 507 and change nothing, or 200 and are stored for good.
        sid = acked[0]["ids"][0]
        want = {"uri": "/data/%s.png" % sid, "status": "open"}
        r = d.request("PUT", "/v1/datasets/%s/samples/%s/meta" % (ds, harness.q(sid)), {"uri": "/elsewhere.png"})
        if r.status != 200:
            self.assertProblem(r, 507, "storage_full")
        else:
            want["uri"] = "/elsewhere.png"
        r = d.post("/v1/datasets/%s/samples/%s/review" % (ds, harness.q(sid)), {"status": "confirmed"})
        if r.status != 200:
            self.assertProblem(r, 507, "storage_full")
        else:
            want["status"] = "confirmed"
        # reads
        n = sum(len(b["ids"]) for b in acked)
        self.assertEqual(d.get("/livez").status, 200)
        r = d.dataset(ds)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["observations"], n, ctx)
        items = d.all_hard(ds, page=1000, run="r", status=ALL_STATES)
        self.assertEqual(len(items), n, ctx)
        self.assertEqual(d.get("/v1/datasets").status, 200)
        self.assertEqual(d.get("/v1/datasets/%s/export?format=csv" % ds).status, 200)
        self._assert_sample(d, ds, sid, want, ctx)
        if os.environ.get("FOCALD_IT_DEBUG"):
            print("\n  %s: %d batches acknowledged, then 507: %s; small writes afterwards: %r"
                  % (ctx, len(acked), p["detail"], want))
        return sid, want

    def _assert_sample(self, d, ds, sid, want, ctx):
        s = d.sample(ds, sid)
        self.assertEqual(s.status, 200, s)
        self.assertEqual(s.json()["meta"]["uri"], want["uri"], "%s: meta: %r" % (ctx, s))
        self.assertEqual(s.json()["status"], want["status"], "%s: review state: %r" % (ctx, s))

    def _assert_intact(self, d, ds, acked, rejected, ctx, sample=None):
        stored = {it["id"]: it["seen"] for it in d.all_hard(ds, page=1000, run="r", status=ALL_STATES)}
        for b in acked:
            for sid in b["ids"]:
                self.assertEqual(stored.get(sid), 1, "%s: acknowledged sample %s: seen %r"
                                 % (ctx, sid, stored.get(sid)))
        for _, b in rejected:
            leaked = [sid for sid in b["ids"] if sid in stored]
            self.assertEqual(leaked, [], "%s: a batch answered 507 is stored" % ctx)
        self.assertEqual(len(stored), sum(len(b["ids"]) for b in acked), ctx)
        self.assertEqual(d.dataset(ds).json()["observations"], len(stored), ctx)
        if sample:
            self._assert_sample(d, ds, sample[0], sample[1], ctx)

    def test_disk_full_tmpfs_507_reads_work_and_space_returning_resumes(self):
        mnt, logs = harness.mount_tmpfs(self, "1m")
        d = Daemon(self.id(), db_dir=mnt, log_dir=logs, args=("--snapshot-interval", "3600")).start()
        self.addCleanup(lambda: d.running() and d.kill9())
        ds = "full"
        acked, r, body = self._fill(d, ds, "a")
        self.assertGreater(len(acked), 0, "the first batch already failed: %r" % r)
        rejected = [(r, body)]
        sample = self._assert_full(d, ds, acked, rejected, "tmpfs full")
        # space returns without a restart
        rr = subprocess.run(["mount", "-o", "remount,size=64m", mnt], capture_output=True)
        self.assertEqual(rr.returncode, 0, rr.stderr)
        for j in range(3):
            body = self._body("b", j)
            r = d.batch(ds, body)
            self.assertEqual(r.status, 200, "batch %d after space returned: %r" % (j, r))
            acked.append(body)
        self._assert_intact(d, ds, acked, rejected, "after space returned", sample)
        self.assertEqual(d.stop(), 0)
        self.assertEqual(integrity_of_copy(d.db, os.path.join(temp_dir(), "check")), ["ok"])
        d2 = Daemon(self.id(), db_dir=mnt, log_dir=logs).start()
        self.addCleanup(lambda: d2.running() and d2.kill9())
        self._assert_intact(d2, ds, acked, rejected, "after a restart", sample)
        self.assertEqual(d2.stop(), 0)

    def test_disk_full_file_size_limit_507_then_restart_without_it(self):
        root = temp_dir()
        logs = os.path.join(root, "logs")
        os.mkdir(logs)
        limit = 1 << 20
        d = Daemon(self.id(), db_dir=os.path.join(root, "db"), log_dir=logs,
                   wrapper=["prlimit", "--fsize=%d" % limit, "--"], args=("--snapshot-interval", "3600"))
        os.mkdir(d.db_dir)
        d.start()
        self.addCleanup(lambda: d.running() and d.kill9())
        ds = "fsize"
        acked, r, body = self._fill(d, ds, "a")
        self.assertGreater(len(acked), 0, "the first batch already failed: %r" % r)
        rejected = [(r, body)]
        sample = self._assert_full(d, ds, acked, rejected, "file size limit")
        self.assertTrue(d.running(), "focald died under the file size limit")
        self.assertEqual(d.stop(), 0, "SIGTERM while the database cannot grow")
        # space returns: the same database without the limit
        d2 = Daemon(self.id(), db_dir=d.db_dir, log_dir=logs).start()
        self.addCleanup(lambda: d2.running() and d2.kill9())
        self._assert_intact(d2, ds, acked, rejected, "restarted without the limit", sample)
        for j in range(3):
            body = self._body("b", j)
            r = d2.batch(ds, body)
            self.assertEqual(r.status, 200, r)
            acked.append(body)
        self._assert_intact(d2, ds, acked, rejected, "after new batches", sample)
        self.assertEqual(d2.stop(), 0)
        self.assertEqual(integrity_of_copy(d2.db, os.path.join(root, "check")), ["ok"])


# ---------------------------------------------------------------------------- limits

def trickle(port, request, interval, until, closed_at, idx):
    """Sends request one byte every interval seconds; records in closed_at[idx] when the server closed
    the connection (None if it never did before until)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    t0 = time.monotonic()
    try:
        for ch in request:
            if time.monotonic() >= until:
                return
            try:
                s.send(bytes([ch]))
            except OSError:
                closed_at[idx] = time.monotonic() - t0
                return
            # a closed connection shows as EOF on a non-blocking read
            s.setblocking(False)
            try:
                if s.recv(1024) == b"":
                    closed_at[idx] = time.monotonic() - t0
                    return
            except BlockingIOError:
                pass
            except OSError:
                closed_at[idx] = time.monotonic() - t0
                return
            finally:
                s.setblocking(True)
            time.sleep(interval)
    finally:
        s.close()


SLOW_REQUEST = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000 + b"\r\n\r\n"


class LimitsTest(HardeningTestCase):
    TIMEOUT = 2

    def _latencies(self, d, seconds):
        out = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                r = d.post("/v1/loss", base_body(), timeout=5)
                out.append((r.status, time.monotonic() - t0))
            except (OSError, http.client.HTTPException) as e:
                out.append((type(e).__name__, time.monotonic() - t0))
            time.sleep(0.05)
        return out

    def _stall(self, d, data):
        """Sends data, a request cut short, on a fresh connection and waits for focald to answer or close it.
        Returns (the first bytes that came back, seconds waited)."""
        with socket.create_connection(("127.0.0.1", d.port), timeout=self.TIMEOUT + 5) as s:
            s.sendall(data)
            t0 = time.monotonic()
            try:
                got = s.recv(100)
            except OSError:
                got = b""
            return got, time.monotonic() - t0

    def test_limits_stalled_connection_is_closed_after_the_timeout(self):
        d = self.start_daemon(args=("--connection-timeout", self.TIMEOUT))
        data, waited = self._stall(d, b"POST /v1/loss HTTP/1.1\r\nHost: x\r\nContent-Le")
        self.assertFalse(data.startswith(b"HTTP/1.1 2"), data)
        self.assertTrue(self.TIMEOUT - 0.5 <= waited <= self.TIMEOUT + 2.5,
                        "a stalled connection was closed after %.2f s (--connection-timeout %d)"
                        % (waited, self.TIMEOUT))

    def _read_export_slowly(self, d, rate, pause=0.0):
        """GET an export on a socket with a small receive window, read at rate bytes/s (after a pause of
        pause seconds once the first bytes came). Returns (the bytes read, whether the chunked body ended)."""
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.settimeout(60)
        s.connect(("127.0.0.1", d.port))
        s.sendall(b"GET /v1/datasets/slow/export?format=jsonl HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while True:
                x = s.recv(16384)
                if not x:
                    break
                if not data and pause:
                    time.sleep(pause)
                data += x
                if data.endswith(b"\r\n0\r\nFocald-Skipped: 0\r\n\r\n"):
                    break
                time.sleep(len(x) / rate)
        except OSError:
            pass
        s.close()
        return data, data.endswith(b"\r\n0\r\nFocald-Skipped: 0\r\n\r\n")

    def test_limits_slow_export_reader_is_served_to_the_end_and_a_stalled_one_cut_off(self):
        """A client that reads an export steadily but slowly (300 KB/s, a 6 MB export) gets all of it: the
        idle timeout counts from focald's last write, and with the send buffer the kernel grows by itself
        (to 4 MiB) a write came only after megabytes had drained, so such a client was cut off after about
        4 MB. A client that stops reading is still cut off."""
        d = self.start_daemon(args=("--connection-timeout", self.TIMEOUT))
        ids = ["slow%05d" % i for i in range(20000)]
        for start in range(0, len(ids), 5000):
            sub = ids[start:start + 5000]
            self.assertEqual(d.batch("slow", {"ids": sub, "targets": [0] * len(sub), "logits": [[0.1, 0.2]] * len(sub),
                                              "loss": {"type": "cross_entropy"}}).status, 200)
        data, ended = self._read_export_slowly(d, 300000)
        self.assertTrue(ended, "the export was cut off after %d bytes" % len(data))
        self.assertGreater(len(data), 6000000)
        rest, body = data.split(b"\r\n\r\n", 1)[1], b""
        while True:  # the chunks, joined
            size, rest = rest.split(b"\r\n", 1)
            if int(size, 16) == 0:
                break
            body, rest = body + rest[:int(size, 16)], rest[int(size, 16) + 2:]
        self.assertEqual([json.loads(line)["id"] for line in body.decode().splitlines()], ids)
        data, ended = self._read_export_slowly(d, 10 ** 9, pause=self.TIMEOUT + 3)
        self.assertFalse(ended, "a client that stopped reading for longer than --connection-timeout kept its export")
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])  # answered, then cut off part-way
        self.assertLess(len(data), 6000000)

    def test_limits_stalled_body_is_closed_after_the_timeout(self):
        d = self.start_daemon(args=("--connection-timeout", self.TIMEOUT))
        before = d.get("/v1/datasets").json()
        body = harness.raw_json(base_body())
        data, waited = self._stall(d, b"POST /v1/datasets/stall/batches HTTP/1.1\r\nHost: x\r\n"
                                      b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
                                   + body[:20])
        self.assertLessEqual(waited, self.TIMEOUT + 2.5, "a stalled body held the connection %.2f s" % waited)
        self.assertFalse(data.startswith(b"HTTP/1.1 2"), data)
        self.assertEqual(d.get("/v1/datasets").json(), before)

    def test_limits_slowloris_trickle_is_closed_and_does_not_lock_out_clients(self):
        """Connections that send their headers a byte every half second, as many as --max-connections
        allows: a slowloris never idle long enough for an idle timeout. They must be closed after a
        bounded time (here: 3 x --connection-timeout) and must not keep a legitimate client out."""
        cap = 6
        d = self.start_daemon(args=("--connection-timeout", self.TIMEOUT, "--max-connections", cap))
        horizon = 3 * self.TIMEOUT + 1.5
        until = time.monotonic() + horizon
        closed = [None] * cap
        threads = [threading.Thread(target=trickle, args=(d.port, SLOW_REQUEST, 0.5, until, closed, i), daemon=True)
                   for i in range(cap)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        try:
            r = d.get("/livez", timeout=horizon)
            legit = (r.status, time.monotonic() - t0)
        except (OSError, http.client.HTTPException) as e:
            legit = (type(e).__name__, time.monotonic() - t0)
        for t in threads:
            t.join(horizon + 5)
        problems = []
        if legit[0] != 200 or legit[1] > 3 * self.TIMEOUT:
            problems.append("a legitimate GET /livez got %s after %.1f s" % legit)
        still = sum(c is None for c in closed)
        if still:
            problems.append("%d of %d trickling connections were still open after %.1f s (closed at: %r)"
                            % (still, cap, horizon, closed))
        self.assertEqual(problems, [], "--connection-timeout %d, --max-connections %d" % (self.TIMEOUT, cap))

    def test_limits_legitimate_clients_keep_normal_latency_beside_slow_connections(self):
        d = self.start_daemon(args=("--connection-timeout", self.TIMEOUT))
        until = time.monotonic() + 3.5
        closed = [None] * 8
        threads = [threading.Thread(target=trickle, args=(d.port, SLOW_REQUEST, 0.3, until, closed, i), daemon=True)
                   for i in range(8)]
        stalled = []
        for _ in range(8):  # and some that send half a request and stop
            s = socket.create_connection(("127.0.0.1", d.port))
            s.sendall(b"POST /v1/loss HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
            stalled.append(s)
        for t in threads:
            t.start()
        lat = self._latencies(d, 3.0)
        for t in threads:
            t.join(10)
        for s in stalled:
            s.close()
        bad = [x for x in lat if x[0] != 200 or x[1] > 1.0]
        self.assertGreater(len(lat), 10)
        self.assertEqual(bad, [], "slow or failed requests beside slow connections (of %d)" % len(lat))

    def test_limits_connection_cap_holds_and_service_resumes(self):
        cap = 6
        d = self.start_daemon(args=("--connection-timeout", 30, "--max-connections", cap))
        socks = []
        for _ in range(cap):
            s = socket.create_connection(("127.0.0.1", d.port))
            s.sendall(b"GET /livez HTTP/1.1\r\nHo")
            socks.append(s)
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", d.port), timeout=1.5)
        extra.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            got = extra.recv(100)
        except socket.timeout:
            got = None
        except OSError:
            got = b""  # refused or reset: the cap holds
        self.assertFalse(got and got.startswith(b"HTTP/1.1 200"),
                         "a connection beyond --max-connections %d was served" % cap)
        for s in socks:
            s.close()
        if got is None:
            # not refused but left waiting: it is served once a slot is free
            extra.settimeout(5)
            try:
                late = extra.recv(100)
            except OSError as e:
                late = repr(e).encode()
            self.assertTrue(late.startswith(b"HTTP/1.1 200"), "the waiting connection, after slots freed: %r" % late)
        extra.close()
        t0 = time.monotonic()
        self.assertEqual(d.get("/livez", timeout=3).status, 200)
        self.assertLess(time.monotonic() - t0, 1.0)
        # and the cap counts again from zero
        for _ in range(cap - 1):
            socks.append(socket.create_connection(("127.0.0.1", d.port)))
        time.sleep(0.2)
        self.assertEqual(d.get("/livez", timeout=3).status, 200)
        for s in socks:
            s.close()

    def _trickle_body(self, d, ds, rate, per_send, seconds):
        """POSTs a batch to ds whose body (padded to 6000 bytes) is sent per_send bytes at a time at about
        rate bytes/s, for at most seconds. Returns (seconds until the server closed or answered, its answer
        or None)."""
        body = harness.raw_json(base_body())
        body = body[:-1] + b" " * (6000 - len(body)) + b"}"
        s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
        s.sendall(b"POST /v1/datasets/%s/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % (ds.encode(), len(body)))
        t0 = time.monotonic()
        sent, answer = 0, b""
        while time.monotonic() - t0 < seconds:
            if sent < len(body):
                try:
                    s.send(body[sent:sent + per_send])
                except OSError:
                    break
                sent += per_send
            s.setblocking(False)
            try:
                part = s.recv(65536)
                if part == b"":
                    break
                answer += part
                if b"\r\n\r\n" in answer and sent >= len(body):
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            s.setblocking(True)
            time.sleep(per_send / rate)
        waited = time.monotonic() - t0
        s.close()
        return waited, answer

    def test_limits_trickled_body_is_cut_at_the_minimum_rate(self):
        """A body that arrives a byte at a time is never idle, so the idle timeout never closes it; below
        --min-body-rate (after --connection-timeout of grace) it is cut off, and nothing is stored. A body
        above the rate is served however long it takes, and --min-body-rate 0 turns the floor off."""
        d = self.start_daemon(args=("--connection-timeout", self.TIMEOUT, "--min-body-rate", 1000))
        waited, answer = self._trickle_body(d, "slow", rate=4, per_send=1, seconds=self.TIMEOUT + 6)
        self.assertFalse(answer.startswith(b"HTTP/1.1 2"), answer)
        self.assertLessEqual(waited, self.TIMEOUT + 2, "a body at 4 B/s held its connection %.1f s" % waited)
        self.assertEqual(d.get("/v1/datasets").json()["datasets"], [])
        # 3000 B/s, above the floor: 2 s for 6000 bytes, answered 200
        waited, answer = self._trickle_body(d, "steady", rate=3000, per_send=300, seconds=15)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), (waited, answer[:300]))
        d0 = self.start_daemon(args=("--connection-timeout", self.TIMEOUT, "--min-body-rate", 0))
        waited, answer = self._trickle_body(d0, "slow", rate=4, per_send=1, seconds=self.TIMEOUT + 3)
        self.assertGreaterEqual(waited, self.TIMEOUT + 2.5, "with --min-body-rate 0 the body was cut after %.1f s"
                                % waited)

    def test_limits_health_listener_answers_when_every_data_slot_is_taken(self):
        """--health-listen: probes have slots of their own. With every data connection slot held by idle
        connections, /livez on the data port waits; on the health listener it answers at once, and so does
        focald --healthcheck. That listener answers the probes only."""
        cap = 6
        hport = harness.free_port()
        d = self.start_daemon(args=("--connection-timeout", 30, "--max-connections", cap,
                                    "--health-listen", "127.0.0.1:%d" % hport))
        socks = [socket.create_connection(("127.0.0.1", d.port)) for _ in range(cap + 4)]
        time.sleep(0.3)
        try:
            with self.assertRaises((OSError, http.client.HTTPException)):
                d.get("/livez", timeout=1.0)  # the scenario is real: the data port has no slot
            h = harness.Daemon(self.id(), db_dir=d.db_dir)  # not started: a client of the health listener
            h.port = hport
            for path in ("/livez", "/readyz"):
                t0 = time.monotonic()
                r = h.request("GET", path, timeout=3)
                self.assertEqual(r.status, 200, r)
                self.assertLess(time.monotonic() - t0, 0.5)
                self.assertEqual(h.request("HEAD", path, timeout=3).status, 200)
            for path in ("/v1/datasets", "/metrics", "/openapi.json"):
                self.assertProblem(h.request("GET", path, timeout=3), 404, "not_found")
            rc, out = run_focald(["--listen", "127.0.0.1:%d" % d.port, "--health-listen", "127.0.0.1:%d" % hport,
                                  "--healthcheck"], timeout=10)
            self.assertEqual(rc, 0, out)
        finally:
            for s in socks:
                s.close()
        self.assertEqual(d.get("/livez", timeout=5).status, 200)
        # an address that cannot be had is an error at start-up, not a daemon without its probes
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        rc, out = run_focald(["--listen", "127.0.0.1:%d" % harness.free_port(), "--db", os.path.join(temp_dir(), "f.db"),
                              "--health-listen", "127.0.0.1:%d" % busy.getsockname()[1]], timeout=10)
        busy.close()
        self.assertNotEqual(rc, 0, out)
        self.assertIn("health", out)

    def test_limits_health_listener_answers_when_descriptors_run_short(self):
        """Every connection holds a descriptor. With ulimit -n below what --max-connections implies (Debian's
        usual 1024 beside the default 1024 connections), idle data connections used to take every descriptor,
        and the health listener could then accept no probe. focald raises its soft limit to the hard one
        and lowers --max-connections to what its own descriptors leave, saying so."""
        hport = harness.free_port()
        d = self.start_daemon(args=("--health-listen", "127.0.0.1:%d" % hport), wrapper=("prlimit", "--nofile=128:128"))
        warn = [json.loads(x) for x in d.log_text().splitlines() if '"--max-connections lowered' in x]
        self.assertEqual(len(warn), 1, d.log_text()[-1500:])
        self.assertEqual(warn[0]["level"], "warn")
        socks = []
        try:
            for _ in range(200):
                socks.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
            time.sleep(0.3)
            h = harness.Daemon(self.id(), db_dir=d.db_dir)  # not started: a client of the health listener
            h.port = hport
            for _ in range(5):
                self.assertEqual(h.request("GET", "/livez", timeout=3).status, 200)
        finally:
            for s in socks:
                s.close()
        self.assertEqual(d.get("/livez", timeout=5).status, 200)
        self.assertEqual(d.batch("fds", base_body()).status, 200)
        # a soft limit below the hard one is raised: nothing to lower, no warning
        d2 = self.start_daemon(wrapper=("prlimit", "--nofile=64:4096"))
        self.assertNotIn("lowered", d2.log_text())
        self.assertRegex(d2.get("/metrics").body.decode(), r"(?m)^process_max_fds 4096$")
        # too few descriptors for even the fewest connections: refused at start-up
        p = subprocess.run(["prlimit", "--nofile=24:24", harness.FOCALD, "--listen", "127.0.0.1:%d" % harness.free_port(),
                            "--db", os.path.join(temp_dir(), "f.db")], capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(b"ulimit -n", p.stderr)

    def test_limits_a_chunked_body_reserves_as_it_comes(self):
        """A chunked body's reservation keeps up with every piece: about 10x what has come, at every size
        (it grew only when the buffer doubled: 80 kB past 64 kB reserved for 65 kB)."""
        d = self.start_daemon()

        def reserved():
            m = re.search(r"(?m)^focald_body_memory_reserved_bytes (\d+)$", d.get("/metrics").body.decode())
            return int(m.group(1))
        s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        try:
            s.sendall(b"POST /v1/loss HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            sent = 0
            for size in (1000, 65537, 80000, 131073, 250000):
                n = size - sent
                s.sendall(b"%x\r\n" % n + b" " * n + b"\r\n")
                sent = size
                until = time.monotonic() + 5
                while reserved() < 10 * sent and time.monotonic() < until:
                    time.sleep(0.02)
                self.assertGreaterEqual(reserved(), 10 * sent, "after %d bytes" % sent)
                self.assertLess(reserved(), 10 * sent + 100000, "after %d bytes" % sent)
        finally:
            s.close()

    def test_limits_a_route_without_a_body_refuses_one_before_reading_it(self):
        """A body sent to a route that takes none (the token-free /livez among them) is 413 from its
        Content-Length or its chunked framing, never read or reserved: read, 11 of them took the whole
        --body-memory and batches were refused 503. A Content-Length of 0 is no body."""
        d = self.start_daemon()
        for path in ("/livez", "/readyz", "/v1/datasets", "/metrics"):
            for framing in (b"Content-Length: 62914560\r\n", b"Transfer-Encoding: chunked\r\n"):
                r, _, how = raw_exchange(d.port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + framing
                                         + b"\r\n", timeout=5)
                self.assertIsNotNone(r, how)
                self.assertProblem(r, 413, "body_too_large")
        m = re.search(r"(?m)^focald_body_memory_reserved_bytes (\d+)$", d.get("/metrics").body.decode())
        self.assertEqual(int(m.group(1)), 0)
        r, _, how = raw_exchange(d.port, b"GET /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", timeout=5)
        self.assertEqual(r.status, 200, how)

    def test_limits_body_memory_budget_503_then_served(self):
        """--body-memory: bodies in flight reserve about 10x a JSON body; one that would pass the budget gets
        503 overloaded with Retry-After (before its body is read when its length is declared; at its end
        when chunked) and changes nothing; once the first is done the same request is served; a body alone
        is always served, whatever the budget."""
        d = self.start_daemon(args=("--body-memory", "2M", "--max-body", "1M"))
        body = harness.raw_json(base_body())
        body = body[:-1] + b" " * (150000 - len(body)) + b"}"  # 150 kB: reserves 1.5 MB
        head = (b"POST /v1/datasets/mem/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        holder = socket.create_connection(("127.0.0.1", d.port), timeout=10)
        holder.sendall(head + body[:1000])  # in flight: its reservation is held
        time.sleep(0.3)
        m = re.search(r"(?m)^focald_body_memory_reserved_bytes (\d+)$", d.get("/metrics").body.decode())
        self.assertEqual(int(m.group(1)), 1500000)
        r, _, how = raw_exchange(d.port, head, timeout=5)
        self.assertIsNotNone(r, how)
        self.assertProblem(r, 503, "overloaded")
        self.assertEqual(r.header("Retry-After"), "1")
        self.assertIn("--body-memory", r.json()["detail"])
        # chunked: the same, decided as the body grows and answered when it ends
        chunked = (b"POST /v1/datasets/mem/batches HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(b"%x\r\n" % len(body[i:i + 8192])
                   + body[i:i + 8192] + b"\r\n" for i in range(0, len(body), 8192)) + b"0\r\n\r\n")
        r, _, how = raw_exchange(d.port, chunked, timeout=5)
        self.assertIsNotNone(r, how)
        self.assertProblem(r, 503, "overloaded")
        self.assertEqual(d.get("/v1/datasets").json()["datasets"], [])
        # the first one finishes and is stored; then the same request is served
        holder.sendall(body[1000:])
        holder.settimeout(10)
        got = b""
        while b"\r\n\r\n" not in got:
            part = holder.recv(65536)
            if not part:
                break
            got += part
        holder.close()
        self.assertTrue(got.startswith(b"HTTP/1.1 200"), got[:200])

        def reserved():
            m = re.search(r"(?m)^focald_body_memory_reserved_bytes (\d+)$", d.get("/metrics").body.decode())
            return int(m.group(1))
        # the reservation is given back when the request ends, a moment after its answer has gone out
        until = time.monotonic() + 5
        while reserved() and time.monotonic() < until:
            time.sleep(0.02)
        self.assertEqual(reserved(), 0)
        r, _, how = raw_exchange(d.port, head + body, timeout=10)
        self.assertEqual(r.status, 200, r)
        while reserved() and time.monotonic() < until + 5:
            time.sleep(0.02)
        r, _, how = raw_exchange(d.port, chunked, timeout=10)
        self.assertEqual(r.status, 200, r)
        # alone, a body whose estimate is past the budget is served (400 kB: 4 MB against 2 MB)
        big = harness.raw_json(base_body())
        big = big[:-1] + b" " * (400000 - len(big)) + b"}"
        while reserved() and time.monotonic() < until + 10:
            time.sleep(0.02)
        self.assertEqual(d.post("/v1/datasets/mem/batches", big).status, 200)
        until = time.monotonic() + 5
        while reserved() and time.monotonic() < until:
            time.sleep(0.02)
        self.assertEqual(reserved(), 0)
        self.assertEqual(d.dataset("mem").json()["observations"], 12)  # four batches of three

    def test_limits_large_bodies_give_their_memory_back(self):
        """Two large JSON bodies decoded at once on two HTTP threads take hundreds of megabytes; once they are
        answered, focald's resident memory comes back to within a few megabytes of what it was before, not to
        the tops of the heaps those threads decoded in. (Under a sanitizer, whose allocator keeps freed memory
        in quarantine on purpose, the bodies are still served and their reservation given back; resident memory
        is glibc's matter and is checked in the plain build only.)"""
        d = self.start_daemon()
        rnd = random.Random(5)
        n, classes = 150000, 10
        rows = ",".join("[" + ",".join("%.4f" % rnd.gauss(0, 2) for _ in range(classes)) + "]" for _ in range(n))
        body = ('{"ids":[%s],"logits":[%s],"targets":[%s]}' % (",".join('"s%d"' % i for i in range(n)), rows,
                ",".join(str(i % classes) for i in range(n)))).encode()  # about 9 MB

        def rss_kb(field="VmRSS"):
            with open("/proc/%d/status" % d.proc.pid) as f:
                return int(re.search(r"(?m)^%s:\s+(\d+) kB" % field, f.read()).group(1))

        self.assertEqual(d.post("/v1/loss", base_body()).status, 200)
        time.sleep(1.5)
        idle = rss_kb()
        answers = []

        def client():
            answers.append(d.post("/v1/loss", body, timeout=120).status)
        for _ in range(2):
            threads = [threading.Thread(target=client) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        self.assertEqual(answers, [200] * 4)
        until = time.monotonic() + 10
        while True:
            reserved = re.search(r"(?m)^focald_body_memory_reserved_bytes (\d+)$", d.get("/metrics").body.decode())
            if int(reserved.group(1)) == 0 or time.monotonic() > until:
                break
            time.sleep(0.05)
        self.assertEqual(int(reserved.group(1)), 0)
        if os.environ.get("SANITIZE"):
            return
        peak = rss_kb("VmHWM")
        self.assertGreater(peak - idle, 100 * 1024, "the bodies took less memory than this test assumes")
        until = time.monotonic() + 10
        while rss_kb() > idle + 8 * 1024 and time.monotonic() < until:
            time.sleep(0.25)
        self.assertLessEqual(rss_kb(), idle + 8 * 1024, "idle %d kB, peak %d kB" % (idle, peak))

    def test_limits_body_413_is_answered_before_the_body_is_sent(self):
        d = self.start_daemon(args=("--max-body", "64K"))
        for path, method in (("/v1/datasets/lim/batches", "POST"), ("/v1/loss", "POST"),
                             ("/v1/datasets/lim/samples/x/meta", "PUT")):
            for expect in (b"", b"Expect: 100-continue\r\n"):
                with self.subTest(path=path, expect=bool(expect)):
                    t0 = time.monotonic()
                    r, elapsed, how = raw_exchange(d.port, b"%s %s HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                                   b"application/json\r\nContent-Length: %d\r\n%s\r\n"
                                                   % (method.encode(), path.encode(), 64 * 1024 + 1, expect),
                                                   timeout=3)
                    self.assertIsNotNone(r, "no answer without the body (%s after %.1f s)" % (how, elapsed))
                    self.assertProblem(r, 413, "body_too_large")
                    self.assertLess(time.monotonic() - t0, 1.0)
        self.assertProblem(d.dataset("lim"), 404, "dataset_not_found")

    def test_limits_headers_431_and_large_headers_below_the_limit(self):
        d = self.start_daemon()
        r, _, how = raw_exchange(d.port, b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (300 * 1024)
                                 + b"\r\n\r\n")
        self.assertIsNotNone(r, how)
        self.assertEqual(r.status, 431, r)
        r, _, how = raw_exchange(d.port, b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (16 * 1024)
                                 + b"\r\n\r\n")
        self.assertIsNotNone(r, how)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(d.get("/livez").status, 200)

    def test_limits_meta_in_any_key_order(self):
        """Meta is matched to its ids by hash, not by a scan of the ids: a batch of 40,000 samples with meta
        for each, keys in reverse order, is stored like one whose keys come in order, each meta on its
        sample. The two times are printed, not asserted (a scan took minutes here)."""
        d = self.start_daemon()
        n = 40000
        ids = ["s%05d" % i for i in range(n)]
        took = {}
        for name, keys in (("in order", ids), ("reversed", ids[::-1])):
            ds = "meta-" + name.replace(" ", "-")
            body = {"ids": ids, "logits": [[0.0, 1.0]] * n, "targets": [0] * n,
                    "meta": {k: {"uri": "mem://%s/%s" % (ds, k)} for k in keys}}
            t = time.monotonic()
            r = d.batch(ds, body, timeout=120)
            took[name] = time.monotonic() - t
            self.assertEqual(r.status, 200, r)
            for k in (ids[0], ids[n // 2], ids[-1]):
                self.assertEqual(d.sample(ds, k).json()["meta"], {"uri": "mem://%s/%s" % (ds, k)})
        sys.stdout.write("\n  a %d-sample batch with meta: keys in order %.2f s, reversed %.2f s\n"
                         % (n, took["in order"], took["reversed"]))


# ---------------------------------------------------------------------------- security: token

PROTECTED = [
    ("GET", "/metrics", None), ("GET", "/openapi.json", None), ("GET", "/v1/datasets", None),
    ("GET", "/v1/datasets/sec", None), ("GET", "/v1/datasets/sec/hard-examples", None),
    ("GET", "/v1/datasets/sec/samples/s0", None), ("GET", "/v1/datasets/sec/export?format=csv", None),
    ("DELETE", "/v1/datasets/sec", None), ("POST", "/v1/loss", base_body()),
    ("POST", "/v1/datasets/sec/batches", base_body(ids=["x0", "x1", "x2"])),
    ("POST", "/v1/datasets/new-by-intruder/batches", base_body()),
    ("PUT", "/v1/datasets/sec/samples/s0/meta", {"uri": "evil"}),
    ("POST", "/v1/datasets/sec/samples/s0/review", {"status": "dismissed"}),
    ("GET", "/nope", None), ("GET", "/v1/nope", None),       # unknown routes: no 404 to learn from
    ("POST", "/v1/datasets", base_body()),                  # a wrong method: no 405 either
    ("GET", "/livez/../v1/datasets", None),
]


class TokenTest(HardeningTestCase):
    """FOCALD_TOKEN set: only /livez and /readyz are open."""

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(cls.__name__, env={"FOCALD_TOKEN": TOKEN}, token=TOKEN).start()
        cls.d.ok_batch("sec", base_body())

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        if rc != 0:
            raise AssertionError("%s's focald exited with status %s after SIGTERM" % (cls.__name__, rc))

    def anon(self, method, path, body=None, auth=None):
        return self.d.request(method, path, body, headers={"Authorization": auth})

    def test_security_token_health_probes_are_open(self):
        for path in ("/livez", "/readyz"):
            r = self.anon("GET", path)
            self.assertEqual(r.status, 200, "%s without a token: %r" % (path, r))
            r = self.anon("GET", path, auth="Bearer wrong-token-wrong-token")
            self.assertEqual(r.status, 200, "%s with a wrong token: %r" % (path, r))

    def test_security_token_health_listener_answers_404_to_anything_but_the_probes(self):
        """--health-listen with a token: the probes answer without one, and every other path is the health
        listener's 404 with or without the token (README: "anything else there is 404"), not a 401 asking
        for a token that could not change the answer. Nothing is stored through it."""
        hport = harness.free_port()
        d = self.start_daemon(args=("--health-listen", "127.0.0.1:%d" % hport), env={"FOCALD_TOKEN": TOKEN},
                              token=TOKEN)
        h = harness.Daemon(self.id(), db_dir=d.db_dir)  # not started: a client of the health listener
        h.port = hport
        for path in ("/livez", "/readyz"):
            self.assertEqual(h.request("GET", path).status, 200)
        for method, path, body in PROTECTED + [("GET", "/ui/", None), ("GET", "/ui/console.js", None)]:
            for auth in (None, "Bearer " + TOKEN, "Bearer wrong-token-wrong-token"):
                with self.subTest(method=method, path=path, auth=auth and auth[:12]):
                    p = self.assertProblem(h.request(method, path, body, headers={"Authorization": auth}), 404,
                                           "not_found")
                    self.assertIn("--health-listen", p["detail"])
        self.assertEqual(d.get("/v1/datasets").json()["datasets"], [])

    def test_security_token_missing_is_401_everywhere_else(self):
        for method, path, body in PROTECTED:
            with self.subTest(method=method, path=path):
                self.assertUnauthorized(self.anon(method, path, body))
        self.assertEqual(self.d.dataset("sec").json()["observations"], 3)
        self.assertProblem(self.d.dataset("new-by-intruder"), 404, "dataset_not_found")
        self.assertEqual(self.d.sample("sec", "s0").json()["status"], "open")

    def test_security_token_every_documented_operation_is_401_and_says_so(self):
        """Every operation of openapi.json but the probes and the console's files is refused without the token,
        and documents that 401 (with WWW-Authenticate) in its responses; those document none and answer."""
        spec = json.load(open(os.path.join(harness.ROOT, "server", "openapi.json")))
        self.assertIn("WWW-Authenticate", spec["components"]["responses"]["Unauthorized"]["headers"])
        seen = 0
        for path, ops in spec["paths"].items():
            concrete = re.sub(r"\{(\w+)\}", lambda m: {"dataset": "sec", "id": "s0", "asset": "console.js"}.get(
                m.group(1), "q"), path)
            for method, op in ops.items():
                if method not in ("get", "post", "put", "delete", "patch"):
                    continue
                with self.subTest(method=method, path=path):
                    r = self.anon(method.upper(), concrete, {} if method in ("post", "put", "patch") else None)
                    if path in ("/livez", "/readyz") or path == "/ui" or path.startswith("/ui/"):
                        # the probes, and the console's static files (a browser loads a page without credentials)
                        self.assertNotIn("401", op["responses"])
                        self.assertIn(r.status, (200, 308), r)
                        continue
                    seen += 1
                    self.assertUnauthorized(r)
                    self.assertEqual(op["responses"].get("401"), {"$ref": "#/components/responses/Unauthorized"})
        self.assertGreaterEqual(seen, 18)
        self.assertEqual(self.d.dataset("sec").json()["observations"], 3)

    def test_security_token_wrong_is_401(self):
        wrong = ["Bearer wrong", "Bearer " + TOKEN[:-1], "Bearer " + TOKEN + "x", "Bearer " + TOKEN.upper(),
                 "Bearer", "Bearer ", TOKEN, "Basic " + TOKEN, "Token " + TOKEN, "Bearer " + TOKEN + " extra",
                 "Bearer\t" + "x" * len(TOKEN)]
        for auth in wrong:
            for method, path, body in (("GET", "/v1/datasets", None), ("POST", "/v1/datasets/sec/batches",
                                                                       base_body(ids=["w0", "w1", "w2"]))):
                with self.subTest(auth=auth, path=path):
                    self.assertUnauthorized(self.anon(method, path, body, auth=auth))
        self.assertEqual(self.d.dataset("sec").json()["observations"], 3)

    def test_security_token_401_before_reading_the_body(self):
        r, elapsed, how = raw_exchange(self.d.port, b"POST /v1/datasets/sec/batches HTTP/1.1\r\nHost: x\r\n"
                                       b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n", timeout=3)
        self.assertIsNotNone(r, "no answer before the body (%s after %.1f s)" % (how, elapsed))
        self.assertUnauthorized(r)

    def test_security_token_right_is_served(self):
        for method, path, body in (("GET", "/v1/datasets", None), ("GET", "/metrics", None),
                                   ("GET", "/openapi.json", None), ("POST", "/v1/loss", base_body())):
            r = self.anon(method, path, body, auth="Bearer " + TOKEN)
            self.assertEqual(r.status, 200, "%s %s: %r" % (method, path, r))
        j = self.d.ok_batch("sec-ok", base_body())
        self.assertEqual(j["accepted"], 3)
        self.assertProblem(self.anon("GET", "/nope", auth="Bearer " + TOKEN), 404, "not_found")

    def test_security_refused_requests_are_counted_and_probes_logged_at_debug(self):
        """A trainer with a wrong token shows in /metrics: 401s count under the route asked for (404s and 405s
        under "unmatched"), each in the request counter and the latency histogram; health probes answered 200
        stay out of the info log while the refusals are in it."""
        def counts():
            text = self.anon("GET", "/metrics", auth="Bearer " + TOKEN).body.decode()
            return {m.group(1): int(m.group(2)) for m in
                    re.finditer(r'(?m)^(focald_http_request\w+\{.*\}) (\d+)$', text)}
        before = counts()
        self.anon("GET", "/livez")
        for _ in range(3):
            self.assertUnauthorized(self.anon("GET", "/v1/datasets", auth="Bearer " + "w" * len(TOKEN)))
        self.assertUnauthorized(self.anon("POST", "/v1/datasets/sec/batches", base_body()))
        self.assertUnauthorized(self.anon("GET", "/no/such/route"))
        self.assertEqual(self.anon("GET", "/no/such/route", auth="Bearer " + TOKEN).status, 404)
        self.assertEqual(self.anon("DELETE", "/v1/datasets", auth="Bearer " + TOKEN).status, 405)

        def delta(key):
            return after.get(key, 0) - before.get(key, 0)
        # a request is counted once libmicrohttpd is done with it, a moment after its answer has gone out
        until = time.monotonic() + 5
        while True:
            after = counts()
            if delta('focald_http_request_duration_seconds_count{route="unmatched",method=""}') >= 3 or \
                    time.monotonic() > until:
                break
            time.sleep(0.05)
        self.assertEqual(delta('focald_http_requests_total{route="/v1/datasets",method="GET",status="401"}'), 3)
        self.assertEqual(delta('focald_http_requests_total{route="/v1/datasets/{dataset}/batches",method="POST",'
                               'status="401"}'), 1)
        self.assertEqual(delta('focald_http_requests_total{route="unmatched",method="",status="401"}'), 1)
        self.assertEqual(delta('focald_http_requests_total{route="unmatched",method="",status="404"}'), 1)
        self.assertEqual(delta('focald_http_requests_total{route="unmatched",method="",status="405"}'), 1)
        self.assertEqual(delta('focald_http_requests_total{route="/livez",method="GET",status="200"}'), 1)
        self.assertEqual(delta('focald_http_request_duration_seconds_count{route="unmatched",method=""}'), 3)
        self.assertEqual(delta('focald_http_request_duration_seconds_count{route="/v1/datasets",method="GET"}'), 3)
        time.sleep(0.2)
        log = self.d.log_text()
        self.assertRegex(log, r'"route":"/v1/datasets","status":401')
        self.assertNotRegex(log, r'"route":"/livez","status":200')

    def test_security_token_scheme_is_case_insensitive(self):
        """RFC 9110 section 11.1: the authentication scheme is case-insensitive ("bearer", "BEARER")."""
        for scheme in ("bearer", "BEARER"):
            r = self.anon("GET", "/v1/datasets", auth="%s %s" % (scheme, TOKEN))
            self.assertEqual(r.status, 200, "%s: %r" % (scheme, r))

    def test_security_token_never_in_logs_or_answers(self):
        wrong = "another-secret-" + "9" * 20
        answers = [self.anon("GET", "/v1/datasets", auth="Bearer " + TOKEN),
                   self.anon("GET", "/v1/datasets", auth="Bearer " + wrong),
                   self.anon("GET", "/metrics", auth="Bearer " + TOKEN),
                   self.anon("POST", "/v1/datasets/sec/batches", base_body(ids=["a", "b", "c"]),
                             auth="Bearer " + wrong),
                   self.anon("GET", "/v1/datasets/sec/samples/s0", auth="Bearer " + wrong),
                   self.anon("GET", "/nope", auth="Bearer " + TOKEN)]
        for r in answers:
            self.assertNotIn(TOKEN.encode(), r.body, r)
            self.assertNotIn(wrong.encode(), r.body, r)
            for k, v in r.headers:
                self.assertNotIn(TOKEN, v, k)
        time.sleep(0.2)
        log = self.d.log_text()
        self.assertRegex(log, r'"status":\s*401', "the log has no request lines to check")
        self.assertNotIn(TOKEN, log, "the token is in the log")
        self.assertNotIn(wrong, log, "a presented (wrong) token is in the log")
        self.assertNotIn(TOKEN[4:-4], log, "part of the token is in the log")


class SignalTest(HardeningTestCase):

    def test_signal_while_loading_stops_at_once_and_keeps_the_database(self):
        """A stop signal (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGXCPU, SIGPWR) while the database loads (held
        there by the fault shim, as a large one would be): nothing has been accepted, so focald stops at once
        with status 0, never reporting ready. It used to wait for the load to end (however long, past a grace
        period), report ready, then drain. A signal focald ignores (SIGUSR1) leaves it loading."""
        shim = os.path.join(os.path.dirname(harness.FOCALD), "tests", "libfaultvfs.so")
        td = temp_dir()
        d = self.start_daemon(db_dir=td)
        self.assertEqual(d.batch("sig", base_body()).status, 200)
        state = d.get("/v1/datasets/sig").json()
        self.assertEqual(d.stop(), 0)
        hold = os.path.join(td, "hold")
        for sig in harness.STOP_SIGNALS:
            with self.subTest(sig=sig):
                open(hold, "w").close()
                dd = Daemon(self.id(), db_dir=td, env={
                    "LD_PRELOAD": shim, "FOCALD_FAULT_HOLD_LOAD": hold,
                    "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", "")})
                dd.port = harness.free_port()
                log_path = dd.next_log_path()
                dd.log_paths.append(log_path)
                with open(log_path, "wb") as log:
                    dd.proc = subprocess.Popen(dd.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                               env=dd.env, preexec_fn=harness.default_signals)
                # listening, and loading
                self.assertTrue(harness.poll_until(dd.proc, lambda: dd.get("/livez", timeout=1).status == 200, 10),
                                "focald never answered /livez")
                self.assertProblem(dd.get("/readyz"), 503, "starting")
                dd.send_signal(signal.SIGUSR1)  # one focald ignores, while starting too
                time.sleep(0.2)
                self.assertIsNone(dd.proc.poll(), "SIGUSR1 while starting stopped focald")
                self.assertIn("SIGUSR1: ignored", dd.log_text())
                t0 = time.monotonic()
                dd.send_signal(sig)
                try:
                    rc = dd.proc.wait(5)
                finally:
                    os.unlink(hold)
                    if dd.proc.poll() is None:
                        dd.proc.wait(30)
                self.assertEqual(rc, 0, dd.log_text())
                self.assertLess(time.monotonic() - t0, 2)
                self.assertIn("while starting", dd.log_text())
                self.assertNotIn('"ready', dd.log_text())
        again = self.start_daemon(db_dir=td)
        self.assertEqual(again.get("/v1/datasets/sig").json(), state)
        self.assertEqual(again.stop(), 0)


    def _traffic(self, d, ds, clients=3):
        """Starts clients posting unique batches to ds until the returned event is set; returns (event,
        threads, sent): sent lists [body, status or None] for every batch posted."""
        sent, stop = [], threading.Event()

        def client(k):
            c, j = None, 0
            while not stop.is_set():
                ids = ["c%d-%05d-%d" % (k, j, i) for i in range(3)]
                body = base_body(run="r", batch_id="c%d-%d" % (k, j), ids=ids)
                rec = [body, None]
                sent.append(rec)
                j += 1
                try:
                    c = c or d.conn(timeout=10)
                    rec[1] = d.post("/v1/datasets/%s/batches" % ds, body, conn=c).status
                except (OSError, http.client.HTTPException):
                    if c:
                        c.close()
                    c = None
                    time.sleep(0.01)
            if c:
                c.close()

        threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
        for t in threads:
            t.start()
        return stop, threads, sent

    def _check_acknowledged(self, d, ds, sent, ctx):
        """Every batch answered 200 is stored whole; one answered anything else is not stored."""
        stored = {it["id"] for it in d.all_hard(ds, run="r")}
        acked = [rec for rec in sent if rec[1] == 200]
        self.assertGreater(len(acked), 0, "%s: no batch was acknowledged" % ctx)
        for body, status in sent:
            present = [sid in stored for sid in body["ids"]]
            if status == 200:
                self.assertTrue(all(present), "%s: acknowledged batch %s is missing" % (ctx, body["batch_id"]))
            elif status is not None:
                self.assertFalse(any(present), "%s: batch %s answered %s is stored" % (ctx, body["batch_id"], status))
        return len(acked)

    def test_signal_each_that_would_end_focald_drains_or_is_ignored(self):
        """Every signal whose default action ends a process, sent with batches in flight: the stop signals
        (SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGXCPU, SIGPWR) drain, every batch answered is answered and
        every acknowledged one stored, exit 0; the others (SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF,
        SIGIO, SIGSTKFLT and each real-time signal) are logged and ignored, focald serving on. All but the
        first three used to end focald on the spot, with the batches being scored unanswered."""
        d = self.start_daemon()
        stop, threads, sent = self._traffic(d, "sig-ign")
        try:
            for sig in harness.IGNORED_SIGNALS:
                time.sleep(0.02)
                d.send_signal(sig)
                time.sleep(0.02)
                self.assertTrue(d.running(), "signal %d stopped focald (status %s)" % (sig, d.proc.poll()))
            time.sleep(0.2)
        finally:
            stop.set()
            for t in threads:
                t.join(15)
        self.assertTrue(d.running(), "a signal stopped focald (status %s)" % d.proc.poll())
        log = d.log_text()
        for sig in harness.IGNORED_SIGNALS:
            name = ("SIGRTMIN+%d" % (sig - signal.SIGRTMIN) if signal.SIGRTMIN <= sig <= signal.SIGRTMAX
                    else "SIGPOLL" if sig == signal.SIGIO else signal.Signals(sig).name)
            self.assertTrue('"%s: ignored"' % name in log, "no log line for %s" % name)
        self.assertEqual(d.get("/readyz").status, 200)
        self.assertEqual(d.stop(), 0, d.log_text()[-800:])
        d.start()
        self._check_acknowledged(d, "sig-ign", sent, "ignored signals")
        self.assertEqual(d.stop(), 0)
        for sig in harness.STOP_SIGNALS:
            name = signal.Signals(sig).name
            with self.subTest(sig=name):
                dd = self.start_daemon()
                stop, threads, sent = self._traffic(dd, "sig-stop")
                time.sleep(0.3)
                try:
                    rc = dd.stop(sig)
                finally:
                    stop.set()
                    for t in threads:
                        t.join(15)
                self.assertEqual(rc, 0, "%s: %s" % (name, dd.log_text()[-800:]))
                self.assertTrue('"%s: draining"' % name in dd.log_text(), "%s did not drain" % name)
                dd.start()
                self._check_acknowledged(dd, "sig-stop", sent, name)
                self.assertEqual(dd.stop(), 0)

    def test_signal_hangup_drains_unless_it_was_ignored(self):
        """SIGHUP (the terminal focald runs in closing) used to kill focald on the spot (status -1, no drain);
        it now drains as SIGTERM does. Ignored when focald starts, as nohup leaves it, it stays ignored."""
        d = self.start_daemon()
        self.assertEqual(d.batch("hup", base_body()).status, 200)
        self.assertEqual(d.stop(signal.SIGHUP), 0, d.log_text()[-800:])
        self.assertIn("SIGHUP: draining", d.log_text())
        again = self.start_daemon(db_dir=d.db_dir)
        self.assertEqual(again.get("/v1/datasets/hup").status, 200)
        self.assertEqual(again.stop(), 0)
        port = harness.free_port()
        p = subprocess.Popen([harness.FOCALD, "--listen", "127.0.0.1:%d" % port, "--db", os.path.join(temp_dir(), "f.db")],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
        try:
            h = Daemon(self.id())
            h.port = port
            self.assertTrue(harness.poll_until(p, lambda: h.get("/readyz", timeout=1).status == 200, 10),
                            "focald did not become ready")
            p.send_signal(signal.SIGHUP)
            time.sleep(0.5)
            self.assertIsNone(p.poll(), "a SIGHUP ignored at start stopped focald")
            self.assertEqual(h.get("/readyz").status, 200)
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(10), 0)


class LogLineTest(HardeningTestCase):

    def test_logs_every_line_is_json_whatever_the_request(self):
        """A request's path and method are the client's: long, escaped or not UTF-8, each request is logged
        as one JSON object with its status. A line past its buffer used to be cut in the middle of a string."""
        d = self.start_daemon(args=("--log-level", "debug"))
        paths = [b"/v1/" + b"A" * 20000, b"/v1/" + "\u00e9".encode() * 5000, b"/v1/" + b"\x01" * 5000,
                 b"/v1/" + b"\xff" * 3000, b"/v1/" + b'"\\' * 3000, b"/v1/datasets/" + b"%00%ff%22" * 2000,
                 b"/v1/" + "\u2028".encode() * 2000, b"/v1/" + b"\xf0\x9f\x98\x80" * 1000 + b"\xf0\x9f"]
        sent = 0
        for method in (b"GET", b"G" * 3000):
            for path in paths:
                r = d.raw(method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                self.assertIn(r.status, (400, 404, 405, 414, 501), r)
                sent += 1
        self.assertEqual(d.get("/livez").status, 200)
        time.sleep(0.2)
        requests = 0
        for line in d.log_text().splitlines():
            entry = json.loads(line)  # every line is one JSON object
            if entry.get("msg") == "request" and entry.get("route") not in ("/livez", "/readyz"):
                self.assertIsInstance(entry.get("status"), int, line[:300])
                requests += 1
        self.assertEqual(requests, sent, "requests missing from the log")
        # libmicrohttpd is given focald's logger first, so that none of its messages goes to stderr itself
        self.assertNotIn("EXTERNAL_LOGGER is not the first option", d.log_text())


class TokenConfigTest(HardeningTestCase):

    def test_security_token_file_with_final_newline(self):
        td = temp_dir()
        path = os.path.join(td, "token")
        with open(path, "w") as f:
            f.write(TOKEN + "\n")
        d = self.start_daemon(args=("--token-file", path), token=TOKEN)
        self.assertEqual(d.get("/v1/datasets").status, 200)
        self.assertUnauthorized(d.get("/v1/datasets", headers={"Authorization": "Bearer " + TOKEN[:-1]}))
        self.assertUnauthorized(d.get("/v1/datasets", headers={"Authorization": None}))
        self.assertNotIn(TOKEN, d.log_text())

    def test_security_token_too_short_is_refused_at_start(self):
        td = temp_dir()
        short = "a" * 15
        rc, out = run_focald(["--listen", "127.0.0.1:%d" % harness.free_port(), "--db", os.path.join(td, "f.db")],
                             env={"FOCALD_TOKEN": short})
        self.assertEqual(rc, 2, "FOCALD_TOKEN of 15 characters: %s" % out)
        self.assertNotIn(short, out)
        path = os.path.join(td, "token")
        with open(path, "w") as f:
            f.write(short + "\n")
        rc, out = run_focald(["--listen", "127.0.0.1:%d" % harness.free_port(), "--db", os.path.join(td, "f.db"),
                              "--token-file", path])
        self.assertEqual(rc, 2, "--token-file of 15 characters: %s" % out)

    def test_security_token_unusable_is_refused_at_start(self):
        td = temp_dir()
        for env, args, what in (({"FOCALD_TOKEN": "with space " + "x" * 20}, [], "a space"),
                                ({"FOCALD_TOKEN": "ctrl\x01" + "x" * 20}, [], "a control character"),
                                ({"FOCALD_TOKEN": TOKEN}, ["--token-file", os.path.join(td, "nonexistent")],
                                 "both FOCALD_TOKEN and --token-file"),
                                ({}, ["--token-file", os.path.join(td, "nonexistent")], "a missing token file")):
            with self.subTest(what=what):
                rc, out = run_focald(["--listen", "127.0.0.1:%d" % harness.free_port(), "--db", os.path.join(td, "f.db")]
                                     + args, env=env)
                self.assertEqual(rc, 2, "%s: %s" % (what, out))


class ListenTest(HardeningTestCase):

    def test_security_non_loopback_without_token_is_refused(self):
        td = temp_dir()
        for host in ("0.0.0.0", "[::]"):
            with self.subTest(host=host):
                rc, out = run_focald(["--listen", "%s:%d" % (host, harness.free_port()), "--db", os.path.join(td, "f.db")])
                self.assertEqual(rc, 2, out)
                self.assertIn("--insecure-no-token", out)

    def test_security_non_loopback_with_insecure_no_token_warns(self):
        d = self.start_daemon(args=("--insecure-no-token",), listen_host="0.0.0.0")
        self.assertEqual(d.get("/v1/datasets").status, 200)
        warn = [json.loads(x) for x in d.log_text().splitlines() if x.startswith("{") and '"warn' in x]
        self.assertTrue(any("remote" in w.get("msg", "") or "loopback" in w.get("msg", "") for w in warn),
                        "no warning in the log: %s" % d.log_text()[-1500:])

    def test_security_non_loopback_with_token_needs_no_flag(self):
        d = self.start_daemon(env={"FOCALD_TOKEN": TOKEN}, token=TOKEN, listen_host="0.0.0.0")
        self.assertEqual(d.get("/v1/datasets").status, 200)
        self.assertUnauthorized(d.get("/v1/datasets", headers={"Authorization": None}))


def tree(td):
    """Every file under the directory td, by its path relative to td: its bytes."""
    return {os.path.relpath(os.path.join(r, n), td): open(os.path.join(r, n), "rb").read()
            for r, _, names in os.walk(td) for n in names}


class StartRefusalTest(HardeningTestCase):
    """What focald refuses to start on says why in a JSON log line, exits non-zero and leaves the file as it was."""

    def _files(self, td):
        return {n: open(os.path.join(td, n), "rb").read() for n in sorted(os.listdir(td))
                if os.path.isfile(os.path.join(td, n))}

    def _refused(self, args, status, say, cmd_prefix=()):
        p = subprocess.run(list(cmd_prefix) + [harness.FOCALD, "--listen", "127.0.0.1:%d" % harness.free_port()] + args,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=20)
        out = p.stderr.decode("utf-8", "replace")
        self.assertEqual(p.returncode, status, "%s: %s" % (args, out))
        self.assertIn(say, out)
        return out

    def test_start_a_file_focald_did_not_write_is_refused_and_left_as_it_was(self):
        def sqlite_file(path, sql):
            c = sqlite3.connect(path)
            c.executescript(sql)
            c.commit()
            c.close()
        cases = [
            ("random bytes", lambda f: open(f, "wb").write(bytes(random.Random(7).getrandbits(8) for _ in range(8192))),
             "cannot read the database"),
            ("a text file", lambda f: open(f, "w").write("not a database\n" * 50), "cannot read the database"),
            ("another application's database", lambda f: sqlite_file(
                f, "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); INSERT INTO notes (body) VALUES ('keep');"),
             "not focald's"),
            ("another application's database in WAL mode", lambda f: sqlite_file(
                f, "PRAGMA journal_mode=WAL; CREATE TABLE t (x); INSERT INTO t VALUES (1);"), "not focald's"),
            # a schema version focald knows, set by someone else: focald's migrations would run on it
            ("another application's database with a schema version", lambda f: sqlite_file(
                f, "PRAGMA user_version=3; CREATE TABLE samples (x); INSERT INTO samples VALUES (1);"), "not focald's"),
            ("another application's database with focald's latest version", lambda f: sqlite_file(
                f, "PRAGMA user_version=%d; CREATE TABLE datasets (x);" % harness.NEWEST_SCHEMA), "not focald's"),
        ]
        for what, make, say in cases:
            with self.subTest(what=what):
                td = temp_dir()
                db = os.path.join(td, "f.db")
                make(db)
                before = self._files(td)
                out = self._refused(["--db", db], 1, say)
                for line in out.splitlines():
                    json.loads(line)  # every line is a JSON log line
                self.assertLess(len(out), 1000, "one short line saying why, not the schema's SQL: %s" % out)
                self.assertEqual(self._files(td), before, "the refused file, or its directory, was changed")

    def test_start_a_read_only_database_is_refused_before_any_write(self):
        if os.geteuid() != 0:
            self.skipTest("needs root, to run focald as a user who cannot write the file")
        td = temp_dir()
        d = self.start_daemon(db_dir=td)
        self.assertEqual(d.batch("ro", base_body()).status, 200)
        self.assertEqual(d.stop(), 0)
        os.chmod(td, 0o777)
        os.chmod(d.db, 0o444)
        before = self._files(td)
        # SQLite opens a file it cannot write read-only; focald used to report ready and fail every write (500)
        self._refused(["--db", d.db], 1, "read-only", cmd_prefix=("runuser", "-u", "nobody", "--"))
        self.assertEqual(self._files(td), before)

    def test_start_every_failure_says_why(self):
        """A listener that cannot be had names libmicrohttpd's reason (not a guess), and a start-up that runs
        out of memory or threads, at whichever step, ends with an error line saying so: under some address
        space limits focald used to exit 1 after "loaded" without a word (a thread it could not create)."""
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        try:
            for flag in ("--listen", "--health-listen"):
                out = self._refused(["--db", os.path.join(temp_dir(), "f.db"), flag, "127.0.0.1:%d" % port], 1,
                                    "cannot listen")
                self.assertIn('"error":"Address already in use"', out)
        finally:
            busy.close()
        if os.environ.get("SANITIZE"):
            return  # a sanitizer's runtime reserves terabytes of shadow memory: it cannot start under these limits
        failed = 0
        for mb in range(24, 80, 8):
            with self.subTest(address_space_mb=mb):
                p = subprocess.Popen(["prlimit", "--as=%d" % (mb << 20), harness.FOCALD, "--listen",
                                      "127.0.0.1:%d" % harness.free_port(), "--db", os.path.join(temp_dir(), "f.db")],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                try:
                    _, err = p.communicate(timeout=3)
                except subprocess.TimeoutExpired:  # it started: nothing to say
                    p.terminate()
                    p.communicate()
                    continue
                if p.returncode == 127:  # the dynamic loader could not map a library: focald never ran
                    continue
                self.assertEqual(p.returncode, 1, err[-600:])
                last = json.loads(err.splitlines()[-1])
                self.assertEqual(last["level"], "error", err[-600:])
                failed += 1
        self.assertGreater(failed, 0, "no address space limit made the start-up fail")

    def _databases(self):
        """The kinds of --db that a start refused before the database is opened must leave byte for byte: none,
        today's (with a batch), and one of every older schema (tests/upgrade/fixtures). Returns (kinds, make):
        make(kind, td) builds one of them under the directory td and returns the --db to give."""
        fixtures = harness.UPGRADE_FIXTURES
        dumps = sorted(f for f in os.listdir(fixtures) if os.path.exists(os.path.join(fixtures, f, "db.sql")))
        self.assertEqual(len(dumps), harness.NEWEST_SCHEMA, dumps)
        d = self.start_daemon(db_dir=temp_dir())
        self.assertEqual(d.batch("kept", base_body()).status, 200)
        self.assertEqual(d.stop(), 0)

        def make(kind, td):
            db = os.path.join(td, "sub", "f.db")
            if kind == "none":
                return db
            os.mkdir(os.path.join(td, "sub"))
            if kind == "current":
                shutil.copy(d.db, db)
                return db
            harness.load_dump(os.path.join(fixtures, kind, "db.sql"), db)
            return db
        return ["none", "current"] + dumps, make

    def test_start_port_taken_fails_at_once_and_leaves_every_database_byte_for_byte(self):
        """A --listen or --health-listen port that is taken stops focald at once, naming the address and the
        reason, before the database is opened: no file made, no migration, no switch to WAL, for a database of
        every older schema (tests/upgrade/fixtures), today's, and none at all. focald used to open and migrate
        the database (for a large one, minutes) and only then find the port taken."""
        kinds, make = self._databases()
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        taken = "127.0.0.1:%d" % busy.getsockname()[1]
        for kind in kinds:
            for flag in ("--listen", "--health-listen"):
                with self.subTest(db=kind, flag=flag):
                    td = temp_dir()
                    db = make(kind, td)
                    before = tree(td)
                    args = ["--db", db, flag, taken]
                    if flag == "--listen":  # _refused's own --listen comes first: this one wins
                        args = [flag, taken, "--db", db]
                    t0 = time.monotonic()
                    out = self._refused(args, 1, "cannot listen")
                    self.assertLess(time.monotonic() - t0, 3.0, "not at once: %s" % out)
                    self.assertIn('"%s":"%s"' % (flag[2:].replace("-", "_"), taken), out)
                    self.assertIn("Address already in use", out)
                    self.assertEqual(tree(td), before, "the database, or its directory, was touched: %s" % out)

    def test_start_tls_files_that_cannot_serve_fail_at_once_and_leave_every_database_byte_for_byte(self):
        """A --tls-cert or --tls-key that is missing, empty, not PEM, the other file of the pair, or the key of
        another certificate stops focald at once, naming the file or GnuTLS's reason, before the database is
        opened. These were found only when the server started: by then a new database had been created, or an
        older one migrated, and the error said "cannot listen"."""
        td0 = temp_dir()
        cert, key, other_key = (os.path.join(td0, n) for n in ("cert.pem", "key.pem", "other.pem"))
        for c, k in ((cert, key), (os.path.join(td0, "other-cert.pem"), other_key)):
            r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", k, "-out", c,
                                "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                               capture_output=True)
            self.assertEqual(r.returncode, 0, r.stderr.decode()[-300:])
        empty, garbage = os.path.join(td0, "empty.pem"), os.path.join(td0, "garbage.pem")
        open(empty, "w").close()
        with open(garbage, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
        bad = [(cert, os.path.join(td0, "missing.pem"), "cannot read the TLS certificate or key"),
               (os.path.join(td0, "missing.pem"), key, "cannot read the TLS certificate or key"),
               (td0, key, "cannot read the TLS certificate or key"),
               (cert, empty, "cannot be used"), (empty, key, "cannot be used"), (cert, garbage, "cannot be used"),
               (key, cert, "cannot be used"), (cert, cert, "cannot be used"),
               (cert, other_key, "The certificate and the given key do not match")]
        kinds, make = self._databases()
        for kind in kinds:
            for c, k, say in bad:
                with self.subTest(db=kind, cert=os.path.basename(c), key=os.path.basename(k)):
                    td = temp_dir()
                    db = make(kind, td)
                    before = tree(td)
                    t0 = time.monotonic()
                    out = self._refused(["--db", db, "--tls-cert", c, "--tls-key", k], 1, say)
                    self.assertLess(time.monotonic() - t0, 3.0, "not at once: %s" % out)
                    self.assertNotIn("migration", out)
                    self.assertEqual(tree(td), before, "the database, or its directory, was touched: %s" % out)
        # and the pair itself serves
        d = self.start_daemon(args=("--tls-cert", cert, "--tls-key", key), tls_ca=cert)
        self.assertEqual(d.get("/livez").status, 200)

    def test_start_a_cluster_log_that_does_not_answer_leaves_every_database_byte_for_byte(self):
        """--store naming a PostgreSQL that refuses the connection stops focald, saying so, before anything at
        --db is made, opened or migrated. A database of an older schema used to be migrated first, and could
        then no longer be opened by the focald that wrote it."""
        kinds, make = self._databases()
        store = "postgresql://focald@127.0.0.1:%d/focald" % harness.free_port()
        for kind in kinds:
            with self.subTest(db=kind):
                td = temp_dir()
                db = make(kind, td)
                before = tree(td)
                t0 = time.monotonic()
                out = self._refused(["--db", db, "--store", store], 1, "cannot open the cluster's log")
                self.assertLess(time.monotonic() - t0, 3.0, "not at once: %s" % out)
                self.assertIn("Connection refused", out)
                self.assertNotIn("migration", out)
                self.assertEqual(tree(td), before, "the database, or its directory, was touched: %s" % out)

    def test_start_each_thread_that_cannot_start_is_named_and_stops_focald(self):
        """Every thread focald starts before it is ready (its own, libmicrohttpd's, libuv's loop), failing in
        turn as under a task limit: focald exits 1 with an error line naming the thread and the reason. The
        watchdog's failure used to be a warning (focald served without its slowloris deadlines) and the start-up
        signal thread's went unmentioned; libmicrohttpd's (its pool's, or its one thread's with --http-threads 1,
        and the health listener's) were reported as "cannot listen"."""
        for http_threads in (1, 2):
            with self.subTest(http_threads=http_threads):
                names = harness.each_thread_failing(self, lambda td: [
                    "--listen", "127.0.0.1:%d" % harness.free_port(), "--db", os.path.join(td, "f.db"),
                    "--health-listen", "127.0.0.1:%d" % harness.free_port(), "--http-threads", http_threads])
                self.assertEqual({"starting", "HTTP pool", "health listener", "watchdog", "writer", "checkpointer",
                                  "loop"}, names)

    def test_start_viewer_urls_that_are_not_absolute_http_are_refused(self):
        """--viewer-url (or FOCALD_VIEWER_URL) begins every OHIF link focald writes: one that is not an absolute
        http(s) URL that "/viewer?..." can follow (another scheme, relative, no host, a query or fragment,
        characters a URL must escape) is refused at start, exit 2, naming the option; nothing is created. Each
        used to be taken, and its links written into the exports and answers as given."""
        td = temp_dir()
        db = os.path.join(td, "sub", "f.db")
        bad = ["javascript:alert(1)//", "JavaScript:alert(1)", "data:text/html,<b>x</b>", "vbscript:x", "ftp://pacs/x",
               "file:///etc", "/ohif", "ohif/viewer", "localhost:3000", "//pacs.example.org", "garbage", "", "/",
               "http://", "https://", "http:///x", "http:pacs", "http:/pacs", " http://pacs", "http://pacs/a b",
               "http://pacs/?a=1", "http://pacs/#f", "http://pacs/\"x", "http://pacs/<script>", "http://pacs/a\\b",
               "http://pacs/`x`", "http://pacs/{x}", "http://pacs/a|b", "http://pacs/%zz", "http://pacs/%4",
               "http://pacs/\u00e9", "http://pacs/\tx", "http://:3000", "http://@pacs"]
        for url in bad:
            with self.subTest(url=url):
                self._refused(["--db", db, "--viewer-url", url], 2, "--viewer-url")
        out = self._refused(["--db", db], 2, "--viewer-url", cmd_prefix=("env", "FOCALD_VIEWER_URL=javascript:x"))
        self.assertIn("javascript:x", out)
        self.assertEqual(os.listdir(td), [], "a database was made for a refused --viewer-url")
        for url, base in (("https://pacs.example.org/ohif/", "https://pacs.example.org/ohif"),
                          ("HTTP://LOCALHOST:3000", "HTTP://LOCALHOST:3000"), ("http://[::1]:3000/a%2Fb/", "http://[::1]:3000/a%2Fb"),
                          ("http://user@10.0.0.1:8042/ohif-viewer_~.x", "http://user@10.0.0.1:8042/ohif-viewer_~.x")):
            with self.subTest(url=url):
                d = self.start_daemon(args=("--viewer-url", url))
                d.ok_batch("v", base_body(meta={"s0": {"study_uid": "1.2.3"}}))
                self.assertEqual(d.sample("v", "s0").json()["viewer_url"], base + "/viewer?StudyInstanceUIDs=1.2.3")
                self.assertEqual(d.stop(), 0)

    def test_start_db_names_that_keep_nothing_are_refused(self):
        td = temp_dir()
        for db in ("", ":memory:", "file:%s/f.db?mode=memory" % td, "file::memory:"):
            with self.subTest(db=db):
                self._refused(["--db", db], 2, "--db")
        self.assertEqual(os.listdir(td), [])

    def test_start_listen_addresses_that_cannot_be_had_are_refused_before_the_database(self):
        td = temp_dir()
        db = os.path.join(td, "sub", "f.db")
        for flag in ("--listen", "--health-listen"):
            for addr in ("127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:+8765",
                         "127.0.0.1: 8765", "127.0.0.1:0x50", "127.0.0.1", "[::1]8765", "no-such-host.invalid:8765"):
                with self.subTest(flag=flag, addr=addr):
                    args = ["--db", db, flag, addr]
                    if flag == "--listen":  # _refused's own --listen comes first: this one wins
                        args = [flag, addr, "--db", db]
                    self._refused(args, 2, flag)
        self.assertEqual(os.listdir(td), [], "a database was made for a listener that could not be had")


class CreationFaultTest(HardeningTestCase):
    """A database whose creation fails, at whichever write or sync (the fault shim: a full disk, an I/O error,
    a kill), or on a real tmpfs that is full, leaves nothing at --db (an empty file at most, which is a valid
    empty database); once the disk is well again the next start creates it and is ready. A first start on a
    full disk used to leave a file of one page in WAL mode without a schema, which a cluster node then took
    for a database of its own rather than begin from the cluster's snapshot."""

    SHIM = os.path.join(os.path.dirname(harness.FOCALD), "tests", "libfaultvfs.so")

    def _start(self, db, env=None):
        """Starts focald on db; returns (ready, exit status, output). A ready focald is stopped with SIGTERM."""
        e = dict(os.environ, **(env or {}))
        p = subprocess.Popen([harness.FOCALD, "--listen", "127.0.0.1:%d" % harness.free_port(), "--db", db],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=e)
        out, ready = [], False
        for line in p.stdout:
            out.append(line.decode("utf-8", "replace"))
            if '"ready' in out[-1]:
                ready = True
                p.terminate()
        try:
            rc = p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            rc = p.wait()
        return ready, rc, "".join(out)

    def _shim_env(self, **kw):
        env = {"LD_PRELOAD": self.SHIM, "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", "")}
        env.update(kw)
        return env

    def _assert_left_nothing_then_created(self, td, db, ready, rc, out, what, killed=False):
        names = sorted(os.listdir(td))
        if not ready:
            if not killed:
                self.assertEqual(rc, 1, "%s: %s" % (what, out[-800:]))
                self.assertIn("cannot create the database", out, what)
            for n in names:
                path = os.path.join(td, n)
                if n == "f.db":
                    self.assertEqual(os.path.getsize(path), 0, "%s: a half-made database was left: %s" % (what, names))
                else:
                    self.assertIn(".creating", n, "%s: %s was left beside the database" % (what, n))
        ready2, rc2, out2 = self._start(db)
        self.assertTrue(ready2 and rc2 == 0, "%s: the next start: %s %s" % (what, rc2, out2[-800:]))
        # a stopped focald leaves its database alone in its directory (the read-only check below makes a WAL)
        self.assertEqual(sorted(n for n in os.listdir(td) if n.startswith("f.db")), ["f.db"],
                         "%s: files left beside the database: %s" % (what, os.listdir(td)))
        c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
        try:
            self.assertEqual(c.execute("PRAGMA integrity_check").fetchall(), [("ok",)], what)
            version = c.execute("PRAGMA user_version").fetchone()[0]
        finally:
            c.close()
        return version

    def test_creation_failing_at_every_write_and_sync_leaves_nothing_and_the_next_start_creates_it(self):
        if os.environ.get("SANITIZE"):
            return  # hundreds of starts: too slow under a sanitizer; the tmpfs test below runs there
        td = temp_dir()
        trace = os.path.join(td, "trace")
        ready, rc, out = self._start(os.path.join(td, "ref", "f.db"), self._shim_env(FOCALD_FAULT_TRACE=trace))
        self.assertTrue(ready, out[-800:])
        loads = [line.split() for line in open(trace) if line.startswith("step load")]
        # the counts (reads, writes, syncs) when the load begins: those of the opening, which creates the database
        writes, syncs = int(loads[1][3]), int(loads[1][4])
        self.assertGreater(writes, 10)
        self.assertGreater(syncs, 2)
        latest = None
        # a failed write (full or I/O error: the same path in focald) and a kill after a write (a partial file),
        # a failed sync and a kill before one (the data written but not durable)
        cases = [("write", "full", writes), ("write", "kill-after", writes),
                 ("sync", "ioerr", syncs), ("sync", "kill-before", syncs)]
        for kind, do, count in cases:
            for n in range(1, count + 1):
                what = "kind=%s,at=%d,do=%s" % (kind, n, do)
                d = temp_dir()
                db = os.path.join(d, "f.db")
                ready, rc, out = self._start(db, self._shim_env(FOCALD_FAULT=what + ",in=load"))
                self.assertFalse(ready and do != "kill-after", "%s: the fault did not fire: %s" % (what, out[-400:]))
                v = self._assert_left_nothing_then_created(d, db, ready, rc, out, what, killed=do.startswith("kill"))
                latest = latest or v
                self.assertEqual(v, latest, what)

    def test_creation_on_a_full_tmpfs_leaves_nothing_and_the_next_start_creates_it(self):
        mnt, _ = harness.mount_tmpfs(self, "1m")
        # room for 0 pages, then 1, 2, ... (past the first 40, every 5th): every point where the creation can run
        # out, until it fits
        fitted = False
        for pages in list(range(0, 40)) + list(range(40, 200, 5)):
            what = "%d free pages" % pages
            td = os.path.join(mnt, "d")
            shutil.rmtree(td, ignore_errors=True)
            os.mkdir(td)
            st = os.statvfs(mnt)
            filler = os.path.join(mnt, "fill")
            with open(filler, "wb") as f:
                f.write(b"\0" * (st.f_bavail * st.f_frsize - pages * 4096))
            db = os.path.join(td, "f.db")
            ready, rc, out = self._start(db)
            os.unlink(filler)
            if ready:
                fitted = True
                break
            self._assert_left_nothing_then_created(td, db, ready, rc, out, what)
        self.assertTrue(fitted, "the database never fitted in 200 free pages")

    def test_a_database_made_while_focald_waits_to_create_one_is_opened_not_replaced(self):
        """Two processes starting on one new --db must not both build it: the second rename would put a
        new file in place of the database the first already writes to (its acknowledged batches then
        going to an unlinked file). Creating holds an exclusive flock on the directory; with the lock
        held elsewhere, focald waits (and says so) without writing anything at --db, and once it gets
        the lock it opens the database that was made meanwhile, the very file, rather than build one."""
        td, other = temp_dir(), temp_dir()
        db = os.path.join(td, "f.db")
        dirfd = os.open(td, os.O_RDONLY)
        fcntl.flock(dirfd, fcntl.LOCK_EX)
        p = subprocess.Popen([harness.FOCALD, "--listen", "127.0.0.1:%d" % harness.free_port(), "--db", db],
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines, waiting, ready = [], threading.Event(), threading.Event()

        def read():
            for line in p.stdout:
                lines.append(line.decode("utf-8", "replace"))
                if "waiting for another process creating" in lines[-1]:
                    waiting.set()
                if '"ready' in lines[-1]:
                    ready.set()
        threading.Thread(target=read, daemon=True).start()
        try:
            self.assertTrue(waiting.wait(10), "focald does not wait for the lock: %s" % "".join(lines)[-800:])
            time.sleep(0.3)
            self.assertFalse(ready.is_set())
            self.assertEqual(os.listdir(td), [], "focald wrote beside --db while another held the lock")
            # the other process: a complete database of focald's own, put in place
            ok, rc, out = self._start(os.path.join(other, "g.db"))
            self.assertTrue(ok and rc == 0, out[-800:])
            shutil.copyfile(os.path.join(other, "g.db"), db)
            inode = os.stat(db).st_ino
            fcntl.flock(dirfd, fcntl.LOCK_UN)
            self.assertTrue(ready.wait(20), "".join(lines)[-800:])
            self.assertEqual(os.stat(db).st_ino, inode, "the database made meanwhile was replaced")
        finally:
            os.close(dirfd)
            p.terminate()
            self.assertEqual(p.wait(20), 0, "".join(lines)[-800:])
        self.assertEqual(sorted(n for n in os.listdir(td) if ".creating" in n), [])

    def test_an_empty_file_at_db_is_taken_as_a_new_database(self):
        """An empty file is a valid empty database (one an older focald left on a full disk, or one made
        with touch): focald creates its database there, and removes a .creating a killed creation left."""
        td = temp_dir()
        db = os.path.join(td, "f.db")
        open(db, "wb").close()
        for suffix in (".creating", ".creating-wal", ".creating-shm"):
            with open(db + suffix, "wb") as f:
                f.write(b"left by a creation that was killed" * 200)
        self._assert_left_nothing_then_created(td, db, False, 1, "cannot create the database", "an empty file")
        self.assertEqual([n for n in os.listdir(td) if ".creating" in n], [])
        # what an older focald left on a full disk: the header page of a WAL database, no schema; check_owned
        # takes it as focald's (no tables, version 0) and the migrations make it whole
        td = temp_dir()
        db = os.path.join(td, "f.db")
        c = sqlite3.connect(db)
        self.assertEqual(c.execute("PRAGMA journal_mode=WAL").fetchone()[0], "wal")
        c.close()
        self.assertEqual(os.path.getsize(db), 4096)
        ready, rc, out = self._start(db)
        self.assertTrue(ready and rc == 0, "a header-only database: %s %s" % (rc, out[-800:]))


# ---------------------------------------------------------------------------- security: TLS

class TlsTest(HardeningTestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = temp_dir()
        cls.cert = os.path.join(cls.dir, "cert.pem")
        cls.key = os.path.join(cls.dir, "key.pem")
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", cls.key, "-out",
                            cls.cert, "-days", "2", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], capture_output=True)
        if r.returncode != 0:
            raise unittest.SkipTest("openssl cannot make a certificate: %s" % r.stderr.decode()[-300:])

    def tls_daemon(self):
        return self.start_daemon(args=("--tls-cert", self.cert, "--tls-key", self.key), tls_ca=self.cert)

    def healthcheck(self, port, tls=True):
        args = ["--listen", "127.0.0.1:%d" % port, "--healthcheck"]
        if tls:
            args += ["--tls-cert", self.cert, "--tls-key", self.key]
        rc, out = run_focald(args, timeout=10)
        return rc, out

    def test_security_tls_serves_https(self):
        d = self.tls_daemon()
        r = d.get("/livez")
        self.assertEqual(r.status, 200, r)
        j = d.ok_batch("tls", base_body())
        self.assertEqual(j["accepted"], 3)
        self.assertEqual(d.dataset("tls").json()["observations"], 3)

    def test_security_tls_port_does_not_speak_plain_http(self):
        d = self.tls_daemon()
        r, elapsed, how = raw_exchange(d.port, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
        self.assertIsNone(r, "plain HTTP to the TLS port was answered: %r" % r)
        self.assertEqual(d.get("/livez").status, 200, "HTTPS after a plain-HTTP attempt")

    def test_security_tls_healthcheck_exit_status(self):
        d = self.tls_daemon()
        rc, out = self.healthcheck(d.port)
        self.assertEqual(rc, 0, out)
        self.assertEqual(d.stop(), 0)
        rc, out = self.healthcheck(d.port)
        self.assertEqual(rc, 1, out)

    def test_security_healthcheck_only_from_the_command_line(self):
        """FOCALD_HEALTHCHECK in an environment the daemon shares with its probe (a container's, a pod's)
        does not turn the daemon into a one-shot probe: it serves."""
        d = self.start_daemon(env={"FOCALD_HEALTHCHECK": "1"})
        self.assertEqual(d.get("/livez").status, 200)
        self.assertEqual(d.ok_batch("hc", base_body())["accepted"], 3)
        rc, out = run_focald(["--listen", "127.0.0.1:%d" % d.port, "--healthcheck"], timeout=10)
        self.assertEqual(rc, 0, out)
        rc, out = run_focald(["--help"])
        self.assertEqual(rc, 0, out)
        self.assertNotIn(" VALUE", out)  # each flag says what it takes
        self.assertIn("--listen HOST:PORT", out)
        self.assertIn("--max-body BYTES", out)



class BuildTest(unittest.TestCase):

    def test_build_version_has_one_source(self):
        """FL_VERSION in lib/include/focal.h is the version: focald --version, /metrics' build_info, the OpenAPI
        document, the image's label default, the Python client and the pkg-config file all say the same, and no
        other file of the project spells a version of its own."""
        root = harness.ROOT
        with open(os.path.join(root, "lib", "include", "focal.h")) as f:
            version = re.search(r'(?m)^#define FL_VERSION "([^"]+)"$', f.read()).group(1)
        self.assertRegex(version, r"^\d+\.\d+\.\d+$")
        out = subprocess.run([harness.FOCALD, "--version"], capture_output=True, text=True, timeout=10).stdout
        self.assertEqual(out.strip(), "focald " + version)
        with open(os.path.join(root, "server", "openapi.json")) as f:
            self.assertEqual(json.load(f)["info"]["version"], version)
        with open(os.path.join(root, "docker", "Dockerfile")) as f:
            self.assertIn("ARG VERSION=%s\n" % version, f.read())
        with open(os.path.join(root, "clients", "python", "focald", "__init__.py")) as f:
            self.assertIn('__version__ = "%s"' % version, f.read())
        with open(os.path.join(root, "lib", "focal.pc.in")) as f:
            self.assertIn("@VERSION@", f.read())
        allowed = {"lib/include/focal.h", "server/openapi.json", "docker/Dockerfile", "clients/python/focald/__init__.py"}
        files = subprocess.run(["git", "-C", root, "ls-files"], capture_output=True, text=True, check=True).stdout.split()
        spelled = set()
        for rel in files:
            if rel.startswith(("tests/golden/", "tests/fuzz/")) or rel.endswith((".md", ".png")):
                continue
            try:
                with open(os.path.join(root, rel), encoding="utf-8") as f:
                    text = f.read()
            except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
                continue
            if re.search(r'(?<![\d.])%s(?![\d.])' % re.escape(version), text):
                spelled.add(rel)
        self.assertEqual(spelled - allowed, set())
        d = harness.Daemon(self.__class__.__name__).start()
        try:
            self.assertIn('focald_build_info{version="%s"' % version, d.get("/metrics").body.decode())
        finally:
            d.stop()

    def test_build_no_daemon_symbol_shadows_a_shared_library(self):
        """A global function of focald's own with the name of one its libraries export (jansson's
        json_string, say) would silently take the library's calls too: the linker binds them to the
        executable's definition, and the library's callers crash. No exported name may be defined twice."""
        focald = harness.FOCALD
        out = subprocess.run(["nm", "--defined-only", "-g", "-P", focald], capture_output=True, text=True, check=True)
        ours = {line.split()[0] for line in out.stdout.splitlines() if len(line.split()) > 1
                and line.split()[1] in ("T", "D", "B", "R")}
        self.assertIn("main", ours)
        libs = re.findall(r"=> (/\S+)", subprocess.run(["ldd", focald], capture_output=True, text=True,
                                                        check=True).stdout)
        names = [os.path.basename(x) for x in libs]
        for want in ("libjansson", "libmicrohttpd", "libsqlite3", "libuv", "libc.so"):
            self.assertTrue(any(n.startswith(want) for n in names), (want, names))
        clashes = {}
        for lib in libs:
            out = subprocess.run(["nm", "-D", "--defined-only", "-P", lib], capture_output=True, text=True)
            theirs = {line.split()[0].split("@")[0] for line in out.stdout.splitlines() if line.split()}
            # names with a leading "__" or "_" and a capital are the implementation's (the compiler's, a
            # sanitizer's runtime, libgcc's __cpu_model): focald's own code never defines one
            both = sorted(n for n in (ours & theirs) - {"main", "data_start"} if not re.match(r"_[_A-Z]", n))
            if both:
                clashes[os.path.basename(lib)] = both
        self.assertEqual(clashes, {})

if __name__ == "__main__":
    sys.exit(harness.main())
