#!/usr/bin/python3
"""Cluster benchmarks: focald nodes on one shared log in PostgreSQL (README "A cluster on PostgreSQL").

Starts a throw-away PostgreSQL 15 (tests/cluster/pgtemp.py: initdb in a temporary directory, fsync on,
synchronous_commit on, the server's other settings its defaults) and, each on a fresh database, all at once:
a standalone focald (no --store: the reference), a one-node cluster (its own PostgreSQL database) and a
three-node cluster (another). Then:
  1. ingest: the load generator, 4 clients, binary 1024 x 10 and JSON 256 x 10 (ids from 1M), against the
     standalone daemon, the one node, and the three nodes with the clients spread over them (2, 1, 1, the
     node with two changing round by round; three load generators at once, their samples/s added up, the
     worst of their p99s reported). The configurations alternate run by run (which goes first turns round by
     round), --rounds rounds; medians, and the ratio to standalone. After each cluster run, the time until
     every node of it reads Focald-Log-Behind: 0, before the next run starts.
  2. PostgreSQL during those cluster runs: append transactions/s (the log rows the run appended, counted by
     distinct (node, appended_at): appended_at is now(), a transaction's start, so each append transaction has
     its own), log rows/s (focald_log_head's position delta), all transactions/s (pg_stat_database.xact_commit
     of the log's database: the followers' reads and head polls too) and WAL MB/s (pg_current_wal_lsn), each
     over the span of the run's appends (first to last appended_at).
  3. lag: the three nodes under background load (one client on each, binary 1024 x 10, dataset bg); JSON
     batches of 64 fresh ids posted to node A one after another for --lag-seconds; after each answer, nodes B
     and C are asked at once for one of its samples with after=<its Focald-Log-Position>; the time from A's
     answer to each 200 (the sample must be there, seen once). Then the background load stops: the time from
     the load generators' exit until each node reads Focald-Log-Behind: 0; then each node's read with
     after=<the log's head> must answer 200 (its time is printed).
  4. top-k: --topk-samples samples, two epochs (bench_daemon.fill), posted to node A of the three and to the
     standalone daemon; GET hard-examples?k=100&run=bench for a few `by` fields, alternating the standalone
     daemon and node C (which only followed the log), --topk-rounds rounds; medians and the ratio; the two
     daemons' answers must be the same.
  5. sizes: bytes per observation of the log (pg_total_relation_size of focald_log, table, TOAST and index,
     and the rows' bodies as sent and as stored), from the ingest's one-node cluster; the daemons' RSS; an
     append transaction alone, as focald's writer makes it (lock the head, insert one row with a real body from
     the log, of a batch of 1024 and of one of 256, move the head, pg_notify, commit), with pgbench at 1 and 4
     clients: its latency is how long the append lock is held, and 4 clients show the single lock's ceiling in
     commits/s; and how long
     focald's own writer holds the lock: 3 s more of each ingest configuration on the one node with every
     statement logged by PostgreSQL (log_min_duration_statement = 0, for that run only).

usage: /usr/bin/python3 tests/bench/bench_cluster.py [--build build] [--rounds 3] [--seconds 5]
           [--lag-seconds 10] [--topk-samples 200000] [--topk-rounds 20]
"""
import argparse
import concurrent.futures
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "cluster"))
import bench_daemon as bd  # noqa: E402
import bench_ingest as bi  # noqa: E402
from pgtemp import PostgreSQL  # noqa: E402

