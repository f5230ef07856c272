#!/usr/bin/env python3
"""Databases written by older focalds open in today's $BUILD/focald with their data intact.

For each fixture under tests/upgrade/fixtures/ (make_fixtures.py; one per schema version, stopped with SIGTERM,
and one killed with SIGKILL, WAL and all): build the database, start today's focald on it, and check
- it becomes ready and the database is at the newest schema;
- every answer the old focald gave (answers.json) is today's answer too, field by field, except the fields
  EXCLUDED lists below, each with why its value may differ. Compared: the dataset list and each dataset (counts,
  created_at, runs with classes, last_step and loss quantiles, review counts), every sample (status, meta,
  corrected_label, reconsider, viewer_url, and per run every history field, stale_labels, the recent
  observations and, from schema 6, the series), the by=seen ranking with every history field and the other
  rankings' ids, ranks and scores (make_fixtures.reduce_answer), audit trails with their times, the relabel
  feed's entries, queue summaries and items; fields today's focald has and the old one had not are not
  compared (schema 4's el2n and label_issue_score, schema 5's grand: batches logged before carry none);
- training goes on: more batches extend the same samples' histories (seen grows by what was sent, no sample
  appears twice or goes missing, a batch_id acknowledged before the upgrade is still a duplicate);
- it stops cleanly and starts again with the same answers.
Then: a database at a schema newer than focald knows is refused with a clear message and left byte for byte as
it was; and a migration killed before each of its disk writes in turn (the fault harness's SIGKILL, preloaded)
leaves a database the next start migrates and loads whole.

Output: one line per check, "ok - ..." or "not ok - ...", then "ok N" and, when K failed, "failed K".
"""
import glob
import gzip
import hashlib
import json
import math
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import harness  # noqa: E402
import make_fixtures  # noqa: E402  (reduce_answer: the same projection as the recorded answers)

BUILD = os.environ.get("BUILD", "build")
FOCALD = os.path.join(BUILD, "focald") if os.path.isabs(BUILD) else os.path.join(ROOT, BUILD, "focald")
SHIM = os.path.join(os.path.dirname(FOCALD), "tests", "libfaultvfs.so")
NEWEST = harness.NEWEST_SCHEMA
# a sanitizer build starts and answers more slowly
READY_TIMEOUT = 60.0

# Fields of the recorded answers that are not compared, with the schema versions whose fixtures they are
# excluded for (None: every version), and why. Every other field the old answer has is compared (numbers to a
# relative 1e-6: focald writes float32 values with 9 significant digits). When a change redefines a field, it
# goes here with the versions recorded before it, and the newest version's fixture is written again
# (tests/upgrade/regenerate N).
EXCLUDED = {
    # Until schema 4, label_issue was a flag on the last observation only (its prediction named another class
    # confidently); schema 4 made it label_issue_score >= the run's Otsu threshold, and migration 004 keeps just
    # the last flag as a count (other_n = label_issue): the definition changed (README, "Label errors"). And
    # since 49918e4 (after the last focald of schema 6), a run may flag the lower component of a mixture fitted
    # to its samples' confidence instead: the same data can be flagged otherwise. label_issue_score, what the
    # flag is computed from, is compared.
    "label_issue": {1, 2, 3, 4, 5, 6},
    # Until 8b5d7b0 ("forgetting ranks as Toneva et al. do", between the last focald of schema 2 and that of
    # schema 3), forgetting counted correct-to-incorrect transitions (what forgetting_events counts now); since
    # then a never-learned sample counts as forgotten at each scored observation (README, hard-examples).
    "forgetting": {1, 2},
}
# Rankings whose order follows an excluded field: their items are compared as a set of ids only.
EXCLUDED_RANKINGS = {"by=forgetting&": {1, 2}}
# Fields excluded in one kind of answer only (a path's part, the field, the versions), and why.
EXCLUDED_IN = [
    # The relabel feed's cursor is opaque and changed shape (48e0e1d, "Cursors name their dataset"): it was
    # "<seq>" and is "<dataset id>-<seq>". What a client needs of it is that the cursor it holds from before the
    # upgrade still reads on from where it was: old_feed_cursor_reads_on checks exactly that.
    ("/relabels", "next_cursor", None),
]

passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok - {name}", flush=True)
    else:
        failed += 1
        print(f"not ok - {name}", flush=True)
        for line in str(detail).splitlines()[:40]:
            print("    " + line, flush=True)
    return ok


class Focald(make_fixtures.Focald):
    """Today's focald ($BUILD/focald) on db; started, not yet ready (ready() waits)."""

    def __init__(self, db, env=None, args=()):
        super().__init__(FOCALD, db, args, env)

    def ready(self, timeout=READY_TIMEOUT):
        return super().ready(timeout)


def user_version(db):
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute("PRAGMA user_version").fetchone()[0]
    finally:
        c.close()


def build_db(fixture, dest_dir):
    """The fixture's database at dest_dir/focald.db: loaded from its dump, or its files copied as they were."""
    db = os.path.join(dest_dir, "focald.db")
    if os.path.exists(os.path.join(fixture, "db.sql")):
        harness.load_dump(os.path.join(fixture, "db.sql"), db)
    else:
        for name in ("", "-wal"):
            with gzip.open(os.path.join(fixture, f"db{name}.gz")) as i, open(db + name, "wb") as o:
                shutil.copyfileobj(i, o)
    return db


# ------------------------------------------------------------------------------------------- comparing

def excluded(field, version):
    vs = EXCLUDED.get(field, set())
    return vs is None or version in vs


def diff(old, new, version, where="", out=None):
    """The differences between an old answer and today's: every field the old one has, but those excluded."""
    out = [] if out is None else out
    if isinstance(old, dict):
        if not isinstance(new, dict):
            out.append(f"{where}: {old!r} became {new!r}")
            return out
        for k, v in old.items():
            if excluded(k, version):
                continue
            if k not in new:
                out.append(f"{where}/{k}: missing today (was {v!r})")
            else:
                diff(v, new[k], version, f"{where}/{k}", out)
    elif isinstance(old, list):
        if not isinstance(new, list) or len(old) != len(new):
            out.append(f"{where}: {len(old)} elements became {len(new) if isinstance(new, list) else new!r}")
            return out
        for i, (a, b) in enumerate(zip(old, new)):
            diff(a, b, version, f"{where}[{i}]", out)
    elif isinstance(old, float) or isinstance(new, float):
        if isinstance(old, bool) or isinstance(new, bool) or not isinstance(new, (int, float)) or \
                not isinstance(old, (int, float)) or not math.isclose(old, new, rel_tol=1e-6, abs_tol=1e-9):
            out.append(f"{where}: {old!r} became {new!r}")
    elif old != new:
        out.append(f"{where}: {old!r} became {new!r}")
    return out


def compare_answer(path, old, new, version):
    """Differences between a recorded answer and today's for path (with the rankings' exclusions)."""
    if old["status"] != new["status"]:
        return [f"status {old['status']} became {new['status']}"]
    ob, nb = old["body"], new["body"]
    for part, field, vs in EXCLUDED_IN:
        if part in path.split("?")[0] and (vs is None or version in vs) and isinstance(ob, dict):
            ob = {k: v for k, v in ob.items() if k != field}
    for marker, vs in EXCLUDED_RANKINGS.items():
        if marker in path and version in vs:
            ids = lambda b: sorted(it["id"] for it in b.get("items", []))  # noqa: E731
            return [] if ids(ob) == ids(nb) else [f"ids {ids(ob)} became {ids(nb)}"]
    return diff(ob, nb, version)


def answers_now(f, paths):
    out = {}
    for p in paths:
        status, body = f.request("GET", p)
        out[p] = {"status": status, "body": make_fixtures.reduce_answer(p, body)}
    return out


def compare_all(recorded, now, version):
    problems = []
    for p, old in sorted(recorded.items()):
        for d in compare_answer(p, old, now[p], version):
            problems.append(f"{urllib.parse.unquote(p)}: {d}")
    return problems


# ------------------------------------------------------------------------------------------- the checks

def seen_by_sample(f, ds, run):
    status, body = f.request("GET", f"/v1/datasets/{ds}/hard-examples?by=seen&k=10000&run={run}"
                                    f"&status={urllib.parse.quote(make_fixtures.STATES)}")
    if status != 200:
        return None, body
    ids = [it["id"] for it in body["items"]]
    return {it["id"]: it["seen"] for it in body["items"]}, ids


