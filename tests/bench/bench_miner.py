#!/usr/bin/python3
"""What the Miner costs a training loop: a small model trained on scikit-learn's bundled digits
(1,797 8x8 images, 10 classes; python3-sklearn), with and without a Miner reporting every step to a
real focald (durable commits, the defaults), in interleaved pairs.

Configurations (one torch thread, batch 32 unless said):
- fast: an MLP 64-128-10, well under 1 ms per step (0.3 ms on the machine of BENCHMARKS.md);
- 1ms: an MLP 64-512-10, about 1 ms per step;
- slow: an MLP 64-256-256-10 with batch 128, about 10 ms per step;
- down: the fast loop, with focald stopped (SIGTERM, not waited for) a third of the way through and left down; the
  Miner's buffers are 1 MiB so that they overflow, and the drops are compared with what was observed
  while focald was down beyond what the buffers hold.

Each pair runs the loop without the Miner and with it (the order alternating), each run short (about a third
of a second) so that the two sides of a pair meet the same noise of a shared machine; each run with the
Miner has a Miner of its own, closed before the next run, on a new dataset.
The training loss is cross-entropy; the Miner reports it as loss {"type": "softmax_focal", "gamma": 0},
the same function. Prints, per configuration, the median step time of each side, the median over pairs
of the overhead (with / without - 1) in wall-clock time and in the training thread's CPU time, and from
the Miner: observed, sent, dropped, retries, requests,
and the time close() took (its median and maximum).

--observe N instead times N observe() calls alone (32 x 10 CPU tensors in the autograd graph, a client
that sends nothing, no flush during the timing) and prints the median and mean per call.

--soak SECONDS instead observes 1,000 steps/s of 32 samples (C = 10) for that long, without a model,
and prints what was sent and dropped (the target: nothing dropped with durability full).

usage: /usr/bin/python3 tests/bench/bench_miner.py [--build build] [--pairs 21] [--steps 1000] [--only fast|1ms|slow|down]
       /usr/bin/python3 tests/bench/bench_miner.py --soak 600
       /usr/bin/python3 tests/bench/bench_miner.py --observe 20000
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "clients", "python"))
sys.path.insert(0, HERE)
from bench_ingest import free_port, wait_http  # noqa: E402
from focald import Miner  # noqa: E402

LOSS = {"type": "softmax_focal", "gamma": 0}


class Focald:
    def __init__(self, build):
        self.build = build
        self.dir = tempfile.mkdtemp(prefix="focald-bench-miner-")
        self.port = free_port()
        self.p = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self):
        self.p = subprocess.Popen([os.path.join(self.build, "focald"), "--listen", "127.0.0.1:%d" % self.port,
                                   "--db", os.path.join(self.dir, "focald.db")],
                                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "ab"))
        wait_http(self.port, "/readyz")
        return self

    def stop(self):
        if self.p and self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            self.p.wait(60)

    def remove(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    return x, y


def model_for(name):
    torch.manual_seed(0)
    if name == "1ms":
        return torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)), 32
    if name == "slow":
        return torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                   torch.nn.ReLU(), torch.nn.Linear(256, 10)), 128
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)), 32


def train(name, x, y, steps, miner=None, stop_at=None, on_stop=None):
    """Runs the loop; returns the seconds it took (close() not included) and the training thread's CPU seconds."""
    model, bs = model_for(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    lossf = torch.nn.CrossEntropyLoss()
    n = len(x)
    g = torch.Generator().manual_seed(1)
    perm = torch.randperm(n, generator=g)
    pos, epoch = 0, 0
    c0 = time.thread_time()
    t0 = time.perf_counter()
    for step in range(steps):
        if pos + bs > n:
            perm = torch.randperm(n, generator=g)
            pos, epoch = 0, epoch + 1
        idx = perm[pos:pos + bs]
        pos += bs
        logits = model(x[idx])
        loss = lossf(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if miner is not None:
            miner.observe(idx, logits, y[idx], step=step, epoch=epoch)
        if step == stop_at and on_stop:
            on_stop()
    return time.perf_counter() - t0, time.thread_time() - c0


def run_config(build, name, steps, pairs, x, y, down=False):
    base, with_m, closes, over, cpu_over = [], [], [], [], []
    stats = []
    train(name, x, y, min(steps, 500))  # warm-up, untimed
    d = Focald(build).start()
    try:
        for k in range(pairs):
            if down and (d.p is None or d.p.poll() is not None):
                d.start()
            order = (False, True) if k % 2 == 0 else (True, False)
            t, cpu = {}, {}
            for use in order:
                if not use:
                    t[use], cpu[use] = train(name, x, y, steps)
                    continue
                m = Miner("%s-%d" % (name, k), url=d.url, run="r", loss=LOSS,
                          max_queue_bytes=(1 << 20) if down else 256 << 20, retry_initial=0.2, retry_max=1.0)
                marks = {}

                def stop_focald():  # SIGTERM without waiting: the loop goes on while focald drains and exits
                    s0 = m.stats()
                    marks.update(observed_at_stop=s0["observed"], pending_at_stop=s0["pending"], sent_at_stop=s0["sent"])
                    d.p.send_signal(signal.SIGTERM)
                t[use], cpu[use] = train(name, x, y, steps, m, stop_at=steps // 3 if down else None,
                                         on_stop=stop_focald if down else None)
                s1 = m.stats()
                marks.update(dropped_before_close=s1["dropped"], pending_at_end=s1["pending"], sent_at_end=s1["sent"])
                if down:
                    d.stop()
                c0 = time.perf_counter()
                m.close(timeout=1.0 if down else 10.0)
                closes.append(time.perf_counter() - c0)
                s = m.stats()
                s.update(marks)
                s["capacity"] = m._rows_for(("torch", "logits", (10,), "i", (), None, "i")) * 8
                stats.append(s)
            base.append(t[False] / steps)
            with_m.append(t[True] / steps)
            over.append(t[True] / t[False] - 1)
            cpu_over.append(cpu[True] / cpu[False] - 1)
    finally:
        d.remove()
    print("%-6s step %.3f ms without, %.3f ms with the Miner (medians of %d pairs of %d steps); overhead: median "
          "%+.1f%% (pairs: %s)" % (name if not down else "down", 1e3 * statistics.median(base),
                                   1e3 * statistics.median(with_m), pairs, steps, 100 * statistics.median(over),
                                   " ".join("%+.1f" % (100 * o) for o in over)))
    print("      the training thread's own CPU time: median %+.1f%% (what the Miner costs it in-process; the rest of "
          "the wall-clock overhead is the machine's cores shared with focald and the sender)" % (100 * statistics.median(cpu_over)))
    tot = {k: sum(s[k] for s in stats) for k in ("observed", "sent", "dropped", "retries", "batches", "rejected")}
    print("      Miner: observed %(observed)d, sent %(sent)d, dropped %(dropped)d, rejected %(rejected)d, "
          "retries %(retries)d, requests %(batches)d" % tot)
    print("      close(): median %.1f ms, max %.1f ms" % (1e3 * statistics.median(closes), 1e3 * max(closes)))
    if down:
        lines = []
        for s in stats:
            after = s["observed"] - s["observed_at_stop"]
            # what was unsent at the stop or observed after it, less what got through (focald's drain) and
            # what the buffers still hold at the end, is what had to be dropped
            beyond = s["pending_at_stop"] + after - (s["sent_at_end"] - s["sent_at_stop"]) - s["pending_at_end"]
            lines.append("      down: unsent at the stop %d, observed after it %d, sent after it %d, held at the end %d "
                         "(the bound: %d rows); dropped by the end of the loop %d (beyond the buffers: %d), by close() "
                         "%d; sent + dropped = observed: %s"
                         % (s["pending_at_stop"], after, s["sent_at_end"] - s["sent_at_stop"], s["pending_at_end"],
                            s["capacity"], s["dropped_before_close"], beyond, s["dropped"] - s["dropped_before_close"],
                            s["sent"] + s["dropped"] == s["observed"]))
        for line in sorted(set(lines)):
            print(line, "(%d runs)" % lines.count(line))


def soak(build, seconds):
    d = Focald(build).start()
    try:
        m = Miner("soak", url=d.url, run="r", loss=LOSS)
        ids = torch.arange(32)
        logits = torch.randn(32, 10)
        targets = torch.randint(0, 10, (32,))
        t0 = time.perf_counter()
        step = 0
        while True:
            now = time.perf_counter() - t0
            if now >= seconds:
                break
            due = int(now * 1000)
            while step < due:
                m.observe(ids + 32 * (step % 1000), logits, targets, step=step, epoch=step // 1000)
                step += 1
            time.sleep(0.0005)
        c0 = time.perf_counter()
        m.close(30)
        s = m.stats()
        print("soak %d s at 1000 steps/s x 32: observed %d, sent %d, dropped %d, retries %d, requests %d; "
              "close() %.1f ms" % (seconds, s["observed"], s["sent"], s["dropped"], s["retries"], s["batches"],
                                   1e3 * (time.perf_counter() - c0)))
    finally:
        d.remove()


def observe_alone(n):
    class Nothing:
        def post_batch(self, *a, **k):
            return {"duplicate": False}
    m = Miner("alone", client=Nothing(), flush_interval=3600, max_batch=n + 1000, max_queue_bytes=1 << 30)
    ids = torch.arange(32)
    x = torch.randn(32, 10, requires_grad=True) * 1.0
    t = torch.randint(0, 10, (32,))
    for i in range(200):
        m.observe(ids, x, t, step=i)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        m.observe(ids, x, t, step=i)
        times.append(time.perf_counter() - t0)
    m.close()
    print("observe() alone, 32 x 10: median %.1f us, mean %.1f us over %d calls"
          % (1e6 * statistics.median(times), 1e6 * statistics.mean(times), n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--pairs", type=int, default=21)
    ap.add_argument("--steps", type=int, default=1000, help="steps per run of the fast loop (1ms: 2/5, slow: 1/16)")
    ap.add_argument("--soak", type=float, default=0)
    ap.add_argument("--observe", type=int, default=0)
    ap.add_argument("--only", choices=("fast", "1ms", "slow", "down"), help="run one configuration")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.soak:
        soak(a.build, a.soak)
        return
    if a.observe:
        observe_alone(a.observe)
        return
    x, y = digits()
    if a.only in (None, "fast"):
        run_config(a.build, "fast", a.steps, a.pairs, x, y)
    if a.only in (None, "1ms"):
        run_config(a.build, "1ms", a.steps * 2 // 5, a.pairs, x, y)
    if a.only in (None, "slow"):
        run_config(a.build, "slow", max(30, a.steps // 16), a.pairs, x, y)
    if a.only in (None, "down"):
        run_config(a.build, "fast", a.steps, a.pairs, x, y, down=True)


if __name__ == "__main__":
    main()
