#!/usr/bin/python3
"""Export throughput of two or more focald builds side by side, for comparing a change on a noisy machine.

Starts each given binary on its own fresh database, fills each with the same samples (bench_export.py's fill:
one epoch of binary batches with imaging meta), then streams every export format from each daemon in turn,
--rounds times, alternating which daemon goes first from round to round so that both see the same noise.
Prints each format's median seconds per build and each build's ratio of records/s to the first build's.

usage: /usr/bin/python3 tests/bench/ab_export.py [--samples 1000000] [--rounds 5] BINARY BINARY...
   e.g. git worktree add /tmp/before HEAD~1 && make -C /tmp/before build/focald &&
        /usr/bin/python3 tests/bench/ab_export.py /tmp/before/build/focald build/focald
"""
import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_daemon as bd  # noqa: E402
import bench_export as be  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1000000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    with bd.builds(a.binaries, ("--durability", "normal")) as started:
        procs, ports = [p for p, _ in started], [port for _, port in started]
        for port in ports:
            be.fill(port, a.samples)
        secs, counts = {}, {}  # (format, build index) -> [seconds], records
        for r in range(a.rounds):
            order = list(range(len(ports)))
            if r % 2:
                order.reverse()
            for fmt in be.FORMATS:
                for i in order:
                    s, _, records, _, _ = be.export(ports[i], procs[i].pid, "format=" + fmt)
                    secs.setdefault((fmt, i), []).append(s)
                    counts[(fmt, i)] = records
        print("# export, medians of %d rounds alternating the daemons; %d samples; machine: %d cores; command: "
              "tests/bench/ab_export.py" % (a.rounds, a.samples, os.cpu_count()))
        for i, b in enumerate(a.binaries):
            print("# [%d] %s" % (i, b))
        head = "%-14s" % "format" + "".join("%14s" % ("[%d] s" % i) for i in range(len(ports)))
        print(head + "".join("%10s" % ("[%d]/[0]" % i) for i in range(1, len(ports))))
        for fmt in be.FORMATS:
            med = [statistics.median(secs[(fmt, i)]) for i in range(len(ports))]
            # records/s relative to the first build: above 1 is faster
            # an older build may write a format differently (bench_export.py counts records as this one writes
            # them): the ratio then compares different files, and the row says so
            same = all(counts[(fmt, i)] == a.samples for i in range(len(ports)))
            print("%-14s" % fmt.split("&")[0] + "".join("%14.3f" % m for m in med) + "".join("%10.3f" % (med[0] / m) for m in med[1:])
                  + ("" if same else "   (not the same records: %s)" % [counts[(fmt, i)] for i in range(len(ports))]))

if __name__ == "__main__":
    main()