def training_goes_on(f, name, version):
    """More batches after the upgrade extend the old histories; an old batch_id is still a duplicate."""
    before, ids_before = seen_by_sample(f, "pets", "r1")
    if not check(f"{name}: the old run's ranking answers", before is not None, ids_before):
        return
    # the batch the workload sent first to pets/r1, with its batch_id: acknowledged before the upgrade
    old = make_fixtures.first_pets_batch()
    assert old["batch_id"] == "r1-e0-b0"
    st, out = f.request("POST", "/v1/datasets/pets/batches", old)
    check(f"{name}: a batch_id acknowledged before the upgrade is still a duplicate",
          st == 200 and out.get("duplicate") is True, (st, out))
    # the stored batch's samples are read back from the old focald's payload to tell it from another batch
    st, out = f.request("POST", "/v1/datasets/pets/batches", dict(old, ids=old["ids"][::-1]))
    check(f"{name}: the batch_id with its samples in another order is refused as another batch",
          st == 422 and out.get("code") == "batch_id_reused", (st, out))
    sent, last_step = {}, {}
    for e in (20, 21):
        for body in make_fixtures.pets_batches(make_fixtures.random.Random(e), "r1", e):
            body["batch_id"] = f"after-upgrade-{body['batch_id']}"
            st, out = f.request("POST", "/v1/datasets/pets/batches", body)
            if not check(f"{name}: a batch after the upgrade is accepted ({body['batch_id']})",
                         st == 200 and out.get("duplicate") is False, (st, out)):
                return
            for s in body["ids"]:
                sent[str(s)] = sent.get(str(s), 0) + 1
                last_step[str(s)] = (body["step"], body["epoch"])
    after, ids_after = seen_by_sample(f, "pets", "r1")
    check(f"{name}: the same samples, each once", after is not None and len(ids_after) == len(set(ids_after))
          and set(ids_after) == set(before), (ids_before, ids_after))
    grown = {s: (before.get(s), after.get(s), sent.get(s, 0)) for s in set(before) | set(after or {})}
    check(f"{name}: every sample's seen grew by exactly what was sent after the upgrade",
          after is not None and all(b is not None and a == b + n for b, a, n in grown.values()),
          {s: v for s, v in grown.items() if v[0] is None or v[1] != v[0] + v[2]})
    # the recent observations continue the old ones: the newest is the last step sent
    st, body = f.request("GET", "/v1/datasets/pets/samples/cat-1?run=r1")
    rec = body["runs"][0]["recent"] if st == 200 else []
    check(f"{name}: a sample's newest observation is the last step sent", st == 200 and rec and
          (rec[0]["step"], rec[0]["epoch"]) == last_step["cat-1"], (st, rec, last_step["cat-1"]))


def old_feed_cursor_reads_on(f, name, recorded):
    """A relabel feed's cursor from before the upgrade, given as since, reads on from where it was."""
    for p, old in sorted(recorded.items()):
        if not p.endswith("/relabels") or old["status"] != 200:
            continue
        cur = old["body"]["next_cursor"]
        st, body = f.request("GET", f"{p}?since={urllib.parse.quote(cur)}")
        check(f"{name}: {p}?since=<the old focald's cursor {cur}> reads on with nothing new",
              st == 200 and body["relabels"] == [], (st, body))
        # and the cursor one entry back gives that entry again
        entries = old["body"]["relabels"]
        if entries and cur.isdigit() and int(cur) > 0:
            st, body = f.request("GET", f"{p}?since=0")
            check(f"{name}: {p}?since=0 (an old cursor's form) lists the old feed's entries",
                  st == 200 and not diff(entries, body["relabels"], 0), (st, body))


