"""focalctl's commands: each asks focald through a Client, prints the answer with an Out and returns
focalctl's exit status (cli.py parses the command line and calls them)."""
import argparse
import json
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ._cli_output import Out, _cell
from .client import HISTORY_FIELDS, Client
from .errors import FocaldError

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_LOCAL = 4

STATUS_COLS = ("open", "queued", "in_review", "relabelled", "confirmed", "dismissed")


class UsageError(Exception):
    """A command line that parses but makes no sense (exit status 2)."""


HARD_COLS = ["rank", "id", "score", "seen", "mean_loss", "last_loss", "confidence", "correctness", "label",
             "label_issue", "status"]
HARD_CSV_COLS = ["rank", "id", "score"] + list(HISTORY_FIELDS) + ["first_step", "last_step", "label", "label_issue",
                                                                   "status", "reconsider", "meta"]


def cmd_top(c: Client, a: argparse.Namespace, out: Out) -> int:
    filters = dict(by=a.by, order=a.order, label_issue=a.label_issue, run=a.run, label=a.label, min_seen=a.min_seen, status=a.status)
    if a.k < 1:
        raise UsageError("-k must be at least 1")
    # pages of at most 10000 (focald's limit), followed until k items; the last page's next_cursor
    # (given back with --json) continues where this listing stopped
    items: List[Dict[str, Any]] = []
    cursor: Optional[str] = a.cursor
    page: Optional[Dict[str, Any]] = None
    while len(items) < a.k:
        page = c.hard_examples(a.dataset, k=min(a.k - len(items), 10000), cursor=cursor, **filters)
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor or not page["items"]:
            break
    assert page is not None  # k >= 1: at least one page was read
    by = page["by"]
    if out.fmt == "json":
        out.json({"dataset": page["dataset"], "run": page["run"], "by": by, "order": page["order"], "items": items,
                  "next_cursor": cursor})
        return EXIT_OK
    if out.fmt == "csv":
        out.table(items, HARD_CSV_COLS)
        return EXIT_OK
    if not items:
        sys.stderr.write("no samples match in dataset %s\n" % a.dataset)
        return EXIT_OK
    cols = [c for c in HARD_COLS if c != by]  # the score column is the `by` field
    headers = [by if c == "score" else c for c in cols]
    if any(it.get("meta") for it in items):
        cols.append("meta")
        headers.append("meta")
    out.table(items, cols, headers)
    return EXIT_OK


SAMPLE_KEYS = ["id", "dataset", "status", "corrected_label", "reconsider", "meta"]
RUN_COLS = ["run", "seen", "mean_loss", "last_loss", "max_loss", "ema_loss", "confidence", "variability",
            "correctness", "forgetting", "forgetting_events", "aum", "el2n", "label_issue_score",
            "early_label_issue_score", "grand", "first_step", "last_step", "label", "label_issue", "stale_labels"]


def cmd_sample(c: Client, a: argparse.Namespace, out: Out) -> int:
    s = c.sample(a.dataset, a.id, run=a.run)
    if out.fmt == "json":
        out.json(s)
        return EXIT_OK
    if out.fmt == "csv":
        rows = [dict({k: s.get(k) for k in SAMPLE_KEYS}, **{k: r.get(k) for k in RUN_COLS}) for r in s["runs"]]
        out.table(rows or [{k: s.get(k) for k in SAMPLE_KEYS}], SAMPLE_KEYS + RUN_COLS)
        return EXIT_OK
    out.fields(s, SAMPLE_KEYS)
    if s["runs"]:
        out.text("")
        out.table(s["runs"], RUN_COLS)
        recent = [dict(run=r["run"], **o) for r in s["runs"] for o in r.get("recent", [])]
        if recent:
            out.text("")
            out.text("recent observations, newest first:")
            out.table(recent, ["run", "step", "epoch", "loss", "p_t", "correct"])
    return EXIT_OK


def _label_arg(text: str) -> Any:
    """A corrected label from the command line: an integer, a JSON list, or a class name."""
    t = text.strip()
    if t.lstrip("-").isdigit():
        return int(t)
    if t.startswith("["):
        try:
            return json.loads(t)
        except ValueError:
            raise UsageError("--label %s is not a JSON list" % text)
    return text


