#!/usr/bin/python3
"""Adversarial load (issue 12): focald under clients that misbehave or push its limits, side by side with
an earlier build when one is given (--before BINARY; its daemons and this build's alternate round by round,
so both see the same noise).

Sections (--sections, comma-separated; all by default):
  livez     /livez latency while (a) --slow clients each trickle a POST body one byte every --trickle
            seconds, reconnecting when cut off, and (b) --idle connections are held open (reopened when
            closed). Probes open a new connection each (as a kubelet does): --probe-rate a second on the data
            port, and as many from a thread of their own on the health listener of a build that has one. A
            probe that fails or takes more than --probe-timeout counts as a failure, and as slower than any
            other in p99. The load comes from a child process (this script with --load-worker), so that its
            event loop never delays a probe.
  meta      POST /v1/datasets/{ds}/batches of --meta-n samples (C = 10) whose meta object lists the ids in
            order, reversed and shuffled: the median time of each, and the ratio to the in-order time.
  replay    start-up after --replay-batches batches of --meta-n samples with meta (shuffled order), with a
            control without meta beside it. The batches are posted with a long --snapshot-interval and the
            daemon then killed (SIGKILL: at SIGTERM it snapshots for up to a second, which would leave less to
            replay; every batch was committed before its 200), so that start-up replays them from the batch
            log; the same database is copied back before each of --restarts starts.
  datasets  --datasets datasets of a few samples each: batch latency over --seconds of small batches to
            random datasets with --snapshot-interval 1 (so snapshot passes run during the measurement), then
            the start-up time on that database (copied back before each of --restarts starts).
  memory    --mem-clients clients each posting --mem-bodies JSON bodies of --mem-mb MB to POST /v1/loss (503
            answers retried): VmRSS when idle (after one small request, then a pause), peak (VmHWM), and
            VmRSS --settle seconds after the last body.
Start-up time is from the exec to the first 200 from /readyz (polled every 10 ms); the load time logged by
focald itself is shown beside it. Every daemon runs on its own temporary directory, removed at the end.

usage: /usr/bin/python3 tests/bench/bench_adversarial.py [--build build] [--before BINARY] [--sections ...]
   e.g. git worktree add /tmp/before 0436998 && make -C /tmp/before build/focald &&
        /usr/bin/python3 tests/bench/bench_adversarial.py --before /tmp/before/build/focald
"""
import argparse
import asyncio
import http.client
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_daemon import free_port, rss_mb as rss  # noqa: E402

SECTIONS = ("livez", "meta", "replay", "datasets", "memory")


# ---------------------------------------------------------------------------- helpers

def raise_nofile():
    """As many file descriptors as the hard limit allows: thousands of connections on each side."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pct(xs, q):
    """The q-th percentile (nearest rank) of xs; float('inf') stands for a failure."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


def ms(x):
    return "fail" if x == float("inf") else ("-" if x != x else f"{x:.1f}")


class Build:
    def __init__(self, label, binary):
        self.label, self.binary = label, binary
        out = subprocess.run([binary, "--help"], capture_output=True, text=True).stdout
        self.health = "--health-listen" in out
        self.body_memory = "--body-memory" in out


