#!/usr/bin/python3
"""Data map latency of two or more focald builds side by side: over every run (run=*) and over one run.

Starts each given binary on its own fresh database and fills each with the same --samples ids in --runs runs
("r0", "r1", ...), two epochs of each (bench_daemon.fill's logits, run by run), so that every sample has a
variability in every run; then asks GET /v1/datasets/bench/datamap (64 x 64 bins, the console's query) with
run=* and with run=r0, alternating between the daemons request by request, --rounds times. Prints each
query's median and minimum per binary. Alternating the daemons puts both under the same noise.

usage: /usr/bin/python3 tests/bench/ab_datamap.py [--rounds 21] [--samples 200000] [--runs 4] BINARY BINARY...
"""
import argparse
import http.client
import os
import random
import statistics
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_daemon as bd  # noqa: E402


def fill_run(conn, run, samples, epoch, batch=2048):
    """One epoch of run over ids s0 .. s{samples-1}: logits of its own seed, the same targets in every run."""
    rnd = random.Random(zlib.crc32(f"{run}/{epoch}".encode()))
    labels = random.Random(1)
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        ids = ",".join(f'"s{start + i}"' for i in range(n))
        rows = ",".join("[" + ",".join(f"{rnd.gauss(0, 2):.3g}" for _ in range(10)) + "]" for _ in range(n))
        targets = ",".join(str(labels.randrange(10)) for _ in range(n))
        body = (f'{{"run":"{run}","step":{epoch * samples + start},"ids":[{ids}],"logits":[{rows}],'
                f'"targets":[{targets}]}}')
        conn.request("POST", "/v1/datasets/bench/batches", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"fill: HTTP {r.status}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--samples", type=int, default=200000)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    runs = [f"r{i}" for i in range(args.runs)]
    with bd.builds(args.binaries) as started:
        ports = [port for _, port in started]
        for port in ports:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            for run in runs:
                for epoch in (0, 1):
                    fill_run(c, run, args.samples, epoch)
            c.close()
        time.sleep(8)  # let a snapshot pass run in each
        conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=120) for p in ports]
        queries = {"run=*": "/v1/datasets/bench/datamap?run=*", "run=r0": "/v1/datasets/bench/datamap?run=r0"}
        lat = {(i, q): [] for i in range(len(conns)) for q in queries}
        answers = {}
        for _ in range(args.rounds):
            for q, path in queries.items():
                for i, c in enumerate(conns):
                    t = time.perf_counter()
                    body = bd.get_json(c, path)
                    lat[(i, q)].append((time.perf_counter() - t) * 1e3)
                    answers.setdefault((i, q), body)
        print(f"# datamap (64 x 64 bins) over {args.samples} samples in {args.runs} runs, two epochs each; "
              f"{args.rounds} rounds alternating the daemons; ms; machine: {os.cpu_count()} cores; "
              f"command: tests/bench/ab_datamap.py")
        for i, b in enumerate(args.binaries):
            print(f"# [{i}] {b}")
        for q in queries:
            same = all(answers[(i, q)] == answers[(0, q)] for i in range(len(conns)))
            print(f"{q:8s} " + "  ".join(f"[{i}] median {statistics.median(lat[(i, q)]):8.1f} min {min(lat[(i, q)]):8.1f}"
                                          for i in range(len(conns))) + f"  answers equal: {same}")


if __name__ == "__main__":
    main()
