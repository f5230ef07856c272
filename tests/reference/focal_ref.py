#!/usr/bin/python3
"""focald's float64 reference for the loss library: writes tests/golden/lib_golden.txt.

Each loss is written here from its published formula in float64 torch
operations; gradients come from torch's autograd, not from the formulas the C
kernels use. The torchvision profile is also checked against
torchvision.ops.sigmoid_focal_loss itself, and the fixed numbers in
../shared/CONVENTIONS.md against these formulas, before anything is written.
Inputs are float32 values (what the C library receives); all arithmetic is
float64.

usage: /usr/bin/python3 tests/reference/focal_ref.py [OUT]
"""
import math
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)

F32_EPS = float(np.float32(1e-7))                 # Keras' backend epsilon as float32
F32_ONE_MINUS_EPS = float(np.float32(1.0) - np.float32(1e-7))
LOG_FLOOR = -100.0                                 # PyTorch's BCE clamps logs at -100
ASL_EPS = 1e-8
CLEANLAB_MIN = 1e-6

LOSSES = ["sigmoid_focal", "softmax_focal", "sigmoid_focal_star", "poly1_sigmoid_focal",
          "poly1_softmax_focal", "asl", "cross_entropy", "binary_cross_entropy"]
# The cross-entropy losses are the focal losses at gamma 0; check_cross_entropy_against_torch
# holds them to torch.nn.functional's cross_entropy and binary_cross_entropy(_with_logits).
FOCAL_OF = {"cross_entropy": "softmax_focal", "binary_cross_entropy": "sigmoid_focal"}


def is_softmax(loss):
    return loss in ("softmax_focal", "poly1_softmax_focal", "cross_entropy")


def clamp_log(v):
    return torch.clamp(torch.log(v), min=LOG_FLOOR)


def keras_clip(v):
    return torch.clamp(v, F32_EPS, F32_ONE_MINUS_EPS)


def spow(x, g):
    """x ** g for x >= 0 whose autograd gradient is 0, not NaN, where x is exactly 0
    (the one-sided limit wherever x reaches 0: saturated logits, ASL's clamp)."""
    g = torch.as_tensor(g, dtype=torch.float64)
    pos = x > 0
    safe = torch.where(pos, x, torch.ones_like(x))
    val = torch.exp(g * torch.log(safe))
    zero_val = torch.where(g == 0, torch.ones_like(val), torch.zeros_like(val))
    return torch.where(pos, val, zero_val)


# ---------------------------------------------------------------- sigmoid family

def sigmoid_elements(P, z, t, a_pos, a_neg):
    """Element losses (n, m, c) of the sigmoid family. z: logits, or for probability
    input the logits the probabilities imply (autograd then gives d/dlogit). pos_weight
    (per class) multiplies the positive term t (-log s) of the cross-entropy, as torch's
    BCEWithLogitsLoss(pos_weight=...) and kornia's binary_focal_loss_with_logits do."""
    loss, prof, g = P["loss"], P["profile"], P["gamma"]
    pw = torch.tensor(P["pos_weight"]) if P.get("pos_weight") is not None else 1.0
    probs = P["input"] == "probs"
    s = torch.sigmoid(z)
    a_t = a_pos * t + a_neg * (1 - t)
    if probs:
        log_s, log_1ms = clamp_log(s), clamp_log(1 - s)
    else:
        log_s, log_1ms = torch.nn.functional.logsigmoid(z), torch.nn.functional.logsigmoid(-z)
    if loss == "sigmoid_focal_star":
        return a_t * -torch.nn.functional.logsigmoid(g * z * (2 * t - 1)) / g
    if loss == "asl":
        clip, eps = P["clip"], ASL_EPS
        xs_pos = s
        xs_neg = torch.clamp(1 - s + clip, max=1.0) if clip > 0 else 1 - s
        lpos = t * torch.log(torch.clamp(xs_pos, min=eps))
        lneg = (1 - t) * torch.log(torch.clamp(xs_neg, min=eps))
        pt = xs_pos * t + xs_neg * (1 - t)
        ge = P["gamma_pos"] * t + P["gamma_neg"] * (1 - t)
        one_minus_pt = t * (1 - xs_pos) + (1 - t) * (1 - xs_neg)
        return -(lpos + lneg) * spow(one_minus_pt, ge) * a_t
    one_minus_pt = t * (1 - s) + (1 - t) * s
    if prof in ("kornia", "kornia_legacy"):   # kornia's binary focal loss did not change in 0.7.0
        return (-a_pos * pw * t * spow(torch.sigmoid(-z), g) * torch.nn.functional.logsigmoid(z)
                - a_neg * (1 - t) * spow(torch.sigmoid(z), g) * torch.nn.functional.logsigmoid(-z))
    if prof == "keras":
        sc = keras_clip(s)
        ce = -(pw * t * torch.log(sc) + (1 - t) * torch.log(1 - sc))
    else:
        ce = -(pw * t * log_s + (1 - t) * log_1ms)
    if prof == "monai":
        mod = torch.exp(g * torch.nn.functional.logsigmoid(-z * (2 * t - 1)))
    else:
        mod = spow(one_minus_pt, g)
    out = a_t * mod * ce
    if loss == "poly1_sigmoid_focal":
        out = out + P["epsilon"] * spow(one_minus_pt, g + 1)
    return out


# ---------------------------------------------------------------- softmax family

def softmax_elements(P, z, t, alpha_k):
    """Position losses (n, m) of the softmax family; t: (n, m, c) one-hot or soft rows."""
    g, prof = P["gamma"], P["profile"]
    p = torch.softmax(z, dim=-1)
    if prof == "keras":
        pc = keras_clip(p / p.sum(-1, keepdim=True))
        logp, om = torch.log(pc), 1 - pc
    elif P["input"] == "probs":
        logp, om = clamp_log(p), 1 - p
    else:
        logp, om = torch.log_softmax(z, dim=-1), 1 - p
    mod = spow(om, g)
    term = -alpha_k * mod * logp
    if P["loss"] == "poly1_softmax_focal":
        term = term + P["epsilon"] * spow(om, g + 1)
    return (t * term).sum(-1)


# ---------------------------------------------------------------- driver

def alpha_vectors(P, c):
    """Per-class (a_pos, a_neg) for the sigmoid family and alpha_k for the softmax family."""
    if P["alpha_c"] is not None:
        a = torch.tensor(P["alpha_c"])
        return a, 1 - a, a
    al = P["alpha"]
    if al < 0:
        ones = torch.ones(c)
        return ones, ones, ones
    if is_softmax(P["loss"]) and P["profile"] in ("monai", "kornia"):
        # MONAI, and kornia since 0.7.0: class 0 (background) gets 1 - alpha, the others alpha
        ak = torch.full((c,), al)
        ak[0] = 1 - al
        return None, None, ak
    return torch.full((c,), al), torch.full((c,), 1 - al), torch.full((c,), al)


