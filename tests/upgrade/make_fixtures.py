#!/usr/bin/env python3
"""Writes the upgrade suite's fixture for one schema version: drives a focald built at that version through HTTP
with a deterministic workload, stops it, and records its database and its answers to the read API.

Each fixture is a directory under tests/upgrade/fixtures/:
  v<N>/       stopped with SIGTERM (the WAL checkpointed): db.sql, the database as `sqlite3 .dump` writes it with
              `PRAGMA user_version=N;` added (a dump does not carry it), and answers.json
  v<N>-kill/  killed with SIGKILL after its last acknowledged batch (the WAL not checkpointed, the snapshot
              behind the batch log): db.gz and db-wal.gz, the two files as they were, and answers.json
answers.json maps each GET path asked to {"status", "body"}, and holds "version" and "commit".

Regenerating them: tests/upgrade/regenerate [VERSION...] does the following for each version, with the last
commit of each schema version (it lists them):
  git worktree add --detach /tmp/old-vN <commit>
  make -C /tmp/old-vN BUILD=/tmp/old-vN-build /tmp/old-vN-build/focald
  tests/upgrade/make_fixtures.py --focald /tmp/old-vN-build/focald --version N --commit <commit> \
      --out tests/upgrade/fixtures/vN [--kill]
The workload is the same for every version, limited to what that version has (the review loop, meta and
queues from schema 2); ids, logits, labels, steps and batch ids come from a fixed seed, so only times (and, in
a killed one, how far its snapshot had got) differ between two runs.
"""
import argparse
import gzip
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "integration"))
from harness import free_port, poll_until, q  # noqa: E402

STATES = "open,queued,in_review,relabelled,confirmed,dismissed"


