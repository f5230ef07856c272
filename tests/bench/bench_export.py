#!/usr/bin/python3
"""Export benchmark: every export format over 1M samples, its time and the daemon's peak memory.

Starts build/focald on a fresh database, records --samples distinct samples (binary batches of 4096 x 10
classes, each sample with imaging meta: uri, study_uid, series_uid, patient_id), then streams
GET /v1/datasets/bench/export?format=F for every format, reading the body as fast as it comes and
counting its records. Before each export the daemon's peak RSS (VmHWM) is reset through
/proc/PID/clear_refs, so the peak after it is the export's own; a short export (k=1000) is measured the
same way beside it: constant memory means both peaks are about the same.

usage: /usr/bin/python3 tests/bench/bench_export.py [--build build] [--samples 1000000] [--rounds 3]
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_daemon import free_port, get_json, wait_ready  # noqa: E402

# each format as its query: the samples' media are local files under /data (FiftyOne imports only local
# files; Label Studio gets them in its local-files form)
FORMATS = ["csv", "jsonl", "label-studio&local_files_root=/data", "fiftyone", "ohif"]
CLASSES = 10


def fill(port, samples, batch=4096):
    """One epoch over ids 0 .. samples-1 with imaging meta, as binary batches."""
    import numpy as np
    rng = np.random.default_rng(1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        ids = np.arange(start, start + n, dtype="<i8")
        logits = rng.normal(0, 2, size=(n, CLASSES)).astype("<f4")
        targets = rng.integers(0, CLASSES, size=n).astype("<i8")
        meta = {str(i): {"uri": f"/data/scans/{i}.dcm", "study_uid": f"1.2.840.113619.2.{i // 4}",
                         "series_uid": f"1.2.840.113619.3.{i}", "patient_id": f"P{i // 16}"}
                for i in range(start, start + n)}
        tensors = [("ids", "INT64", [n], ids.tobytes()), ("logits", "FP32", [n, CLASSES], logits.tobytes()),
                   ("targets", "INT64", [n], targets.tobytes())]
        header = {"run": "bench", "step": start, "meta": meta,
                  "inputs": [{"name": k, "datatype": t, "shape": s, "parameters": {"binary_data_size": len(b)}}
                             for k, t, s, b in tensors]}
        hb = json.dumps(header, separators=(",", ":")).encode()
        body = hb + b"".join(b for *_, b in tensors)
        conn.request("POST", "/v1/datasets/bench/batches", body,
                     {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(hb))})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"fill: HTTP {r.status}")
    conn.close()


def mem_kb(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                vals[k] = int(v.split()[0])
    return vals


def export(port, pid, query):
    """Streams one export; returns (seconds, bytes, records, peak RSS kB, RSS before kB)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = mem_kb(pid)["VmRSS"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("GET", "/v1/datasets/bench/export?" + query)
    r = conn.getresponse()
    if r.status != 200:
        raise RuntimeError(f"export {query}: HTTP {r.status} {r.read()[:200]!r}")
    nbytes = newlines = 0
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        nbytes += len(chunk)
        newlines += chunk.count(b"\n")
    secs = time.perf_counter() - t0
    conn.close()
    fmt = query.split("&")[0].split("=")[1]
    records = newlines - 1 if fmt in ("csv", "fiftyone") else newlines - 2 if fmt == "label-studio" else newlines
    return secs, nbytes, records, mem_kb(pid)["VmHWM"], before


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--samples", type=int, default=1000000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="focald-bench-export-")
    port = free_port()
    log = open(os.path.join(tmp, "focald.log"), "w")
    proc = subprocess.Popen([f"{args.build}/focald", "--listen", f"127.0.0.1:{port}", "--db", f"{tmp}/f.db",
                             "--log-level", "warn", "--durability", "normal"], stderr=log)
    failed = 0
    try:
        wait_ready(port)
        print("# focald export benchmark; machine: %s cores; command: make bench" % os.cpu_count())
        t0 = time.time()
        fill(port, args.samples)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        d = get_json(conn, "/v1/datasets/bench")
        conn.close()
        print(f"fill: {d['samples']} samples with meta ({time.time() - t0:.0f} s); "
              f"daemon RSS {mem_kb(proc.pid)['VmRSS'] / 1024:.0f} MB")
        time.sleep(3)
        rows = {}
        # rounds interleave the formats, so that the machine's noise spreads over all of them
        for _ in range(args.rounds):
            for fmt in FORMATS:
                for query in (f"format={fmt}", f"format={fmt}&k=1000"):
                    rows.setdefault(query, []).append(export(port, proc.pid, query))
        print(f"{'export':<28} {'records':>9} {'MB':>8} {'s (median)':>11} {'records/s':>11} "
              f"{'peak RSS MB':>12} {'over start MB':>14}")
        for query, rs in rows.items():
            secs = statistics.median(r[0] for r in rs)
            peak = statistics.median(r[3] for r in rs) / 1024
            grow = statistics.median(r[3] - r[4] for r in rs) / 1024
            records = rs[0][2]
            expect = min(args.samples, 1000) if "k=" in query else args.samples
            ok = records == expect
            failed += not ok
            print(f"{query:<28} {records:>9} {rs[0][1] / 1e6:>8.1f} {secs:>11.2f} {records / secs:>11.0f} "
                  f"{peak:>12.1f} {grow:>14.1f}{'' if ok else f'  WRONG COUNT, expected {expect}'}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
