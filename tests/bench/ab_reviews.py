#!/usr/bin/python3
"""Concurrent review throughput of two or more focald builds side by side.

For each round and each build: a fresh daemon on its own database, one batch of --clients x --per samples,
then --clients threads posting reviews (status confirmed), each of a different sample, as fast as answers
come. Prints each build's median reviews/s over --rounds rounds; the builds alternate round by round.

usage: /usr/bin/python3 tests/bench/ab_reviews.py [--rounds 3] [--clients 8] [--per 150] BINARY BINARY...
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_ingest as bi  # noqa: E402


def one_round(binary, clients, per):
    tmp = tempfile.mkdtemp(prefix="focald-ab-")
    port = bi.free_port()
    proc = subprocess.Popen([binary, "--listen", f"127.0.0.1:{port}", "--db", f"{tmp}/f.db", "--log-level", "warn"])
    try:
        bi.wait_http(port, "/readyz")
        ids = ["s%d" % i for i in range(clients * per)]
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        c.request("POST", "/v1/datasets/rv/batches",
                  json.dumps({"ids": ids, "logits": [[0.1, 0.2]] * len(ids), "targets": [0] * len(ids)}),
                  {"Content-Type": "application/json"})
        c.getresponse().read()
        errors = []

        def worker(t):
            cc = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for i in range(per):
                cc.request("POST", "/v1/datasets/rv/samples/s%d/review" % (t * per + i),
                           json.dumps({"status": "confirmed"}), {"Content-Type": "application/json"})
                r = cc.getresponse()
                r.read()
                if r.status != 200:
                    errors.append(r.status)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise RuntimeError("reviews answered %r" % sorted(set(errors)))
        return clients * per / (time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--per", type=int, default=150)
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    res = {b: [] for b in a.binaries}
    for _ in range(a.rounds):
        for b in a.binaries:
            res[b].append(one_round(b, a.clients, a.per))
    print(f"# reviews/s, {a.clients} clients x {a.per} reviews of distinct samples of one dataset; "
          f"medians of {a.rounds} rounds; command: tests/bench/ab_reviews.py")
    for b, v in res.items():
        print(f"{b:40s} {statistics.median(v):10,.0f}   rounds: " + ", ".join(f"{x:,.0f}" for x in v))


if __name__ == "__main__":
    main()