CONFIGS = [c for c in bi.CONFIGS if c[0] in ("binary 1024 x 10", "JSON 256 x 10")]
SETUPS = ["standalone", "1 node", "3 nodes"]
TOPK_FIELDS = ["mean_loss", "seen", "variability", "correctness", "forgetting"]
CLIENTS = 4


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def request(port, method, path, body=None, headers=None, timeout=60):
    """One request on a fresh connection: (status, headers as a dict of lower-case names, body bytes)."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body, headers or {})
        r = c.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        c.close()


def behind(port):
    _, h, _ = request(port, "GET", "/v1/datasets")
    return h.get("focald-log-behind")


def wait_behind_zero(ports, timeout=300, t0=None):
    """Seconds since t0 (default now) until every port's Focald-Log-Behind reads 0 (each polled every 5 ms): a
    list, one per port."""
    t0 = t0 or time.perf_counter()
    got = [None] * len(ports)
    while None in got:
        for i, p in enumerate(ports):
            if got[i] is None and behind(p) == "0":
                got[i] = time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"nodes still behind after {timeout} s: {[behind(p) for p in ports]}")
        time.sleep(0.005)
    return got


def start_loadgen(build, port, dataset, args, seconds, clients):
    cmd = [f"{build}/bench/loadgen", "--url", f"http://127.0.0.1:{port}/v1/datasets/{dataset}/batches", "--clients",
           str(clients), "--duration", str(seconds), "--warmup", "1", "--samples", "1000000", "--json", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_loadgen(p):
    out, err = p.communicate()
    lines = out.strip().splitlines()
    if not lines:
        raise RuntimeError(f"loadgen failed (exit {p.returncode}): {err[-500:]}")
    res = json.loads(lines[-1])
    if p.returncode != 0:
        res.setdefault("errors", 1)
        res["stderr"] = err[-300:]
    return res


class Log:
    """The shared log of one cluster, as PostgreSQL sees it."""

    def __init__(self, pg, db):
        self.pg, self.db = pg, db

    def sql(self, stmt):
        return self.pg.sql(self.db, stmt).strip()

    def snapshot(self):
        row = self.sql("SELECT (SELECT pos FROM focald_log_head), xact_commit, "
                       "pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint "
                       f"FROM pg_stat_database WHERE datname = '{self.db}'").split("\t")
        return {"head": int(row[0]), "xact": int(row[1]), "wal": int(row[2])}

    def appends(self, p0, p1):
        """Append transactions and the span of their start times (s) over log positions (p0, p1]."""
        row = self.sql("SELECT count(DISTINCT (node, appended_at)), "
                       "extract(epoch FROM max(appended_at) - min(appended_at)) "
                       f"FROM focald_log WHERE pos > {p0} AND pos <= {p1}").split("\t")
        return int(row[0]), float(row[1] or 0)


def ingest(a, pg, setups):
    """Section 1 and 2. setups: name -> (ports, Log or None)."""
    res = {(s, c): [] for s in SETUPS for c, _, _ in CONFIGS}
    pgstats = {(s, c): [] for s in SETUPS[1:] for c, _, _ in CONFIGS}
    catchup = {(s, c): [] for s in SETUPS[1:] for c, _, _ in CONFIGS}
    for r in range(a.rounds):
        for cname, cargs, _ in CONFIGS:
            order = SETUPS[r % len(SETUPS):] + SETUPS[:r % len(SETUPS)]
            for s in order:
                ports, log = setups[s]
                # 4 clients over the nodes, round-robin from a node that turns round by round
                split = [0] * len(ports)
                for k in range(CLIENTS):
                    split[(k + r) % len(ports)] += 1
                before = log.snapshot() if log else None
                procs = [start_loadgen(a.build, p, "ingest", cargs, a.seconds, n) for p, n in zip(ports, split) if n]
                outs = [finish_loadgen(p) for p in procs]
                if log:
                    t_end = time.perf_counter()
                    catchup[(s, cname)].append(max(wait_behind_zero(ports)))
                    time.sleep(max(0.0, 1.2 - (time.perf_counter() - t_end)))  # backends report their stats within 1 s
                    after = log.snapshot()
                    n_tx, span = log.appends(before["head"], after["head"])
                    rows = after["head"] - before["head"]
                    span = span or a.seconds
                    pgstats[(s, cname)].append({"tx_s": n_tx / span, "rows_s": rows / span, "rows_tx": rows / max(n_tx, 1),
                                                "xact_s": (after["xact"] - before["xact"]) / span,
                                                "wal_mb_s": (after["wal"] - before["wal"]) / span / 1e6})
                res[(s, cname)].append({"samples_per_s": sum(o["samples_per_s"] for o in outs),
                                        "p99_ms": max(o["p99_ms"] for o in outs),
                                        "errors": sum(o.get("errors", 0) for o in outs),
                                        "stderr": " ".join(o.get("stderr", "") for o in outs)})
    print(f"\n## 1. ingest: {CLIENTS} clients, ids from 1M, durable commits; medians of {a.rounds} rounds of "
          f"{a.seconds} s, the setups alternating run by run; 3 nodes: the clients spread 2, 1, 1 over them, p99 the "
          f"worst node's")
    print(f"{'configuration':18s}{'setup':12s}{'samples/s':>12s}{'p99 ms':>9s}{'/ standalone':>14s}"
          f"{'catch-up s':>12s}  rounds (samples/s)")
    for cname, _, _ in CONFIGS:
        ref = statistics.median(x["samples_per_s"] for x in res[("standalone", cname)])
        for s in SETUPS:
            xs = res[(s, cname)]
            med = statistics.median(x["samples_per_s"] for x in xs)
            p99 = statistics.median(x["p99_ms"] for x in xs)
            cu = f"{statistics.median(catchup[(s, cname)]):12.2f}" if s != "standalone" else f"{'':12s}"
            errs = sum(x["errors"] for x in xs)
            print(f"{cname:18s}{s:12s}{med:12,.0f}{p99:9.2f}{med / ref:14.3f}{cu}  "
                  + " ".join(f"{x['samples_per_s']:,.0f}" for x in xs)
                  + (f"   ERRORS {errs}: {' '.join(x['stderr'] for x in xs)[:300]}" if errs else ""))
    print("\n## 2. PostgreSQL during the cluster runs (medians over the runs; rates over the span of each run's appends)")
    print(f"{'configuration':18s}{'setup':12s}{'append tx/s':>13s}{'log rows/s':>12s}{'rows/tx':>9s}"
          f"{'all tx/s':>10s}{'WAL MB/s':>10s}")
    for cname, _, _ in CONFIGS:
        for s in SETUPS[1:]:
            xs = pgstats[(s, cname)]
            m = {k: statistics.median(x[k] for x in xs) for k in xs[0]}
            print(f"{cname:18s}{s:12s}{m['tx_s']:13,.0f}{m['rows_s']:12,.0f}{m['rows_tx']:9.2f}{m['xact_s']:10,.0f}"
                  f"{m['wal_mb_s']:10.1f}")
    return res


def lag(a, ports, log):
    """Section 3, on the three nodes: A posts, B and C read after A's position."""
    bg = [start_loadgen(a.build, p, "bg", CONFIGS[0][1], a.lag_seconds + 2, 1) for p in ports]
    time.sleep(1.5)  # the load generators build their requests and warm up
    conn = http.client.HTTPConnection("127.0.0.1", ports[0], timeout=60)
    pool = concurrent.futures.ThreadPoolExecutor(2)
    waits = {1: [], 2: []}
    problems = []

    def read_after(port, sid, pos, t_ack):
        st, _, body = request(port, "GET", f"/v1/datasets/lag/samples/{sid}?run=r&after={pos}")
        dt = (time.perf_counter() - t_ack) * 1e3
        if st != 200:
            return dt, f"HTTP {st} {body[:200]!r}"
        seen = json.loads(body)["runs"][0]["seen"]
        return dt, None if seen == 1 else f"seen {seen}, expected 1"

    k, end = 0, time.time() + a.lag_seconds
    while time.time() < end:
        ids = [f"lag{k}-{i}" for i in range(64)]
        body = json.dumps({"run": "r", "batch_id": f"lag-{k}", "ids": ids, "targets": [i % 10 for i in range(64)],
                           "logits": [[((i * 7 + j * 3) % 11) / 5 - 1 for j in range(10)] for i in range(64)]})
        conn.request("POST", "/v1/datasets/lag/batches", body, {"Content-Type": "application/json"})
        r = conn.getresponse()
        r.read()
        t_ack = time.perf_counter()
        pos = r.getheader("Focald-Log-Position")
        if r.status != 200 or pos is None:
            problems.append(f"POST to A: HTTP {r.status}, position {pos}")
            time.sleep(0.05)
            k += 1
            continue
        futs = {n: pool.submit(read_after, ports[n], ids[k % 64], pos, t_ack) for n in (1, 2)}
        for n, f in futs.items():
            dt, err = f.result()
            if err:
                problems.append(f"node {'ABC'[n]} after={pos}: {err}")
            else:
                waits[n].append(dt)
        k += 1
        time.sleep(0.01)
    outs = [finish_loadgen(p) for p in bg]
    t_stop = time.perf_counter()
    to_zero = wait_behind_zero(ports, t0=t_stop)
    head = log.snapshot()["head"]
    to_head = []
    for p in ports:
        t = time.perf_counter()
        st, _, body = request(p, "GET", f"/v1/datasets/bg?after={head}")
        to_head.append(time.perf_counter() - t)
        if st != 200:
            problems.append(f"after={head} (the head when the load stopped): HTTP {st} {body[:200]!r}")
    pool.shutdown()
    bg_rate = sum(o["samples_per_s"] for o in outs)
    print(f"\n## 3. lag between nodes: {k} batches of 64 posted to node A, each read on B and C with after=<its "
          f"position>, under background load (1 client per node, binary 1024 x 10: {bg_rate:,.0f} samples/s "
          f"in all, errors {sum(o.get('errors', 0) for o in outs)})")
    print(f"{'from A answered to':30s}{'reads':>7s}{'p50 ms':>9s}{'p99 ms':>9s}{'max ms':>9s}")
    for n, name in ((1, "B answers after=P"), (2, "C answers after=P"), (None, "either")):
        xs = waits[n] if n else waits[1] + waits[2]
        if xs:
            print(f"{name:30s}{len(xs):7d}{pct(xs, 0.5):9.2f}{pct(xs, 0.99):9.2f}{max(xs):9.2f}")
    print(f"load stopped (log head {head}): Focald-Log-Behind reads 0 after "
          + ", ".join(f"{'ABC'[i]} {t * 1e3:.0f} ms" for i, t in enumerate(to_zero))
          + " (from the load generators' exit); then a read with after=<the head> took "
          + ", ".join(f"{'ABC'[i]} {t * 1e3:.1f} ms" for i, t in enumerate(to_head)))
    for p in problems[:10]:
        print("PROBLEM:", p)
    if len(problems) > 10:
        print(f"PROBLEM: ... {len(problems)} in all")
    return waits, problems


