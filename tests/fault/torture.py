#!/usr/bin/python3
"""focald's fault-injection harness: every fault point of a seeded workload, each checked against a model.

usage: tests/fault/torture.py --build build [--seed S] [--requests N] [--points P | --all] [--kinds K,...] [-v]

The workload is a deterministic, seeded sequence of requests from one client: batches (with meta, with and
without batch_id, duplicates, a class-count conflict, many steps in one request as segments), reviews, meta
puts, queue builds and removals, deletes and re-creates of the same few dataset names, exports and queries.

The model is the same workload run once without faults: its answers, and the whole API-visible state it
ends with (datasets, runs, every sample's history fields, recent observations and series, statuses, audit
trails, queues, the relabel feed), with timestamps left out. The daemon keeps series of 2 points
(--series-points 2): the workload's samples are observed up to 3 times in a run, which fills their series and
doubles the stride of some. That run is made with the harness's library preloaded
(tests/fault/faultvfs.c), which records how many disk reads, writes, syncs, SQLite allocations and C library
allocations (malloc and its kin, SQLite's among them) each step of focald's writer made: loading, each group
commit, each snapshot step, the final snapshot and checkpoint.
Each of those events is a fault point, and each can be faulted in several ways:

  write   fails with SQLITE_FULL (a full disk, for `span` writes, then space returns) or SQLITE_IOERR_WRITE
  sync    fails with SQLITE_IOERR_FSYNC (and SIGKILL follows at the 1st or 3rd write or sync after it,
          before or while focald writes over what the failed commit left in the WAL); or SIGKILL just
          before or just after it
  write   SIGKILL just before it (a commit torn part-way)
  read    fails with SQLITE_IOERR_READ
  alloc   SQLite's allocation fails (SQLITE_NOMEM)
  malloc  the C library's allocation fails (NULL): focald's own, jansson's, SQLite's

For each point the workload is run again with that one fault, as a client would: an answer of 500, 503 or
507 where the model answered otherwise is retried until it succeeds, and when a connection dies with the
daemon, focald is restarted (without the fault) on the same database and the workload goes on. A change
in flight when the process was killed may or may not have been committed (a client cannot tell either,
and retrying a batch without batch_id would count it twice): it is not sent again, and the run must then
match one of two models, the whole workload or the workload without that request. Then:

  - every answer equals the model's: a request that failed must have changed nothing;
  - the live state equals the model's;
  - the faulted process is stopped (SIGTERM, which must exit 0, or SIGKILL, alternately), focald is started
    again on the database, and the state equals the model's again; a start that is refused is a failure.

--all runs every fault point (`make torture`); otherwise --points of them are chosen with the seed, spread
over every kind and step (`make test` runs a bounded subset). The last line is "ok N" (N fault points
checked) or "failed K".
"""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# ---------------------------------------------------------------------------- the daemon


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Focald:
    """One focald process on db, optionally with the harness's library preloaded and a fault armed."""

    def __init__(self, h, db, fault=None, trace=None, hold=None, args=()):
        self.h = h
        self.db = db
        self.port = free_port()
        self.log = db + ".log"
        self.trace = trace
        env = dict(os.environ)
        env["LD_PRELOAD"] = h.shim
        env["ASAN_OPTIONS"] = "verify_asan_link_order=0:" + env.get("ASAN_OPTIONS", "")
        for k in ("FOCALD_FAULT", "FOCALD_FAULT_TRACE", "FOCALD_FAULT_HOLD"):
            env.pop(k, None)
        if fault:
            env["FOCALD_FAULT"] = fault
        if trace:
            env["FOCALD_FAULT_TRACE"] = trace
        if hold:
            env["FOCALD_FAULT_HOLD"] = hold
        self.args = ["--db", db, "--snapshot-interval", "0", "--durability", "full", "--workers", "1",
                     "--http-threads", "2", "--log-level", "warn", "--series-points", "2"] + list(args)
        self.env = env
        self.spawn()

    def spawn(self):
        self.log_from = os.path.getsize(self.log) if os.path.exists(self.log) else 0
        cmd = [self.h.focald, "--listen", "127.0.0.1:%d" % self.port] + self.args
        with open(self.log, "ab") as logf:
            self.p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=self.env)
        self.c = None

    def lost_its_port(self):
        """Whether the process exited because another took its port between free_port and its listen (another
        test suite running beside this one)."""
        with open(self.log, "rb") as f:
            f.seek(self.log_from)
            return b'"cannot listen"' in f.read() and self.p.poll() == 1

    def wait_ready(self, timeout=15.0):
        """True once /readyz answers 200; False if the process exits first (but for its port: then it is started
        again on another)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                if not self.lost_its_port():
                    return False
                self.port = free_port()
                self.spawn()
                continue
            try:
                st, _, _ = self.request("GET", "/readyz", timeout=1.0)
                if st == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("focald did not become ready in %.0f s" % timeout)

    def request(self, method, path, body=None, headers=None, timeout=20.0):
        """(status, content type, body bytes); raises OSError (or http.client errors) when the connection fails."""
        if self.c is None:
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            self.c.request(method, path, body=body, headers=headers or {})
            r = self.c.getresponse()
            data = r.read()
            return r.status, r.getheader("Content-Type") or "", data
        except (OSError, http.client.HTTPException) as e:
            self.c.close()
            self.c = None
            raise ConnectionError(str(e)) from e

    def alive(self):
        return self.p.poll() is None

    def died(self, within=1.0):
        """Whether the process has exited, or does within the given seconds (a kill takes a moment to show)."""
        try:
            self.p.wait(timeout=within)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, how):
        """Ends the process: 'term' (returns its exit status) or 'kill'."""
        if self.c:
            self.c.close()
            self.c = None
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM if how == "term" else signal.SIGKILL)
        try:
            return self.p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return "hung"

    def log_tail(self, n=15):
        try:
            with open(self.log, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


# ---------------------------------------------------------------------------- the workload

STATUSES = ["open", "queued", "in_review", "relabelled", "confirmed", "dismissed"]
FIELDS = ["seen", "last_loss", "mean_loss", "max_loss", "ema_loss", "confidence", "variability", "correctness",
          "forgetting", "aum", "forgetting_events", "el2n", "label_issue_score", "grand",
          "early_label_issue_score"]


def make_workload(seed, n):
    """A list of (method, path, body) requests from one client, deterministic in seed. The generator keeps a
    rough account of what its earlier requests created (datasets, samples, queues), so that most reviews,
    meta puts, queue removals and deletions find what they name, and some do not."""
    rng = random.Random(seed)
    seg_rng = random.Random(seed * 7919 + 1)  # segments: drawn apart, so the rest of the workload stays the same
    names = ["d0", "d1", "d2"]
    ids = ["s%d" % i for i in range(16)] + ["x/%d" % i for i in range(4)] + [str(i) for i in range(100, 104)]
    have = {d: set() for d in names}    # samples each dataset probably holds
    queues = {d: set() for d in names}  # queues it probably has
    out = []
    step = 0
    batch_ids = []

    def known_sample(d):
        return rng.choice(sorted(have[d])) if have[d] and rng.random() < 0.85 else rng.choice(ids)

    for i in range(n):
        d = rng.choice(names)
        r = rng.random()
        if r < 0.42 or not have[d]:
            run = rng.choice(["r0", "r0", "r1"])
            c = 3 if rng.random() > 0.03 else 4  # now and then a class-count conflict
            chosen = rng.sample(ids, rng.randint(1, 6))
            body = {"run": run, "ids": chosen, "step": step, "epoch": step // 7,
                    "logits": [[round(rng.gauss(0, 2), 3) for _ in range(c)] for _ in chosen],
                    "targets": [rng.randrange(c) for _ in chosen]}
            step += rng.randint(1, 3)
            if seg_rng.random() < 0.35:
                # many steps in one request: more segments, whose samples may repeat the first one's
                segs = [{"n": len(chosen), "step": body.pop("step")}]
                for _ in range(seg_rng.randint(1, 2)):
                    more = seg_rng.sample(ids, seg_rng.randint(1, 4))
                    body["ids"] = body["ids"] + more
                    body["logits"] += [[round(seg_rng.gauss(0, 2), 3) for _ in range(c)] for _ in more]
                    body["targets"] += [seg_rng.randrange(c) for _ in more]
                    segs.append({"n": len(more), "step": step})
                    step += 1
                    have[d].update(more)
                body["segments"] = segs
            if rng.random() < 0.6:
                if batch_ids and rng.random() < 0.15:
                    body["batch_id"] = rng.choice(batch_ids)  # a duplicate (or a new id for this run)
                else:
                    body["batch_id"] = "b%d" % i
                    batch_ids.append(body["batch_id"])
            if rng.random() < 0.3:
                body["meta"] = {sid: {"uri": "/data/%s.png" % sid.replace("/", "_"), "patient_id": "p%d" % rng.randrange(4),
                                      "study_uid": "1.2.%d" % rng.randrange(9)}
                                for sid in chosen if rng.random() < 0.7}
            if rng.random() < 0.2:
                body["loss"] = {"type": "softmax_focal", "gamma": 2}
            have[d].update(chosen)
            out.append(("POST", "/v1/datasets/%s/batches" % d, body))
        elif r < 0.58:
            st = rng.choice(STATUSES)
            body = {"status": st, "reviewer": "rev%d" % rng.randrange(3)}
            if st == "relabelled":
                body["label"] = rng.randrange(3) if rng.random() < 0.8 else "cat"
            if rng.random() < 0.3:
                body["note"] = "note %d" % i
            out.append(("POST", "/v1/datasets/%s/samples/%s/review" % (d, known_sample(d).replace("/", "%2F")), body))
        elif r < 0.65:
            body = {"uri": "s3://bucket/%d.png" % i, "tags": ["t%d" % rng.randrange(3)]}
            out.append(("PUT", "/v1/datasets/%s/samples/%s/meta" % (d, known_sample(d).replace("/", "%2F")), body))
        elif r < 0.73:
            body = {"name": rng.choice(["q0", "q1"]), "size": rng.randint(2, 6), "by": rng.choice(FIELDS)}
            if rng.random() < 0.3:
                body["dedupe_by"] = "patient_id"
            if rng.random() < 0.2:
                body["order"] = rng.choice(["asc", "desc"])
            queues[d].add(body["name"])
            out.append(("POST", "/v1/datasets/%s/queues" % d, body))
        elif r < 0.79:
            q = rng.choice(sorted(queues[d])) if queues[d] and rng.random() < 0.85 else rng.choice(["q0", "q1"])
            queues[d].discard(q)
            out.append(("DELETE", "/v1/datasets/%s/queues/%s" % (d, q), None))
        elif r < 0.84:
            have[d] = set()
            queues[d] = set()
            out.append(("DELETE", "/v1/datasets/%s" % d, None))
        elif r < 0.92:
            fmt = rng.choice(["csv", "jsonl", "label-studio", "fiftyone", "ohif"])
            q = "&queue=%s" % rng.choice(["q0", "q1"]) if rng.random() < 0.3 else "&by=%s" % rng.choice(FIELDS)
            out.append(("GET", "/v1/datasets/%s/export?format=%s%s" % (d, fmt, q), None))
        else:
            out.append(("GET", "/v1/datasets/%s/hard-examples?by=%s&order=%s&k=5&status=%s" % (
                d, rng.choice(FIELDS), rng.choice(["asc", "desc"]), ",".join(STATUSES)), None))
    return out


# ---------------------------------------------------------------------------- what is compared

DROP = {"at", "created_at", "request_id"}


def strip(v):
    """v without the fields that record when something happened (they differ from the model's run)."""
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in DROP}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


