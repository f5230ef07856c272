"""focalctl: focald from the command line.

    focalctl top DATASET [-k 20] [--by mean_loss] [--order asc|desc] [--run R] [--label L] [--min-seen N] [--status S,...] [--cursor C]
    focalctl sample DATASET ID [--run R]
    focalctl review DATASET ID [STATUS [--label L] [--reviewer NAME] [--note TEXT] [--idempotency-key KEY]]
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

This file is the command line: its parser, the bash completion script made from it, and main(). What
each command does is in _cli_commands.py, how its result is printed in _cli_output.py.
"""
import argparse
import json
import os
import signal
import sys
from typing import Any, Dict, Iterator, List, NoReturn, Optional, Sequence, Tuple

from ._cli_commands import (EXIT_LOCAL, EXIT_OK, EXIT_REFUSED, EXIT_UNAVAILABLE, EXIT_USAGE, UsageError, cmd_datasets,
                            cmd_export, cmd_health, cmd_loss, cmd_post, cmd_queue, cmd_relabels, cmd_review, cmd_sample,
                            cmd_top)
from ._cli_output import Out
from .client import EXPORT_FORMATS, HISTORY_FIELDS, ORDERS, STATUSES, Client
from .errors import FocaldError
from . import __version__


# ---------------------------------------------------------------------------- arguments

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
                   help="seconds a request to focald may take in all (default 30; export: each read)")
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
    s.add_argument("--idempotency-key", metavar="KEY",
                   help="send the decision under this Idempotency-Key (default: a fresh one): running the command "
                        "again with the same KEY after a lost answer records it once")
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
    q.add_argument("--idempotency-key", metavar="KEY",
                   help="send the creation under this Idempotency-Key (default: a fresh one): running the command "
                        "again with the same KEY after a lost answer builds the queue once")
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
        sys.stdout.flush()  # a full disk or a closed pipe is met here, not at exit
        return rc
    except UsageError as e:
        sys.stderr.write("focalctl: %s\n" % e)
        return EXIT_USAGE
    except json.JSONDecodeError:
        raise
    except ValueError as e:  # the client's own checks of a value (a range), before anything is sent
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
    except OSError as e:  # the output cannot be written (a FocaldConnectionError is a FocaldError, above)
        sys.stderr.write("focalctl: cannot write the output: %s\n" % e)
        return EXIT_LOCAL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
