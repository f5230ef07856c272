#!/usr/bin/env python3
"""A stand-in training job for the focald sidecar examples: posts batches, then reads the hardest examples.

It plays a classifier learning a synthetic dataset in which some labels were deliberately corrupted. Each
step it sends a batch of logits (a model that grows more confident in every sample's true class) with the
labels as given, which are wrong for the planted samples; focald scores the batches and keeps each sample's
history. At the end it asks focald for the hardest examples by mean loss and reports how many of the planted
wrong labels are among them. Standard library only, so it runs in a bare python3 image.

    FOCALD_URL=http://focald:8765 [FOCALD_TOKEN=...] python3 trainer.py [--steps 60] [--check 0.9]

--check R exits 1 unless at least a fraction R of the planted labels rank in the top k (k = their number).
"""
import argparse
import json
import math
import os
import random
import sys
import time
import urllib.error
import urllib.request


def call(base, method, path, body=None, tries=30):
    """Sends one request and returns the decoded JSON reply; retries while focald answers 503 or is down."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if os.environ.get("FOCALD_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["FOCALD_TOKEN"]
    for attempt in range(tries):
        req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            if e.code != 503 or attempt == tries - 1:
                raise SystemExit(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}")
            time.sleep(float(e.headers.get("Retry-After", "1")))
        except (urllib.error.URLError, ConnectionError) as e:
            if attempt == tries - 1:
                raise SystemExit(f"{method} {path}: {e}")
            time.sleep(1)
    raise SystemExit(f"{method} {path}: no answer")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default=os.environ.get("FOCALD_URL", "http://127.0.0.1:8765"))
    ap.add_argument("--dataset", default=os.environ.get("TRAINER_DATASET", "demo"))
    ap.add_argument("--run", default=os.environ.get("TRAINER_RUN", "stand-in"))
    ap.add_argument("--samples", type=int, default=int(os.environ.get("TRAINER_SAMPLES", "400")))
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--noisy", type=float, default=0.05, help="fraction of labels planted wrong")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--steps", type=int, default=int(os.environ.get("TRAINER_STEPS", "60")))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--check", type=float, default=None, help="least recall of planted labels in the top k")
    a = ap.parse_args()

    rng = random.Random(a.seed)
    n, c = a.samples, a.classes
    truth = [rng.randrange(c) for _ in range(n)]
    planted = set(rng.sample(range(n), max(1, int(n * a.noisy))))
    labels = [(truth[i] + 1 + rng.randrange(c - 1)) % c if i in planted else truth[i] for i in range(n)]
    ids = [f"img-{i:05d}" for i in range(n)]

    step = 0
    for epoch in range((a.steps * a.batch + n - 1) // n):
        order = list(range(n))
        rng.shuffle(order)
        for start in range(0, n, a.batch):
            if step == a.steps:
                break
            rows = order[start:start + a.batch]
            skill = 4.0 * (1 - math.exp(-step / 15))  # the margin the model puts on the true class
            logits = [[round(rng.gauss(0, 1) + (skill if k == truth[i] else 0), 4) for k in range(c)] for i in rows]
            call(a.url, "POST", f"/v1/datasets/{a.dataset}/batches", {
                "run": a.run, "batch_id": f"e{epoch}-s{step}", "epoch": epoch, "step": step,
                "loss": {"type": "softmax_focal", "gamma": 2},
                "ids": [ids[i] for i in rows], "logits": logits, "targets": [labels[i] for i in rows]})
            step += 1

    k = len(planted)
    top = call(a.url, "GET", f"/v1/datasets/{a.dataset}/hard-examples?by=mean_loss&k={k}&run={a.run}")["items"]
    found = sum(1 for it in top if int(it["id"].split("-")[1]) in planted)
    print(f"{step} batches posted; {found} of the {k} planted wrong labels are in focald's top {k}:")
    for it in top[:10]:
        i = int(it["id"].split("-")[1])
        print(f"  {it['rank']:3d} {it['id']}  mean_loss {it['score']:.4f}  label {labels[i]}  "
              f"{'planted' if i in planted else ''}")
    recall = found / k
    if a.check is not None and recall < a.check:
        print(f"recall {recall:.2f} is below {a.check}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
