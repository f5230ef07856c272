"""focalctl: focald from the command line.

    focalctl top DATASET [-k 20] [--by mean_loss] [--order asc|desc] [--run R] [--label L] [--min-seen N] [--status S,...] [--cursor C]
    focalctl sample DATASET ID [--run R]
    focalctl review DATASET ID [STATUS [--label L] [--reviewer NAME] [--note TEXT]]
    focalctl queue create DATASET NAME [--size N] [--by F] [--order asc|desc] [--quota LABEL=MIN:MAX ...] [--dedupe-by KEY] ...
    focalctl queue list DATASET | show DATASET NAME | delete DATASET NAME
    focalctl export DATASET [--format csv|jsonl|label-studio|fiftyone|ohif] [-o FILE] [--queue NAME] [--local-files-root DIR] [filters]
    focalctl datasets list | show NAME | delete NAME --yes
    focalctl relabels DATASET [--since CURSOR]
    focalctl post DATASET FILE          (a batch body as the HTTP API takes it; - for stdin)
    focalctl loss FILE                  (evaluate a body, storing nothing)
    focalctl health
    focalctl completion bash

Output is a table for people; --json prints focald's answer as JSON and --csv
as CSV, for scripts. focald's address comes from --url, else $FOCALD_URL, else
http://127.0.0.1:8765; the bearer token from $FOCALD_TOKEN (never a flag, so it
stays out of shell history and process lists); for https, --cacert or
$FOCALD_CA_FILE names the certificate to trust when it is not in the system's store.

Exit status: 0 done; 1 focald refused the request (4xx: no such dataset,
sample or queue, invalid value, illegal review transition); 2 usage error (bad
arguments); 3 focald unreachable, timed out, or failing (5xx, including 503
while starting or draining); 4 a local error (the output file cannot be written, --cacert unreadable).
"""
import argparse
import csv
import json
import math
import os
import signal
import sys
from typing import Any, Callable, Dict, Iterator, List, Mapping, NoReturn, Optional, Sequence, TextIO, Tuple

from .client import EXPORT_FORMATS, HISTORY_FIELDS, ORDERS, STATUSES, Client
from .errors import FocaldError
from . import __version__

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_LOCAL = 4

STATUS_COLS = ("open", "queued", "in_review", "relabelled", "confirmed", "dismissed")


class UsageError(Exception):
    """A command line that parses but makes no sense (exit status 2)."""


# ---------------------------------------------------------------------------- output

def _cell(v: Any) -> str:
    """A value as table text: floats to 4 significant digits, None as '-', booleans as yes/no."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isfinite(v) and v == int(v) and abs(v) < 1e15:
            return str(int(v))
        return "%.4g" % v
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False) if v else "-"
    return str(v)


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"), ensure_ascii=False)
    return v


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class Out:
    """Writes a command's result in the chosen format: table (default), json or csv."""

    def __init__(self, fmt: str, stream: Optional[TextIO] = None) -> None:
        self.fmt = fmt
        self.stream = stream or sys.stdout

    def json(self, doc: Any) -> None:
        json.dump(doc, self.stream, indent=2, ensure_ascii=False)
        self.stream.write("\n")

    def table(self, rows: Sequence[Mapping[str, Any]], cols: Sequence[str], headers: Optional[Sequence[str]] = None,
              max_width: int = 48) -> None:
        """rows: dicts; cols: keys in order; headers: column titles (default the keys)."""
        headers = headers or list(cols)
        if self.fmt == "csv":
            w = csv.writer(self.stream, lineterminator="\n")
            w.writerow(headers)
            for r in rows:
                w.writerow([_csv_cell(r.get(c)) for c in cols])
            return
        cells = [[_cell(r.get(c)) for c in cols] for r in rows]
        cells = [[c if len(c) <= max_width else c[:max_width - 3] + "..." for c in row] for row in cells]
        right = [bool(rows) and all(_numeric(r.get(c)) or r.get(c) is None for r in rows) for c in cols]
        widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

        def line(vals: Sequence[str]) -> str:
            parts = [v.rjust(widths[i]) if right[i] else v.ljust(widths[i]) for i, v in enumerate(vals)]
            return "  ".join(parts).rstrip()

        self.stream.write(line(headers) + "\n")
        for row in cells:
            self.stream.write(line(row) + "\n")

    def fields(self, doc: Mapping[str, Any], keys: Sequence[str]) -> None:
        """A record as 'key: value' lines (table format) or a one-row CSV."""
        if self.fmt == "csv":
            self.table([doc], keys)
            return
        width = max(len(k) for k in keys)
        for k in keys:
            self.stream.write("%s  %s\n" % ((k + ":").ljust(width + 1), _cell(doc.get(k))))

    def text(self, s: str) -> None:
        self.stream.write(s + "\n")