def topk(a, standalone, nodes, log):
    """Section 4: fill the standalone daemon and node A alike; query the standalone daemon and node C."""
    t0 = time.time()
    for port in (standalone, nodes[0]):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        bd.fill(c, a.topk_samples, epoch=0)
        bd.fill(c, a.topk_samples, epoch=1)
        c.close()
    fill_s = time.time() - t0
    head = log.snapshot()["head"]
    wait_behind_zero(nodes)
    time.sleep(6)  # let a snapshot pass run, as in steady operation
    conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=60) for p in (standalone, nodes[2])]
    lat = {(i, f): [] for i in range(2) for f in TOPK_FIELDS}
    differ = []
    for rnd in range(a.topk_rounds):
        for f in TOPK_FIELDS:
            got = []
            order = (0, 1) if rnd % 2 == 0 else (1, 0)
            for i in order:
                path = f"/v1/datasets/bench/hard-examples?by={f}&k=100&run=bench" + (f"&after={head}" if i else "")
                t = time.perf_counter()
                got.append((i, bd.get_json(conns[i], path)))
                lat[(i, f)].append((time.perf_counter() - t) * 1e3)
            items = {i: [(x["id"], x["score"]) for x in g["items"]] for i, g in got}
            if items[0] != items[1] and f not in differ:
                differ.append(f)
    d = [bd.get_json(c, "/v1/datasets/bench") for c in conns]
    print(f"\n## 4. top-100 on {d[0]['samples']:,} samples ({d[0]['observations']:,} observations; node C: "
          f"{d[1]['samples']:,}, {d[1]['observations']:,}), filled in {fill_s:.0f} s; medians of "
          f"{a.topk_rounds} rounds alternating the standalone daemon and node C (which only followed the log; "
          f"its queries with after=<head>)")
    print(f"{'by':14s}{'standalone ms':>15s}{'node C ms':>11s}{'C / standalone':>16s}")
    for f in TOPK_FIELDS:
        m0, m1 = statistics.median(lat[(0, f)]), statistics.median(lat[(1, f)])
        print(f"{f:14s}{m0:15.2f}{m1:11.2f}{m1 / m0:16.3f}")
    all0 = [t for (i, f), ts in lat.items() if i == 0 for t in ts]
    all1 = [t for (i, f), ts in lat.items() if i == 1 for t in ts]
    print(f"{'all fields':14s}{statistics.median(all0):15.2f}{statistics.median(all1):11.2f}"
          f"{statistics.median(all1) / statistics.median(all0):16.3f}   p99 {pct(all0, 0.99):.2f} / {pct(all1, 0.99):.2f} ms")
    print("answers: " + ("the same on both" if not differ else f"DIFFER for by={','.join(differ)}"))
    return differ


