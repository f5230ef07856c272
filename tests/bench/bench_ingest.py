#!/usr/bin/python3
"""Ingest benchmarks, side by side in one run: focald (binary and JSON), the load generator's
own ceiling, and the Python service a user would otherwise write (tests/bench/baseline_server.py).

Runs --rounds rounds; in each, every configuration gets one load generator run of --seconds,
in turn, against one focald (durable commits, the defaults) and one baseline server. Prints the
median over rounds of samples/s, elements/s and latency percentiles, and the ratios.
Then /v1/loss with N=100000, C=80 binary against the library kernel on the same data.

usage: /usr/bin/python3 tests/bench/bench_ingest.py [--build build] [--rounds 3] [--seconds 6]
"""
import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

import numpy as np

# name, loadgen arguments, target
CONFIGS = [
    ("binary 1024 x 10", ["--format", "binary", "--batch", "1024", "--classes", "10"], "1M samples/s"),
    ("binary 1024 x 80", ["--format", "binary", "--batch", "1024", "--classes", "80"], "300k samples/s"),
    ("binary dense 8 x 256x256 x 2", ["--format", "binary", "--batch", "8", "--dense", "65536", "--classes", "2",
                                      "--target-dtype", "uint8"], "200M elements/s"),
    ("JSON 256 x 10", ["--format", "json", "--batch", "256", "--classes", "10"], "100k samples/s, p99 10 ms"),
]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_http(port, path, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", path)
            c.getresponse().read()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answers on {port}")


def loadgen(build, port, dataset, args, seconds, clients=4):
    cmd = [f"{build}/bench/loadgen", "--url", f"http://127.0.0.1:{port}/v1/datasets/{dataset}/batches", "--clients",
           str(clients), "--duration", str(seconds), "--warmup", "1", "--samples", "1000000", "--json", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def loss_endpoint(port, outputs):
    n, c = 100000, 80
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(n, c)) * 3).astype(np.float32)
    y = rng.integers(0, c, n).astype(np.int64)
    ids = np.arange(n, dtype=np.int64)
    hdr = {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [n], "parameters": {"binary_data_size": 8 * n}},
                      {"name": "logits", "datatype": "FP32", "shape": [n, c], "parameters": {"binary_data_size": 4 * n * c}},
                      {"name": "targets", "datatype": "INT64", "shape": [n], "parameters": {"binary_data_size": 8 * n}}]}
    if outputs == "losses":
        hdr["outputs"] = [{"name": "losses"}]
    hb = json.dumps(hdr).encode()
    body = hb + ids.tobytes() + x.tobytes() + y.tobytes()
    conn = http.client.HTTPConnection("127.0.0.1", port)
    ts = []
    for _ in range(9):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/loss", body, {"Content-Type": "application/octet-stream", "Accept": "application/octet-stream",
                                               "Inference-Header-Content-Length": str(len(hb))})
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        ts.append(time.perf_counter() - t0)
    return n * c / statistics.median(ts[1:]) / 1e6


def kernel(build, case):
    out = subprocess.run([f"{build}/bench/bench_lib", "--case", case, "--reps", "7"], capture_output=True, text=True,
                         check=True).stdout
    first = json.loads(out.splitlines()[0])  # the best variant this CPU has comes first
    return first["melem_per_s"], first["variant"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=6)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="focald-ingest-")
    fport, bport, dport = free_port(), free_port(), free_port()
    procs = []
    try:
        procs.append(subprocess.Popen([f"{args.build}/focald", "--listen", f"127.0.0.1:{fport}", "--db", f"{tmp}/f.db",
                                       "--log-level", "warn"]))
        procs.append(subprocess.Popen(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "baseline_server.py"),
                                       str(bport), f"{tmp}/baseline.db"]))
        procs.append(subprocess.Popen([f"{args.build}/bench/loadgen", "--discard-server", f"127.0.0.1:{dport}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(fport, "/readyz")
        wait_http(bport, "/")
        time.sleep(0.3)
        res = {}
        for rnd in range(args.rounds):
            for ci, (name, la, _) in enumerate(CONFIGS):
                # a dataset per configuration: a run keeps one class count
                res.setdefault(("focald", name), []).append(loadgen(args.build, fport, f"r{rnd}c{ci}", la, args.seconds))
                res.setdefault(("ceiling", name), []).append(loadgen(args.build, dport, "x", la, 3))
            res.setdefault(("baseline", "JSON 256 x 10"), []).append(
                loadgen(args.build, bport, "b", CONFIGS[3][1], args.seconds))
        loss_rounds = []
        for _ in range(args.rounds):
            k_all, variant = kernel(args.build, "sigmoid_focal+scores")
            k_loss, _ = kernel(args.build, "sigmoid_focal")
            loss_rounds.append((loss_endpoint(fport, "all"), k_all, loss_endpoint(fport, "losses"), k_loss))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)

    def med(key, field):
        return statistics.median(r[field] for r in res[key])

    print(f"# ingest benchmarks: {os.cpu_count()} cores, 4 clients each, durable commits (--durability full), medians of "
          f"{args.rounds} interleaved rounds of {args.seconds} s; command: make bench")
    print(f"{'configuration':32s} {'samples/s':>11s} {'elements/s':>11s} {'p50 ms':>7s} {'p99 ms':>7s} {'errors':>6s}  "
          f"{'client ceiling':>15s}  target")
    for name, _, target in CONFIGS:
        k = ("focald", name)
        print(f"{name:32s} {med(k, 'samples_per_s'):11.0f} {med(k, 'elements_per_s'):11.3g} {med(k, 'p50_ms'):7.2f} "
              f"{med(k, 'p99_ms'):7.2f} {sum(r['errors'] for r in res[k]):6d}  "
              f"{med(('ceiling', name), 'samples_per_s'):11.0f} s/s  {target}")
    b = ("baseline", "JSON 256 x 10")
    print(f"{'baseline (Python, torchvision)':32s} {med(b, 'samples_per_s'):11.0f} {med(b, 'elements_per_s'):11.3g} "
          f"{med(b, 'p50_ms'):7.2f} {med(b, 'p99_ms'):7.2f} {sum(r['errors'] for r in res[b]):6d}")
    fj, fb = med(("focald", "JSON 256 x 10"), "samples_per_s"), med(("focald", "binary 1024 x 10"), "samples_per_s")
    bj = med(b, "samples_per_s")
    print(f"ratio focald / baseline: JSON 256x10 {fj / bj:.1f}x (p99 {med(('focald', 'JSON 256 x 10'), 'p99_ms'):.1f} vs "
          f"{med(b, 'p99_ms'):.1f} ms); focald binary 1024x10 {fb / bj:.1f}x")
    la, ka, ll, kl = (statistics.median(v) for v in zip(*loss_rounds))
    print(f"/v1/loss binary N=100000 C=80: {la:.0f} M elements/s with every output vs the kernel with scores "
          f"{ka:.0f} ({la / ka:.0%}); losses only {ll:.0f} vs the loss kernel {kl:.0f} ({ll / kl:.0%}) [{variant}, 1 thread]")


if __name__ == "__main__":
    main()