# ---------------------------------------------------------------------------- commands

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
            "correctness", "forgetting", "forgetting_events", "aum", "el2n", "label_issue_score", "grand", "first_step",
            "last_step", "label", "label_issue", "stale_labels"]


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
    r = c.review(a.dataset, a.id, a.status, label=label, reviewer=a.reviewer, note=a.note)
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


def _bool(text: str) -> bool:
    """true or false (a filter's value)."""
    if text in ("true", "false"):
        return text == "true"
    raise argparse.ArgumentTypeError("true or false, not %r" % text)


def _quota(text: str) -> Tuple[int, Dict[str, int]]:
    """LABEL=MIN:MAX, LABEL=:MAX or LABEL=MIN: (a per-label quota for queue create)."""
    try:
        label, rng = text.split("=", 1)
        lo, hi = rng.split(":", 1)
        q: Dict[str, int] = {}
        if lo.strip():
            q["min"] = int(lo)
        if hi.strip():
            q["max"] = int(hi)
        return int(label), q
    except ValueError:
        raise argparse.ArgumentTypeError("a quota is LABEL=MIN:MAX (either bound may be empty), not %r" % text)


def cmd_queue(c: Client, a: argparse.Namespace, out: Out) -> int:
    if a.queue_cmd == "create":
        quotas = dict(a.quota) if a.quota else None
        q = c.create_queue(a.dataset, a.name, by=a.by, order=a.order, run=a.run, size=a.size, label=a.label,
                           min_seen=a.min_seen, max_per_label=a.max_per_label, min_per_label=a.min_per_label,
                           quotas=quotas, dedupe_by=a.dedupe_by)
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


# ---------------------------------------------------------------------------- arguments