TRAIL_COLS = ["at", "from", "to", "label_before", "label_after", "reviewer", "note"]


def cmd_review(c: Client, a: argparse.Namespace, out: Out) -> int:
    if a.status is None:
        if a.label is not None or a.reviewer is not None or a.note is not None:
            raise UsageError("--label, --reviewer and --note go with a STATUS")
        trail = c.reviews(a.dataset, a.id)
        if out.fmt == "json":
            out.json(trail)
        elif out.fmt == "csv":
            out.table([dict(r, id=trail["id"]) for r in trail["reviews"]], ["id"] + TRAIL_COLS)
        else:
            out.fields(trail, ["id", "status", "corrected_label"])
            out.text("")
            if trail["reviews"]:
                out.table(trail["reviews"], TRAIL_COLS)
            else:
                out.text("no reviews yet")
        return EXIT_OK
    if a.status == "relabelled" and a.label is None:
        raise UsageError("relabelled needs --label (the corrected label)")
    label = _label_arg(a.label) if a.label is not None else None
    r = c.review(a.dataset, a.id, a.status, label=label, reviewer=a.reviewer, note=a.note,
                 idempotency_key=a.idempotency_key)
    if out.fmt == "json":
        out.json(r)
    elif out.fmt == "csv":
        out.table([r], ["id", "from", "status", "label_before", "label", "reviewer", "note", "at"])
    else:
        msg = "%s: %s -> %s" % (r["id"], r["from"], r["status"])
        if r.get("label") is not None:
            msg += " (label %s)" % _cell(r["label"])
        if r.get("reviewer"):
            msg += " by %s" % r["reviewer"]
        out.text(msg + " at %s" % r["at"])
    return EXIT_OK


QUEUE_COLS = ["name", "size", "reviewed"] + list(STATUS_COLS) + ["created_at"]
QUEUE_ITEM_COLS = ["position", "id", "score", "label", "status", "corrected_label", "mean_loss", "seen"]


def _queue_row(q: Mapping[str, Any]) -> Dict[str, Any]:
    row = {k: q.get(k) for k in ("name", "size", "reviewed", "created_at")}
    row.update(q.get("progress", {}))
    return row


def cmd_queue(c: Client, a: argparse.Namespace, out: Out) -> int:
    if a.queue_cmd == "create":
        quotas = dict(a.quota) if a.quota else None
        q = c.create_queue(a.dataset, a.name, by=a.by, order=a.order, run=a.run, size=a.size, label=a.label,
                           min_seen=a.min_seen, max_per_label=a.max_per_label, min_per_label=a.min_per_label,
                           quotas=quotas, dedupe_by=a.dedupe_by, idempotency_key=a.idempotency_key)
        if out.fmt == "json":
            out.json(q)
        elif out.fmt == "csv":
            out.table([_queue_row(q)], QUEUE_COLS)
        else:
            out.text("created queue %s in %s: %d samples" % (q["name"], a.dataset, q["size"]))
        return EXIT_OK
    if a.queue_cmd == "list":
        doc = c.queues(a.dataset)
        if out.fmt == "json":
            out.json(doc)
        elif not doc["queues"] and out.fmt == "table":
            sys.stderr.write("no queues in dataset %s\n" % a.dataset)
        else:
            out.table([_queue_row(q) for q in doc["queues"]], QUEUE_COLS)
        return EXIT_OK
    if a.queue_cmd == "show":
        if a.limit is not None:
            doc = c.queue(a.dataset, a.name, offset=a.offset, limit=a.limit)
        else:
            doc = c.queue(a.dataset, a.name, offset=a.offset, limit=10000)
            items = list(doc["items"])
            while len(items) < doc["size"] - (a.offset or 0) and doc["items"]:
                doc = c.queue(a.dataset, a.name, offset=(a.offset or 0) + len(items), limit=10000)
                items.extend(doc["items"])
            doc["items"] = items
            doc["offset"] = a.offset or 0
        if out.fmt == "json":
            out.json(doc)
        elif out.fmt == "csv":
            out.table(doc["items"], QUEUE_ITEM_COLS + ["meta"])
        else:
            prog = ", ".join("%s %d" % (k, v) for k, v in doc.get("progress", {}).items() if v)
            out.text("queue %s in %s: %d samples, %d reviewed (%s), created %s"
                     % (doc["name"], a.dataset, doc["size"], doc["reviewed"], prog or "empty", doc["created_at"]))
            if doc["items"]:
                out.text("")
                out.table(doc["items"], QUEUE_ITEM_COLS)
        return EXIT_OK
    if a.queue_cmd == "delete":
        r = c.delete_queue(a.dataset, a.name)
        if out.fmt == "json":
            out.json(r)
        elif out.fmt == "csv":
            out.table([r], ["deleted", "released"])
        else:
            out.text("deleted queue %s (%d samples back to open)" % (r["deleted"], r["released"]))
        return EXIT_OK
    raise UsageError("queue needs a command: create, list, show or delete")


