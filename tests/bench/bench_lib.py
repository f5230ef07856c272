#!/usr/bin/python3
"""Library benchmark driver: focald's kernels and torchvision, side by side in one run.

Alternates ROUNDS rounds of build/bench/bench_lib (every variant and case) with
rounds of torchvision.ops.sigmoid_focal_loss on the same shape, then prints the
median of the per-round figures and the ratio of focald's automatically chosen
variant to torchvision (1 thread, like the library, and torch's default threads).

usage: /usr/bin/python3 tests/bench/bench_lib.py [--bin build/bench/bench_lib] [--rounds 5] [--n 100000] [--c 80]
"""
import argparse
import json
import platform
import statistics
import subprocess
import time


def run_focald(binary, n, c):
    out = subprocess.run([binary, "--n", str(n), "--c", str(c), "--reps", "7"], check=True,
                         capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def run_torchvision(n, c, threads):
    import torch
    from torchvision.ops import sigmoid_focal_loss
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, generator=g) * 3
    y = torch.randint(0, c, (n,), generator=g)
    t = torch.nn.functional.one_hot(y, c).float()
    sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction="none").sum(-1)  # warm-up
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        sigmoid_focal_loss(x, t, alpha=0.25, gamma=2.0, reduction="none").sum(-1)
        times.append(time.perf_counter() - t0)
    return n * c / statistics.median(times) / 1e6


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build/bench/bench_lib")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--n", type=int, default=100000)
    ap.add_argument("--c", type=int, default=80)
    args = ap.parse_args()
    try:
        import torchvision  # noqa: F401
        have_tv = True
    except ImportError:
        have_tv = False
    ours = {}
    tv1, tvn = [], []
    for _ in range(args.rounds):
        for rec in run_focald(args.bin, args.n, args.c):
            ours.setdefault((rec["variant"], rec["case"]), []).append(rec["melem_per_s"])
        if have_tv:
            tv1.append(run_torchvision(args.n, args.c, 1))
            import torch
            tvn.append(run_torchvision(args.n, args.c, torch.get_num_interop_threads() or 2))
    print(f"# loss library, N={args.n} C={args.c} float32, single thread; medians of {args.rounds} rounds "
          f"(each round the median of 7 runs)")
    print(f"# machine: {cpu_name()}, {platform.machine()}, command: make bench")
    variants = []
    for (v, _) in ours:
        if v not in variants:
            variants.append(v)
    cases = []
    for (_, k) in ours:
        if k not in cases:
            cases.append(k)
    print(f"{'case':24s}" + "".join(f"{v:>14s}" for v in variants) + "   (M elements/s)")
    for k in cases:
        print(f"{k:24s}" + "".join(f"{statistics.median(ours[(v, k)]):14.0f}" for v in variants))
    best = variants[0]
    sig = statistics.median(ours[(best, "sigmoid_focal_onehot")])
    if have_tv:
        m1, mn = statistics.median(tv1), statistics.median(tvn)
        print(f"torchvision sigmoid_focal_loss (one-hot targets): {m1:.1f} M elements/s on 1 thread, "
              f"{mn:.1f} on torch's default threads")
        print(f"ratio focald {best} / torchvision: {sig / m1:.1f}x (1 thread), {sig / mn:.1f}x (default threads)")
    else:
        print("torchvision not found under /usr/bin/python3: no ratio")


if __name__ == "__main__":
    main()