class _Parser(argparse.ArgumentParser):
    """Usage errors exit with EXIT_USAGE (argparse's own 2) and name focalctl's help."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, "%s: error: %s\n" % (self.prog, message))


def _common(with_defaults: bool) -> "_Parser":
    """The options every command takes, before or after the command name."""
    p = _Parser(add_help=False)

    def d(v: Any) -> Any:
        return v if with_defaults else argparse.SUPPRESS

    p.add_argument("--url", metavar="URL", default=d(None), help="focald's base URL (default $FOCALD_URL, else %s)" %
                   "http://127.0.0.1:8765")
    p.add_argument("--timeout", type=float, metavar="SECONDS", default=d(30.0),
                   help="seconds to wait for focald (default 30)")
    p.add_argument("--cacert", metavar="FILE", default=d(None),
                   help="for https: PEM certificate(s) to trust, e.g. focald's self-signed one "
                        "(default $FOCALD_CA_FILE, else the system's)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", dest="fmt", action="store_const", const="json", default=d("table"),
                     help="print focald's answer as JSON")
    fmt.add_argument("--csv", dest="fmt", action="store_const", const="csv", default=d("table"),
                     help="print CSV (one header line, then one line per row)")
    return p


def _filters(p: argparse.ArgumentParser, k_default: Optional[int] = None,
             k_help: str = "at most this many samples") -> None:
    p.add_argument("--by", choices=HISTORY_FIELDS, help="ranking field (default mean_loss)")
    p.add_argument("--order", choices=ORDERS, help="largest first (desc) or smallest first (asc); "
                   "default: the field's hardest first")
    p.add_argument("--run", help="a run name, or * for the mean over runs (the default)")
    p.add_argument("--label", type=int, help="only samples whose last label is this class")
    p.add_argument("--label-issue", type=_bool, metavar="true|false",
                   help="only the samples whose label focald flags (true), or only the others (false)")
    p.add_argument("--min-seen", type=int, help="only samples observed at least this often")
    p.add_argument("--status", help="comma-separated review states (default: those still undecided); one of "
                   + ", ".join(STATUSES))
    p.add_argument("-k", type=int, default=k_default, help=k_help)


def build_parser() -> argparse.ArgumentParser:
    common = _common(False)
    top_level = _common(True)
    p = _Parser(prog="focalctl", parents=[top_level],
                description="Query and steer focald: batches, hard examples, samples, reviews, queues, exports, datasets.",
                epilog="Exit status: 0 done; 1 focald refused the request (4xx); 2 usage error; 3 focald unreachable "
                       "or failing (5xx); 4 local error (output file). The token comes from $FOCALD_TOKEN.")
    p.add_argument("--version", action="version", version="focalctl " + __version__)
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("top", parents=[common], help="the hardest samples of a dataset")
    s.add_argument("dataset")
    _filters(s, 20, "how many samples (default 20; pages are followed)")
    s.add_argument("--cursor", help="continue after an earlier listing (its next_cursor, from --json)")
    s.set_defaults(func=cmd_top)

    s = sub.add_parser("sample", parents=[common],
                       help="one sample: status, meta, history per run, recent observations")
    s.add_argument("dataset")
    s.add_argument("id")
    s.add_argument("--run", help="only this run")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("review", parents=[common], help="record a review decision, or show a sample's audit trail",
                       description="With STATUS, records a review decision; without, prints the sample's audit trail.")
    s.add_argument("dataset")
    s.add_argument("id")
    s.add_argument("status", nargs="?", choices=STATUSES, help="the new review state")
    s.add_argument("--label", help="the corrected label (for relabelled): a class index, a class name or a JSON list")
    s.add_argument("--reviewer", help="who decided")
    s.add_argument("--note", help="why")
    s.set_defaults(func=cmd_review)

    s = sub.add_parser("queue", parents=[common], help="review queues: create, list, show, delete")
    qs = s.add_subparsers(dest="queue_cmd", metavar="QUEUE_COMMAND", parser_class=_Parser)
    s.set_defaults(func=cmd_queue)
    q = qs.add_parser("create", parents=[common], help="build a queue from the hardest open samples")
    q.add_argument("dataset")
    q.add_argument("name")
    q.add_argument("--by", choices=HISTORY_FIELDS, help="ranking field (default mean_loss)")
    q.add_argument("--order", choices=ORDERS, help="largest first (desc) or smallest first (asc); "
                   "default: the field's hardest first")
    q.add_argument("--run", help="a run name, or * (default)")
    q.add_argument("--size", type=int, help="at most this many samples (default 100)")
    q.add_argument("--label", type=int, help="only this class")
    q.add_argument("--min-seen", type=int, help="only samples observed at least this often")
    q.add_argument("--max-per-label", type=int, help="at most this many samples per class")
    q.add_argument("--min-per-label", type=int, help="at least this many samples per class, where there are enough")
    q.add_argument("--quota", type=_quota, action="append", metavar="LABEL=MIN:MAX",
                   help="a per-class quota overriding the two above (repeatable; either bound may be empty)")
    q.add_argument("--dedupe-by", metavar="META_KEY", help="one sample per value of this meta key, e.g. patient_id")
    q = qs.add_parser("list", parents=[common], help="the dataset's queues and their progress")
    q.add_argument("dataset")
    q = qs.add_parser("show", parents=[common], help="a queue's samples in order")
    q.add_argument("dataset")
    q.add_argument("name")
    q.add_argument("--offset", type=int, help="start at this position (0-based)")
    q.add_argument("--limit", type=int, help="at most this many samples (default all)")
    q = qs.add_parser("delete", parents=[common], help="delete a queue (its queued samples go back to open)")
    q.add_argument("dataset")
    q.add_argument("name")

    s = sub.add_parser("export", parents=[common], help="stream an export (csv, jsonl, label-studio, fiftyone, ohif)",
                       description="Streams the hardest samples (or a queue) in an export format, to a file or "
                                   "stdout. The export's own format is written; --json and --csv do not apply.")
    s.add_argument("dataset")
    s.add_argument("--format", "-f", choices=EXPORT_FORMATS, default="csv", help="default csv")
    s.add_argument("--output", "-o", help="file to write (default stdout)")
    s.add_argument("--queue", help="export this queue, in its order")
    s.add_argument("--local-files-root", metavar="DIR",
                   help="label-studio: Label Studio's LOCAL_FILES_DOCUMENT_ROOT; local paths become /data/local-files/ URLs")
    _filters(s, None, "at most this many samples (default all)")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("datasets", parents=[common], help="datasets: list, show, delete")
    ds = s.add_subparsers(dest="datasets_cmd", metavar="DATASETS_COMMAND", parser_class=_Parser)
    s.set_defaults(func=cmd_datasets)
    ds.add_parser("list", parents=[common], help="every dataset")
    d = ds.add_parser("show", parents=[common], help="one dataset and its runs")
    d.add_argument("name")
    d = ds.add_parser("delete", parents=[common], help="remove a dataset and its whole history")
    d.add_argument("name")
    d.add_argument("--yes", action="store_true", help="confirm the deletion")

    s = sub.add_parser("relabels", parents=[common], help="the relabel feed: corrected labels in order")
    s.add_argument("dataset")
    s.add_argument("--since", help="a cursor printed by an earlier call (default: from the start)")
    s.set_defaults(func=cmd_relabels)

    s = sub.add_parser("post", parents=[common], help="score a batch from a file and record it in a dataset",
                       description="Posts FILE, a batch body exactly as POST /v1/datasets/{dataset}/batches takes it "
                                   "(ids, logits or probs, targets, and optionally run, step, epoch, batch_id, loss, "
                                   "meta), and prints each sample's loss and scores.")
    s.add_argument("dataset")
    s.add_argument("file", help="the JSON body; - reads standard input")
    s.set_defaults(func=cmd_post)

    s = sub.add_parser("loss", parents=[common], help="evaluate a batch from a file, storing nothing",
                       description="Posts FILE, a body as POST /v1/loss takes it (the batch body; run, step, epoch "
                                   "and meta are ignored), and prints each sample's loss and scores.")
    s.add_argument("file", help="the JSON body; - reads standard input")
    s.set_defaults(func=cmd_loss)

    s = sub.add_parser("health", parents=[common], help="whether focald is live and ready (exit 0 when ready, else 3)")
    s.set_defaults(func=cmd_health)

    s = sub.add_parser("completion", help="print the shell completion script",
                       description="Prints a bash completion script for focalctl: load it with "
                                   "eval \"$(focalctl completion bash)\", or save it as "
                                   "~/.local/share/bash-completion/completions/focalctl.")
    s.add_argument("shell", choices=["bash"])
    s.set_defaults(func=None, completion=True)
    return p


def _walk(parser: argparse.ArgumentParser, path: Tuple[str, ...] = ()
          ) -> Iterator[Tuple[Tuple[str, ...], List[str], List[str], Dict[str, List[str]]]]:
    """(command path, its commands and positional choices, its options, {option: choices}) for parser and
    each command below it."""
    words: List[str] = []
    opts: List[str] = []
    choices: Dict[str, List[str]] = {}
    subs: List[Tuple[str, argparse.ArgumentParser]] = []
    for act in parser._actions:
        if isinstance(act, argparse._SubParsersAction):
            for name, sp in act.choices.items():
                words.append(name)
                subs.append((name, sp))
        elif not act.option_strings:
            words.extend(str(x) for x in act.choices or ())
        elif act.help is not argparse.SUPPRESS:
            opts.extend(o for o in act.option_strings if o.startswith("--") or len(act.option_strings) == 1)
            for o in act.option_strings:
                if act.choices:
                    choices[o] = [str(x) for x in act.choices]
    yield path, words, opts, choices
    for name, sp in subs:
        yield from _walk(sp, path + (name,))


def bash_completion(parser: argparse.ArgumentParser) -> str:
    """A bash completion script for the commands and options of parser (bash 4: associative arrays)."""
    words, opts, choices = [], [], []
    for path, ws, os_, cs in _walk(parser):
        key = " ".join(("focalctl",) + path)  # bash's associative arrays take no empty key
        words.append('    ["%s"]="%s"' % (key, " ".join(ws)))
        opts.append('    ["%s"]="%s"' % (key, " ".join(os_)))
        for opt, vals in sorted(cs.items()):
            choices.append('    ["%s %s"]="%s"' % (key, opt, " ".join(vals)))
    return """# bash completion for focalctl, written by `focalctl completion bash`