def one_fixture(fixture, tmp):
    name = os.path.basename(fixture)
    with open(os.path.join(fixture, "answers.json")) as fh:
        rec = json.load(fh)
    version, recorded = rec["version"], rec["answers"]
    d = os.path.join(tmp, name)
    os.makedirs(d)
    db = build_db(fixture, d)
    if "db.sql" in os.listdir(fixture):
        check(f"{name}: the fixture's database is at schema {version}", user_version(db) == version, user_version(db))
    f = Focald(db)
    try:
        if not check(f"{name}: today's focald becomes ready on it", f.ready(), f.log()[-3000:]):
            return
        check(f"{name}: the database is now at schema {NEWEST}", user_version(db) == NEWEST, user_version(db))
        now = answers_now(f, recorded)
        problems = compare_all(recorded, now, version)
        check(f"{name}: {len(recorded)} answers of the schema-{version} focald agree with today's", not problems,
              "\n".join(problems[:40]) + (f"\n... {len(problems)} in all" if len(problems) > 40 else ""))
        old_feed_cursor_reads_on(f, name, recorded)
        training_goes_on(f, name, version)
        live = answers_now(f, recorded)
        rc = f.stop()
        check(f"{name}: SIGTERM stops it cleanly", rc == 0, f"exit {rc}\n" + f.log()[-2000:])
        f = Focald(db)
        if not check(f"{name}: it starts again", f.ready(), f.log()[-3000:]):
            return
        again = answers_now(f, recorded)
        check(f"{name}: after the restart it answers exactly as before it", again == live,
              "\n".join(p for p in again if again[p] != live[p]))
    finally:
        f.stop()


def digests(d):
    """{file name: sha256} of the files in d, but SQLite's shared-memory index (-shm), which any reader of a
    WAL database rewrites (it is rebuilt from the WAL, never the data)."""
    out = {}
    for name in sorted(os.listdir(d)):
        if not name.endswith("-shm") and not name.endswith(".log"):
            with open(os.path.join(d, name), "rb") as fh:
                out[name] = hashlib.sha256(fh.read()).hexdigest()
    return out


def refused_untouched(label, d, db):
    """Starts focald on db, at a schema newer than it knows: it must refuse, say why, and change no file."""
    before = digests(d)
    f = Focald(db)
    ready = f.ready(timeout=20)
    rc = f.stop() if ready else f.proc.wait(30)
    check(f"downgrade, {label}: focald refuses to start", not ready and rc not in (0, None), f"ready={ready} exit={rc}")
    want = f"the database is at schema {NEWEST + 1}; this focald knows {NEWEST}: refusing to touch it"
    check(f"downgrade, {label}: the log says which schema the database is at and which focald knows",
          want in f.log() and db in f.log(), f.log()[-2000:])
    after = digests(d)
    check(f"downgrade, {label}: every file of the database is byte for byte as it was ({', '.join(before)})",
          after == before, f"{sorted(before)} -> {sorted(after)}; changed: "
          f"{[n for n in before if before[n] != after.get(n)]}")


def downgrade(tmp):
    """A database at a newer schema than focald knows is refused, with a message, and left as it was: after a
    clean stop (WAL mode, no WAL file), killed with its WAL, and in SQLite's rollback-journal mode."""
    newest = os.path.join(HERE, "fixtures", f"v{NEWEST}")
    # after a clean stop: the newest fixture, brought up and stopped by focald, then one schema past it
    d = os.path.join(tmp, "downgrade-clean")
    os.makedirs(d)
    db = build_db(newest, d)
    f = Focald(db)
    ok = f.ready()
    st, _ = f.request("POST", "/v1/datasets/pets/batches", next(make_fixtures.pets_batches(
        make_fixtures.random.Random(3), "r3", 0))) if ok else (None, None)
    f.stop()
    if not check("downgrade: a database focald wrote, to prepare", ok and st == 200 and user_version(db) == NEWEST,
                 f.log()[-2000:]):
        return
    c = sqlite3.connect(db, isolation_level=None)
    c.execute(f"PRAGMA user_version={NEWEST + 1}")
    c.close()
    refused_untouched("after a clean stop", d, db)
    # killed with its WAL: a copy of the files taken while a connection has committed into the WAL
    d2 = os.path.join(tmp, "downgrade-wal")
    os.makedirs(d2)
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA wal_autocheckpoint=0")
    c.execute("UPDATE datasets SET created_at = created_at + 1 WHERE name = 'pets'")
    for suffix in ("", "-wal", "-shm"):
        shutil.copyfile(db + suffix, os.path.join(d2, "focald.db" + suffix))
    c.close()
    refused_untouched("with a WAL not checkpointed", d2, os.path.join(d2, "focald.db"))
    # in rollback-journal mode (as a dump loads): journal_mode=WAL would rewrite its header
    d3 = os.path.join(tmp, "downgrade-journal")
    os.makedirs(d3)
    db3 = build_db(newest, d3)
    c = sqlite3.connect(db3, isolation_level=None)
    c.execute(f"PRAGMA user_version={NEWEST + 1}")
    c.close()
    refused_untouched("in rollback-journal mode", d3, db3)