def samples(port):
    """Samples a daemon holds, over its datasets (one run each here)."""
    return sum(d["samples"] for d in json.loads(request(port, "GET", "/v1/datasets")[2])["datasets"])


def sizes(pg, db, port):
    """Section 5a: the log's bytes per observation, from one cluster's log and a node's count of observations."""
    q = pg.sql(db, "SELECT pg_total_relation_size('focald_log'), pg_relation_size('focald_log'), "
                   "pg_indexes_size('focald_log'), count(*), sum(octet_length(body)), sum(pg_column_size(body)), "
                   "percentile_disc(0.5) WITHIN GROUP (ORDER BY octet_length(body)) FROM focald_log").strip().split("\t")
    total, heap, index, rows, raw, stored, med_body = (int(x) for x in q)
    obs = sum(d["observations"] for d in json.loads(request(port, "GET", "/v1/datasets")[2])["datasets"])
    print(f"\n## 5. the log's size (the one-node cluster's log after section 1): {rows:,} rows, {obs:,} observations "
          f"({obs / rows:.0f} per row)")
    print(f"focald_log, table + TOAST + index: {total / 1e6:,.1f} MB = {total / obs:.1f} bytes per observation "
          f"(index {index / 1e6:.1f} MB, main table {heap / 1e6:.1f} MB)")
    print(f"row bodies: {raw / obs:.1f} bytes per observation as sent, {stored / obs:.1f} as stored "
          f"(median body {med_body:,} bytes)")


