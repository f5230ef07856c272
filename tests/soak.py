#!/usr/bin/python3
"""Soak test: focald under ten minutes of mixed load, with its resources sampled throughout.

Starts build/focald on a fresh database (durability full, the default) and, for --minutes minutes, runs
at once:
  - posting: build/bench/loadgen, 2 clients of binary batches (512 x 10 classes over 200k sample ids)
    and 1 client of JSON batches (128 x 10), in one-minute runs, so each minute has its own figures;
  - querying: a client asking hard-examples (k=100, every `by` field in turn, run and run=*) and
    sample details back to back;
  - reviewing and exporting: every few seconds a review decision, and an export (CSV, k=20000) streamed
    to nowhere;
and samples the daemon's RSS, open file descriptors and WAL size every --sample-every seconds.

Reports per minute: batches/s and samples/s posted, p50/p99 post latency, query p99, exports, errors,
RSS, fds and WAL. Passes when there are no errors, RSS after the warm-up (the first two minutes) grows by
less than 10% (and 32 MB), and the WAL stays under 256 MB; exits 1 otherwise.

usage: /usr/bin/python3 tests/soak.py [--build build] [--minutes 10] [--sample-every 5]   (make soak)
"""
import argparse
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench"))
from bench_daemon import free_port, wait_ready  # noqa: E402

FIELDS = ["seen", "last_loss", "mean_loss", "max_loss", "ema_loss", "confidence", "variability", "correctness",
          "forgetting", "aum", "forgetting_events", "el2n", "label_issue_score", "grand",
          "early_label_issue_score"]
STATES = ["in_review", "confirmed", "dismissed", "open"]


def proc_figures(pid, db):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    try:
        wal = os.path.getsize(db + "-wal") / 2**20
    except OSError:
        wal = 0.0
    return rss, fds, wal