def read_trace(path):
    steps = []
    with open(path) as fh:
        for line in fh:
            w = line.split()
            if w and w[0] == "step":
                steps.append((w[1], int(w[3])))
    return steps


def interrupted_migration(tmp):
    """Killed before each of the writes of the oldest fixture's migrations, the next start completes them."""
    fixture = sorted(fixtures(), key=lambda p: json.load(open(os.path.join(p, "answers.json")))["version"])[0]
    with open(os.path.join(fixture, "answers.json")) as fh:
        rec = json.load(fh)
    version, recorded = rec["version"], rec["answers"]
    env = {"LD_PRELOAD": SHIM, "ASAN_OPTIONS": "verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", "")}
    # the writes of the start-up step (the migrations, then the load) on a fresh copy
    d = os.path.join(tmp, "migrate-trace")
    os.makedirs(d)
    db = build_db(fixture, d)
    trace = os.path.join(d, "trace")
    f = Focald(db, env=dict(env, FOCALD_FAULT_TRACE=trace))
    ok = f.ready()
    f.stop()
    steps = read_trace(trace)
    marks = [(s, n) for s, n in steps if s != "wake"]
    load = [i for i, (s, _) in enumerate(marks) if s == "load"]
    writes = marks[load[-1] + 1][1] - marks[load[0]][1] if ok and load and load[-1] + 1 < len(marks) else 0
    if not check(f"interrupted migration: the start-up on a schema-{version} database writes ({writes} writes)",
                 ok and writes > 0, f.log()[-2000:] + "\n" + str(steps[:10])):
        return
    # SIGKILL before each write in turn: every point a crash can stop the start-up at
    points = range(1, writes + 1)
    bad, at_kill = [], set()
    for n in points:
        d = os.path.join(tmp, f"migrate-kill-{n}")
        os.makedirs(d)
        db = build_db(fixture, d)
        f = Focald(db, env=dict(env, FOCALD_FAULT=f"kind=write,at={n},do=kill-before,in=load"))
        killed = not f.ready(timeout=30) and f.proc.wait(30) == -signal.SIGKILL
        f.stop()
        if not killed:
            bad.append(f"write {n}: not killed ({f.proc.returncode})")
            continue
        try:
            at_kill.add(user_version(db))
        except sqlite3.OperationalError:
            pass  # a hot journal a read-only connection may not roll back: the next start's to recover
        f = Focald(db)
        if not f.ready():
            bad.append(f"write {n}: the next start did not become ready:\n{f.log()[-1500:]}")
            f.stop()
            continue
        v = user_version(db)
        problems = compare_all(recorded, answers_now(f, recorded), version)
        f.stop()
        if v != NEWEST or problems:
            bad.append(f"write {n}: schema {v}; " + "; ".join(problems[:5]))
    check(f"interrupted migration: killed before any of {len(points)} of its {writes} writes, the next start "
          f"reaches schema {NEWEST} with every answer of the schema-{version} focald", not bad, "\n".join(bad))
    # the kills stopped it part way: before, between and after its migrations
    check(f"interrupted migration: the kills left the database at schemas {sorted(at_kill)}, between the "
          f"fixture's and the newest", len(at_kill & set(range(version, NEWEST))) >= 2, sorted(at_kill))


def fixtures():
    return sorted(p for p in glob.glob(os.path.join(HERE, "fixtures", "*")) if os.path.isdir(p))


def main():
    if not os.access(FOCALD, os.X_OK):
        print(f"not ok - {FOCALD} is not built")
        print("ok 0\nfailed 1")
        return 1
    tmp = tempfile.mkdtemp(prefix="focald-upgrade-")
    try:
        found = fixtures()
        check(f"fixtures of every schema version 1..{NEWEST} are present",
              {json.load(open(os.path.join(p, "answers.json")))["version"] for p in found} == set(range(1, NEWEST + 1)),
              [os.path.basename(p) for p in found])
        for fx in found:
            one_fixture(fx, tmp)
        downgrade(tmp)
        interrupted_migration(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"ok {passed}")
    if failed:
        print(f"failed {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