def answer(status, ctype, body):
    """An answer as compared: status and the JSON (timestamps left out) or the text."""
    if "json" in ctype and "ndjson" not in ctype:
        try:
            return status, strip(json.loads(body))
        except ValueError:
            return status, body.decode("utf-8", "replace")
    if "ndjson" in ctype:
        return status, [strip(json.loads(line)) for line in body.splitlines() if line.strip()]
    return status, body.decode("utf-8", "replace")


def get_json(f, path):
    # a read whose handler met the fault (the request step) is refused 500 and changes nothing, and one whose
    # answer libmicrohttpd could not allocate (the respond step) gets none: read again
    try:
        st, _, body = f.request("GET", path)
    except ConnectionError:
        if not (f.alive() and f.trace and fired_in(f.trace, "respond")):
            raise
        st = 500
    if st == 500:
        st, _, body = f.request("GET", path)
    if st != 200:
        raise AssertionError("GET %s answered %d: %s" % (path, st, body[:300]))
    return json.loads(body)


def dump(f):
    """The whole API-visible state, timestamps left out."""
    out = {}
    for d in sorted(x["name"] for x in get_json(f, "/v1/datasets")["datasets"]):
        ds = {"detail": strip(get_json(f, "/v1/datasets/%s" % d))}
        items = get_json(f, "/v1/datasets/%s/hard-examples?k=10000&status=%s" % (d, ",".join(STATUSES)))["items"]
        ds["ranking"] = [x["id"] for x in items]
        samples = {}
        for x in items:
            sid = x["id"].replace("%", "%25").replace("/", "%2F")
            samples[x["id"]] = {"sample": strip(get_json(f, "/v1/datasets/%s/samples/%s" % (d, sid))),
                                "reviews": strip(get_json(f, "/v1/datasets/%s/samples/%s/reviews" % (d, sid)))}
        ds["samples"] = samples
        queues = get_json(f, "/v1/datasets/%s/queues" % d)["queues"]
        ds["queues"] = {q["name"]: strip(get_json(f, "/v1/datasets/%s/queues/%s?limit=10000" % (d, q["name"])))
                        for q in queues}
        ds["relabels"] = strip(get_json(f, "/v1/datasets/%s/relabels?limit=10000" % d))
        out[d] = ds
    return out


