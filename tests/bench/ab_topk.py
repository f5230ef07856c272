#!/usr/bin/python3
"""Top-k latency of two or more focald builds side by side, for comparing a change on a noisy machine.

Starts each given binary on its own fresh database, fills each with the same 1M samples (two epochs of
bench_daemon.py's fill), then queries hard-examples (k=100, run=bench) for every `by` field in turn,
alternating between the daemons, --rounds times; prints each field's median per binary ("n/a" for a field
a build does not have) and each daemon's RSS. Alternating the daemons query by query puts both under the same
noise, which sequential runs do not.
Two more rows time `label_issue=true` (by mean_loss): "label_issue new" right after a one-sample batch, so
that the run's label_issue rule is computed again (a pass over its samples), and "label_issue kept" the same
query asked again, the rule kept.

usage: /usr/bin/python3 tests/bench/ab_topk.py [--rounds 40] [--samples 1000000] BINARY BINARY...
   e.g. git worktree add /tmp/before HEAD~1 && make -C /tmp/before build/focald &&
        /usr/bin/python3 tests/bench/ab_topk.py /tmp/before/build/focald build/focald
"""
import argparse
import http.client
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_daemon as bd  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--samples", type=int, default=1000000)
    ap.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    with bd.builds(args.binaries) as started:
        procs, ports = [p for p, _ in started], [port for _, port in started]
        for port in ports:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            bd.fill(c, args.samples, epoch=0)
            bd.fill(c, args.samples, epoch=1)  # its own logits at later steps: variability is not all 0
            c.close()
        time.sleep(8)  # let a snapshot pass run in each
        conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=60) for p in ports]
        rows = bd.FIELDS + ["label_issue new", "label_issue kept"]
        lat = {(i, f): [] for i in range(len(conns)) for f in rows}
        missing = set()
        li = "/v1/datasets/bench/hard-examples?by=mean_loss&k=100&run=bench&label_issue=true"
        for r in range(args.rounds):
            for f in bd.FIELDS:
                for i, c in enumerate(conns):
                    if (i, f) in missing:
                        continue
                    t = time.perf_counter()
                    try:
                        bd.get_json(c, f"/v1/datasets/bench/hard-examples?by={f}&k=100&run=bench")
                    except RuntimeError as e:
                        if ": 400 " not in str(e):
                            raise
                        missing.add((i, f))  # a field this build does not have
                        continue
                    lat[(i, f)].append((time.perf_counter() - t) * 1e3)
            for i, c in enumerate(conns):
                body = ('{"run":"bench","step":%d,"ids":["s%d"],"logits":[[0,0,0,0,0,0,0,0,0,1]],"targets":[3]}'
                        % (10 ** 9 + r, r))
                c.request("POST", "/v1/datasets/bench/batches", body, {"Content-Type": "application/json"})
                resp = c.getresponse()
                resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"one-sample batch: HTTP {resp.status}")
                for f in ("label_issue new", "label_issue kept"):
                    t = time.perf_counter()
                    bd.get_json(c, li)
                    lat[(i, f)].append((time.perf_counter() - t) * 1e3)
        print(f"# top-100 medians in ms, {args.rounds} rounds alternating the daemons; machine: "
              f"{os.cpu_count()} cores; command: tests/bench/ab_topk.py")
        for i, b in enumerate(args.binaries):
            print(f"# [{i}] {b}")
        w = max(len(f) for f in rows) + 1
        print(f"{'by':{w}s}" + "".join(f"{'[%d]' % i:>10s}" for i in range(len(conns))))
        for f in rows:
            print(f"{f:{w}s}" + "".join(f"{statistics.median(lat[(i, f)]):10.2f}" if lat[(i, f)] else f"{'n/a':>10s}"
                                       for i in range(len(conns))))
        print(f"{'RSS MB':{w}s}" + "".join(f"{bd.rss_mb(p.pid)['VmRSS']:10.0f}" for p in procs))


if __name__ == "__main__":
    main()