def evaluate(P, x, labels, targets, weights, n, m, c):
    """Returns (loss (n,), grad (n,m,c), grad_norm (n,)) in float64."""
    if P["loss"] in FOCAL_OF:
        assert P["gamma"] == 0 and P["profile"] == "torchvision", P
        P = dict(P, loss=FOCAL_OF[P["loss"]])
    x64 = torch.tensor(np.asarray(x, dtype=np.float64).reshape(n, m, c))
    probs = P["input"] == "probs"
    softmax = is_softmax(P["loss"])
    if probs:
        z0 = torch.log(x64) if softmax else torch.log(x64) - torch.log1p(-x64)
    else:
        z0 = x64
    z = z0.clone().requires_grad_(True)
    live = torch.ones(n, m)
    if labels is not None:
        lab = torch.tensor(np.asarray(labels, dtype=np.int64).reshape(n, m))
        live = (lab != P["ignore"]).double()
        t = torch.zeros(n, m, c)
        for i in range(n):
            for j in range(m):
                y = int(lab[i, j])
                if y != P["ignore"] and y < c:
                    t[i, j, y] = 1.0
        npos = ((lab >= 0) & (lab < c) & (lab != P["ignore"])).double()
    else:
        t = torch.tensor(np.asarray(targets, dtype=np.float64).reshape(n, m, c))
        npos = None
    a_pos, a_neg, a_k = alpha_vectors(P, c)
    if softmax:
        el = softmax_elements(P, z, t, a_k)          # (n, m)
        if weights is not None:
            el = el * torch.tensor(np.asarray(weights, dtype=np.float64).reshape(n, m))
        el = el * live
        count = live.sum(-1)
        if labels is not None:
            pos = npos.sum(-1)
        else:
            pos = (t > 0).any(-1).double().sum(-1)
        total = el.sum(-1)
    else:
        el = sigmoid_elements(P, z, t, a_pos, a_neg)  # (n, m, c)
        if weights is not None:
            el = el * torch.tensor(np.asarray(weights, dtype=np.float64).reshape(n, m, c))
        el = el * live.unsqueeze(-1)
        count = live.sum(-1) * c
        pos = npos.sum(-1) if labels is not None else (t > 0).double().sum((-1, -2))
        total = el.sum((-1, -2))
    red = P["reduction"]
    if red == "mean":
        scale = torch.where(count > 0, 1.0 / torch.clamp(count, min=1), torch.zeros_like(count))
    elif red == "positives":
        scale = 1.0 / torch.clamp(pos, min=1)
    elif red == "mean_elements":
        scale = torch.full((n,), 1.0 / (m * c))   # torch.mean over the unreduced (m, c) loss
    else:
        scale = torch.ones(n)
    loss = total * scale
    grad = torch.autograd.grad(loss.sum(), z)[0] * live.unsqueeze(-1)
    # Probabilities of exactly 0 or 1 imply infinite logits, where the gradient
    # with respect to the logit is 0 (dp/dz = p (1 - p) = 0); nowhere else may
    # the reference produce NaN.
    if probs:
        edge = (x64 == 0) | (x64 == 1)
        grad = torch.where(edge, torch.zeros_like(grad), grad)
    assert not torch.isnan(grad).any(), "reference gradient is NaN"
    return loss.detach().numpy(), grad.numpy(), grad.reshape(n, -1).norm(dim=1).numpy()


def scores(P, x, labels, targets, n, m, c):
    """Difficulty scores per sample, from their definitions (see README "Scores")."""
    X = np.asarray(x, dtype=np.float64).reshape(n, m, c)
    probs = P["input"] == "probs"
    softmax = is_softmax(P["loss"])
    out = []
    for i in range(n):
        acc = np.zeros(8)
        rows = 0
        pred = -1
        for j in range(m):
            xr = X[i, j]
            if softmax:
                if probs:
                    p = xr.copy()
                    logp = np.maximum(np.log(np.where(p > 0, p, 1e-300)), LOG_FLOOR)
                    zz = logp
                else:
                    zz = xr
                    e = np.exp(xr - xr.max())
                    p = e / e.sum()
                    # log p without rounding p first: log p_k = (z_k - max) - log1p(sum over k != argmax)
                    top = int(np.argmax(xr))
                    logp = (xr - xr.max()) - math.log1p(sum(e[k] for k in range(c) if k != top))
                if labels is not None:
                    y = int(labels[i * m + j])
                    if y == P["ignore"]:
                        continue
                else:
                    y = int(np.argmax(np.asarray(targets, dtype=np.float64).reshape(n, m, c)[i, j]))
                row = row_scores(p, zz, y, c, softmax=True, logp=logp)
                k = int(np.argmax(p if probs else xr))
            else:
                if probs:
                    s = xr
                    # the logit the probability implies, from logs clamped as the loss clamps them
                    zz = (np.maximum(np.log(np.where(s > 0, s, 1e-300)), LOG_FLOOR)
                          - np.maximum(np.log(np.where(1 - s > 0, 1 - s, 1e-300)), LOG_FLOOR))
                else:
                    s = np.exp(-np.logaddexp(0.0, -xr))
                    zz = xr
                if labels is not None and c >= 2:
                    y = int(labels[i * m + j])
                    if y == P["ignore"] or y == c:
                        continue
                    row = row_scores(s, zz, y, c, softmax=False, probs=probs)
                    k = int(np.argmax(zz))
                else:
                    if labels is not None:
                        y = int(labels[i * m + j])
                        if y == P["ignore"]:
                            continue
                        tt = np.array([1.0 if y == 0 else 0.0])
                    else:
                        tt = np.asarray(targets, dtype=np.float64).reshape(n, m, c)[i, j]
                    for kk in range(c):
                        acc += binary_scores(s[kk], zz[kk], tt[kk], probs)
                        rows += 1
                    if m == 1 and c == 1:
                        pred = 1 if s[0] >= 0.5 else 0
                    continue
            acc += row
            rows += 1
            if m == 1:
                pred = k
        if rows:
            acc /= rows
        out.append((acc, pred if m == 1 else -1, rows))
    return out


def cw_entropy(p_t, ent):
    sc = max(p_t, CLEANLAB_MIN)
    s = ent / sc
    return math.log1p(s) / max(s, CLEANLAB_MIN)