def first_difference(a, b, path=""):
    """Where a and b first differ, as a path and the two values; None when equal."""
    if type(a) is not type(b):
        return "%s: %r != %r" % (path or "/", a, b)
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return "%s/%s: only in the %s" % (path, k, "model" if k in a else "run")
            d = first_difference(a[k], b[k], "%s/%s" % (path, k))
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return "%s: %d items in the model, %d here" % (path, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, "%s[%d]" % (path, i))
            if d:
                return d
        return None
    return None if a == b else "%s: model %r, here %r" % (path or "/", a, b)


# ---------------------------------------------------------------------------- runs


class Harness:
    def __init__(self, build, verbose):
        self.build = build
        self.focald = os.path.join(ROOT, build, "focald")
        self.shim = os.path.join(ROOT, build, "tests", "libfaultvfs.so")
        self.verbose = verbose
        base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
        self.tmp = tempfile.mkdtemp(prefix="focald-torture-", dir=base)
        self.serial = 0

    def fresh_db(self):
        self.serial += 1
        d = os.path.join(self.tmp, "run%05d" % self.serial)
        os.makedirs(d)
        return os.path.join(d, "f.db")

    def send(self, f, req):
        method, path, body = req
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if body is not None else {}
        return f.request(method, path, data, headers)


def model_run(h, workload):
    """The workload without faults: its answers, its final state and the trace of its steps."""
    db = h.fresh_db()
    trace = db + ".trace"
    f = Focald(h, db, trace=trace)
    if not f.wait_ready():
        raise RuntimeError("focald did not start: %s" % f.log_tail())
    answers = [answer(*h.send(f, req)) for req in workload]
    state = dump(f)
    status = f.stop("term")
    if status != 0:
        raise RuntimeError("the model's focald exited %r: %s" % (status, f.log_tail()))
    # a restart of the model must hold the same state: the harness's own premise
    g = Focald(h, db)
    if not g.wait_ready():
        raise RuntimeError("the model's focald did not restart: %s" % g.log_tail())
    again = dump(g)
    g.stop("term")
    diff = first_difference(state, again)
    if diff:
        raise RuntimeError("the model's state changed across a clean restart: %s" % diff)
    return answers, state, read_trace(trace)


