#!/usr/bin/python3
"""Ingest throughput of two or more focald builds side by side, for comparing a change on a noisy machine.

Starts each given binary on its own fresh database (the defaults: durable commits), then runs the load
generator (4 clients, ids drawn from 1M) against each daemon in turn, --rounds times per configuration:
binary 1024 x 10 and JSON 256 x 10, as bench_ingest.py. Alternating the daemons run by run puts them under
the same noise, which sequential runs do not; the first rounds bring mostly new samples, later ones mostly
samples already seen, and every build sees the same sequence. Prints the median samples/s and p99 per build
and configuration, and each build's ratio to the first.

usage: /usr/bin/python3 tests/bench/ab_ingest.py [--build build] [--rounds 7] [--seconds 5] BINARY BINARY...
   e.g. git worktree add /tmp/before HEAD~3 && make -C /tmp/before build/focald &&
        /usr/bin/python3 tests/bench/ab_ingest.py /tmp/before/build/focald build/focald
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_daemon as bd  # noqa: E402
import bench_ingest as bi  # noqa: E402

CONFIGS = [c for c in bi.CONFIGS if c[0] in ("binary 1024 x 10", "JSON 256 x 10")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build", help="where the load generator is (build/bench/loadgen)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    with bd.builds(a.binaries) as started:
        ports = [port for _, port in started]
        res = {(i, name): [] for i in range(len(ports)) for name, _, _ in CONFIGS}
        for r in range(a.rounds):
            for name, args, _ in CONFIGS:
                order = list(range(len(ports)))
                if r % 2:
                    order.reverse()  # neither build always goes first
                for i in order:
                    out = bi.loadgen(a.build, ports[i], name.split()[0], args, a.seconds)
                    res[(i, name)].append(out)
        print(f"# ingest, medians of {a.rounds} rounds of {a.seconds} s alternating the daemons; 4 clients; "
              f"machine: {os.cpu_count()} cores; command: tests/bench/ab_ingest.py")
        for i, b in enumerate(a.binaries):
            print(f"# [{i}] {b}")
        print(f"{'configuration':22s}" + "".join(f"{'[%d] samples/s' % i:>18s}{'p99 ms':>9s}" for i in range(len(ports)))
              + "".join(f"{'[%d]/[0]' % i:>9s}" for i in range(1, len(ports))))
        for name, _, _ in CONFIGS:
            med = [statistics.median(x["samples_per_s"] for x in res[(i, name)]) for i in range(len(ports))]
            p99 = [statistics.median(x["p99_ms"] for x in res[(i, name)]) for i in range(len(ports))]
            errors = [sum(x.get("errors", 0) for x in res[(i, name)]) for i in range(len(ports))]
            print(f"{name:22s}" + "".join(f"{med[i]:18,.0f}{p99[i]:9.2f}" for i in range(len(ports)))
                  + "".join(f"{med[i] / med[0]:9.3f}" for i in range(1, len(ports)))
                  + ("   errors: %r" % errors if any(errors) else ""))


if __name__ == "__main__":
    main()
