#!/usr/bin/python3
"""Daemon benchmarks: ingest through HTTP, queries on 1M tracked samples, memory.

Starts build/focald on a fresh database and runs, in one go:
  1. ingest: build/bench/loadgen, 4 clients, JSON batches of 256 x 10 classes, durable commits
     (the client's own ceiling against its discard server is measured right after, side by side);
  2. fill: one epoch over --samples distinct ids (default 1M), on top of the ingest's;
  3. queries: GET hard-examples?k=100 for every `by` field, one run and run=*, repeated;
     reports p50/p99 latency;
  4. the data map the console first draws (GET datamap, 64 x 64 bins) over all of them, one run and run=*;
  5. memory: the daemon's RSS (VmRSS) and peak (VmHWM) with those samples tracked.

usage: /usr/bin/python3 tests/bench/bench_daemon.py [--build build] [--samples 1000000] [--seconds 10]
"""
import argparse
import contextlib
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

FIELDS = ["seen", "last_loss", "mean_loss", "max_loss", "ema_loss", "confidence", "variability", "correctness",
          "forgetting", "aum", "forgetting_events", "el2n", "label_issue_score", "grand",
          "early_label_issue_score"]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("focald did not become ready")


@contextlib.contextmanager
def builds(binaries, args=(), each=None):
    """Starts each focald binary on a fresh database of its own, loopback, a free port, and waits until each
    is ready; yields [(process, port)]; at the end stops them and removes their databases. For the ab_*
    benchmarks, which compare builds side by side. args go to every daemon; each, a list of one tuple per
    binary, to that one."""
    started, tmps = [], []
    try:
        for k, b in enumerate(binaries):
            tmp = tempfile.mkdtemp(prefix="focald-ab-")
            tmps.append(tmp)
            port = free_port()
            log = open(os.path.join(tmp, "focald.log"), "w")
            started.append((subprocess.Popen([b, "--listen", f"127.0.0.1:{port}", "--db", f"{tmp}/f.db",
                                              "--log-level", "warn", *args, *(each[k] if each else ())], stderr=log), port))
        for _, port in started:
            wait_ready(port)
        yield started
    finally:
        for p, _ in started:
            p.terminate()
            p.wait(timeout=60)
        for t in tmps:
            shutil.rmtree(t, ignore_errors=True)


def get_json(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise RuntimeError(f"{path}: {r.status} {body[:200]!r}")
    return json.loads(body)


def loadgen(build, url, clients, seconds, batch, classes, samples, extra=()):
    out = subprocess.run([f"{build}/bench/loadgen", "--url", url, "--clients", str(clients), "--duration", str(seconds),
                          "--batch", str(batch), "--classes", str(classes), "--samples", str(samples), "--json", *extra],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def fill(conn, samples, batch=2048, epoch=0):
    """One epoch over ids s0 .. s{samples-1} (the load generator reuses its bodies, so its ids repeat).

    Epoch e draws its own logits (seed 1 + e) at steps after the previous epoch's, so two epochs give each
    sample a variability; a sample keeps its target across epochs."""
    import random
    rnd = random.Random(1 + epoch)
    labels = random.Random(1)
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        ids = ",".join(f'"s{start + i}"' for i in range(n))
        rows = ",".join("[" + ",".join(f"{rnd.gauss(0, 2):.3g}" for _ in range(10)) + "]" for _ in range(n))
        targets = ",".join(str(labels.randrange(10)) for _ in range(n))
        body = (f'{{"run":"bench","step":{epoch * samples + start},"ids":[{ids}],"logits":[{rows}],'
                f'"targets":[{targets}]}}')
        conn.request("POST", "/v1/datasets/bench/batches", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            raise RuntimeError(f"fill: HTTP {r.status}")


def rss_mb(pid):
    vals = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                k, v = line.split(":")
                vals[k] = int(v.split()[0]) / 1024
    return vals


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--samples", type=int, default=1000000)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--queries", type=int, default=30, help="repetitions of each query")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="focald-bench-")
    port = free_port()
    log = open(os.path.join(tmp, "focald.log"), "w")
    proc = subprocess.Popen([f"{args.build}/focald", "--listen", f"127.0.0.1:{port}", "--db", f"{tmp}/f.db",
                             "--log-level", "warn"], stderr=log)
    try:
        wait_ready(port)
        url = f"http://127.0.0.1:{port}/v1/datasets/bench/batches"
        print("# focald daemon benchmark; machine: %s cores; command: make bench" % os.cpu_count())
        ing = loadgen(args.build, url, 4, args.seconds, 256, 10, args.samples)
        dport = free_port()
        disc = subprocess.Popen([f"{args.build}/bench/loadgen", "--discard-server", f"127.0.0.1:{dport}"])
        time.sleep(0.3)
        ceil = loadgen(args.build, f"http://127.0.0.1:{dport}/v1/datasets/bench/batches", 4, 3, 256, 10, args.samples)
        disc.kill()
        disc.wait()
        print(f"ingest JSON 256x10, 4 clients, durable: {ing['samples_per_s']:.0f} samples/s, "
              f"p50 {ing['p50_ms']:.2f} ms, p99 {ing['p99_ms']:.2f} ms, errors {ing['errors']} "
              f"(client ceiling {ceil['samples_per_s']:.0f} samples/s)")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        t0 = time.time()
        fill(conn, args.samples)
        d = get_json(conn, "/v1/datasets/bench")
        print(f"fill: {d['samples']} samples, {d['observations']} observations ({time.time() - t0:.0f} s)")
        time.sleep(6)  # let a snapshot pass run, as in steady operation
        lat = {}
        for run in ("bench", "*"):
            for f in FIELDS:
                ts = []
                for _ in range(args.queries):
                    t = time.perf_counter()
                    got = get_json(conn, f"/v1/datasets/bench/hard-examples?by={f}&k=100&run={run}")
                    ts.append((time.perf_counter() - t) * 1e3)
                    assert len(got["items"]) == 100
                lat[(run, f)] = ts
        for run in ("bench", "*"):
            allt = [t for (r, f), ts in lat.items() if r == run for t in ts]
            allt.sort()
            p99 = allt[int(0.99 * (len(allt) - 1))]
            worst = max(statistics.median(ts) for (r, f), ts in lat.items() if r == run)
            print(f"top-100 run={run}: over all fields p50 {statistics.median(allt):.1f} ms, p99 {p99:.1f} ms "
                  f"(slowest field's median {worst:.1f} ms; {len(allt)} queries)")
        # the console's first paint of the data map: the whole map, binned 64 x 64 (README "Console")
        for run in ("bench", "*"):
            ts, size = [], 0
            for _ in range(10):
                t = time.perf_counter()
                conn.request("GET", f"/v1/datasets/bench/datamap?run={run}&bins=64&limit=2000")
                r = conn.getresponse()
                body = r.read()
                ts.append((time.perf_counter() - t) * 1e3)
                assert r.status == 200 and json.loads(body)["total"] == d["samples"]
                size = len(body)
            print(f"data map of {d['samples']} samples run={run}, 64 x 64 bins: median {statistics.median(ts):.0f} ms, "
                  f"max {max(ts):.0f} ms, {size / 1024:.0f} KiB")
        mem = rss_mb(proc.pid)
        print(f"memory with {d['samples']} samples tracked: RSS {mem['VmRSS']:.0f} MB, peak {mem['VmHWM']:.0f} MB")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