def read_trace(path):
    """[(step name, {kind: count before it})] in order: each event of a kind belongs to the step in force."""
    steps = []
    with open(path) as f:
        for line in f:
            w = line.split()
            if w and w[0] == "step":
                steps.append((w[1], {"read": int(w[2]), "write": int(w[3]), "sync": int(w[4]), "alloc": int(w[5]),
                                     "malloc": int(w[6])}))
    return steps


def events_by_step(steps, kind):
    """{step name: [event numbers]} for kind: event n belongs to the last step begun before it (the
    trace's last mark, "end", is written at exit)."""
    out = {}
    # HTTP and pool threads name request, answer and reply between the writer's steps. Two threads can be in
    # steps at once (the writer ends a group while its answers go out): an event then goes with the step
    # begun last, which may be the other thread's. The names only spread the points; a fault does not
    # depend on them.
    bounds = [(s, c[kind]) for s, c in steps if s != "wake"]
    for (name, start), (_, end) in zip(bounds, bounds[1:]):
        if end > start:
            out.setdefault(name, []).extend(range(start + 1, end + 1))
    return out


def fault_points(steps, kinds, everything, budget, rng):
    """The fault specs to run: every one with --all, else `budget` of them spread over kind, action and step."""
    actions = []
    if "write" in kinds:
        actions += [("write", "full"), ("write", "ioerr"), ("write", "kill-before")]
    if "sync" in kinds:
        actions += [("sync", "ioerr"), ("sync", "kill-before"), ("sync", "kill-after")]
        # a failed commit, then a crash before, while or after focald writes over what it left in the WAL
        actions += [("sync", "ioerr-kill1"), ("sync", "ioerr-kill3")]
    if "read" in kinds:
        actions += [("read", "ioerr")]
    if "alloc" in kinds:
        actions += [("alloc", "nomem")]
    if "malloc" in kinds:
        actions += [("malloc", "nomem")]
    cells = []  # (kind, action, step, [event numbers])
    for kind, action in actions:
        by_step = events_by_step(steps, kind)
        for step, numbers in sorted(by_step.items()):
            cells.append((kind, action, step, numbers))
    specs = []
    if everything:
        for kind, action, step, numbers in cells:
            stride = 97 if kind in ("alloc", "malloc") else 1  # allocations are thousands per step: every 97th
            for n in numbers[::stride]:
                specs.append((kind, action, step, n))
    else:
        # round-robin over the cells, a random event of each, until the budget is spent
        pools = [(k, a, s, rng.sample(nums, len(nums))) for k, a, s, nums in cells]
        while len(specs) < budget and any(p[3] for p in pools):
            for k, a, s, nums in pools:
                if nums and len(specs) < budget:
                    specs.append((k, a, s, nums.pop()))
    out = []
    for i, (kind, action, step, n) in enumerate(specs):
        span = {"full": rng.choice([1, 4, 40])}.get(action, 1)
        then = ""
        if action.startswith("ioerr-kill"):
            then = ",kill_after=%s" % action[len("ioerr-kill"):]
            action = "ioerr"
        spec = "kind=%s,at=%d,do=%s" % (kind, n, action) + (",span=%d" % span if span > 1 else "") + then
        out.append({"spec": spec, "step": step, "end": "term" if i % 2 == 0 else "kill"})
    return out