class Daemon:
    """One focald on a directory of its own; stop() ends it (SIGTERM, then SIGKILL after 60 s)."""

    def __init__(self, build, tmp, extra=(), health=False):
        self.build, self.dir = build, tmp
        os.makedirs(tmp, exist_ok=True)
        self.port = free_port()
        self.hport = free_port() if health and build.health else None
        args = [build.binary, "--listen", f"127.0.0.1:{self.port}", "--db", f"{tmp}/f.db", *extra]
        if self.hport:
            args += ["--health-listen", f"127.0.0.1:{self.hport}"]
        self.log = open(f"{tmp}/focald.log", "ab")
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, preexec_fn=raise_nofile)
        try:
            self.ready_s = self.wait_ready()
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def wait_ready(self, timeout=120):
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"focald exited with {self.proc.returncode}; see {self.dir}/focald.log")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/readyz")
                r = c.getresponse()
                r.read()
                c.close()
                if r.status == 200:
                    return time.perf_counter() - self.t0
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"focald on {self.port} not ready after {timeout} s")

    def logged_load_s(self):
        """The load time focald logged at its last start ("... replayed N batches in X s"), or None."""
        self.log.flush()
        found = None
        with open(f"{self.dir}/focald.log", errors="replace") as f:
            for line in f:
                if "replayed" in line and " in " in line:
                    try:
                        msg = json.loads(line).get("msg", "")
                        found = (float(msg.rsplit(" in ", 1)[1].split()[0]), msg)
                    except (ValueError, IndexError):
                        pass
        return found

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def post(port, path, body, timeout=600):
    """POSTs body on a new connection: (status, seconds, response body, Retry-After). A daemon that refuses
    a body before reading it (503 overloaded) answers and closes while the body is still being sent: the
    answer is read all the same, and when it cannot be, the status is 0."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    t0 = time.perf_counter()
    try:
        c.request("POST", path, body, {"Content-Type": "application/json"})
    except (BrokenPipeError, ConnectionResetError):
        pass
    try:
        r = c.getresponse()
    except (OSError, http.client.HTTPException):
        c.close()
        return 0, time.perf_counter() - t0, b"", None
    data = r.read()
    dt = time.perf_counter() - t0
    c.close()
    return r.status, dt, data, r.getheader("Retry-After")


def rounds_order(builds, r):
    """The builds in turn, the first going second every other round."""
    return builds if r % 2 == 0 else builds[::-1]


# ---------------------------------------------------------------------------- livez

async def worker_main(a):
    """The load of the livez section, in a child process: --load-worker slow|idle."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    st = {"opened": 0, "cut": 0, "answered": 0, "connect_errors": 0, "open": 0, "bytes": 0}
    gate = asyncio.Semaphore(64)  # connects in flight: a burst of thousands overflows the accept queue
    head = (b"POST /v1/datasets/adv/batches HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n")

    async def one(i):
        rnd = random.Random(i)
        while not stop.is_set():
            try:
                async with gate:
                    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", a.port), 10)
            except (OSError, asyncio.TimeoutError):
                st["connect_errors"] += 1
                await asyncio.sleep(0.5 + rnd.random())
                continue
            st["opened"] += 1
            st["open"] += 1
            try:
                if a.load_worker == "slow":
                    writer.write(head)
                    await asyncio.sleep(rnd.random() * a.trickle)  # spread the trickles over the interval
                    while not stop.is_set():
                        writer.write(b" ")
                        await writer.drain()
                        st["bytes"] += 1
                        try:
                            data = await asyncio.wait_for(reader.read(4096), a.trickle)
                        except asyncio.TimeoutError:
                            continue
                        if data:
                            st["answered"] += 1
                        break
                else:
                    stopper = asyncio.ensure_future(stop.wait())
                    done, _ = await asyncio.wait([asyncio.ensure_future(reader.read(4096)), stopper],
                                                 return_when=asyncio.FIRST_COMPLETED)
                    stopper.cancel()
                    if stop.is_set():
                        break
                    for d in done:
                        if d.result():
                            st["answered"] += 1
            except (OSError, ConnectionError):
                pass
            finally:
                st["open"] -= 1
                writer.close()
            if not stop.is_set():
                st["cut"] += 1
                await asyncio.sleep(0.2 + rnd.random() * 0.5)

    tasks = [asyncio.ensure_future(one(i)) for i in range(a.conns)]
    t0 = time.time()
    while st["opened"] < a.conns and time.time() - t0 < 20:
        await asyncio.sleep(0.1)
    await asyncio.sleep(1)
    print(json.dumps({"ready": True, "opened": st["opened"], "open": st["open"]}), flush=True)
    await stop.wait()
    final = dict(st)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(final), flush=True)