def row_scores(p, z, y, c, softmax, probs=False, logp=None):
    """p_t, p_max, margin, norm_margin, entropy, cw_entropy, el2n, correct for one labelled row."""
    others = [k for k in range(c) if k != y]
    p_t = p[y]
    margin = z[y] - max(z[k] for k in others)
    nm = (p[y] - max(p[k] for k in others) + 1) / 2
    if softmax:
        ent = -sum(p[k] * logp[k] for k in range(c) if p[k] > 0) / math.log(c)
    else:
        ent = sum(binary_entropy(p[k], z[k], probs) for k in range(c)) / (c * math.log(2))
    onehot = np.zeros(c)
    onehot[y] = 1
    el2n = float(np.sqrt(((p - onehot) ** 2).sum()))
    correct = 1.0 if int(np.argmax(z)) == y else 0.0
    return np.array([p_t, float(np.max(p)), margin, nm, ent, cw_entropy(p_t, ent), el2n, correct])


def binary_entropy(s, z, probs):
    """Entropy in nats of a binary problem; -log s and -log(1-s) from the logit
    (softplus) so that neither tail loses its digits, clamped for probabilities."""
    if probs:
        nl_pos = -max(math.log(s), LOG_FLOOR) if s > 0 else -LOG_FLOOR
        nl_neg = -max(math.log1p(-s), LOG_FLOOR) if s < 1 else -LOG_FLOOR
        return s * nl_pos + (1 - s) * nl_neg
    nl_pos = float(np.logaddexp(0.0, -z))
    nl_neg = float(np.logaddexp(0.0, z))
    return math.exp(-nl_pos) * nl_pos + math.exp(-nl_neg) * nl_neg


def binary_scores(s, z, t, probs):
    p_t = t * s + (1 - t) * (1 - s)
    ent = binary_entropy(s, z, probs) / math.log(2)
    correct = 1.0 if (z >= 0) == (t >= 0.5) else 0.0
    return np.array([p_t, max(s, 1 - s), (2 * t - 1) * z, p_t, ent, cw_entropy(p_t, ent), math.sqrt(2) * abs(s - t),
                     correct])


# ---------------------------------------------------------------- cross-checks

def check_against_torchvision():
    """The torchvision profile must equal torchvision.ops.sigmoid_focal_loss."""
    from torchvision.ops import sigmoid_focal_loss
    rng = np.random.default_rng(7)
    z = rng.normal(0, 4, size=(32, 7)).astype(np.float32)
    t = (rng.random((32, 7)) < 0.3).astype(np.float32)
    soft = rng.random((32, 7)).astype(np.float32)
    for tt in (t, soft):
        for alpha, gamma in ((0.25, 2.0), (-1, 0.0), (0.5, 0.5), (0.75, 3.0)):
            P = dict(loss="sigmoid_focal", profile="torchvision", input="logits", gamma=gamma,
                     alpha=alpha, alpha_c=None, epsilon=1.0, reduction="sum", ignore=-1)
            ours, _, _ = evaluate(P, z.ravel(), None, tt.ravel(), None, 32, 1, 7)
            theirs = sigmoid_focal_loss(torch.tensor(z, dtype=torch.float64), torch.tensor(tt, dtype=torch.float64),
                                        alpha=alpha, gamma=gamma, reduction="none").sum(-1).numpy()
            assert np.allclose(ours, theirs, rtol=1e-12, atol=1e-15), (alpha, gamma, ours - theirs)


def check_conventions():
    """The fixed numbers users compare against (../shared/CONVENTIONS.md, the issue)."""
    def sig(z, t, **kw):
        P = dict(loss="sigmoid_focal", profile="torchvision", input="logits", gamma=2.0, alpha=0.25,
                 alpha_c=None, epsilon=1.0, reduction="sum", ignore=-1)
        P.update(kw)
        return evaluate(P, np.array(z, dtype=np.float32), None, np.array(t, dtype=np.float32), None,
                        1, 1, len(z))[0][0]
    assert abs(sig([0.0], [1.0]) - 0.04332170) < 1e-8
    assert abs(sig([0.0], [0.0]) - 0.12996510) < 1e-8
    assert abs(sig([2.0], [0.0]) - 1.2375586) < 1e-7
    assert abs(sig([-3.0], [1.0]) - 0.6915701) < 1e-7
    # t = 0.3 arrives as float32 (0.30000001): allow for that in the 8th digit
    assert abs(sig([1.0], [0.3]) - 0.21337195) < 5e-8
    assert abs(sig([1.0], [0.3], profile="monai") - 0.21790816) < 5e-8
    assert abs(sig([1.0], [0.3], profile="kornia") - 0.37018021) < 5e-8
    y, z = [0, 1, 0, 0], [-18.6, 0.51, 2.94, -12.8]
    assert abs(sig(z, y, profile="keras", alpha=-1, reduction="mean") - 0.691) < 5e-4
    assert abs(sig(z, y, profile="keras", reduction="mean") - 0.51) < 5e-3
    check_kornia()
    check_monai()
    P = dict(loss="softmax_focal", profile="torchvision", input="logits", gamma=2.0, alpha=-1,
             alpha_c=None, epsilon=1.0, reduction="sum", ignore=-1)
    v = evaluate(P, np.array([1, 2, 3], dtype=np.float32), [2], None, None, 1, 1, 3)[0][0]
    assert abs(v - 0.04567780) < 1e-8, v
    P["input"] = "probs"
    sc = scores(P, np.array([.2, .7, .1], dtype=np.float32), [0], None, 1, 1, 3)[0][0]
    for got, want in zip(sc[[0, 3, 4, 6]], [0.2, 0.25, 0.72984670, 1.06770783]):
        assert abs(got - want) < 1e-6, (got, want)


