#!/usr/bin/python3
"""Library throughput of two or more bench_lib builds side by side, for comparing a kernel change on a noisy machine.

For each class count C, runs each given bench_lib binary on the same case, shape and variant in turn (one
--reps run each, its median), --rounds times, alternating the binaries run by run so that both see the same
noise; then prints, per C and binary, the median over rounds of M elements/s. With --case twice or more the
cases alternate too (e.g. a softmax case and the sigmoid case it is measured against).

usage: /usr/bin/python3 tests/bench/ab_lib.py [--rounds 7] [--n 1000000] [--c 2,4,8] [--variant x86-64-v4]
                                              [--case softmax_focal ...] BINARY BINARY...
   e.g. git archive HEAD~1 | tar -x -C /tmp/before && make -C /tmp/before build/bench/bench_lib &&
        /usr/bin/python3 tests/bench/ab_lib.py --case softmax_focal --case sigmoid_focal \\
            /tmp/before/build/bench/bench_lib build/bench/bench_lib
"""
import argparse
import json
import statistics
import subprocess


def run(binary, n, c, variant, case, reps):
    out = subprocess.run([binary, "--n", str(n), "--c", str(c), "--reps", str(reps), "--variant", variant,
                          "--case", case], check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[0])["melem_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=1000000)
    ap.add_argument("--c", default="2,4,8")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--variant", default="x86-64-v4")
    ap.add_argument("--case", action="append")
    ap.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    cases = args.case or ["softmax_focal"]
    print("n = %d, variant %s, %d rounds, each the median of %d runs; M elements/s, median over rounds"
          % (args.n, args.variant, args.rounds, args.reps))
    for c in [int(v) for v in args.c.split(",")]:
        got = {(b, k): [] for b in args.binaries for k in cases}
        for _ in range(args.rounds):
            for k in cases:
                for b in args.binaries:
                    got[(b, k)].append(run(b, args.n, c, args.variant, k, args.reps))
        for k in cases:
            for b in args.binaries:
                v = got[(b, k)]
                print("C = %-3d %-22s %-40s %7.1f   (rounds: %s)" % (c, k, b, statistics.median(v),
                                                                    " ".join("%.0f" % x for x in v)))


if __name__ == "__main__":
    main()
