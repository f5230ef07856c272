#!/usr/bin/python3
"""What the series (--series-points) costs in memory: focald's resident memory with and without it.

Starts $BUILD/focald twice at once on fresh databases, with --series-points 0 and with --series-points N
(default 16), fills each with the same --samples ids in one run (bench_daemon.fill, --epochs epochs),
waits for a snapshot pass, and prints each daemon's VmRSS and the difference per sample, beside the
columns' size (12 bytes a point plus 5 of state per sample and run).

usage: /usr/bin/python3 tests/bench/bench_series_memory.py [--build build] [--samples 1000000] [--points 16]
"""
import argparse
import http.client
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_daemon as bd  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--samples", type=int, default=1000000)
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    binary = f"{args.build}/focald"
    with bd.builds([binary, binary], each=[("--series-points", "0"), ("--series-points", str(args.points))]) as started:
        procs, ports = [p for p, _ in started], [port for _, port in started]
        for port in ports:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            for e in range(args.epochs):
                bd.fill(c, args.samples, epoch=e)
            c.close()
        time.sleep(10)  # a snapshot pass in each
        rss = [bd.rss_mb(p.pid)["VmRSS"] for p in procs]
        per = (rss[1] - rss[0]) * 1024 * 1024 / args.samples
        print(f"# {args.samples} samples, one run, {args.epochs} epochs; machine: {os.cpu_count()} cores; "
              f"command: tests/bench/bench_series_memory.py")
        print(f"VmRSS --series-points 0: {rss[0]:.1f} MiB; --series-points {args.points}: {rss[1]:.1f} MiB")
        print(f"difference: {rss[1] - rss[0]:.1f} MiB, {per:.1f} bytes per sample "
              f"(columns: {12 * args.points + 5} bytes per sample and run)")


if __name__ == "__main__":
    main()