def check_cross_entropy_against_torch():
    """cross_entropy and binary_cross_entropy against torch.nn.functional: losses and (on logits) the
    gradients autograd takes through torch's own functions. torch's `weight` is alpha_c under the sum
    reduction (its weighted mean divides by the weights, focald's by the count)."""
    F = torch.nn.functional
    rng = np.random.default_rng(11)
    n, m, c = 3, 4, 6
    z = rng.normal(0, 5, size=(n, m, c)).astype(np.float32)
    lab = rng.integers(0, c, size=(n, m))
    lab[0, 1] = lab[2, 3] = -100
    soft = rng.random((n, m, c)).astype(np.float32)
    soft /= soft.sum(-1, keepdims=True)
    w = rng.random(c).astype(np.float32)
    zt = torch.tensor(z, dtype=torch.float64)

    def ours(loss, red, labels=None, targets=None, alpha_c=None, inp="logits", x=z):
        P = dict(loss=loss, profile="torchvision", input=inp, gamma=0.0, alpha=-1.0, alpha_c=alpha_c,
                 epsilon=1.0, reduction=red, ignore=-100)
        return evaluate(P, x.ravel(), labels, targets, None, n, m, c)

    def close(a, b):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-14), (a, b)

    for red in ("sum", "mean"):
        zz = zt.clone().requires_grad_(True)
        theirs = F.cross_entropy(zz.permute(0, 2, 1), torch.tensor(lab), ignore_index=-100, reduction="none")
        theirs = theirs.sum(-1) / ((torch.tensor(lab) != -100).sum(-1) if red == "mean" else 1)
        loss, grad, _ = ours("cross_entropy", red, labels=lab.ravel())
        close(loss, theirs.detach().numpy())
        close(grad, torch.autograd.grad(theirs.sum(), zz)[0].numpy())
    loss, _, _ = ours("cross_entropy", "sum", labels=np.where(lab < 0, 0, lab).ravel(), alpha_c=list(w))
    theirs = F.cross_entropy(zt.permute(0, 2, 1), torch.tensor(np.where(lab < 0, 0, lab)),
                             weight=torch.tensor(w, dtype=torch.float64), reduction="none").sum(-1)
    close(loss, theirs.numpy())
    loss, _, _ = ours("cross_entropy", "sum", targets=soft.ravel())
    theirs = F.cross_entropy(zt.permute(0, 2, 1), torch.tensor(soft, dtype=torch.float64).permute(0, 2, 1),
                             reduction="none").sum(-1)
    close(loss, theirs.numpy())

    t = (rng.random((n, m, c)) < 0.4).astype(np.float32)
    t[0] = rng.random((m, c))
    tt = torch.tensor(t, dtype=torch.float64)
    for red in ("sum", "mean"):
        zz = zt.clone().requires_grad_(True)
        theirs = F.binary_cross_entropy_with_logits(zz, tt, reduction="none").sum((-1, -2)) / (m * c if red == "mean" else 1)
        loss, grad, _ = ours("binary_cross_entropy", red, targets=t.ravel())
        close(loss, theirs.detach().numpy())
        close(grad, torch.autograd.grad(theirs.sum(), zz)[0].numpy())
    probs = rng.random((n, m, c)).astype(np.float32)
    probs[0, 0, :3] = [0.0, 1.0, 1e-30]
    loss, _, _ = ours("binary_cross_entropy", "sum", targets=t.ravel(), inp="probs", x=probs)
    theirs = F.binary_cross_entropy(torch.tensor(probs, dtype=torch.float64), tt, reduction="none").sum((-1, -2))
    close(loss, theirs.numpy())


def check_kornia():
    """kornia.losses.focal_loss on fixed inputs of the kind its tests draw (alpha .8, gamma .5, the
    shape of test_value_ignore_index): v0.8.3 for `kornia`, v0.6.12 for `kornia_legacy`, per-sample
    sums. kornia's one_hot adds 1e-6 to every class; focald's is exact: hence 1e-5 relative."""
    x = np.array([0.12, 0.85, 0.47, 0.33, 0.02, 0.91, 0.64, 0.58, 0.19, 0.07, 0.76, 0.40, 0.95, 0.28, 0.61,
                  0.50, 0.50, 0.50, 0.81, 0.14, 0.36, 0.29, 0.93, 0.05, 0.44, 0.67, 0.88, 0.71, 0.22, 0.09,
                  0.16, 0.39, 0.53, 0.98, 0.60, 0.31], dtype=np.float32)
    cases = (("kornia", [0, 2, -100, 1, 0, -100, -100, 1, 0, 2, 0, 1], [1.22998973, 2.55783672]),
             ("kornia", [0, 2, 1, 1, 0, 2, 0, 1, 0, 2, 0, 1], [2.58985689, 2.66974451]),
             ("kornia_legacy", [0, 2, 1, 1, 0, 2, 0, 1, 0, 2, 0, 1], [3.74055676, 4.36660749]))
    for prof, labels, want in cases:
        P = dict(loss="softmax_focal", profile=prof, input="logits", gamma=0.5, alpha=0.8, alpha_c=None,
                 epsilon=1.0, reduction="sum", ignore=-100)
        got = evaluate(P, x, labels, None, None, 2, 6, 3)[0]
        assert np.allclose(got, want, rtol=1e-5, atol=0), (prof, got, want)
    # kornia 0.8.3's reduction="mean" (over batch, classes and positions) of the second case
    P = dict(loss="softmax_focal", profile="kornia", input="logits", gamma=0.5, alpha=0.8, alpha_c=None,
             epsilon=1.0, reduction="mean_elements", ignore=-100)
    got = evaluate(P, x, cases[1][1], None, None, 2, 6, 3)[0].mean()
    assert abs(got - 0.146100039) <= 1e-5 * 0.146100039, got


def check_monai():
    """MONAI 1.5.0's tests/losses/test_focal_loss.py TEST_CASES (to_onehot_y=True; atol and rtol 1e-4 as
    there): input (1, 3, 2, 2) with every class's map [[1, 1], [.5, 0]], labels [[0, 1], [2, 0]]."""
    x = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0], dtype=np.float32)  # (m=4, c=3)
    labels = [0, 1, 2, 0]
    onehot = np.eye(3, dtype=np.float32)[labels]

    def monai(loss, red, alpha=-1.0, x=x, t=onehot.ravel(), n=1, m=4, c=3, weights=None):
        P = dict(loss=loss, profile="monai", input="logits", gamma=2.0, alpha=alpha, alpha_c=None, epsilon=1.0,
                 reduction=red, ignore=-1)
        if loss == "softmax_focal":
            return evaluate(P, x, labels, None, None, n, m, c)[0]
        return evaluate(P, x, None, t, weights, n, m, c)[0]

    def close(got, want):
        assert np.allclose(got, want, rtol=1e-4, atol=1e-4), (got, want)

    close(monai("sigmoid_focal", "mean_elements"), 0.34959)
    close(monai("sigmoid_focal", "mean_elements", alpha=0.8), 0.08423)
    close(monai("softmax_focal", "mean_elements"), 0.16276)
    close(monai("softmax_focal", "mean_elements", alpha=0.8), 0.08138)
    # include_background=False: MONAI drops channel 0 of input and target
    close(monai("sigmoid_focal", "mean_elements", x=x.reshape(4, 3)[:, 1:].ravel(), t=onehot[:, 1:].ravel(), c=2),
          0.36498)
    # reduction="none", without and with weight=[0.5, 0.1, 0.2]: every element its own sample
    none = [[0.02266, 0.70187, 0.37741, 0.17329], [0.70187, 0.02266, 0.37741, 0.17329],
            [0.70187, 0.70187, 0.06757, 0.17329]]   # (class, position)
    weighted = [[0.01133, 0.35093, 0.18871, 0.08664], [0.07019, 0.00227, 0.03774, 0.01733],
                [0.14037, 0.14037, 0.01352, 0.03466]]
    w = np.tile(np.array([0.5, 0.1, 0.2], dtype=np.float32), 4)
    close(monai("sigmoid_focal", "sum", n=12, m=1, c=1), np.array(none).T.ravel())
    close(monai("sigmoid_focal", "sum", n=12, m=1, c=1, weights=w), np.array(weighted).T.ravel())