def pgbench(pg, src_db, big):
    """Section 5b: focald's append transaction alone, at 1 and 4 clients, on a scratch copy of the log's schema,
    with a body of the log's median size among the batches of 1024 (big) or of 256 (not big)."""
    db = "appendprobe" + ("big" if big else "small")
    uri = pg.new_database(db)
    schema = os.path.join(HERE, "..", "..", "schema", "postgresql", "001_log.sql")
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", uri, "-f", schema], check=True, capture_output=True)
    pg.sql(db, "CREATE TABLE probe_body (body bytea NOT NULL)")
    # one real body, copied from the log: a batch of 1024 samples packs into about 47 KB, one of 256 into 12 KB
    sel = "octet_length(body) > 24000" if big else "octet_length(body) <= 24000"
    med_body = int(pg.sql(src_db, "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY octet_length(body)) "
                                  f"FROM focald_log WHERE {sel}").strip())
    src = subprocess.run(["psql", "-X", "-q", pg.uri(src_db), "-c",
                          f"\\copy (SELECT body FROM focald_log WHERE octet_length(body) = {med_body} LIMIT 1) TO STDOUT"],
                         check=True, capture_output=True).stdout
    subprocess.run(["psql", "-X", "-q", uri, "-c", "\\copy probe_body (body) FROM STDIN"], input=src, check=True,
                   capture_output=True)
    script = ("BEGIN;\n"
              "SELECT pos + 1 AS p FROM focald_log_head FOR UPDATE \\gset\n"
              "INSERT INTO focald_log (pos, kind, dataset, body, node) SELECT :p, 1, 'bench', body, 'pgbench' FROM probe_body;\n"
              "UPDATE focald_log_head SET pos = :p;\n"
              "SELECT pg_notify('focald_log', ':p');\n"
              "COMMIT;\n")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script)
    out = {}
    try:
        for clients in (1, 4):
            r = subprocess.run([os.path.join("/usr/lib/postgresql/15/bin", "pgbench"), "-n", "-h", "127.0.0.1", "-p",
                                str(pg.port), "-U", pg.user, "-f", f.name, "-c", str(clients), "-j", str(min(clients, 2)),
                                "-T", "5", db], check=True, capture_output=True, text=True).stdout
            lat_ms = float(re.search(r"latency average = ([\d.]+) ms", r).group(1))
            tps = float(re.search(r"tps = ([\d.]+)", r).group(1))
            out[clients] = (lat_ms, tps)
    finally:
        os.unlink(f.name)
    print(f"append transaction alone (pgbench, 5 s; one row of {med_body:,} bytes, as focald's writer makes it):")
    for clients, (lat_ms, tps) in out.items():
        print(f"  {clients} client{'s' if clients > 1 else ' '}: {tps:8,.0f} commits/s, latency {lat_ms:.2f} ms")
    return out


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) \S+ \[(\d+)\] LOG:  duration: [\d.]+ ms  "
                      r"(?:statement: (COMMIT)|execute (head_lock|append):)")