_focalctl() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} key=focalctl w i
  local -A words=(
%s
  )
  local -A opts=(
%s
  )
  local -A choices=(
%s
  )
  # the command path so far: each word that names a command under the path before it
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=${COMP_WORDS[i]}
    if [[ -n ${opts["$key $w"]+set} ]]; then key="$key $w"; fi
  done
  if [[ -n ${choices["$key $prev"]+set} ]]; then
    COMPREPLY=($(compgen -W "${choices["$key $prev"]}" -- "$cur"))
  elif [[ $cur == -* ]]; then
    COMPREPLY=($(compgen -W "${opts["$key"]}" -- "$cur"))
  elif [[ -n ${words["$key"]} ]]; then
    COMPREPLY=($(compgen -W "${words["$key"]}" -- "$cur"))
  fi
}
complete -o default -F _focalctl focalctl
""" % ("\n".join(words), "\n".join(opts), "\n".join(choices))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs focalctl with argv (default sys.argv[1:]). Returns the exit status."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `focalctl top ... | head` ends quietly
    p = build_parser()
    try:
        a = p.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if getattr(a, "completion", False):
        sys.stdout.write(bash_completion(p))
        return EXIT_OK
    if not getattr(a, "func", None):
        p.print_help(sys.stderr)
        return EXIT_USAGE
    if a.cmd == "queue" and not a.queue_cmd:
        sys.stderr.write("focalctl queue: give create, list, show or delete\n")
        return EXIT_USAGE
    try:
        client = Client(a.url, timeout=a.timeout, binary=False, ca_file=a.cacert)
    except ValueError as e:
        sys.stderr.write("focalctl: %s\n" % e)
        return EXIT_USAGE
    except OSError as e:  # an unreadable --cacert
        sys.stderr.write("focalctl: --cacert %s: %s\n" % (a.cacert or os.environ.get("FOCALD_CA_FILE"), e))
        return EXIT_LOCAL
    out = Out(a.fmt)
    try:
        rc: int = a.func(client, a, out)
        return rc
    except UsageError as e:
        sys.stderr.write("focalctl: %s\n" % e)
        return EXIT_USAGE
    except FocaldError as e:
        if a.fmt == "json" and e.problem:
            json.dump(e.problem, sys.stderr, indent=2)
            sys.stderr.write("\n")
        else:
            sys.stderr.write("focalctl: %s\n" % e)
            if e.status == 401:
                sys.stderr.write("focalctl: focald wants a bearer token: set FOCALD_TOKEN to it%s\n"
                                 % (" (the one set is refused)" if os.environ.get("FOCALD_TOKEN") else ""))
        return EXIT_REFUSED if e.client_error else EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