def _say_skipped(fmt: str, skipped: Optional[int]) -> None:
    """Tells (on stderr) how many samples the export's format left out."""
    if skipped:
        why = {"label-studio": "without an image Label Studio can open (see --local-files-root)",
               "fiftyone": "without a local file", "ohif": "without a study_uid"}.get(fmt, "")
        sys.stderr.write("focalctl: %d samples %s left out of the %s export\n" % (skipped, why, fmt))


def cmd_export(c: Client, a: argparse.Namespace, out: Out) -> int:
    kw = dict(queue=a.queue, by=a.by, order=a.order, label_issue=a.label_issue, run=a.run, label=a.label,
              min_seen=a.min_seen, status=a.status, k=a.k, local_files_root=a.local_files_root)
    if a.output in (None, "-"):
        sink = sys.stdout.buffer
        n = 0
        chunks = c.iter_export(a.dataset, a.format, **kw)
        for chunk in chunks:
            sink.write(chunk)
            n += len(chunk)
        sink.flush()
        _say_skipped(a.format, chunks.skipped)
        return EXIT_OK
    try:
        n = c.export(a.dataset, a.output, a.format, **kw)
    except FocaldError:
        raise  # focald's refusal, or focald unreachable (a ConnectionError too): reported as for every command
    except OSError as e:
        sys.stderr.write("focalctl: cannot write %s: %s\n" % (a.output, e.strerror or e))
        return EXIT_LOCAL
    if out.fmt == "json":
        out.json({"dataset": a.dataset, "format": a.format, "path": a.output, "bytes": int(n), "skipped": n.skipped})
    else:
        sys.stderr.write("wrote %d bytes to %s\n" % (n, a.output))
        _say_skipped(a.format, n.skipped)
    return EXIT_OK


DATASET_COLS = ["name", "samples", "observations", "runs", "created_at"]
DATASET_RUN_COLS = ["name", "samples", "observations", "classes", "last_step", "p50", "p90", "p99", "max"]


def cmd_datasets(c: Client, a: argparse.Namespace, out: Out) -> int:
    if a.datasets_cmd in (None, "list"):
        ds = c.datasets()
        if out.fmt == "json":
            out.json({"datasets": ds})
        elif not ds and out.fmt == "table":
            sys.stderr.write("no datasets\n")
        else:
            out.table(ds, DATASET_COLS)
        return EXIT_OK
    if a.datasets_cmd == "show":
        d = c.dataset(a.name)
        if out.fmt == "json":
            out.json(d)
            return EXIT_OK
        runs = [dict({k: r.get(k) for k in DATASET_RUN_COLS}, **(r.get("loss_quantiles") or {})) for r in d["runs"]]
        if out.fmt == "csv":
            out.table([dict(dataset=d["name"], **r) for r in runs], ["dataset"] + DATASET_RUN_COLS)
            return EXIT_OK
        out.fields(d, ["name", "samples", "observations", "created_at"])
        if runs:
            out.text("")
            out.table(runs, DATASET_RUN_COLS, ["run", "samples", "observations", "classes", "last_step",
                                               "loss_p50", "loss_p90", "loss_p99", "loss_max"])
        return EXIT_OK
    if a.datasets_cmd == "delete":
        if not a.yes:
            raise UsageError("deleting dataset %s removes its whole history: add --yes to confirm" % a.name)
        r = c.delete_dataset(a.name)
        if out.fmt == "json":
            out.json(r)
        elif out.fmt == "csv":
            out.table([r], ["deleted", "samples", "observations"])
        else:
            out.text("deleted dataset %s (%d samples, %d observations)" % (r["deleted"], r["samples"],
                                                                             r["observations"]))
        return EXIT_OK
    raise UsageError("datasets needs a command: list, show or delete")