def lock_hold(a, pg, db, port, seconds=3):
    """Section 5c: how long focald's writer holds the append lock, from PostgreSQL's statement log
    (log_min_duration_statement = 0 for the run only): from the end of its SELECT ... FOR UPDATE of the head to
    the end of its COMMIT, per append transaction (the log's timestamps are to the millisecond)."""
    import datetime
    logf = os.path.join(pg.dir, "log")
    print(f"append lock as focald's writer holds it (one node, {CLIENTS} clients, {seconds} s, every statement logged):")
    for cname, cargs, _ in CONFIGS:
        off = os.path.getsize(logf)
        pg.sql(db, "ALTER SYSTEM SET log_min_duration_statement = 0")
        pg.sql(db, "SELECT pg_reload_conf()")
        time.sleep(0.5)
        out = finish_loadgen(start_loadgen(a.build, port, "ingest", cargs, seconds, CLIENTS))
        pg.sql(db, "ALTER SYSTEM RESET log_min_duration_statement")
        pg.sql(db, "SELECT pg_reload_conf()")
        time.sleep(0.5)
        with open(logf, errors="replace") as f:
            f.seek(off)
            lines = f.readlines()
        open_tx, holds, rows, first, last = {}, [], [], None, None
        for line in lines:
            m = LOG_LINE.match(line)
            if not m:
                continue
            ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            pid, commit, what = m.group(2), m.group(3), m.group(4)
            if what == "head_lock":
                open_tx[pid] = [ts, 0]
                first = first or ts
            elif what == "append" and pid in open_tx:
                open_tx[pid][1] += 1
            elif commit and pid in open_tx:
                t0, n = open_tx.pop(pid)
                holds.append((ts - t0) * 1e3)
                rows.append(n)
                last = ts
        if not holds:
            print(f"  {cname}: no append transactions in PostgreSQL's log")
            continue
        busy = sum(holds) / ((last - first) * 1e3) if last and last > first else float("nan")
        print(f"  {cname:18s}{len(holds):5d} transactions, {statistics.median(rows):.0f} rows each (median), lock held "
              f"p50 {pct(holds, 0.5):.0f} ms, p90 {pct(holds, 0.9):.0f} ms, {sum(holds) / sum(rows):.1f} ms a row; "
              f"held {busy:.0%} of the time; {out['samples_per_s']:,.0f} samples/s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="each ingest run, after a 1 s warmup")
    ap.add_argument("--lag-seconds", type=int, default=10)
    ap.add_argument("--topk-samples", type=int, default=200000)
    ap.add_argument("--topk-rounds", type=int, default=20)
    a = ap.parse_args()
    print(f"# focald cluster benchmark; machine: {os.cpu_count()} cores (PostgreSQL 15, the daemons and the load "
          f"generators all on it); command: tests/bench/bench_cluster.py --build {a.build} --rounds {a.rounds} "
          f"--seconds {a.seconds} --lag-seconds {a.lag_seconds} --topk-samples {a.topk_samples} "
          f"--topk-rounds {a.topk_rounds}")
    t_all = time.time()
    with PostgreSQL() as pg:
        u1, u3 = pg.new_database("one"), pg.new_database("three")
        wait = ("--read-wait", "30000")
        each = [(), ("--store", u1, "--node-name", "n1", *wait)] + \
               [("--store", u3, "--node-name", "n3" + x, *wait) for x in "abc"]
        with bd.builds([f"{a.build}/focald"] * 5, each=each) as started:
            ports = [p for _, p in started]
            setups = {"standalone": (ports[:1], None), "1 node": (ports[1:2], Log(pg, "one")),
                      "3 nodes": (ports[2:], Log(pg, "three"))}
            ingest(a, pg, setups)
            lag(a, ports[2:], setups["3 nodes"][1])
            topk(a, ports[0], ports[2:], setups["3 nodes"][1])
            sizes(pg, "one", ports[1])
            pgbench(pg, "one", True)
            pgbench(pg, "one", False)
            lock_hold(a, pg, "one", ports[1])
            print("\nRSS: " + ", ".join(f"{name} {bd.rss_mb(p.pid)['VmRSS']:.0f} MB ({samples(port):,} samples)"
                                         for name, (p, port) in
                                         zip(["standalone", "1-node n1", "node A", "node B", "node C"], started)))
    print(f"# total {time.time() - t_all:.0f} s")


if __name__ == "__main__":
    main()
