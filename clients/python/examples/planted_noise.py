#!/usr/bin/python3
"""Plant label noise, train a small model, and let focald find the noisy labels.

Makes a synthetic classification problem (Gaussian clusters, one per class),
flips the labels of a fraction of the samples (5% by default) to another class,
trains a small MLP with PyTorch on the noisy labels, and reports every batch's
logits to focald through a Miner. Afterwards it asks focald for the hardest
samples of the run (by mean loss over training) and measures how many of the
planted noisy labels are among the top k, with k the number planted (at that k,
recall and precision are the same number).

usage: planted_noise.py [--url URL] [--dataset NAME] [--noise 0.05] [--epochs 8] [--seed 0] [--json]

focald must be running (make run, or build/focald); --url or $FOCALD_URL says where.
With --json the last line of output is a JSON summary (recall, timings, the miner's counters).
"""
import argparse
import json
import os
import sys
import time

try:
    import focald
except ImportError:  # run from the source tree without installing the package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import focald

import numpy as np
import torch
from torch import nn


def make_data(n, classes, dim, noise, separation, seed):
    """Features x (n, dim), true labels, noisy labels, and the indices whose label was flipped.
    Each class is a unit Gaussian around its own centre; separation scales the distances between
    centres (small: classes overlap, and some clean samples are genuinely hard)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, size=(classes, dim)) * separation
    y_true = rng.integers(0, classes, size=n)
    x = centers[y_true] + rng.normal(0.0, 1.0, size=(n, dim))
    flipped = rng.choice(n, size=int(round(noise * n)), replace=False)
    y_noisy = y_true.copy()
    # another class, uniformly: add 1..classes-1 modulo classes
    y_noisy[flipped] = (y_true[flipped] + rng.integers(1, classes, size=len(flipped))) % classes
    return x.astype(np.float32), y_true, y_noisy, np.sort(flipped)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", help="focald's URL (default $FOCALD_URL, else http://127.0.0.1:8765)")
    p.add_argument("--dataset", default="planted-noise", help="focald dataset (default planted-noise)")
    p.add_argument("--run", help="run name (default seed<SEED>-<time>, so that reruns do not mix)")
    p.add_argument("--samples", type=int, default=6000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--noise", type=float, default=0.05, help="fraction of labels flipped (default 0.05)")
    p.add_argument("--separation", type=float, default=0.5,
                   help="distance scale between class centres (default 0.5: overlapping classes)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--by", default="mean_loss", help="focald's ranking field (default mean_loss)")
    p.add_argument("--show", type=int, default=10, help="how many of the hardest to print (default 10)")
    p.add_argument("--json", action="store_true", help="end with a JSON summary line")
    a = p.parse_args(argv)

    torch.manual_seed(a.seed)
    torch.set_num_threads(1)  # a tiny model: threads cost more than they give, and the daemon shares the cores
    x, y_true, y_noisy, flipped = make_data(a.samples, a.classes, a.dim, a.noise, a.separation, a.seed)
    run = a.run or "seed%d-%d" % (a.seed, int(time.time() * 1000))
    client = focald.Client(a.url)

    model = nn.Sequential(nn.Linear(a.dim, 64), nn.ReLU(), nn.Linear(64, a.classes))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y_noisy)

    miner = focald.Miner(a.dataset, client=client, run=run, loss={"type": "softmax_focal", "gamma": 2})
    t0 = time.perf_counter()
    observe_s, observes, step = 0.0, 0, 0
    for epoch in range(a.epochs):
        order = torch.randperm(a.samples)
        for i in range(0, a.samples, a.batch_size):
            idx = order[i:i + a.batch_size]
            logits = model(xt[idx])
            loss = nn.functional.cross_entropy(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            t = time.perf_counter()
            miner.observe(idx, logits, yt[idx], step=step, epoch=epoch)
            observe_s += time.perf_counter() - t
            observes += 1
            step += 1
    train_s = time.perf_counter() - t0
    flushed = miner.close(timeout=30)
    stats = miner.stats()
    with torch.no_grad():
        acc_true = float((model(xt).argmax(1).numpy() == y_true).mean())

    k = len(flipped)
    top = list(client.iter_hard_examples(a.dataset, run=run, by=a.by, limit=k))
    found = {int(it["id"]) for it in top} & set(flipped.tolist())
    recall = len(found) / k if k else 1.0

    print("trained %d epochs (%d steps) in %.1f s; accuracy on the true labels %.3f"
          % (a.epochs, step, train_s, acc_true))
    print("miner: %d observe() calls, %.1f us each on average; sent %d samples in %d requests, dropped %d, "
          "rejected %d%s" % (observes, 1e6 * observe_s / max(observes, 1), stats["sent"], stats["batches"],
                             stats["dropped"], stats["rejected"], "" if flushed else " (close timed out)"))
    print("planted %d noisy labels among %d samples; %d of them are in focald's top %d by %s: recall %.3f"
          % (k, a.samples, len(found), k, a.by, recall))
    print()
    print("the %d hardest samples (dataset %s, run %s):" % (min(a.show, len(top)), a.dataset, run))
    print("%5s %6s %10s %6s %6s %8s" % ("rank", "id", a.by, "label", "true", "planted"))
    planted = set(flipped.tolist())
    for it in top[:a.show]:
        i = int(it["id"])
        print("%5d %6d %10.4f %6d %6d %8s" % (it["rank"], i, it["score"], y_noisy[i], y_true[i],
                                             "yes" if i in planted else "no"))
    if a.json:
        print(json.dumps({"dataset": a.dataset, "run": run, "samples": a.samples, "planted": k, "found": len(found),
                          "recall": recall, "train_seconds": round(train_s, 3),
                          "observe_us": round(1e6 * observe_s / max(observes, 1), 1), "observes": observes,
                          "accuracy_true": acc_true, "flushed": flushed,
                          "miner": {kk: v for kk, v in stats.items() if kk != "last_error"}}))
    return 0 if flushed and stats["rejected"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