class Clients:
    """The querying and the review/export clients; each records (time, seconds, ok) per request."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.queries = []
        self.exports = []
        self.reviews = []
        self.errors = []

    def _get(self, conn, path):
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        return r.status, body

    def query_loop(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        i = 0
        while not self.stop.is_set():
            by = FIELDS[i % len(FIELDS)]
            run = "bench" if i % 2 else "*"
            t0 = time.perf_counter()
            try:
                status, body = self._get(conn, f"/v1/datasets/soak/hard-examples?k=100&by={by}&run={run}")
                ok = status == 200
                if ok and i % 5 == 0:
                    items = json.loads(body)["items"]
                    if items:
                        status, _ = self._get(conn, "/v1/datasets/soak/samples/" + items[0]["id"])
                        ok = status == 200
            except (OSError, http.client.HTTPException, ValueError) as e:
                ok, status = False, repr(e)
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            now = time.time()
            self.queries.append((now, time.perf_counter() - t0, ok))
            if not ok:
                self.errors.append((now, "query", status))
            i += 1

    def review_export_loop(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        rnd = random.Random(7)
        i = 0
        while not self.stop.wait(2.0):
            try:
                # a review decision on one of the hardest: any status the sample can take now
                status, body = self._get(conn, "/v1/datasets/soak/hard-examples?k=50")
                items = json.loads(body)["items"] if status == 200 else []
                if items:
                    sid = rnd.choice(items)["id"]
                    conn.request("POST", f"/v1/datasets/soak/samples/{sid}/review",
                                 json.dumps({"status": rnd.choice(STATES[:3]), "reviewer": "soak"}),
                                 {"Content-Type": "application/json"})
                    r = conn.getresponse()
                    r.read()
                    ok = r.status in (200, 409)  # 409: a decision already taken on that sample
                    self.reviews.append((time.time(), ok))
                    if not ok:
                        self.errors.append((time.time(), "review", r.status))
                if i % 3 == 0:
                    t0 = time.perf_counter()
                    conn.request("GET", "/v1/datasets/soak/export?format=csv&k=20000")
                    r = conn.getresponse()
                    n = 0
                    while True:
                        chunk = r.read(1 << 20)
                        if not chunk:
                            break
                        n += len(chunk)
                    ok = r.status == 200 and n > 0
                    self.exports.append((time.time(), time.perf_counter() - t0, ok))
                    if not ok:
                        self.errors.append((time.time(), "export", r.status))
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.errors.append((time.time(), "review/export", repr(e)))
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            i += 1


def loadgen(build, port, args, seconds):
    return subprocess.Popen([f"{build}/bench/loadgen", "--url", f"http://127.0.0.1:{port}/v1/datasets/soak/batches",
                             "--duration", str(seconds), "--warmup", "0", "--samples", "200000", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--minutes", type=int, default=10)
    ap.add_argument("--sample-every", type=float, default=5.0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="focald-soak-")
    db = f"{tmp}/f.db"
    port = free_port()
    log = open(os.path.join(tmp, "focald.log"), "w")
    proc = subprocess.Popen([f"{args.build}/focald", "--listen", f"127.0.0.1:{port}", "--db", db, "--log-level", "warn"],
                            stderr=log)
    samples = []  # (time, rss MB, fds, wal MB)
    rows = []
    clients = Clients(port)
    try:
        wait_ready(port)
        print(f"# focald soak: {args.minutes} min of mixed load; machine: {os.cpu_count()} cores; command: make soak")
        # a first batch so that the dataset exists before the queries start
        first = loadgen(args.build, port, ["--clients", "1", "--batch", "64", "--format", "binary"], 1)
        first.communicate()
        threads = [threading.Thread(target=clients.query_loop, daemon=True),
                   threading.Thread(target=clients.review_export_loop, daemon=True)]
        for t in threads:
            t.start()
        print(f"{'min':>3} {'batches/s':>10} {'samples/s':>10} {'post p50 ms':>12} {'post p99 ms':>12} "
              f"{'query p99 ms':>13} {'exports':>8} {'errors':>7} {'RSS MB':>7} {'fds':>5} {'WAL MB':>7}")
        for minute in range(1, args.minutes + 1):
            t_start = time.time()
            gens = [loadgen(args.build, port, ["--clients", "2", "--batch", "512", "--format", "binary"], 60),
                    loadgen(args.build, port, ["--clients", "1", "--batch", "128", "--format", "json"], 60)]
            while any(g.poll() is None for g in gens):
                samples.append((time.time(), *proc_figures(proc.pid, db)))
                time.sleep(args.sample_every)
            outs = [json.loads(g.stdout.read().strip().splitlines()[-1]) for g in gens]
            t_end = time.time()
            q = [s for t, s, _ in clients.queries if t_start <= t < t_end]
            ex = [e for e in clients.exports if t_start <= e[0] < t_end]
            errs = sum(o["errors"] for o in outs) + sum(1 for e in clients.errors if t_start <= e[0] < t_end)
            mine = [s for s in samples if t_start <= s[0] < t_end]
            row = {
                "minute": minute,
                "batches_per_s": sum(o["requests"] for o in outs) / max(o["seconds"] for o in outs),
                "samples_per_s": sum(o["samples_per_s"] for o in outs),
                "post_p50_ms": max(o["p50_ms"] for o in outs),
                "post_p99_ms": max(o["p99_ms"] for o in outs),
                "query_p99_ms": (sorted(q)[int(0.99 * (len(q) - 1))] * 1000) if q else float("nan"),
                "exports": len(ex),
                "errors": errs,
                "rss_mb": max(s[1] for s in mine),
                "fds": max(s[2] for s in mine),
                "wal_mb": max(s[3] for s in mine),
            }
            rows.append(row)
            print(f"{minute:>3} {row['batches_per_s']:>10.0f} {row['samples_per_s']:>10.0f} {row['post_p50_ms']:>12.2f} "
                  f"{row['post_p99_ms']:>12.2f} {row['query_p99_ms']:>13.2f} {row['exports']:>8} {row['errors']:>7} "
                  f"{row['rss_mb']:>7.0f} {row['fds']:>5} {row['wal_mb']:>7.1f}", flush=True)
        clients.stop.set()
        for t in threads:
            t.join(timeout=130)
    finally:
        clients.stop.set()
        proc.terminate()
        rc = proc.wait(timeout=60)
        log.close()
    errors = sum(r["errors"] for r in rows)
    warm = [r["rss_mb"] for r in rows[2:]] or [r["rss_mb"] for r in rows]
    growth = warm[-1] - warm[0]
    wal_max = max(r["wal_mb"] for r in rows)
    fd_span = max(r["fds"] for r in rows) - min(r["fds"] for r in rows)
    print(f"total: {sum(r['batches_per_s'] * 60 for r in rows):.0f} batches, {len(clients.queries)} queries, "
          f"{len(clients.reviews)} reviews, {len(clients.exports)} exports; errors {errors}; "
          f"RSS after warm-up {warm[0]:.0f} -> {warm[-1]:.0f} MB ({growth:+.0f} MB); WAL max {wal_max:.1f} MB; "
          f"fds {min(r['fds'] for r in rows)}..{max(r['fds'] for r in rows)}; exit status {rc}")
    for e in clients.errors[:10]:
        print("error:", e)
    ok = errors == 0 and growth < max(32.0, 0.10 * warm[0]) and wal_max < 256 and rc == 0 and fd_span < 64
    print("PASS" if ok else "FAIL")
    if ok:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("kept", tmp)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