RELABEL_COLS = ["id", "label", "previous_label", "withdrawn", "reviewer", "note", "at"]


def cmd_relabels(c: Client, a: argparse.Namespace, out: Out) -> int:
    feed = c.relabel_feed(a.dataset, since=a.since)
    entries = list(feed)
    if out.fmt == "json":
        out.json({"dataset": a.dataset, "relabels": entries, "next_cursor": feed.cursor})
    elif out.fmt == "csv":
        out.table(entries, RELABEL_COLS)
    else:
        if entries:
            out.table(entries, RELABEL_COLS)
        else:
            sys.stderr.write("no relabels after %s\n" % (a.since or "the start"))
        out.text("next cursor: %s" % feed.cursor)
    return EXIT_OK


BATCH_COLS = ["id", "loss", "p_t", "pred", "correct"]


def _read_body(path: str) -> Tuple[bytes, Optional[List[str]]]:
    """The bytes of a body file ('-': standard input) and the ids it holds (None when it is not a JSON
    object with ids: focald then says what is wrong with it)."""
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        with open(path, "rb") as f:
            data = f.read()
    try:
        doc = json.loads(data.decode("utf-8"))
    except ValueError:
        return data, None
    ids = doc.get("ids") if isinstance(doc, dict) else None
    return data, [str(i) for i in ids] if isinstance(ids, list) else None


def _batch_rows(r: Mapping[str, Any], ids: Optional[List[str]]) -> List[Dict[str, Any]]:
    scores = r.get("scores") or {}
    losses = r.get("losses") or []
    ids = ids if ids is not None and len(ids) == len(losses) else [str(i) for i in range(len(losses))]
    return [dict(id=ids[i], loss=losses[i], **{k: (scores.get(k) or [None] * len(losses))[i]
                                                for k in BATCH_COLS[2:]}) for i in range(len(losses))]


def _score_file(c: Client, a: argparse.Namespace, out: Out, post: bool) -> int:
    try:
        data, ids = _read_body(a.file)
    except OSError as e:
        sys.stderr.write("focalctl: cannot read %s: %s\n" % (a.file, e.strerror or e))
        return EXIT_LOCAL
    r = c.post_batch_body(a.dataset, data) if post else c.evaluate_body(data)
    if out.fmt == "json":
        out.json(r)
        return EXIT_OK
    rows = _batch_rows(r, ids)
    if out.fmt == "table":
        if post:
            head = "%s %d samples into %s (run %s, batch %s)" % (
                "already had" if r.get("duplicate") else "recorded", r.get("accepted", 0), r["dataset"], r["run"],
                r.get("batch_id") or "-")
        else:
            head = "%d samples evaluated (nothing stored)" % len(rows)
        out.text("%s; mean loss %s" % (head, _cell(r.get("loss"))))
        out.text("")
    out.table(rows, BATCH_COLS)
    return EXIT_OK


def cmd_post(c: Client, a: argparse.Namespace, out: Out) -> int:
    return _score_file(c, a, out, post=True)


def cmd_loss(c: Client, a: argparse.Namespace, out: Out) -> int:
    return _score_file(c, a, out, post=False)


def cmd_health(c: Client, a: argparse.Namespace, out: Out) -> int:
    h = c.health()
    if out.fmt == "json":
        out.json(h)
    elif out.fmt == "csv":
        out.table([h], ["live", "ready", "status"])
    else:
        out.text("%s: %s" % (c.url, h["status"] if h["ready"] or not h["live"] else "live, not ready (%s)"
                             % h["status"]))
    return EXIT_OK if h["ready"] else EXIT_UNAVAILABLE