# ---------------------------------------------------------------- cases

def fmt(vals, f):
    return " ".join(f % v for v in vals)


F32_MAX = float(np.finfo(np.float32).max)


def saturate(v):
    """The library's values are float32: one past float's range is written as +-FLT_MAX (README "Scores")."""
    return np.clip(np.asarray(v, dtype=np.float64), -F32_MAX, F32_MAX)


def write_case(out, name, P, n, m, c, x, labels=None, targets=None, weights=None):
    loss, grad, gnorm = evaluate(P, x, labels, targets, weights, n, m, c)
    loss, grad = saturate(loss), saturate(grad)
    sc = [(saturate(a), pred, rows) for a, pred, rows in scores(P, x, labels, targets, n, m, c)]
    out.write(f"case {name}\n")
    ac = "-" if P["alpha_c"] is None else ",".join("%.9g" % a for a in P["alpha_c"])
    out.write(f"params {P['loss']} {P['profile']} {P['reduction']} {P['input']} {P['gamma']!r} {P['alpha']!r} "
              f"{P['epsilon']!r} {P.get('gamma_pos', 1.0)!r} {P.get('gamma_neg', 4.0)!r} {P.get('clip', 0.05)!r} "
              f"{P['ignore']} {ac}\n")
    if P.get("pos_weight") is not None:
        out.write("pos_weight " + fmt(np.asarray(P["pos_weight"], dtype=np.float32), "%.9g") + "\n")
    out.write(f"shape {n} {m} {c}\n")
    out.write("x " + fmt(np.asarray(x, dtype=np.float32), "%.9g") + "\n")
    if labels is not None:
        out.write("labels " + fmt(labels, "%d") + "\n")
    else:
        out.write("targets " + fmt(np.asarray(targets, dtype=np.float32), "%.9g") + "\n")
    if weights is not None:
        out.write("weights " + fmt(np.asarray(weights, dtype=np.float32), "%.9g") + "\n")
    out.write("loss " + fmt(loss, "%.17g") + "\n")
    out.write("grad " + fmt(grad.ravel(), "%.17g") + "\n")
    out.write("grad_norm " + fmt(gnorm, "%.17g") + "\n")
    out.write("scores " + " ".join(fmt(s[0], "%.17g") for s in sc) + "\n")
    out.write("pred " + fmt([s[1] for s in sc], "%d") + "\n")
    out.write("rows " + fmt([s[2] for s in sc], "%d") + "\n")
    out.write("end\n")


def params(loss="sigmoid_focal", **kw):
    P = dict(loss=loss, profile="torchvision", reduction="sum", input="logits",
             gamma=1.0 if loss == "sigmoid_focal_star" else 2.0,
             alpha=-1.0 if (is_softmax(loss) or loss == "asl") else 0.25, alpha_c=None, epsilon=1.0,
             gamma_pos=1.0, gamma_neg=4.0, clip=0.05, ignore=-1)
    P.update(kw)
    return P


def logits(rng, size, spread=6.0):
    """Logits that include exact 0, small and saturated values and the +-1e4 extremes."""
    v = rng.normal(0, spread, size=size)
    special = [0.0, 100.0, -100.0, 1e4, -1e4, 37.5, -37.5, 88.0, -88.0, 1e-3, -1e-3, 15.0, -15.0]
    idx = rng.choice(size, size=min(size, len(special)), replace=False)
    v[idx] = special[:len(idx)]
    return v.astype(np.float32)


def probabilities(rng, size, exact=True):
    v = rng.random(size)
    if exact:
        special = [0.0, 1.0, 0.5, 1e-30, 1 - 2**-24, 1e-8]
        idx = rng.choice(size, size=min(size, len(special)), replace=False)
        v[idx] = special[:len(idx)]
    return v.astype(np.float32)


def soft_rows(rng, n_rows, c):
    v = rng.random((n_rows, c)) ** 3
    v /= v.sum(-1, keepdims=True)
    return v.astype(np.float32).ravel()