def probe(port, timeout):
    """One GET /livez on a fresh connection: its latency in ms, or inf when it failed."""
    t0 = time.perf_counter()
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            s.settimeout(max(0.001, timeout - (time.perf_counter() - t0)))
            s.sendall(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            buf = b""
            while True:
                d = s.recv(4096)
                if not d:
                    break
                buf += d
                if b"\r\n\r\n" in buf and buf.startswith(b"HTTP/1.1 200"):
                    break
        finally:
            s.close()
        dt = (time.perf_counter() - t0) * 1000
        return dt if buf.startswith(b"HTTP/1.1 200") and dt <= timeout * 1000 else float("inf")
    except OSError:
        return float("inf")


def livez(builds, a, tmp):
    print(f"\n## /livez under adversarial connections: {a.slow} slow-body clients (one byte every {a.trickle} s, "
          f"--connection-timeout {a.slow_timeout}), then {a.idle} idle connections (--connection-timeout "
          f"{a.idle_timeout}); --max-connections {a.max_connections or 'default'}; {a.rounds} round(s) of {a.seconds} s "
          f"per build, alternating; probes {a.probe_rate}/s on each port, a new connection each, timeout "
          f"{a.probe_timeout} s")
    for scenario, conns, ct in (("slow", a.slow, a.slow_timeout), ("idle", a.idle, a.idle_timeout)):
        lat = {(b.label, where): [] for b in builds for where in ("data", "health")}
        stats = {b.label: [] for b in builds}
        for r in range(a.rounds):
            for b in rounds_order(builds, r):
                extra = ["--connection-timeout", str(ct)]
                if a.max_connections:
                    extra += ["--max-connections", str(a.max_connections)]
                d = Daemon(b, f"{tmp}/livez-{scenario}-{b.label}-{r}", extra, health=True)
                w = None
                try:
                    w = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--load-worker", scenario, "--port",
                                          str(d.port), "--conns", str(conns), "--trickle", str(a.trickle)],
                                         stdout=subprocess.PIPE, text=True, preexec_fn=raise_nofile)
                    json.loads(w.stdout.readline())  # ready: the connections are open
                    end = time.perf_counter() + a.seconds

                    def prober(where, port):
                        # one thread per port: a data-port probe that times out does not hold up the health probes
                        while time.perf_counter() < end:
                            t = time.perf_counter()
                            lat[(b.label, where)].append(probe(port, a.probe_timeout))
                            time.sleep(max(0.0, 1 / a.probe_rate - (time.perf_counter() - t)))
                    ts = [threading.Thread(target=prober, args=("data", d.port))]
                    if d.hport:
                        ts.append(threading.Thread(target=prober, args=("health", d.hport)))
                    for t in ts:
                        t.start()
                    for t in ts:
                        t.join()
                    w.send_signal(signal.SIGTERM)
                    out = w.stdout.read().strip().splitlines()
                    stats[b.label].append(json.loads(out[-1]) if out else {})
                    w.wait(30)
                finally:
                    if w and w.poll() is None:
                        w.kill()
                        w.wait()
                    d.stop()
        print(f"\n{scenario} ({conns} connections)")
        print(f"{'build':10s} {'port':7s} {'probes':>7s} {'failed':>7s} {'p50 ms':>8s} {'p99 ms':>8s} {'max ms':>8s}   load")
        for b in builds:
            for where in ("data", "health"):
                xs = lat[(b.label, where)]
                if not xs:
                    print(f"{b.label:10s} {where:7s} {'(no --health-listen in this build)':>40s}")
                    continue
                fails = sum(1 for x in xs if x == float("inf"))
                ok = [x for x in xs if x != float("inf")]
                load = ""
                if where == "data":
                    tot = {k: sum(s.get(k, 0) for s in stats[b.label]) for k in ("opened", "cut", "answered", "connect_errors")}
                    load = (f"connections opened {tot['opened']}, closed by focald {tot['cut']} "
                            f"({tot['answered']} with an answer), connect errors {tot['connect_errors']}")
                print(f"{b.label:10s} {where:7s} {len(xs):7d} {fails:7d} {ms(pct(xs, 50)):>8s} {ms(pct(xs, 99)):>8s} "
                      f"{ms(max(ok)) if ok else '-':>8s}   {load}")


# ---------------------------------------------------------------------------- meta in any order

def batch_body(ids, order, rnd, classes=10, run="r"):
    """A JSON batch of ids with logits, targets and meta whose keys come in `order` (or without meta: None)."""
    logits = ",".join("[" + ",".join(f"{rnd.gauss(0, 2):.3g}" for _ in range(classes)) + "]" for _ in ids)
    targets = ",".join(str(rnd.randrange(classes)) for _ in ids)
    parts = [f'{{"run":"{run}","ids":[', ",".join(f'"{i}"' for i in ids), f'],"logits":[{logits}],"targets":[{targets}]']
    if order is not None:
        keys = list(ids)
        if order == "reversed":
            keys.reverse()
        elif order == "shuffled":
            rnd.shuffle(keys)
        parts.append(',"meta":{' + ",".join(f'"{k}":{{"uri":"file:///data/{k}.png","site":"a"}}' for k in keys) + "}")
    parts.append("}")
    return "".join(parts).encode()