class Failure(Exception):
    pass


def fired_in(trace, step=None):
    """Whether the armed fault fired in the process that wrote trace (with step: on a thread in that step)."""
    try:
        with open(trace) as t:
            return any(line.startswith("fired") and (step is None or line.split()[3:4] == [step]) for line in t)
    except OSError:
        return False


class Models:
    """The model runs: the whole workload, and (made when first needed, then kept) the workload without
    request i, for a run in which request i was in flight when focald was killed: it may or may not have
    been committed, and only its retry could tell, which for a batch without batch_id would count it twice."""

    def __init__(self, h, workload, answers, state):
        self.h = h
        self.workload = workload
        self.runs = {None: (answers, state)}

    def without(self, i):
        if i not in self.runs:
            wl = self.workload[:i] + self.workload[i + 1:]
            answers, state, _ = model_run(self.h, wl)
            self.runs[i] = (answers[:i] + [None] + answers[i:], state)
        return self.runs[i]


def fault_run(h, workload, models, point):
    """Runs the workload with one fault; raises Failure with what went wrong."""
    db = h.fresh_db()
    trace = db + ".trace"
    f = Focald(h, db, fault=point["spec"], trace=trace)
    notes = []
    candidates = [None]  # which models the run can still be: the whole workload, or it without the request killed in flight

    def restart(why):
        nonlocal f
        status = f.stop("kill") if f.alive() else f.p.wait()
        notes.append("%s (exit %r)" % (why, status))
        f = Focald(h, db)
        if not f.wait_ready():
            raise Failure("focald refused to start after %s: %s" % (why, f.log_tail()))

    if not f.wait_ready():
        restart("it did not start with the fault")
    for i, req in enumerate(workload):
        for attempt in range(400):
            try:
                got = answer(*h.send(f, req))
            except ConnectionError as e:
                if not f.died() and fired_in(trace, "respond"):
                    # libmicrohttpd could not allocate the answer (README, Durability): the connection closes
                    # without one, the change committed or not, as after a crash; a read is read again
                    if req[0] == "GET":
                        continue
                    candidates = [None, i]
                    got = None
                    break
                if not f.died():
                    raise Failure("request %d (%s %s): the connection failed and focald lives on: %s" % (
                        i, req[0], req[1], e))
                restart("request %d was in flight when focald died" % i)
                if req[0] != "GET":
                    candidates = [None, i]  # committed or not: not sent again
                got = None
                break
            wants = [models.runs[c][0][i] if c in models.runs else models.without(c)[0][i] for c in candidates]
            if got[0] in (500, 503, 507) and all(w is None or w[0] != got[0] for w in wants):
                time.sleep(0.01 if attempt < 50 else 0.05)
                continue  # the fault: the client retries; the first attempt must have changed nothing
            break
        else:
            raise Failure("request %d (%s %s) never succeeded: %s" % (i, req[0], req[1], json.dumps(got)[:300]))
        if got is None:
            continue
        keep = [c for c in candidates if (models.runs[c] if c in models.runs else models.without(c))[0][i] == got]
        if not keep:
            want = models.runs[None][0][i]
            raise Failure("request %d (%s %s) answered %s; the model answered %s; %s" % (
                i, req[0], req[1], json.dumps(got)[:600], json.dumps(want)[:600], first_difference(want, got)))
        candidates = keep

    def check_state(what, state):
        diffs = [first_difference((models.runs[c] if c in models.runs else models.without(c))[1], state)
                 for c in candidates]
        if all(diffs):
            raise Failure("%s differs from the model: %s" % (what, diffs[0]))

    for _ in range(2):
        try:
            live = dump(f)
            break
        except ConnectionError:
            # a kill that fired in a step after the last request (a snapshot step): restart and look again
            if not f.died():
                raise
            restart("focald died after the last request")
    check_state("the live state", live)
    status = f.stop(point["end"])
    killed_by_fault = status == -signal.SIGKILL and ("do=kill" in point["spec"] or "kill_after" in point["spec"]) \
        and fired_in(trace)
    if point["end"] == "term" and status != 0 and not killed_by_fault:
        raise Failure("SIGTERM: focald exited %r: %s" % (status, f.log_tail()))
    g = Focald(h, db)
    if not g.wait_ready():
        raise Failure("focald refused to start after %s: %s" % (
            "SIGTERM" if point["end"] == "term" else "SIGKILL", g.log_tail()))
    again = dump(g)
    status = g.stop("term")
    check_state("after a restart the state", again)
    if status != 0:
        raise Failure("the restarted focald exited %r on SIGTERM: %s" % (status, g.log_tail()))
    fired = ""
    try:
        with open(trace) as t:
            fired = " ".join(line.strip() for line in t if line.startswith("fired"))[:120]
    except OSError:
        pass
    if len(candidates) == 1 and candidates[0] is not None:
        notes.append("the request killed in flight had not been committed")
    return notes, fired


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.environ.get("BUILD", "build"))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FOCALD_TORTURE_SEED", "11")))
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--points", type=int, default=120)
    ap.add_argument("--all", action="store_true")
    ap.add_argument("--kinds", default="write,sync,read,alloc,malloc")
    ap.add_argument("--only", help="run one fault spec (as printed in a failure)")
    ap.add_argument("-v", "--verbose", action="store_true")
    a = ap.parse_args()
    h = Harness(a.build, a.verbose)
    rng = random.Random(a.seed)
    workload = make_workload(a.seed, a.requests)
    t0 = time.monotonic()
    try:
        answers, state, steps = model_run(h, workload)
        models = Models(h, workload, answers, state)
        if a.only:
            points = [{"spec": a.only, "step": "?", "end": os.environ.get("FOCALD_TORTURE_END", "term")}]
        else:
            points = fault_points(steps, set(a.kinds.split(",")), a.all, a.points, rng)
        print("seed %d: %d requests; the model holds %d datasets, %d samples; %d fault points" % (
            a.seed, len(workload), len(state), sum(len(d["samples"]) for d in state.values()), len(points)), flush=True)
        ok = failed = 0
        by_cell = {}
        for p in points:
            t1 = time.monotonic()
            try:
                notes, fired = fault_run(h, workload, models, p)
                ok += 1
                action = p["spec"].split("do=")[1].split(",")[0]
                if "kill_after=" in p["spec"]:
                    action += "+kill" + p["spec"].split("kill_after=")[1].split(",")[0]
                key = (p["spec"].split(",")[0][5:], action, p["step"])
                by_cell[key] = by_cell.get(key, 0) + 1
                if a.verbose:
                    print("ok   %-45s %-10s %-4s %5.2fs %s %s" % (p["spec"], p["step"], p["end"], time.monotonic() - t1,
                                                                fired, "; ".join(notes)), flush=True)
            except (Failure, AssertionError, ConnectionError, RuntimeError) as e:
                failed += 1
                print("FAIL %s (step %s, then %s): %s" % (p["spec"], p["step"], p["end"], e), flush=True)
                print("     reproduce: %s --build %s --seed %d --requests %d --only '%s'  (FOCALD_TORTURE_END=%s)" % (
                    sys.argv[0], a.build, a.seed, a.requests, p["spec"], p["end"]), flush=True)
        cells = sorted(by_cell.items())
        print("covered: " + ", ".join("%s/%s/%s %d" % (k[0], k[1], k[2], n) for k, n in cells))
        print("%d fault points in %.0f s" % (len(points), time.monotonic() - t0))
    finally:
        shutil.rmtree(h.tmp, ignore_errors=True)
    print("ok %d" % ok)
    if failed:
        print("failed %d" % failed)
        sys.exit(1)


if __name__ == "__main__":
    main()