def generate(out):
    rng = np.random.default_rng(20261128)
    gammas = [0.0, 0.5, 1.0, 2.0, 2.5, 10.0]
    # sigmoid focal across shapes and label kinds (row path c >= 16, planar c < 16, flat dense targets)
    for (n, m, c) in [(5, 1, 80), (4, 1, 17), (6, 1, 10), (3, 1, 3), (9, 1, 1), (2, 37, 2), (2, 5, 16), (20, 1, 5)]:
        for g in (0.0, 2.0, 0.5):
            size = n * m * c
            x = logits(rng, size)
            labels = rng.integers(0, c + 1, size=n * m)
            labels[rng.random(n * m) < 0.15] = -1
            write_case(out, f"sigmoid_index_{n}x{m}x{c}_g{g}", params(gamma=g), n, m, c, x, labels=labels)
            t = (rng.random(size) < 0.3).astype(np.float32)
            write_case(out, f"sigmoid_multihot_{n}x{m}x{c}_g{g}", params(gamma=g), n, m, c, x, targets=t)
    # every gamma, soft targets, each profile, each reduction
    n, m, c = 6, 3, 7
    for prof in ("torchvision", "monai", "kornia", "keras"):
        for g in gammas:
            x = logits(rng, n * m * c)
            t = rng.random(n * m * c).astype(np.float32)
            t[::5] = np.round(t[::5])
            for red in ("sum", "mean", "positives"):
                write_case(out, f"sigmoid_soft_{prof}_g{g}_{red}", params(profile=prof, gamma=g, reduction=red),
                           n, m, c, x, targets=t)
    for prof in ("torchvision", "monai", "kornia", "keras"):
        x = logits(rng, 4 * 2 * 20)
        labels = rng.integers(0, 21, size=8)
        write_case(out, f"sigmoid_index_{prof}_alpha_off", params(profile=prof, alpha=-1.0), 4, 2, 20, x, labels=labels)
        write_case(out, f"sigmoid_index_{prof}_alpha_c", params(profile=prof, alpha_c=list(rng.random(20))),
                   4, 2, 20, x, labels=labels)
    # probabilities (torchvision and keras conventions)
    for prof in ("torchvision", "keras"):
        for g in (0.0, 2.0, 0.7):
            x = probabilities(rng, 5 * 4 * 6)
            t = (rng.random(5 * 4 * 6) < 0.4).astype(np.float32)
            write_case(out, f"sigmoid_probs_{prof}_g{g}", params(profile=prof, input="probs", gamma=g), 5, 4, 6, x,
                       targets=t)
    # weights and reductions with ignore and background labels
    for red in ("sum", "mean", "positives"):
        x = logits(rng, 6 * 4 * 18)
        labels = rng.integers(-1, 19, size=24)
        w = (rng.random(6 * 4 * 18) * 2).astype(np.float32)
        write_case(out, f"sigmoid_weighted_{red}", params(reduction=red), 6, 4, 18, x, labels=labels, weights=w)
        x = logits(rng, 6 * 4 * 3)
        labels = rng.integers(-1, 4, size=24)
        w = (rng.random(6 * 4 * 3) * 2).astype(np.float32)
        write_case(out, f"sigmoid_weighted_planar_{red}", params(reduction=red), 6, 4, 3, x, labels=labels, weights=w)
    # FL*, Poly-1 and ASL
    for g in (0.5, 1.0, 2.0, 10.0):
        x = logits(rng, 4 * 3 * 9)
        t = (rng.random(4 * 3 * 9) < 0.3).astype(np.float32)
        t[::7] = 0.6
        write_case(out, f"focal_star_g{g}", params("sigmoid_focal_star", gamma=g), 4, 3, 9, x, targets=t)
        write_case(out, f"poly1_sigmoid_g{g}", params("poly1_sigmoid_focal", gamma=g, epsilon=2.0), 4, 3, 9, x,
                   targets=t)
        labels = rng.integers(0, 10, size=12)
        write_case(out, f"poly1_sigmoid_index_g{g}", params("poly1_sigmoid_focal", gamma=g, epsilon=-0.5),
                   4, 3, 9, x, labels=labels)
    for (gp, gn, clip) in ((0.0, 4.0, 0.05), (1.0, 4.0, 0.05), (0.0, 0.0, 0.0), (1.0, 2.0, 0.0), (0.5, 3.5, 0.2)):
        x = logits(rng, 5 * 1 * 20, spread=4.0)
        labels = rng.integers(0, 21, size=5)
        P = params("asl", gamma_pos=gp, gamma_neg=gn, clip=clip)
        write_case(out, f"asl_index_{gp}_{gn}_{clip}", P, 5, 1, 20, x, labels=labels)
        t = (rng.random(5 * 20) < 0.2).astype(np.float32)
        write_case(out, f"asl_multihot_{gp}_{gn}_{clip}", P, 5, 1, 20, x, targets=t)
        t = rng.random(5 * 20).astype(np.float32)
        write_case(out, f"asl_soft_{gp}_{gn}_{clip}", P, 5, 1, 20, x, targets=t)
        write_case(out, f"asl_probs_{gp}_{gn}_{clip}", dict(P, input="probs"), 5, 1, 20,
                   probabilities(rng, 100, exact=False), labels=labels)
    # softmax focal: index labels across shapes, every gamma, profiles, soft rows, probabilities
    for (n, m, c) in [(5, 1, 80), (7, 1, 10), (4, 1, 2), (3, 6, 3), (2, 9, 17), (6, 1, 16)]:
        for g in (0.0, 2.0, 0.5):
            x = logits(rng, n * m * c)
            labels = rng.integers(0, c, size=n * m)
            labels[rng.random(n * m) < 0.15] = -1
            write_case(out, f"softmax_index_{n}x{m}x{c}_g{g}", params("softmax_focal", gamma=g), n, m, c, x,
                       labels=labels)
    for prof in ("torchvision", "monai", "kornia", "keras"):
        for g in gammas:
            x = logits(rng, 5 * 2 * 6, spread=4.0)
            labels = rng.integers(0, 6, size=10)
            write_case(out, f"softmax_{prof}_g{g}", params("softmax_focal", profile=prof, gamma=g, alpha=0.25),
                       5, 2, 6, x, labels=labels)
            write_case(out, f"softmax_soft_{prof}_g{g}", params("softmax_focal", profile=prof, gamma=g, alpha=0.25),
                       5, 2, 6, x, targets=soft_rows(rng, 10, 6))
    for red in ("sum", "mean", "positives"):
        x = logits(rng, 4 * 5 * 12)
        labels = rng.integers(-1, 12, size=20)
        w = (rng.random(20) * 3).astype(np.float32)
        write_case(out, f"softmax_weighted_{red}", params("softmax_focal", reduction=red,
                                                          alpha_c=list(rng.random(12))), 4, 5, 12, x,
                   labels=labels, weights=w)
    for prof in ("torchvision", "keras"):
        for g in (0.0, 2.0, 0.7):
            x = soft_rows(rng, 8, 5)
            labels = rng.integers(0, 5, size=8)
            write_case(out, f"softmax_probs_{prof}_g{g}", params("softmax_focal", profile=prof, input="probs", gamma=g),
                       8, 1, 5, x, labels=labels)
    for g in (0.5, 2.0):
        x = logits(rng, 6 * 2 * 7)
        labels = rng.integers(0, 7, size=12)
        write_case(out, f"poly1_softmax_g{g}", params("poly1_softmax_focal", gamma=g, epsilon=1.5), 6, 2, 7, x,
                   labels=labels)
        write_case(out, f"poly1_softmax_soft_g{g}", params("poly1_softmax_focal", gamma=g, epsilon=1.5), 6, 2, 7, x,
                   targets=soft_rows(rng, 12, 7))


def generate_kornia(out):
    """kornia before and after 0.7.0 (its own generator, so that the cases above stay as they were)."""
    rng = np.random.default_rng(20261205)
    for prof in ("kornia", "kornia_legacy"):
        for g in (0.0, 0.5, 2.0):
            x = logits(rng, 5 * 2 * 6, spread=4.0)
            labels = rng.integers(-1, 6, size=10)
            write_case(out, f"softmax_{prof}_ignore_g{g}", params("softmax_focal", profile=prof, gamma=g, alpha=0.8),
                       5, 2, 6, x, labels=labels)
            write_case(out, f"softmax_soft_{prof}_alpha_g{g}", params("softmax_focal", profile=prof, gamma=g,
                                                                       alpha=0.8), 5, 2, 6, x,
                       targets=soft_rows(rng, 10, 6))
        x = logits(rng, 4 * 3 * 7)
        t = rng.random(4 * 3 * 7).astype(np.float32)
        write_case(out, f"sigmoid_soft_{prof}", params(profile=prof, alpha=0.8, gamma=0.5), 4, 3, 7, x, targets=t)