def meta(builds, a, tmp):
    n = a.meta_n
    orders = ("in-order", "reversed", "shuffled")
    rnd = random.Random(7)
    ids = [f"s{i}" for i in range(n)]  # not zero-padded: sorted order is not the ids' order
    bodies = {o: batch_body(ids, o, rnd) for o in orders}
    print(f"\n## A batch of {n} samples with meta in any key order (POST /v1/datasets/{{ds}}/batches, C = 10, "
          f"{len(bodies['in-order']) / 1e6:.1f} MB; a fresh dataset each time); {a.meta_rounds} rounds alternating builds "
          f"and orders; medians in ms")
    ds = {b.label: Daemon(b, f"{tmp}/meta-{b.label}") for b in builds}
    t = {(b.label, o): [] for b in builds for o in orders}
    try:
        for r in range(a.meta_rounds):
            for b in rounds_order(builds, r):
                for o in (orders if r % 2 == 0 else orders[::-1]):
                    status, dt, data, _ = post(ds[b.label].port, f"/v1/datasets/m{r}-{o}/batches", bodies[o])
                    if status != 200:
                        raise RuntimeError(f"meta: HTTP {status}: {data[:200]!r}")
                    t[(b.label, o)].append(dt * 1000)
    finally:
        for d in ds.values():
            d.stop()
    print(f"{'build':10s}" + "".join(f"{o:>12s}" for o in orders) + f"{'reversed/in':>13s}{'shuffled/in':>13s}")
    for b in builds:
        med = [statistics.median(t[(b.label, o)]) for o in orders]
        print(f"{b.label:10s}" + "".join(f"{m:12.0f}" for m in med) + f"{med[1] / med[0]:13.2f}{med[2] / med[0]:13.2f}")


def replay(builds, a, tmp):
    n, k = a.meta_n, a.replay_batches
    rnd = random.Random(11)
    print(f"\n## Start-up replaying {k} batches of {n} samples from the batch log (--snapshot-interval 86400, SIGKILL "
          f"after the last); {a.restarts} starts each on a copy of the same database, alternating builds; medians in s")
    bodies = {}
    for kind in ("meta", "no meta"):
        bodies[kind] = [batch_body([f"b{j}-{i}" for i in range(n)], "shuffled" if kind == "meta" else None, rnd)
                        for j in range(k)]
    pristine = {}
    for b in builds:
        for kind in bodies:
            d = Daemon(b, f"{tmp}/replay-{b.label}-{kind.replace(' ', '')}", ["--snapshot-interval", "86400"])
            try:
                for j, body in enumerate(bodies[kind]):
                    status, _, data, _ = post(d.port, "/v1/datasets/r/batches", body)
                    if status != 200:
                        raise RuntimeError(f"replay: HTTP {status}: {data[:200]!r}")
            finally:
                d.stop(signal.SIGKILL)  # SIGTERM would snapshot for up to a second first, leaving less to replay
            pristine[(b.label, kind)] = d.dir
            shutil.copytree(d.dir, d.dir + ".pristine")
    res = {key: [] for key in pristine}
    for r in range(a.restarts):
        for b in rounds_order(builds, r):
            for kind in bodies:
                path = pristine[(b.label, kind)]
                shutil.rmtree(path)
                shutil.copytree(path + ".pristine", path)
                d = Daemon(b, path, ["--snapshot-interval", "86400"])
                logged = d.logged_load_s()
                d.stop(signal.SIGKILL)  # a SIGTERM would not change the database either; this is quicker
                if not logged or f"replayed {k} batches" not in logged[1]:
                    raise RuntimeError(f"replay: focald did not replay {k} batches: {logged}")
                res[(b.label, kind)].append((d.ready_s, logged[0]))
    print(f"{'build':10s}{'batches':>10s}{'to /readyz':>12s}{'focald load':>13s}")
    for b in builds:
        for kind in bodies:
            xs = res[(b.label, kind)]
            print(f"{b.label:10s}{kind:>10s}{statistics.median(x[0] for x in xs):12.2f}"
                  f"{statistics.median(x[1] for x in xs):13.2f}")


# ---------------------------------------------------------------------------- many datasets

def small_batch(rnd, ids, classes=10):
    logits = ",".join("[" + ",".join(f"{rnd.gauss(0, 2):.3g}" for _ in range(classes)) + "]" for _ in ids)
    targets = ",".join(str(rnd.randrange(classes)) for _ in ids)
    return (f'{{"run":"r","ids":[{",".join(chr(34) + i + chr(34) for i in ids)}],"logits":[{logits}],'
            f'"targets":[{targets}]}}').encode()


