"""End-to-end tests of focalctl (clients/focalctl, run as a program) against a real focald: every
command, the table, --json and --csv outputs, and the exit codes.

usage: BUILD=build /usr/bin/python3 clients/python/tests/test_cli.py [-v] [names...]
"""
import csv
import http.server
import io
import json
import os
import subprocess
import sys
import tempfile
import threading

import _daemon
from _daemon import DaemonTestCase

import numpy as np

from focald import Client

HARD_CSV_COLS = ["rank", "id", "score", "seen", "last_loss", "mean_loss", "max_loss", "ema_loss", "confidence",
                 "variability", "correctness", "forgetting", "forgetting_events", "aum", "el2n", "label_issue_score",
                 "early_label_issue_score", "grand", "first_step", "last_step",
                 "label", "label_issue", "status", "reconsider", "meta"]


def build(client, name, n=40):
    """n samples s000.. with labels i % 4, two per patient and a uri each, three steps of run r1."""
    rng = np.random.default_rng(11)
    ids = ["s%03d" % i for i in range(n)]
    for step in range(3):
        meta = {i: {"patient_id": "p%d" % (k // 2), "uri": "file:///img/%s.png" % i}
                for k, i in enumerate(ids)} if step == 0 else None
        client.post_batch(name, ids, rng.normal(size=(n, 4)).astype(np.float32) * 2, np.arange(n) % 4, run="r1",
                          step=step, loss="softmax_focal", meta=meta)


class FocalctlTest(DaemonTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.c = Client(cls.url)
        build(cls.c, "cli")

    def run_cli(self, *args, url=None, env_url=True, input=None):
        env = dict(os.environ)
        env.pop("FOCALD_URL", None)
        env.pop("FOCALD_TOKEN", None)
        if env_url:
            env["FOCALD_URL"] = url or self.url
        # through /usr/bin/python3 for speed; test_focalctl_runs_as_a_program runs the file itself
        return subprocess.run([_daemon.PYTHON, _daemon.FOCALCTL] + list(args), env=env, capture_output=True,
                              text=True, timeout=60, input=input)

    def ok(self, *args, **kw):
        p = self.run_cli(*args, **kw)
        self.assertEqual(p.returncode, 0,
                         "focalctl %s: rc %d\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p.stdout

    def table(self, text):
        """A printed table as (header words, rows of words)."""
        lines = [l for l in text.splitlines() if l.strip()]
        return lines[0].split(), [l.split() for l in lines[1:]]

    # ------------------------------------------------------------ top

    def test_focalctl_top_formats(self):
        head, rows = self.table(self.ok("top", "cli"))
        self.assertEqual(head[:3], ["rank", "id", "mean_loss"])
        self.assertEqual(len(rows), 20)  # the default -k
        self.assertEqual([r[0] for r in rows], [str(i) for i in range(1, 21)])
        ref = [it["id"] for it in self.c.hard_examples("cli", k=20)["items"]]
        self.assertEqual([r[1] for r in rows], ref)
        doc = json.loads(self.ok("top", "cli", "-k", "7", "--json"))
        self.assertEqual([it["id"] for it in doc["items"]], ref[:7])
        self.assertEqual(doc["by"], "mean_loss")
        rows = list(csv.DictReader(io.StringIO(self.ok("--csv", "top", "cli", "-k", "5"))))
        self.assertEqual(list(rows[0].keys()), HARD_CSV_COLS)
        self.assertEqual([r["id"] for r in rows], ref[:5])
        self.assertEqual(json.loads(rows[0]["meta"])["uri"], "file:///img/%s.png" % ref[0])

    def test_focalctl_top_filters_and_paging(self):
        head, rows = self.table(self.ok("top", "cli", "--by", "confidence", "-k", "5", "--run", "r1"))
        self.assertEqual(head[2], "confidence")
        ref = self.c.hard_examples("cli", by="confidence", k=5, run="r1")["items"]
        self.assertEqual([r[1] for r in rows], [it["id"] for it in ref])
        doc = json.loads(self.ok("top", "cli", "--label", "2", "--min-seen", "3", "-k", "100", "--json"))
        self.assertEqual(len(doc["items"]), 10)
        self.assertTrue(all(it["label"] == 2 for it in doc["items"]))
        doc = json.loads(self.ok("top", "cli", "-k", "1000", "--json"))  # more than there are
        self.assertEqual((len(doc["items"]), doc["next_cursor"], doc["order"]), (40, None, "desc"))
        first = json.loads(self.ok("top", "cli", "-k", "15", "--json"))
        rest = json.loads(self.ok("top", "cli", "-k", "100", "--cursor", first["next_cursor"], "--json"))
        self.assertEqual([it["id"] for it in first["items"] + rest["items"]], [it["id"] for it in doc["items"]])
        self.assertEqual(rest["items"][0]["rank"], 16)
        self.assertEqual(json.loads(self.ok("top", "cli", "--status", "dismissed", "--json"))["items"], [])
        p = self.run_cli("top", "cli", "--status", "dismissed")
        self.assertEqual((p.returncode, p.stdout), (0, ""))
        self.assertIn("no samples", p.stderr)
        # --order: the other end, as the client's order= gives it
        doc = json.loads(self.ok("top", "cli", "--by", "mean_loss", "--order", "asc", "-k", "5", "--json"))
        self.assertEqual(doc["order"], "asc")
        ref = self.c.hard_examples("cli", by="mean_loss", order="asc", k=5)["items"]
        self.assertEqual([it["id"] for it in doc["items"]], [it["id"] for it in ref])
        self.assertNotEqual(ref, self.c.hard_examples("cli", by="mean_loss", k=5)["items"])
        self.assertEqual(self.run_cli("top", "cli", "--order", "up").returncode, 2)

    # ------------------------------------------------------------ sample

    def test_focalctl_sample(self):
        out = self.ok("sample", "cli", "s005")
        self.assertIn("status:", out)
        self.assertIn("recent observations, newest first:", out)
        self.assertIn("p2", out)  # meta
        doc = json.loads(self.ok("sample", "cli", "s005", "--json", "--run", "r1"))
        self.assertEqual(doc, self.c.sample("cli", "s005", run="r1"))
        rows = list(csv.DictReader(io.StringIO(self.ok("sample", "cli", "s005", "--csv"))))
        self.assertEqual((len(rows), rows[0]["id"], rows[0]["run"], rows[0]["seen"]), (1, "s005", "r1", "3"))

    # ------------------------------------------------------------ review

    def test_focalctl_review(self):
        build(self.c, "cli-review", n=8)
        out = self.ok("review", "cli-review", "s001", "in_review", "--reviewer", "ann")
        self.assertIn("s001: open -> in_review by ann", out)
        doc = json.loads(self.ok("review", "cli-review", "s001", "relabelled", "--label", "3", "--note", "a three",
                                 "--json"))
        self.assertEqual((doc["status"], doc["label"], doc["label_before"], doc["note"]),
                         ("relabelled", 3, 1, "a three"))
        self.ok("review", "cli-review", "s002", "relabelled", "--label", "[0, 2]")
        self.assertEqual(self.c.reviews("cli-review", "s002")["corrected_label"], [0, 2])
        self.ok("review", "cli-review", "s003", "relabelled", "--label", "cat")
        self.assertEqual(self.c.reviews("cli-review", "s003")["corrected_label"], "cat")
        out = self.ok("review", "cli-review", "s001")  # the audit trail
        head, rows = self.table(out.split("\n\n", 1)[1])
        self.assertEqual(head, ["at", "from", "to", "label_before", "label_after", "reviewer", "note"])
        self.assertEqual([r[1:3] for r in rows], [["open", "in_review"], ["in_review", "relabelled"]])
        rows = list(csv.DictReader(io.StringIO(self.ok("review", "cli-review", "s001", "--csv"))))
        self.assertEqual([(r["from"], r["to"], r["label_after"]) for r in rows],
                         [("open", "in_review", ""), ("in_review", "relabelled", "3")])
        self.assertEqual(json.loads(self.ok("review", "cli-review", "s001", "--json"))["status"], "relabelled")
        # refusals and usage errors
        p = self.run_cli("review", "cli-review", "s001", "confirmed")
        self.assertEqual(p.returncode, 1)
        self.assertIn("409 conflict", p.stderr)
        p = self.run_cli("review", "cli-review", "s001", "confirmed", "--json")
        self.assertEqual(p.returncode, 1)
        self.assertEqual(json.loads(p.stderr)["code"], "conflict")
        p = self.run_cli("review", "cli-review", "s004", "relabelled")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--label", p.stderr)
        p = self.run_cli("review", "cli-review", "s004", "maybe")
        self.assertEqual(p.returncode, 2)
        p = self.run_cli("review", "cli-review", "nope", "confirmed")
        self.assertEqual(p.returncode, 1)
        self.assertIn("sample_not_found", p.stderr)

    def test_focalctl_review_and_queue_create_run_again_with_their_key(self):
        build(self.c, "cli-idem", n=8)
        a = json.loads(self.ok("review", "cli-idem", "s001", "relabelled", "--label", "2", "--idempotency-key",
                               "run-1", "--json"))
        b = json.loads(self.ok("review", "cli-idem", "s001", "relabelled", "--label", "2", "--idempotency-key",
                               "run-1", "--json"))
        self.assertEqual(a, b)
        self.assertEqual(len(self.c.reviews("cli-idem", "s001")["reviews"]), 1)
        p = self.run_cli("review", "cli-idem", "s002", "confirmed", "--idempotency-key", "run-1")
        self.assertEqual(p.returncode, 1)
        self.assertIn("idempotency_key_reused", p.stderr)
        p = self.run_cli("review", "cli-idem", "s002", "confirmed", "--idempotency-key", "back\\slash")
        self.assertEqual(p.returncode, 1)
        self.assertIn("bad_idempotency_key", p.stderr)
        for _ in range(2):
            out = self.ok("queue", "create", "cli-idem", "q", "--size", "2", "--idempotency-key", "q-1")
            self.assertIn("created queue q in cli-idem: 2 samples", out)
        self.assertEqual([q["name"] for q in self.c.queues("cli-idem")["queues"]], ["q"])

    # ------------------------------------------------------------ queues

    def test_focalctl_queue(self):
        build(self.c, "cli-queue")
        out = self.ok("queue", "create", "cli-queue", "first", "--size", "6", "--run", "r1",
                      "--dedupe-by", "patient_id", "--quota", "0=:1", "--max-per-label", "2")
        self.assertIn("created queue first in cli-queue: 6 samples", out)
        doc = json.loads(self.ok("queue", "show", "cli-queue", "first", "--json"))
        labels = [it["label"] for it in doc["items"]]
        self.assertLessEqual(labels.count(0), 1)
        self.assertTrue(all(labels.count(x) <= 2 for x in labels))
        self.assertEqual(len({it["meta"]["patient_id"] for it in doc["items"]}), 6)
        doc = json.loads(self.ok("queue", "create", "cli-queue", "second", "--size", "3", "--by", "last_loss",
                                 "--order", "asc", "--json"))
        self.assertEqual((doc["name"], doc["size"], doc["params"]["order"]), ("second", 3, "asc"))
        head, rows = self.table(self.ok("queue", "list", "cli-queue"))
        self.assertEqual(head[:3], ["name", "size", "reviewed"])
        self.assertEqual(sorted(r[0] for r in rows), ["first", "second"])
        rows = list(csv.DictReader(io.StringIO(self.ok("queue", "list", "cli-queue", "--csv"))))
        self.assertEqual({r["name"]: r["queued"] for r in rows}, {"first": "6", "second": "3"})
        out = self.ok("queue", "show", "cli-queue", "first")
        self.assertIn("queue first in cli-queue: 6 samples, 0 reviewed", out)
        head, rows = self.table(out.split("\n\n", 1)[1])
        self.assertEqual(head[:3], ["position", "id", "score"])
        self.assertEqual([r[0] for r in rows], ["1", "2", "3", "4", "5", "6"])
        doc = json.loads(self.ok("queue", "show", "cli-queue", "first", "--offset", "2", "--limit", "2", "--json"))
        self.assertEqual([it["position"] for it in doc["items"]], [3, 4])
        rows = list(csv.DictReader(io.StringIO(self.ok("queue", "show", "cli-queue", "first", "--csv"))))
        self.assertEqual(len(rows), 6)
        out = self.ok("queue", "delete", "cli-queue", "second")
        self.assertIn("deleted queue second (3 samples back to open)", out)
        p = self.run_cli("queue", "show", "cli-queue", "second")
        self.assertEqual(p.returncode, 1)
        p = self.run_cli("queue", "create", "cli-queue", "bad", "--quota", "zero")
        self.assertEqual(p.returncode, 2)
        p = self.run_cli("queue")
        self.assertEqual(p.returncode, 2)

    # ------------------------------------------------------------ export

    def test_focalctl_export(self):
        out = self.ok("export", "cli", "-k", "5")
        rows = list(csv.DictReader(io.StringIO(out)))
        self.assertEqual([r["id"] for r in rows], [it["id"] for it in self.c.hard_examples("cli", k=5)["items"]])
        d = _daemon.tempdir()
        path = os.path.join(d, "x.jsonl")
        p = self.run_cli("export", "cli", "--format", "jsonl", "-o", path, "--by", "confidence", "--run", "r1")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("wrote", p.stderr)
        with open(path) as f:
            lines = [json.loads(x) for x in f]
        self.assertEqual(len(lines), 40)
        rows = list(csv.DictReader(io.StringIO(self.ok("export", "cli", "-k", "5", "--order", "asc"))))
        self.assertEqual([r["id"] for r in rows],
                         [it["id"] for it in self.c.hard_examples("cli", k=5, order="asc")["items"]])
        ls = json.loads(self.ok("export", "cli", "-f", "label-studio", "-k", "3", "--local-files-root", "/img"))
        self.assertEqual(len(ls), 3)
        self.assertTrue(ls[0]["data"]["image"].startswith("/data/local-files/?d=s0"), ls[0]["data"])
        # without it, no file: URL can be opened by Label Studio: the samples are left out and focalctl says so
        p = self.run_cli("export", "cli", "-f", "label-studio", "-k", "3")
        self.assertEqual((p.returncode, json.loads(p.stdout)), (0, []), p.stderr)
        self.assertIn("40 samples without an image Label Studio can open", p.stderr)
        p = self.run_cli("export", "cli", "--json", "-f", "fiftyone", "-o", os.path.join(d, "fo.csv"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["skipped"], 0)
        p = self.run_cli("export", "cli", "-o", os.path.join(d, "no", "such", "dir.csv"))
        self.assertEqual(p.returncode, 4, p.stderr)
        p = self.run_cli("export", "missing", "-o", os.path.join(d, "m.csv"))
        self.assertEqual(p.returncode, 1)
        self.assertFalse(os.path.exists(os.path.join(d, "m.csv")))
        p = self.run_cli("export", "cli", "-f", "xml")
        self.assertEqual(p.returncode, 2)

    # ------------------------------------------------------------ datasets

    def test_focalctl_datasets(self):
        self.c.post_batch("cli-gone", [1, 2], np.zeros((2, 2), np.float32), [0, 1])
        head, rows = self.table(self.ok("datasets", "list"))
        self.assertEqual(head, ["name", "samples", "observations", "runs", "created_at"])
        self.assertIn("cli", [r[0] for r in rows])
        self.assertEqual(self.ok("datasets"), self.ok("datasets", "list"))
        doc = json.loads(self.ok("datasets", "list", "--json"))
        self.assertIn("cli-gone", [x["name"] for x in doc["datasets"]])
        rows = list(csv.DictReader(io.StringIO(self.ok("datasets", "--csv"))))
        self.assertEqual({r["name"]: r["samples"] for r in rows}["cli"], "40")
        out = self.ok("datasets", "show", "cli")
        self.assertIn("observations:  120", out)
        self.assertIn("loss_p50", out)
        self.assertEqual(json.loads(self.ok("datasets", "show", "cli", "--json")), self.c.dataset("cli"))
        rows = list(csv.DictReader(io.StringIO(self.ok("datasets", "show", "cli", "--csv"))))
        self.assertEqual((rows[0]["dataset"], rows[0]["name"], rows[0]["classes"]), ("cli", "r1", "4"))
        p = self.run_cli("datasets", "delete", "cli-gone")
        self.assertEqual(p.returncode, 2)
        self.assertIn("--yes", p.stderr)
        out = self.ok("datasets", "delete", "cli-gone", "--yes")
        self.assertIn("deleted dataset cli-gone (2 samples, 2 observations)", out)
        p = self.run_cli("datasets", "show", "cli-gone")
        self.assertEqual(p.returncode, 1)
        self.assertIn("dataset_not_found", p.stderr)

    # ------------------------------------------------------------ relabels, health, exit codes

    def test_focalctl_relabels(self):
        build(self.c, "cli-feed", n=4)
        self.c.review("cli-feed", "s000", "relabelled", label=1)
        self.c.review("cli-feed", "s002", "relabelled", label=3)
        out = self.ok("relabels", "cli-feed")
        self.assertIn("next cursor:", out)
        doc = json.loads(self.ok("relabels", "cli-feed", "--json"))
        self.assertEqual([(e["id"], e["label"]) for e in doc["relabels"]], [("s000", 1), ("s002", 3)])
        again = json.loads(self.ok("relabels", "cli-feed", "--since", doc["next_cursor"], "--json"))
        self.assertEqual(again["relabels"], [])
        rows = list(csv.DictReader(io.StringIO(self.ok("relabels", "cli-feed", "--csv"))))
        self.assertEqual([r["id"] for r in rows], ["s000", "s002"])

    def test_focalctl_health(self):
        self.assertIn(": ready", self.ok("health"))
        self.assertEqual(json.loads(self.ok("health", "--json")), {"live": True, "ready": True, "status": "ready"})
        dead = "http://127.0.0.1:%d" % _daemon.free_port()
        p = self.run_cli("health", url=dead)
        self.assertEqual(p.returncode, 3)
        self.assertIn("unreachable", p.stdout)

    # ------------------------------------------------------------ post, loss

    def body_file(self, doc):
        path = os.path.join(_daemon.tempdir(), "body.json")
        with open(path, "w") as f:
            json.dump(doc, f)
        return path

    def test_focalctl_post_and_loss(self):
        rng = np.random.default_rng(5)
        logits = rng.normal(size=(6, 3)).astype(np.float32) * 3
        targets = [0, 1, 2, 2, 1, 0]
        ids = ["p0", "p1", "p2", 3, 4, "p5"]
        doc = {"run": "cli-run", "step": 9, "batch_id": "b-9", "loss": {"type": "softmax_focal", "gamma": 1.5},
               "ids": ids, "logits": logits.tolist(), "targets": targets}
        path = self.body_file(doc)
        want = Client(self.url, binary=False).evaluate(logits, targets, loss={"type": "softmax_focal", "gamma": 1.5})
        # loss: the same numbers, nothing stored
        got = json.loads(self.ok("loss", path, "--json"))
        self.assertEqual(got["losses"], want["losses"])
        self.assertNotIn("cli-post", [d["name"] for d in self.c.datasets()])
        head, rows = self.table(self.ok("loss", path))
        self.assertEqual(head[:4], ["6", "samples", "evaluated", "(nothing"])
        self.assertEqual(rows[0], ["id", "loss", "p_t", "pred", "correct"])
        self.assertEqual([r[0] for r in rows[1:]], [str(i) for i in ids])
        # post: recorded under the body's run, step and batch_id; printed per id
        rows = list(csv.DictReader(io.StringIO(self.ok("post", "cli-post", path, "--csv"))))
        self.assertEqual([r["id"] for r in rows], [str(i) for i in ids])
        self.assertEqual([float(r["loss"]) for r in rows], want["losses"])
        self.assertEqual([float(r["p_t"]) for r in rows], want["scores"]["p_t"])
        d = self.c.dataset("cli-post")
        self.assertEqual((d["samples"], d["observations"], [r["name"] for r in d["runs"]]), (6, 6, ["cli-run"]))
        self.assertEqual(self.c.sample("cli-post", "p2")["runs"][0]["last_step"], 9)
        out = self.ok("post", "cli-post", path)  # the same batch_id again: stored once
        self.assertTrue(out.startswith("already had 6 samples into cli-post (run cli-run, batch b-9)"), out)
        self.assertEqual(self.c.dataset("cli-post")["observations"], 6)
        # standard input, and the body's ids are optional in the output only
        doc2 = dict(doc, batch_id="b-10")
        r = json.loads(self.ok("post", "cli-post", "-", "--json", input=json.dumps(doc2)))
        self.assertEqual((r["accepted"], r["duplicate"], r["batch_id"]), (6, False, "b-10"))
        self.assertEqual(self.c.dataset("cli-post")["observations"], 12)

    def test_focalctl_post_errors(self):
        p = self.run_cli("post", "cli-post-bad", self.body_file({"ids": [1, 2], "targets": [0, 1]}))
        self.assertEqual(p.returncode, 1)
        self.assertIn("missing_field", p.stderr)
        p = self.run_cli("loss", "-", input="{not json")
        self.assertEqual(p.returncode, 1)
        self.assertIn("400", p.stderr)
        p = self.run_cli("post", "cli-post-bad", "/nonexistent/body.json")
        self.assertEqual(p.returncode, 4)
        self.assertIn("cannot read /nonexistent/body.json", p.stderr)
        self.assertNotIn("cli-post-bad", [d["name"] for d in self.c.datasets()])
        self.assertEqual(self.run_cli("post", "only-a-dataset").returncode, 2)

    # ------------------------------------------------------------ completion, documentation

    def complete(self, script, *words):
        """What the completion script offers for the command line words (the last one being completed)."""
        prog = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=(); '
                '_focalctl; printf "%s\\n" "${COMPREPLY[@]}"')
        p = subprocess.run(["bash", "-c", prog, "bash", script, "focalctl"] + list(words), capture_output=True,
                           text=True, timeout=30)
        self.assertEqual((p.returncode, p.stderr), (0, ""))
        return [w for w in p.stdout.split("\n") if w]

    def commands(self):
        """focalctl's commands and subcommands, from its parser."""
        from focald.cli import _walk, build_parser
        return [" ".join(path) for path, _, _, _ in _walk(build_parser()) if path]

    def test_focalctl_completion_bash(self):
        script = os.path.join(_daemon.tempdir(), "focalctl.bash")
        with open(script, "w") as f:
            f.write(self.ok("completion", "bash"))
        top = self.complete(script, "")
        self.assertEqual(sorted(top), sorted(c for c in self.commands() if " " not in c))
        self.assertEqual(self.complete(script, "q"), ["queue"])
        self.assertEqual(self.complete(script, "queue", ""), ["create", "list", "show", "delete"])
        self.assertEqual(self.complete(script, "--json", "datasets", "s"), ["show"])
        self.assertIn("--dedupe-by", self.complete(script, "queue", "create", "ds", "--"))
        self.assertNotIn("--dedupe-by", self.complete(script, "top", "ds", "--"))
        self.assertEqual(self.complete(script, "top", "ds", "--by", "m"), ["mean_loss", "max_loss"])
        self.assertEqual(self.complete(script, "export", "ds", "-f", "l"), ["label-studio"])
        self.assertEqual(self.complete(script, "review", "ds", "id", "re"), ["relabelled"])
        self.assertEqual(self.complete(script, "post", "ds", ""), [])  # a file: bash's default completion
        p = subprocess.run(["bash", "-c", 'source "$1" && complete -p focalctl', "bash", script], capture_output=True,
                           text=True, timeout=30)
        self.assertIn("-F _focalctl focalctl", p.stdout)
        self.assertEqual(self.run_cli("completion", "zsh").returncode, 2)

    def test_focalctl_commands_documented(self):
        """The client's README and the repository's README name every command."""
        with open(os.path.join(_daemon.PYDIR, "README.md")) as f:
            readme = f.read()
        block = readme[readme.index("## focalctl"):]
        block = block[block.index("```"):block.index("```", block.index("```") + 3)]
        with open(os.path.join(_daemon.ROOT, "README.md")) as f:
            top = f.read()
        line = next(l for l in top.splitlines() if l.startswith("- Command line:"))
        for cmd in self.commands():
            self.assertIn("focalctl %s" % cmd.split()[0], block)
            self.assertIn(cmd.split()[-1], block, cmd)
            if " " not in cmd:
                self.assertIn(" %s " % cmd, line.replace("`", " ").replace("|", " "), cmd)

    def test_focalctl_version(self):
        p = self.run_cli("--version")
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout.strip(), r"^focalctl \d+\.\d+\.\d+$")

    def test_focalctl_exit_codes(self):
        dead = "http://127.0.0.1:%d" % _daemon.free_port()
        p = self.run_cli("top", "cli", url=dead)
        self.assertEqual(p.returncode, 3)
        self.assertIn("cannot reach focald", p.stderr)
        # an export to a file with focald down is focald unreachable (3), not a file that cannot be written (4)
        with tempfile.TemporaryDirectory() as tmp:
            p = self.run_cli("export", "cli", "--output", os.path.join(tmp, "out.csv"), url=dead)
            self.assertEqual(p.returncode, 3, p.stderr)
            self.assertIn("cannot reach focald", p.stderr)
            self.assertEqual(os.listdir(tmp), [])
        # --url wins over FOCALD_URL, before or after the command
        self.assertEqual(self.run_cli("--url", self.url, "top", "cli", "-k", "1", url=dead).returncode, 0)
        self.assertEqual(self.run_cli("top", "cli", "-k", "1", "--url", self.url, url=dead).returncode, 0)
        self.assertEqual(self.run_cli("top", "missing").returncode, 1)
        self.assertEqual(self.run_cli("top", "cli", "--by", "nonsense").returncode, 2)
        self.assertEqual(self.run_cli("top", "cli", "-k", "0").returncode, 2)
        # a value the client's own checks refuse before sending anything: a usage error in one line, as argparse's
        for args, name in ((("top", "cli", "--min-seen", "-1"), "min_seen"),
                           (("queue", "create", "cli", "q-bad", "--min-seen", "-5"), "min_seen")):
            p = self.run_cli(*args)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertNotIn("Traceback", p.stderr)
            self.assertRegex(p.stderr, r"^focalctl: .*%s" % name)
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
        self.assertEqual(self.run_cli("frobnicate").returncode, 2)
        self.assertEqual(self.run_cli().returncode, 2)
        self.assertEqual(self.run_cli("top", "cli", "--json", "--csv").returncode, 2)
        self.assertEqual(self.run_cli("--url", "ftp://x", "top", "cli").returncode, 2)
        p = self.run_cli("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("Exit status", p.stdout)
        # without FOCALD_URL the default address is used (nothing listens on 8765 in the tests, or focald does)
        p = self.run_cli("health", env_url=False)
        self.assertIn(p.returncode, (0, 3))
        self.assertIn("127.0.0.1:8765", p.stdout)

    def test_focalctl_runs_as_a_program(self):
        """clients/focalctl is executable from the source tree, with whatever python3 is on PATH."""
        env = dict(os.environ, FOCALD_URL=self.url)
        p = subprocess.run([_daemon.FOCALCTL, "datasets", "--json"], env=env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("cli", [d["name"] for d in json.loads(p.stdout)["datasets"]])

    def test_focalctl_token(self):
        """FOCALD_TOKEN is sent; a 401 says to set it, or that the one set is refused."""
        token = "0123456789abcdef" * 2
        d = _daemon.Daemon(token=token)
        try:
            env = dict(os.environ, FOCALD_URL=d.url, FOCALD_TOKEN=token)
            p = subprocess.run([_daemon.PYTHON, _daemon.FOCALCTL, "datasets", "--json"], env=env,
                               capture_output=True, text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            p = self.run_cli("datasets", url=d.url)  # no token
            self.assertEqual(p.returncode, 1)
            self.assertIn("401 unauthorized", p.stderr)
            self.assertIn("set FOCALD_TOKEN", p.stderr)
            self.assertNotIn("the one set is refused", p.stderr)
            p = subprocess.run([_daemon.PYTHON, _daemon.FOCALCTL, "datasets"], capture_output=True, text=True,
                               timeout=60, env=dict(os.environ, FOCALD_URL=d.url, FOCALD_TOKEN="x" * 32))
            self.assertEqual(p.returncode, 1)
            self.assertIn("the one set is refused", p.stderr)
        finally:
            d.stop()

    def test_focalctl_tls(self):
        """--cacert (or FOCALD_CA_FILE) trusts a self-signed focald; without it the certificate is refused."""
        d = _daemon.Daemon(tls=True)
        try:
            self.assertEqual(self.run_cli("health", "--cacert", d.cert, url=d.url).returncode, 0)
            env = dict(os.environ, FOCALD_URL=d.url, FOCALD_CA_FILE=d.cert)
            p = subprocess.run([_daemon.PYTHON, _daemon.FOCALCTL, "datasets"], env=env, capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            p = self.run_cli("datasets", url=d.url)  # untrusted certificate
            self.assertEqual(p.returncode, 3)
            self.assertIn("CERTIFICATE_VERIFY_FAILED", p.stderr)
            p = self.run_cli("datasets", "--cacert", "/nonexistent.pem", url=d.url)
            self.assertEqual(p.returncode, 4)
        finally:
            d.stop()

    def test_focalctl_csv_quotes_text_a_spreadsheet_would_run(self):
        """--csv cells of text that starts as a formula (=, +, -, @, tab, CR: ids and meta are anyone's
        strings) are written as text, with a leading quote, as focald's own CSV export writes them."""
        ids = ["=HYPERLINK(\"http://x\")", "+1", "-2", "@SUM(A1)", "plain"]
        self.c.post_batch("cli-formula", ids, logits=[[0.5, -0.5]] * 5, targets=[0] * 5, loss="cross_entropy")
        rows = list(csv.DictReader(io.StringIO(self.ok("--csv", "top", "cli-formula", "-k", "10"))))
        self.assertEqual(sorted(r["id"] for r in rows), sorted(["'" + i for i in ids[:4]] + ["plain"]))

    def test_focalctl_output_that_cannot_be_written_is_4(self):
        """stdout on a full disk: one line and exit 4 (the output cannot be written), not a traceback and 1."""
        with open("/dev/full", "w") as full:
            p = subprocess.run([_daemon.PYTHON, _daemon.FOCALCTL, "datasets", "--json"], stdout=full,
                               stderr=subprocess.PIPE, text=True, timeout=60, env=dict(os.environ, FOCALD_URL=self.url))
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertNotIn("Traceback", p.stderr)
        self.assertIn("cannot write the output", p.stderr)

    def test_focalctl_answer_that_is_not_focalds_is_3(self):
        """A 200 whose body is not JSON (a proxy's page) or not even UTF-8, and a redirect: one line naming
        it and exit 3, as for a focald that does not answer (it was 1 with a traceback, or 2)."""
        answers = [(200, "text/html", b"<html>a proxy's page</html>", "bad_response"),
                   (200, "application/json", b"\xff\xfe", "bad_response"),
                   (301, "text/html", b"", "redirect")]
        for status, ctype, body, code in answers:
            class Odd(http.server.BaseHTTPRequestHandler):
                def do_GET(self):
                    self.send_response(status)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Location", "https://focald.example/")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

                def log_message(self, *a):
                    pass

            srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Odd)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            try:
                for args in (("datasets",), ("top", "cli")):
                    p = self.run_cli(*args, url="http://127.0.0.1:%d" % srv.server_address[1])
                    self.assertEqual(p.returncode, 3, (args, code, p.stderr))
                    self.assertNotIn("Traceback", p.stderr)
                    self.assertIn(code, p.stderr)
            finally:
                srv.shutdown()
                srv.server_close()

    def test_focalctl_server_error_is_3(self):
        """A 5xx (here a stand-in focald that is draining) exits 3, like an unreachable focald."""

        class Draining(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = json.dumps({"type": "urn:focald:problem:draining", "title": "focald is shutting down",
                                   "status": 503, "code": "draining", "detail": "shutting down",
                                   "request_id": "r1"}).encode()
                self.send_response(503)
                self.send_header("Content-Type", "application/problem+json")
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Draining)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            p = self.run_cli("datasets", url="http://127.0.0.1:%d" % srv.server_address[1])
            self.assertEqual(p.returncode, 3)
            self.assertIn("503 draining", p.stderr)
        finally:
            srv.shutdown()
            srv.server_close()


if __name__ == "__main__":
    import run_tests
    sys.exit(run_tests.main([__name__] + sys.argv[1:], modules=[sys.modules[__name__]]))