def generate_cross_entropy(out):
    """The two cross-entropy losses in every traversal (their own generator, so that the cases above
    stay as they were)."""
    rng = np.random.default_rng(20261206)
    for red in ("sum", "mean", "positives"):
        x = logits(rng, 4 * 5 * 12)
        labels = rng.integers(-1, 12, size=20)
        write_case(out, f"cross_entropy_index_{red}", params("cross_entropy", gamma=0.0, reduction=red), 4, 5, 12, x,
                   labels=labels, weights=(rng.random(20) * 2).astype(np.float32))
        write_case(out, f"cross_entropy_soft_alpha_c_{red}",
                   params("cross_entropy", gamma=0.0, reduction=red, alpha_c=list(rng.random(12))), 4, 5, 12, x,
                   targets=soft_rows(rng, 20, 12))
        write_case(out, f"cross_entropy_probs_{red}", params("cross_entropy", gamma=0.0, reduction=red, input="probs"),
                   8, 1, 5, soft_rows(rng, 8, 5), labels=rng.integers(0, 5, size=8))
        for (n, m, c) in [(3, 4, 20), (4, 6, 3)]:
            x = logits(rng, n * m * c)
            labels = rng.integers(-1, c + 1, size=n * m)
            write_case(out, f"binary_cross_entropy_index_{n}x{m}x{c}_{red}",
                       params("binary_cross_entropy", gamma=0.0, reduction=red), n, m, c, x, labels=labels)
        x = logits(rng, 5 * 3 * 7)
        t = rng.random(5 * 3 * 7).astype(np.float32)
        t[::4] = np.round(t[::4])
        write_case(out, f"binary_cross_entropy_soft_weighted_{red}",
                   params("binary_cross_entropy", gamma=0.0, reduction=red, alpha=0.25), 5, 3, 7, x, targets=t,
                   weights=(rng.random(5 * 3 * 7) * 2).astype(np.float32))
        write_case(out, f"binary_cross_entropy_probs_{red}",
                   params("binary_cross_entropy", gamma=0.0, reduction=red, input="probs"), 5, 4, 6,
                   probabilities(rng, 5 * 4 * 6), targets=(rng.random(5 * 4 * 6) < 0.4).astype(np.float32))


def generate_mean_elements(out):
    """The mean over every element (MONAI's and kornia's "mean"), with ignored and background labels,
    soft targets and weights (its own generator, so that the cases above stay as they were)."""
    rng = np.random.default_rng(20261207)
    for prof in ("torchvision", "monai", "kornia"):
        x = logits(rng, 4 * 6 * 5)
        labels = rng.integers(-1, 6, size=24)
        write_case(out, f"sigmoid_index_mean_elements_{prof}", params(profile=prof, reduction="mean_elements"),
                   4, 6, 5, x, labels=labels, weights=(rng.random(4 * 6 * 5) * 2).astype(np.float32))
        x = logits(rng, 3 * 4 * 20)
        t = rng.random(3 * 4 * 20).astype(np.float32)
        write_case(out, f"sigmoid_soft_mean_elements_{prof}", params(profile=prof, reduction="mean_elements"),
                   3, 4, 20, x, targets=t)
        x = logits(rng, 5 * 4 * 6, spread=4.0)
        labels = rng.integers(-1, 6, size=20)
        write_case(out, f"softmax_mean_elements_{prof}",
                   params("softmax_focal", profile=prof, alpha=0.25, reduction="mean_elements"), 5, 4, 6, x,
                   labels=labels, weights=(rng.random(20) * 2).astype(np.float32))
        write_case(out, f"softmax_soft_mean_elements_{prof}",
                   params("softmax_focal", profile=prof, alpha=0.25, reduction="mean_elements"), 5, 4, 6, x,
                   targets=soft_rows(rng, 20, 6))


def check_pos_weight():
    """pos_weight against its two published definitions, in float64 torch: torch's
    BCEWithLogitsLoss(pos_weight=...) (binary_cross_entropy, and sigmoid_focal at gamma 0 with alpha off),
    and kornia's binary_focal_loss_with_logits with pos_weight as kornia v0.8.3 (and v0.9.0rc1) writes it:
    pos_term = -pos_weight * alpha * sigmoid(-z)^gamma * t * logsigmoid(z), neg_term = -(1 - alpha) *
    sigmoid(z)^gamma * (1 - t) * logsigmoid(-z) (its classes on dim 1; here the last), the kornia profile.
    For hard targets the torchvision profile is the same loss. Also the fixed numbers test_lib_props holds."""
    F = torch.nn.functional
    rng = np.random.default_rng(14)
    n, m, c = 3, 4, 5
    z = rng.normal(0, 3, size=(n, m, c)).astype(np.float32)
    soft = rng.random((n, m, c)).astype(np.float32)
    hard = (rng.random((n, m, c)) < 0.4).astype(np.float32)
    pw = np.array([0.0, 0.5, 1.0, 3.0, 50.0], dtype=np.float32)
    zt, pwt = torch.tensor(z, dtype=torch.float64), torch.tensor(pw, dtype=torch.float64)

    def ours(loss, t, red="sum", **kw):
        P = params(loss, reduction=red, pos_weight=list(pw), **kw)
        return evaluate(P, z.ravel(), None, t.ravel(), None, n, m, c)

    def close(a, b):
        assert np.allclose(a, b, rtol=1e-12, atol=1e-14), (a, b)

    for t in (hard, soft):
        tt = torch.tensor(t, dtype=torch.float64)
        for red in ("sum", "mean_elements"):
            zz = zt.clone().requires_grad_(True)
            theirs = torch.nn.BCEWithLogitsLoss(pos_weight=pwt, reduction="none")(zz, tt).sum((-1, -2))
            theirs = theirs / (m * c if red == "mean_elements" else 1)
            their_grad = torch.autograd.grad(theirs.sum(), zz)[0].numpy()
            for loss, kw in (("binary_cross_entropy", dict(gamma=0.0, alpha=-1.0)),
                             ("sigmoid_focal", dict(gamma=0.0, alpha=-1.0))):
                got, grad, _ = ours(loss, t, red, **kw)
                close(got, theirs.detach().numpy())
                close(grad, their_grad)

    def kornia(zz, tt, alpha, gamma):
        pos = -F.logsigmoid(-zz).exp().pow(gamma) * tt * F.logsigmoid(zz)
        neg = -F.logsigmoid(zz).exp().pow(gamma) * (1.0 - tt) * F.logsigmoid(-zz)
        if alpha is not None:
            pos, neg = alpha * pos, (1.0 - alpha) * neg
        return pwt * pos + neg

    for t, tname in ((hard, "hard"), (soft, "soft")):
        tt = torch.tensor(t, dtype=torch.float64)
        for alpha, gamma in ((0.25, 2.0), (None, 0.5), (0.8, 1.0)):
            zz = zt.clone().requires_grad_(True)
            theirs = kornia(zz, tt, alpha, gamma).sum((-1, -2))
            got, grad, _ = ours("sigmoid_focal", t, profile="kornia", alpha=-1.0 if alpha is None else alpha,
                                gamma=gamma)
            close(got, theirs.detach().numpy())
            close(grad, torch.autograd.grad(theirs.sum(), zz)[0].numpy())
            if tname == "hard":
                tv, _, _ = ours("sigmoid_focal", t, alpha=-1.0 if alpha is None else alpha, gamma=gamma)
                close(tv, got)
    # the fixed case test_lib_props holds the C library to (torch's own numbers, float64)
    x = np.array([-2.0, 0.5, 3.0, 1.0, -0.25, 0.0], dtype=np.float32)
    hard, soft = np.array([1, 0, 1, 0, 1, 1], dtype=np.float32), np.array([.75, 0, 1, .25, .5, 1], dtype=np.float32)
    pw = [2.0, 0.5, 10.0]
    for t, bce, kor in ((hard, [5.71380652, 8.6577032], [1.108371, 0.992247202]),
                        (soft, [4.68207452, 8.56750348], [0.902449394, 0.888565218])):
        got = evaluate(params("binary_cross_entropy", gamma=0.0, alpha=-1.0, pos_weight=pw), x, None, t, None, 2, 1, 3)[0]
        assert np.allclose(got, bce, rtol=1e-8, atol=0), (got, bce)
        got = evaluate(params(profile="kornia", pos_weight=pw), x, None, t, None, 2, 1, 3)[0]
        assert np.allclose(got, kor, rtol=1e-8, atol=0), (got, kor)