def fill_datasets(port, count, per, clients=4):
    def work(c):
        rnd = random.Random(c)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(c, count, clients):
            conn.request("POST", f"/v1/datasets/d{i}/batches", small_batch(rnd, [f"x{j}" for j in range(per)]),
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"fill: HTTP {r.status}")
        conn.close()
    ts = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def datasets(builds, a, tmp):
    print(f"\n## {a.datasets} datasets of {a.per_dataset} samples each: batches of 16 samples to random datasets over "
          f"{a.seconds} s per build, 2 clients, --snapshot-interval 1 (builds alternating, {a.rounds} round(s)); then "
          f"start-up on that database ({a.restarts} starts on copies, alternating)")
    base = f"{tmp}/datasets-base"
    d = Daemon(builds[-1], base, ["--snapshot-interval", "1"])
    t0 = time.perf_counter()
    try:
        fill_datasets(d.port, a.datasets, a.per_dataset)
        fill_s = time.perf_counter() - t0
        time.sleep(3)  # a snapshot pass writes them all
    finally:
        d.stop()
    print(f"(filled by {builds[-1].label} in {fill_s:.1f} s)")
    lat = {b.label: [] for b in builds}
    for r in range(a.rounds):
        for b in rounds_order(builds, r):
            path = f"{tmp}/datasets-{b.label}-{r}"
            shutil.copytree(base, path)
            d = Daemon(b, path, ["--snapshot-interval", "1"])
            try:
                stop = time.perf_counter() + a.seconds
                errors = []

                def client(c):
                    rnd = random.Random(100 * r + c)
                    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=60)
                    while time.perf_counter() < stop:
                        i = rnd.randrange(a.datasets)
                        body = small_batch(rnd, [f"x{j}" for j in rnd.sample(range(a.per_dataset * 8), 16)])
                        t1 = time.perf_counter()
                        conn.request("POST", f"/v1/datasets/d{i}/batches", body, {"Content-Type": "application/json"})
                        resp = conn.getresponse()
                        resp.read()
                        lat[b.label].append((time.perf_counter() - t1) * 1000)
                        if resp.status != 200:
                            errors.append(resp.status)
                ts = [threading.Thread(target=client, args=(c,)) for c in range(2)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                if errors:
                    raise RuntimeError(f"datasets: HTTP {errors[:5]}")
            finally:
                d.stop()
    print(f"{'build':10s}{'batches':>9s}{'p50 ms':>9s}{'p99 ms':>9s}{'max ms':>9s}")
    for b in builds:
        xs = lat[b.label]
        print(f"{b.label:10s}{len(xs):9d}{pct(xs, 50):9.2f}{pct(xs, 99):9.2f}{max(xs):9.1f}")
    res = {b.label: [] for b in builds}
    for r in range(a.restarts):
        for b in rounds_order(builds, r):
            path = f"{tmp}/datasets-start-{b.label}"
            shutil.rmtree(path, ignore_errors=True)
            shutil.copytree(base, path)
            d = Daemon(b, path, ["--snapshot-interval", "86400"])
            logged = d.logged_load_s()
            d.stop(signal.SIGKILL)
            res[b.label].append((d.ready_s, logged[0] if logged else float("nan")))
    print(f"{'build':10s}{'to /readyz s':>14s}{'focald load s':>15s}")
    for b in builds:
        xs = res[b.label]
        print(f"{b.label:10s}{statistics.median(x[0] for x in xs):14.3f}{statistics.median(x[1] for x in xs):15.3f}")


# ---------------------------------------------------------------------------- memory of large bodies

def loss_body(mb, classes=10):
    """A JSON /v1/loss body of about mb MB (ids, logits, targets)."""
    rnd = random.Random(3)
    row = ",".join(f"{rnd.gauss(0, 2):.4f}" for _ in range(classes))
    per = len(row) + 3 + 8 + 2  # a row, its id and its target, with separators
    n = int(mb * 1e6 / per)
    rows = ",".join("[" + row + "]" for _ in range(n))
    return (f'{{"ids":[{",".join(str(i) for i in range(n))}],"logits":[{rows}],'
            f'"targets":[{",".join(str(i % classes) for i in range(n))}]}}').encode(), n


def memory(builds, a, tmp):
    body, n = loss_body(a.mem_mb)
    small, _ = loss_body(0.01)
    print(f"\n## {a.mem_clients} clients posting {a.mem_bodies} JSON bodies each of {len(body) / 1e6:.1f} MB ({n} samples x 10) "
          f"to POST /v1/loss (503 answers, and connections closed before one, retried after 0.2 s); VmRSS idle (after one small request and 2 s), peak (VmHWM), "
          f"and VmRSS {a.settle} s after the last body; {a.mem_rounds} round(s), builds alternating; medians in MB")
    res = {b.label: [] for b in builds}
    for r in range(a.mem_rounds):
        for b in rounds_order(builds, r):
            d = Daemon(b, f"{tmp}/memory-{b.label}-{r}")
            try:
                status, _, data, _ = post(d.port, "/v1/loss", small)
                if status != 200:
                    raise RuntimeError(f"memory: HTTP {status}: {data[:200]!r}")
                time.sleep(2)
                idle = rss(d.proc.pid)["VmRSS"]
                busy, errors = [0], []

                def client():
                    for _ in range(a.mem_bodies):
                        while True:
                            status, _, data, _ = post(d.port, "/v1/loss", body)
                            if status in (0, 503):
                                busy[0] += 1
                                time.sleep(0.2)
                                continue
                            if status != 200:
                                errors.append((status, data[:200]))
                            break
                t0 = time.perf_counter()
                ts = [threading.Thread(target=client) for _ in range(a.mem_clients)]
                for t in ts:
                    t.start()
                for t in ts:
                    t.join()
                wall = time.perf_counter() - t0
                if errors:
                    raise RuntimeError(f"memory: {errors[:3]}")
                time.sleep(a.settle)
                m = rss(d.proc.pid)
                res[b.label].append((idle, m["VmHWM"], m["VmRSS"], busy[0], wall))
            finally:
                d.stop()
    print(f"{'build':10s}{'idle':>8s}{'peak':>8s}{'after':>8s}{'after/idle':>12s}{'503s':>6s}{'wall s':>8s}")
    for b in builds:
        xs = res[b.label]
        med = [statistics.median(x[i] for x in xs) for i in range(5)]
        print(f"{b.label:10s}{med[0]:8.0f}{med[1]:8.0f}{med[2]:8.0f}{med[2] / med[0]:12.2f}{med[3]:6.0f}{med[4]:8.1f}")


# ---------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build", help="the build to measure (its focald)")
    ap.add_argument("--before", help="an earlier build's focald, measured side by side")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--rounds", type=int, default=1, help="livez and datasets: rounds per build")
    ap.add_argument("--seconds", type=float, default=10, help="livez and datasets: seconds measured per round")
    ap.add_argument("--slow", type=int, default=1000)
    ap.add_argument("--trickle", type=float, default=2.0)
    ap.add_argument("--slow-timeout", type=int, default=5, help="--connection-timeout for the slow-body load")
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--idle-timeout", type=int, default=30, help="--connection-timeout for the idle load")
    ap.add_argument("--max-connections", type=int, help="livez: focald's --max-connections (default: its own, 1024)")
    ap.add_argument("--probe-rate", type=float, default=20, help="livez: probes a second on each port")
    ap.add_argument("--probe-timeout", type=float, default=2.0)
    ap.add_argument("--meta-n", type=int, default=100000)
    ap.add_argument("--meta-rounds", type=int, default=3)
    ap.add_argument("--replay-batches", type=int, default=7)
    ap.add_argument("--restarts", type=int, default=3)
    ap.add_argument("--datasets", type=int, default=10000)
    ap.add_argument("--per-dataset", type=int, default=4)
    ap.add_argument("--mem-clients", type=int, default=4)
    ap.add_argument("--mem-bodies", type=int, default=2)
    ap.add_argument("--mem-mb", type=float, default=50)
    ap.add_argument("--mem-rounds", type=int, default=1)
    ap.add_argument("--settle", type=float, default=3)
    ap.add_argument("--load-worker", choices=("slow", "idle"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--conns", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    raise_nofile()
    if a.load_worker:
        asyncio.run(worker_main(a))
        return
    builds = ([Build("before", a.before)] if a.before else []) + [Build("this", f"{a.build}/focald")]
    print(f"# tests/bench/bench_adversarial.py {' '.join(sys.argv[1:])}")
    print(f"# machine: {os.cpu_count()} cores, {os.uname().release}; "
          + "; ".join(f"{b.label} = {b.binary}" for b in builds))
    tmp = tempfile.mkdtemp(prefix="focald-adv-")
    try:
        for s in a.sections.split(","):
            {"livez": livez, "meta": meta, "replay": replay, "datasets": datasets, "memory": memory}[s](builds, a, tmp)
            sys.stdout.flush()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
