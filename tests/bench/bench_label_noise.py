#!/usr/bin/python3
"""Finding label errors: focald's rankings against confident learning, on real data with planted noise.

Data: scikit-learn's bundled digits (1,797 8x8 images, 10 classes; python3-sklearn), features standardised.
A fraction of the labels (10% or 25%) is flipped, either uniformly to another class or class-dependently
(each class to one fixed other class, as a systematic annotator's confusion would). Two models are trained
on the noisy labels with cross-entropy: a small MLP (64-32-10, 30 epochs) and a wide one (64-256-256-10,
60 epochs) that memorises the noisy labels by the end (it fits nearly all of them). Every training step is reported to a real focald
through a Miner with loss {"type": "cross_entropy"}, the training loss itself.

Afterwards, for every ranking focald offers (each history field in its own hardest-first order), with K the
number of planted errors: precision@K (= recall@K at this K) and AUROC (how often a planted error ranks above
a clean sample; ties count half). The `label_issue` flag is scored as a set: precision, recall and F1.
The settings clean-0-small and clean-0-wide flip no label: there every sample `label_issue` or confident
learning flags is a false alarm, and only how many each flags is reported.

The baseline, computed in the same run: confident learning (Northcutt et al., JAIR 2021) as cleanlab applies it
by default, on 5-fold cross-validated probabilities of the same model trained the same way (out-of-fold: each
sample's probabilities come from the model that did not train on it), following cleanlab 2.9.0's
`filter.find_label_issues` with its defaults (filter_by="prune_by_noise_rate", frac_noise 1,
min_examples_per_class 1): per-class thresholds t_j (the mean probability of class j over the samples labelled j);
the confident joint (each sample counted under its given label and its guessed class: the one class with
p_k >= t_k, or the most probable class when several pass; the diagonal at least 1), calibrated so each row sums
to its label count and the whole to n, then rounded to whole samples keeping each row's sum; prune-by-noise-rate
(for each given label i and class j != i, the Q[i][j] samples labelled i with the largest p_j - p_i), keeping
only samples whose given label is not the most probable class. With cleanlab 2.9.0's own function on the same
probabilities it flags exactly the same samples (all 32 runs of seeds 0 to 3, and 300 random cases). Its
flagged set is scored like `label_issue`, and its ranking (the flagged first, then by self-confidence, lowest
first) like the fields.

usage: /usr/bin/python3 tests/bench/bench_label_noise.py [--build build] [--quick] [--only uniform-0.1-small ...]
           [--json FILE]
--quick trains fewer epochs (a smoke run, not figures).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.datasets import load_digits
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))
sys.path.insert(0, HERE)
from bench_miner import Focald  # noqa: E402
from focald import Client, Miner  # noqa: E402

FIELDS = ["mean_loss", "ema_loss", "max_loss", "last_loss", "confidence", "correctness", "aum", "forgetting",
          "forgetting_events", "variability", "label_issue_score", "early_label_issue_score"]
STATUSES = "open,queued,in_review,relabelled,confirmed,dismissed"
MODELS = {"small": ((32,), 30), "wide": ((256, 256), 60)}


# ---------------------------------------------------------------------------- data and models

def planted(y, classes, kind, rate, rng):
    """Noisy labels and the flipped indices: uniform (another class at random) or class-dependent (class j to
    (j + 1 + j % 3) mod classes, a fixed confusion per class)."""
    n = len(y)
    flipped = np.sort(rng.choice(n, size=int(round(rate * n)), replace=False))
    noisy = y.copy()
    if kind == "uniform":
        noisy[flipped] = (y[flipped] + rng.integers(1, classes, size=len(flipped))) % classes
    else:
        noisy[flipped] = (y[flipped] + 1 + y[flipped] % 3) % classes
    return noisy, flipped


def make_model(dim, hidden, classes):
    layers, d = [], dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, classes))
    return nn.Sequential(*layers)


def train(x, y, hidden, epochs, seed, classes, observe=None, batch=64):
    """Trains on (x, y); observe(idx, logits, step, epoch) sees every step's logits before the update."""
    torch.manual_seed(seed)
    model = make_model(x.shape[1], hidden, classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    step = 0
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            logits = model(xt[idx])
            loss = nn.functional.cross_entropy(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if observe:
                observe(idx, logits, step, epoch)
            step += 1
    return model


def cross_validated_probs(x, y, hidden, epochs, seed, classes, folds=5):
    rng = np.random.default_rng(seed + 1000)
    part = rng.permutation(len(x)) % folds
    probs = np.zeros((len(x), classes))
    for f in range(folds):
        tr, te = part != f, part == f
        model = make_model(x.shape[1], hidden, classes)
        torch.manual_seed(seed + f)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        xt, yt = torch.from_numpy(x[tr]), torch.from_numpy(y[tr])
        for _ in range(epochs):
            order = torch.randperm(len(xt))
            for i in range(0, len(xt), 64):
                idx = order[i:i + 64]
                loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            probs[te] = torch.softmax(model(torch.from_numpy(x[te])), 1).double().numpy()
    return probs


# ---------------------------------------------------------------------------- confident learning

def _round_keeping_sum(row):
    """Whole numbers close to row whose sum is the row's sum rounded: round each (half to even), then move
    the cells rounded furthest the wrong way by one until the sums agree."""
    ints = np.round(row)
    target = np.round(row.sum())
    while ints.sum() != target:
        step = 1.0 if ints.sum() < target else -1.0
        order = np.argsort(row - ints)
        if step > 0:
            order = order[::-1]
        ints[order[:min(int(abs(target - ints.sum())), len(row))]] += step
    return ints


def confident_learning(probs, labels):
    """The flagged set (boolean mask) and a ranking score (higher: more likely an error) of confident
    learning's prune-by-noise-rate with cleanlab's defaults (see the module docstring)."""
    n, c = probs.shape
    counts = np.bincount(labels, minlength=c)
    # per-class thresholds: a class nobody is labelled with gets 2, which no probability reaches
    t = np.array([probs[labels == j, j].mean() if counts[j] else 2.0 for j in range(c)])
    t = np.maximum(t, 2e-6)
    above = probs >= t - 1e-6
    n_above = above.sum(1)
    # the guessed true class: the one confident class, or the most probable class when several are
    guess = np.where(n_above > 1, probs.argmax(1), above.argmax(1))
    joint = np.zeros((c, c))
    np.add.at(joint, (labels[n_above > 0], guess[n_above > 0]), 1)
    joint[np.diag_indices(c)] = np.maximum(joint.diagonal(), 1)
    # calibrated: each row sums to its label count, the whole to n
    cal = joint / np.maximum(joint.sum(1, keepdims=True), 1e-100) * counts[:, None]
    cal = cal / max(cal.sum(), 1e-100) * counts.sum()
    cal = np.array([_round_keeping_sum(row) for row in cal])
    # counts to prune per (given i, true j), leaving at least one sample per given class
    prune = cal.copy()
    diag = prune.diagonal().copy()
    raised = np.maximum(diag, 1) - diag
    nonzero_off = np.maximum(np.count_nonzero(prune, axis=1) - 1.0, 1.0)
    prune = np.maximum(prune - (raised / nonzero_off)[:, None], 0)
    prune[np.diag_indices(c)] = np.maximum(diag, 1)
    prune = prune.astype(int)
    flagged = np.zeros(n, bool)
    for i in range(c):
        members = np.where(labels == i)[0]
        if len(members) <= 1:
            continue
        mask = np.zeros(len(members), bool)
        for j in range(c):
            if j != i and prune[i, j] > 0:
                margin = probs[members, j] - probs[members, i]
                mask[np.argsort(-margin)[:prune[i, j]]] = True
        flagged[members] = mask
    # not an issue when the given label is (within 1e-6) the most probable class
    lifted = probs.copy()
    lifted[np.arange(n), labels] += 1e-6
    flagged &= lifted.argmax(1) != labels
    # ranking: flagged first, then by self-confidence (lower first)
    score = flagged * 2.0 + (1.0 - probs[np.arange(n), labels])
    return flagged, score


# ---------------------------------------------------------------------------- metrics

def auroc(score, truth):
    """P(a planted error scores above a clean sample), ties half: the Mann-Whitney statistic."""
    r = rankdata(score)
    npos, nneg = truth.sum(), (~truth).sum()
    return (r[truth].sum() - npos * (npos + 1) / 2) / (npos * nneg)


def set_scores(flag, truth):
    tp = int((flag & truth).sum())
    p = tp / flag.sum() if flag.sum() else 0.0
    r = tp / truth.sum() if truth.sum() else 0.0
    return {"flagged": int(flag.sum()), "precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def precision_at_k(order_ids, truth, k):
    return float(truth[order_ids[:k]].sum()) / k


# ---------------------------------------------------------------------------- one setting

def run_setting(client, kind, rate, model_name, seed, quick, record):
    digits = load_digits()
    x = digits.data.astype(np.float32)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = digits.target.astype(np.int64)
    classes = 10
    rng = np.random.default_rng(seed)
    noisy, flipped = planted(y, classes, kind, rate, rng)
    truth = np.zeros(len(y), bool)
    truth[flipped] = True
    hidden, epochs = MODELS[model_name]
    if quick:
        epochs = max(3, epochs // 10)
    ds = "noise-%s-%g-%s-%d-%d" % (kind, rate, model_name, seed, int(time.time()))
    miner = Miner(ds, client=client, run="train", loss={"type": "cross_entropy"})
    obs = [] if record else None

    def observe(idx, logits, step, epoch):
        miner.observe(idx, logits, torch.from_numpy(noisy)[idx], step=step, epoch=epoch)
        if record:
            obs.append((epoch, idx.numpy().copy(), logits.detach().double().numpy().copy()))

    t0 = time.perf_counter()
    model = train(x, noisy, hidden, epochs, seed, classes, observe)
    train_s = time.perf_counter() - t0
    if not miner.close(timeout=60):
        raise RuntimeError("the Miner did not flush")
    with torch.no_grad():
        fit = float((model(torch.from_numpy(x)).argmax(1).numpy()[flipped] == noisy[flipped]).mean()) if len(flipped) else None
    k = len(flipped)
    out = {"setting": "%s-%g-%s" % (kind, rate, model_name), "planted": k, "samples": len(y),
           "memorised": None if fit is None else round(fit, 3), "train_s": round(train_s, 1), "fields": {}}
    for f in FIELDS:
        if k == 0 and f != "mean_loss":  # nothing planted: only label_issue's flags (read with mean_loss)
            continue
        try:
            items = list(client.iter_hard_examples(ds, by=f, run="train", status=STATUSES, page_size=10000))
        except Exception as e:  # a field this focald does not have
            out["fields"][f] = "n/a (%s)" % type(e).__name__
            continue
        if len(items) != len(y):
            out["fields"][f] = "n/a (%d items)" % len(items)
            continue
        if f == "mean_loss":
            flag = np.zeros(len(y), bool)
            flag[[int(it["id"]) for it in items if it["label_issue"]]] = True
            out["label_issue"] = {kk: round(v, 3) if isinstance(v, float) else v for kk, v in set_scores(flag, truth).items()}
        if k == 0:
            continue
        ids = np.array([int(it["id"]) for it in items])
        # the API's order is hardest first; AUROC needs scores where higher is harder
        score = np.empty(len(y))
        score[ids] = -np.arange(len(ids), dtype=float)
        raw = np.array([it["score"] for it in items])
        tied = np.empty(len(y))
        tied[ids] = raw if items and _desc(client, ds, f) else -raw
        out["fields"][f] = {"precision@K": round(precision_at_k(ids, truth, k), 3), "auroc": round(auroc(tied, truth), 3)}
    probs = cross_validated_probs(x, noisy, hidden, epochs, seed, classes)
    flag, score = confident_learning(probs, noisy)
    order = np.argsort(-score, kind="stable")
    out["confident_learning"] = {kk: round(v, 3) if isinstance(v, float) else v for kk, v in set_scores(flag, truth).items()}
    if k:
        out["confident_learning"]["precision@K"] = round(precision_at_k(order, truth, k), 3)
        out["confident_learning"]["auroc"] = round(auroc(score, truth), 3)
    if record:
        out["_obs"] = obs
        out["_noisy"] = noisy
        out["_truth"] = truth
    return out


_orders = {}


def _desc(client, ds, field):
    if field not in _orders:
        _orders[field] = client.hard_examples(ds, by=field, run="train", k=1, status=STATUSES)["order"] == "desc"
    return _orders[field]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--build", default="build")
    p.add_argument("--url", help="a running focald instead of starting one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--only", nargs="*", help="settings such as uniform-0.1-small")
    p.add_argument("--json", help="write every result to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    f = None
    if a.url:
        url = a.url
    else:
        f = Focald(a.build).start()
        url = f.url
    client = Client(url)
    results = []
    try:
        for kind in ("uniform", "class"):
            for rate in (0.1, 0.25):
                for model_name in ("small", "wide"):
                    name = "%s-%g-%s" % (kind, rate, model_name)
                    if a.only and name not in a.only:
                        continue
                    r = run_setting(client, kind, rate, model_name, a.seed, a.quick, False)
                    results.append(r)
                    report(r)
        for model_name in ("small", "wide"):
            if a.only and "clean-0-%s" % model_name not in a.only:
                continue
            r = run_setting(client, "clean", 0.0, model_name, a.seed, a.quick, False)
            results.append(r)
            report(r)
    finally:
        if f:
            f.remove()
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=1)
    return 0


def report(r):
    if r["planted"] == 0:
        print("%s: none planted of %d; trained in %.1f s; flagged (every one a false alarm): label_issue %d, "
              "confident learning %d" % (r["setting"], r["samples"], r["train_s"], r["label_issue"]["flagged"],
                                         r["confident_learning"]["flagged"]))
        sys.stdout.flush()
        return
    print("%s: %d planted of %d; the model fits %.0f%% of the planted labels by the end; trained in %.1f s"
          % (r["setting"], r["planted"], r["samples"], 100 * r["memorised"], r["train_s"]))
    print("  %-22s %12s %8s" % ("ranking", "precision@K", "AUROC"))
    for f, v in r["fields"].items():
        if isinstance(v, dict):
            print("  %-22s %12.3f %8.3f" % (f, v["precision@K"], v["auroc"]))
        else:
            print("  %-22s %s" % (f, v))
    cl = r["confident_learning"]
    print("  %-22s %12.3f %8.3f" % ("confident learning", cl["precision@K"], cl["auroc"]))
    li = r.get("label_issue", {})
    print("  sets: label_issue precision %.3f recall %.3f F1 %.3f (%d flagged); confident learning precision %.3f "
          "recall %.3f F1 %.3f (%d flagged)" % (li.get("precision", 0), li.get("recall", 0), li.get("f1", 0),
                                                 li.get("flagged", 0), cl["precision"], cl["recall"], cl["f1"],
                                                 cl["flagged"]))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