def generate_pos_weight(out):
    """pos_weight in every traversal, profile and sigmoid loss that takes it (its own generator, so that the
    cases above stay as they were); its entries include 0 and a large weight."""
    rng = np.random.default_rng(20261208)

    def pws(c):
        v = rng.random(c) * 4
        v[0] = 0.0
        v[-1] = 60.0
        return list(v.astype(np.float32))

    for (n, m, c) in [(5, 1, 20), (6, 1, 3), (2, 37, 2), (3, 4, 7)]:
        x = logits(rng, n * m * c)
        labels = rng.integers(-1, c + 1, size=n * m)
        for red in ("sum", "mean", "positives"):
            write_case(out, f"pos_weight_index_{n}x{m}x{c}_{red}", params(reduction=red, pos_weight=pws(c)), n, m, c, x,
                       labels=labels, weights=(rng.random(n * m * c) * 2).astype(np.float32))
        t = rng.random(n * m * c).astype(np.float32)
        t[::3] = np.round(t[::3])
        for prof in ("torchvision", "monai", "kornia", "keras"):
            write_case(out, f"pos_weight_soft_{prof}_{n}x{m}x{c}", params(profile=prof, gamma=1.5, pos_weight=pws(c)),
                       n, m, c, x, targets=t)
        write_case(out, f"pos_weight_poly1_{n}x{m}x{c}", params("poly1_sigmoid_focal", epsilon=2.0, pos_weight=pws(c)),
                   n, m, c, x, targets=t)
        write_case(out, f"pos_weight_bce_{n}x{m}x{c}", params("binary_cross_entropy", gamma=0.0, pos_weight=pws(c)),
                   n, m, c, x, labels=labels)
        write_case(out, f"pos_weight_probs_{n}x{m}x{c}", params(input="probs", pos_weight=pws(c)), n, m, c,
                   probabilities(rng, n * m * c), targets=t)
        write_case(out, f"pos_weight_alpha_c_{n}x{m}x{c}", params(alpha_c=list(rng.random(c)), pos_weight=pws(c)),
                   n, m, c, x, labels=labels)


def generate_wide_span(out):
    """Softmax rows whose logits span more than float's range ([3e38, -3e38]): z_y - max and log p_y are past
    it, alpha times them is not (0.25 x 6e38 = 1.5e38). For c = 2, 3, 8 (the planar path), 9 and 17 (the row
    path), the label at the smallest logit, at the largest and between; with alpha (in range), without (the
    loss saturates at FLT_MAX), Poly-1, and soft targets."""
    rng = np.random.default_rng(20261206)
    for c in (2, 3, 8, 9, 17):
        rows, labels = [], []
        for (hi, lo) in ((3e38, -3e38), (3.4e38, -3.4e38), (2e38, -2e38), (1e38, -3.4e38)):
            for at_lo in (True, False):
                r = list(rng.choice([-1e38, -2.5e38, -10.0, 0.0, 3.0, 1e37], size=c))
                i_hi, i_lo = rng.choice(c, size=2, replace=False)
                r[i_hi], r[i_lo] = hi, lo
                rows.append(r)
                if at_lo or c == 2:
                    labels.append(int(i_lo) if at_lo else int(i_hi))
                else:
                    labels.append(int(rng.choice([k for k in range(c) if k not in (i_hi, i_lo)])))
        rows.append(list(rng.normal(0, 3, size=c)))  # an ordinary row in the same blocks
        labels.append(int(rng.integers(0, c)))
        n = len(rows)
        x = np.asarray(rows, dtype=np.float32).ravel()
        y = np.asarray(labels)
        for g in (2.0, 0.0):
            write_case(out, f"softmax_wide_span_c{c}_g{g}", params("softmax_focal", gamma=g, alpha=0.25), n, 1, c, x,
                       labels=y)
        write_case(out, f"softmax_wide_span_c{c}_alpha_off", params("softmax_focal", gamma=2.0), n, 1, c, x, labels=y)
        write_case(out, f"poly1_softmax_wide_span_c{c}", params("poly1_softmax_focal", gamma=2.0, alpha=0.25,
                                                                epsilon=1.0), n, 1, c, x, labels=y)
        t = np.zeros((n, c), dtype=np.float32)
        t[np.arange(n), y] = 0.75
        t[np.arange(n), (y + 1) % c] = 0.25
        write_case(out, f"softmax_wide_span_soft_c{c}", params("softmax_focal", gamma=2.0, alpha=0.25), n, 1, c, x,
                   targets=t.ravel())


def main():
    check_against_torchvision()
    check_cross_entropy_against_torch()
    check_conventions()
    check_pos_weight()
    path = sys.argv[1] if len(sys.argv) > 1 else "tests/golden/lib_golden.txt"
    with open(path, "w") as out:
        out.write("# focald loss-library golden vectors: generated by tests/reference/focal_ref.py; do not edit.\n")
        generate(out)
        generate_kornia(out)
        generate_cross_entropy(out)
        generate_mean_elements(out)
        generate_pos_weight(out)
        generate_wide_span(out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