class Focald:
    """One focald process (the binary given) on a free loopback port with its database at db; what it logs is
    appended to db.log. The upgrade suite drives today's focald with it, this file the old ones."""

    def __init__(self, binary, db, args=(), env=None):
        self.db = db
        self.port = free_port()
        self.logpath = db + ".log"
        self.log_from = os.path.getsize(self.logpath) if os.path.exists(self.logpath) else 0
        e = dict(os.environ)
        e.update(env or {})
        with open(self.logpath, "ab") as log:
            self.proc = subprocess.Popen([binary, "--listen", f"127.0.0.1:{self.port}", "--db", db, *args],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=e)

    def ready(self, timeout):
        """True once GET /readyz answers 200; False when the process exits first or timeout seconds pass."""
        return poll_until(self.proc, lambda: self.request("GET", "/readyz")[0] == 200, timeout, 0.05)

    def request(self, method, path, body=None):
        """(status, the JSON body, its text when it is not JSON, or None when empty)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            data = None if body is None else json.dumps(body).encode()
            c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            r = c.getresponse()
            raw = r.read()
            try:
                return r.status, json.loads(raw) if raw else None
            except ValueError:
                return r.status, raw.decode("utf-8", "replace")
        finally:
            c.close()

    def ok(self, method, path, body=None):
        status, out = self.request(method, path, body)
        if status // 100 != 2:
            raise RuntimeError(f"{method} {path}: {status} {out}")
        return out

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Sends sig (unless it has exited) and waits; returns the exit status, or None when it had to be killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def log(self):
        """What this process logged (the file holds the earlier processes' lines too)."""
        with open(self.logpath, errors="replace") as f:
            f.seek(self.log_from)
            return f.read()


# ------------------------------------------------------------------------------------------- the workload

PETS = ["cat-1", "cat-2", "cat-3", "dog-1", "dog-2", "dog-3", "bird-1", "bird-2", 7, 42, "ünï-1", "a/b"]
PETS_LABEL = {s: i % 3 for i, s in enumerate(PETS)}
PETS_WRONG = {"dog-2", 42}  # labelled one class, looking like another: never learned
SCANS = [f"scan-{i:02d}" for i in range(10)]


def pets_logits(rng, sid, epoch):
    label = PETS_LABEL[sid]
    looks = (label + 1) % 3 if sid in PETS_WRONG else label
    # learned over the epochs: the true class's logit grows, with noise that makes some forget
    row = [rng.uniform(-1.0, 1.0) for _ in range(3)]
    row[looks] += 0.4 * epoch + rng.uniform(-1.5, 1.0)
    return [round(x, 4) for x in row]


def pets_batches(rng, run, epoch, steps_per_epoch=2):
    order = list(PETS)
    rng.shuffle(order)
    per = len(order) // steps_per_epoch
    for b in range(steps_per_epoch):
        ids = order[b * per:(b + 1) * per]
        yield {"run": run, "batch_id": f"{run}-e{epoch}-b{b}", "epoch": epoch, "step": epoch * steps_per_epoch + b,
               "loss": {"type": "softmax_focal"}, "ids": ids,
               "logits": [pets_logits(rng, s, epoch) for s in ids], "targets": [PETS_LABEL[s] for s in ids]}


def scans_batch(rng, epoch, with_meta):
    ids = list(SCANS)
    logits, targets = [], []
    for i, s in enumerate(ids):
        t = i % 4
        row = [round(rng.uniform(-2.0, 0.5), 4) for _ in range(4)]
        row[t] = round(row[t] + 0.5 * epoch + rng.uniform(0, 1.5), 4)
        logits.append(row)
        targets.append(t)
    body = {"step": 100 + epoch, "ids": ids, "logits": logits, "targets": targets}  # no run, no batch_id
    if with_meta:
        body["meta"] = {s: {"uri": f"/data/scans/{s}.png", "study_uid": f"1.2.3.{i}", "patient_id": f"p{i // 2}"}
                        for i, s in enumerate(ids)}
    return body


WORKLOAD_SEED = 20261206


def first_pets_batch():
    """The workload's first batch to pets/r1 (r1-e0-b0), as it sent it: what a retry of it resends."""
    rng = random.Random(WORKLOAD_SEED)
    next(pets_batches(rng, "r1", 0))  # the batch to "gone" comes first
    return next(pets_batches(rng, "r1", 0))


def workload(f, version, kill):
    rng = random.Random(WORKLOAD_SEED)
    # a dataset deleted early: its ids are the ones schema 3 stops from coming back
    f.ok("POST", "/v1/datasets/gone/batches", next(pets_batches(rng, "r1", 0)))
    f.ok("DELETE", "/v1/datasets/gone")
    epochs = 6
    for e in range(epochs):
        for run in ("r1", "r2"):
            for body in pets_batches(rng, run, e):
                f.ok("POST", "/v1/datasets/pets/batches", body)
        f.ok("POST", "/v1/datasets/scans/batches", scans_batch(rng, e, with_meta=(e == 0)))
        if kill and e == 2:
            time.sleep(2.5)  # --snapshot-interval 1: a snapshot holds the first epochs, the log the rest
    # a retried batch: stored once
    out = f.ok("POST", "/v1/datasets/pets/batches", first_pets_batch())
    assert out["duplicate"] is True, out
    f.ok("POST", "/v1/datasets/later/batches", next(pets_batches(rng, "only", 0)))
    if version >= 2:
        p = "/v1/datasets/pets/samples/"
        f.ok("POST", p + q("dog-2") + "/review", {"status": "relabelled", "label": 0, "reviewer": "ann", "note": "a cat"})
        f.ok("POST", p + q(42) + "/review", {"status": "in_review", "reviewer": "bob"})
        f.ok("POST", p + q(42) + "/review", {"status": "relabelled", "label": 1, "reviewer": "bob"})
        f.ok("POST", p + q(42) + "/review", {"status": "relabelled", "label": "dog", "reviewer": "ann"})
        f.ok("POST", p + q("cat-1") + "/review", {"status": "confirmed", "reviewer": "ann"})
        f.ok("POST", p + q("bird-1") + "/review", {"status": "relabelled", "label": 1, "reviewer": "bob"})
        f.ok("POST", p + q("bird-1") + "/review", {"status": "open", "reviewer": "bob", "note": "withdrawn"})
        f.ok("POST", p + q("ünï-1") + "/review", {"status": "dismissed", "note": "broken image"})
        f.ok("PUT", p + q("cat-3") + "/meta", {"meta": {"uri": "/data/cat-3.jpg", "tags": ["blurry"]}})
        f.ok("POST", "/v1/datasets/pets/queues", {"name": "q1", "size": 4, "by": "mean_loss"})
        f.ok("POST", "/v1/datasets/scans/queues", {"name": "per-label", "size": 6, "max_per_label": 2,
                                                    "dedupe_by": "patient_id"})
        # training goes on after the decisions: dog-2 still sent with its old label (stale_labels)
        for run in ("r1", "r2"):
            for body in pets_batches(rng, run, epochs):
                f.ok("POST", "/v1/datasets/pets/batches", body)


def reviewed(version):
    return ["dog-2", "42", "cat-1", "bird-1", "ünï-1", "cat-3"] if version >= 2 else []


def hard_fields(version):
    by = ["seen", "last_loss", "mean_loss", "max_loss", "ema_loss", "confidence", "variability", "correctness",
          "forgetting", "aum"]
    if version >= 4:
        by += ["el2n", "label_issue_score", "forgetting_events"]
    if version >= 5:
        by += ["grand"]
    return by


def read_paths(f, version):
    """The GET paths whose answers are recorded: each dataset, rankings, every sample, the review loop."""
    paths = ["/v1/datasets"]
    names = [d["name"] for d in f.ok("GET", "/v1/datasets")["datasets"]]
    for ds in names:
        paths.append(f"/v1/datasets/{ds}")
        for by in hard_fields(version) if ds != "later" else ["seen"]:
            # one run's own ranking for two fields: the samples' answers hold every run's fields already
            for run in ("*", "r1") if ds == "pets" and by in ("seen", "mean_loss") else ("*",):
                paths.append(f"/v1/datasets/{ds}/hard-examples?by={by}&k=1000&run={q(run)}&status={q(STATES)}")
        # a second page through a cursor is not recorded: cursors are opaque and may change shape
        items = f.ok("GET", f"/v1/datasets/{ds}/hard-examples?by=seen&k=1000&status={q(STATES)}")["items"]
        for it in sorted(items, key=lambda i: i["id"]):
            paths.append(f"/v1/datasets/{ds}/samples/{q(it['id'])}")
        if version >= 2:
            paths.append(f"/v1/datasets/{ds}/relabels")
            paths.append(f"/v1/datasets/{ds}/queues")
            for qu in f.ok("GET", f"/v1/datasets/{ds}/queues")["queues"]:
                paths.append(f"/v1/datasets/{ds}/queues/{qu['name']}")
    for sid in reviewed(version):
        paths.append(f"/v1/datasets/pets/samples/{q(sid)}/reviews")
    return paths


def reduce_answer(path, body):
    """What is kept of an answer: all of it, except that a ranking other than by=seen keeps each item's id, rank
    and score (by=seen and the sample answers hold every history field already). Keeps fixtures small."""
    if "/hard-examples?" in path and "by=seen&" not in path and isinstance(body, dict) and "items" in body:
        body = dict(body, items=[{k: it[k] for k in ("id", "rank", "score")} for it in body["items"]])
    return body


def record(f, version):
    out = {}
    for p in read_paths(f, version):
        status, body = f.request("GET", p)
        out[p] = {"status": status, "body": reduce_answer(p, body)}
    return out


def write_answers(dest, head, answers):
    """answers.json: one answer a line, so that a regenerated fixture diffs readably."""
    with open(dest, "w") as o:
        o.write("{\n")
        for k, v in head.items():
            o.write(f"{json.dumps(k)}: {json.dumps(v)},\n")
        o.write('"answers": {\n')
        for i, p in enumerate(sorted(answers)):
            sep = "," if i + 1 < len(answers) else ""
            o.write(f"{json.dumps(p)}: {json.dumps(answers[p], ensure_ascii=False, sort_keys=True)}{sep}\n")
        o.write("}}\n")


def dump(db, version, dest):
    text = subprocess.run(["sqlite3", db, ".dump"], check=True, capture_output=True, text=True).stdout
    with open(dest, "w") as o:
        o.write(f"-- focald schema {version}: tests/upgrade/make_fixtures.py; user_version is not part of a dump\n")
        o.write(f"PRAGMA user_version={version};\n")
        o.write(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--focald", required=True)
    ap.add_argument("--version", type=int, required=True)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM; keep the WAL as it is")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="focald-fixture-")
    db = os.path.join(tmp, "focald.db")
    try:
        args = ["--snapshot-interval", "1"] if a.kill else []
        f = Focald(a.focald, db, args)
        if not f.ready(30):
            raise RuntimeError(f"{a.focald} did not become ready; see {db}.log")
        workload(f, a.version, a.kill)
        answers = record(f, a.version)
        os.makedirs(a.out, exist_ok=True)
        if a.kill:
            f.stop(signal.SIGKILL)
            for name in ("", "-wal"):
                with open(db + name, "rb") as i, gzip.GzipFile(os.path.join(a.out, f"db{name}.gz"), "wb", mtime=0) as o:
                    shutil.copyfileobj(i, o)
        else:
            f.stop(signal.SIGTERM)
            if f.proc.returncode != 0:
                raise RuntimeError(f"focald exited {f.proc.returncode}")
            dump(db, a.version, os.path.join(a.out, "db.sql"))
        v = int(subprocess.run(["sqlite3", db, "PRAGMA user_version"], check=True, capture_output=True,
                               text=True).stdout) if not a.kill else a.version
        if v != a.version:
            raise RuntimeError(f"the database is at schema {v}, not {a.version}")
        write_answers(os.path.join(a.out, "answers.json"),
                      {"version": a.version, "commit": a.commit, "killed": a.kill}, answers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
