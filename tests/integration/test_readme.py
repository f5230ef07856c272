#!/usr/bin/python3
"""The README's quick start, run as written against a real focald, so that it stays true.

usage: BUILD=build /usr/bin/python3 tests/integration/test_readme.py [-v] [unittest names...]

QuickStartTest takes the first sh block of the README's "Quick start" section, points its URLs at a
daemon on a free port, runs it with bash and checks both answers: the batch's losses against softmax focal
loss computed here in float64 from the block's own body, and the hard examples against the ranking those
losses give (and against the order the README's text names). Uses harness.py's daemon and runner; the
last line is "ok N" or "failed K".
"""
import json
import math
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_ADDRESS = "127.0.0.1:8765"


def quick_start():
    """(the sh block, the text after it) of the README's Quick start section."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    section = readme[readme.index("\n## Quick start\n"):]
    section = section[:section.index("\n## ", 1)]
    m = re.search(r"```sh\n(.*?)```\n(.*)", section, re.S)
    if not m:
        raise AssertionError("the Quick start section has no sh block")
    return m.group(1), m.group(2)


def softmax_focal(row, target, gamma=2.0):
    """-(1 - p_t)^gamma log p_t in float64, p_t the softmax probability of the target."""
    top = max(row)
    logz = top + math.log(sum(math.exp(v - top) for v in row))
    log_pt = row[target] - logz
    return -((1.0 - math.exp(log_pt)) ** gamma) * log_pt


def json_documents(text):
    """The JSON documents printed one after the other (curl adds no separator)."""
    dec, docs, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = dec.raw_decode(text, i)
        docs.append(doc)
    return docs


class QuickStartTest(harness.FocaldTestCase):

    def test_readme_quick_start_runs_as_written(self):
        block, prose = quick_start()
        self.assertIn(DEFAULT_ADDRESS, block)  # the address make run listens on
        body = json.loads(re.search(r"-d '(\{.*?\})'", block, re.S).group(1))
        k = int(re.search(r"hard-examples\?k=(\d+)", block).group(1))
        script = "set -euo pipefail\n" + block.replace(DEFAULT_ADDRESS, "127.0.0.1:%d" % self.d.port)
        p = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        docs = json_documents(p.stdout)
        self.assertEqual(len(docs), 2, p.stdout)
        batch, hard = docs
        self.assertEqual(body["loss"]["type"], "softmax_focal")
        want = [softmax_focal(row, t) for row, t in zip(body["logits"], body["targets"])]
        self.assertEqual(batch["accepted"], len(body["ids"]))
        for got, w in zip(batch["losses"], want):
            self.assertClose(got, w, "loss")
        ranked = [i for _, i in sorted(zip(want, body["ids"]), key=lambda x: (-x[0], x[1]))]
        self.assertEqual([it["id"] for it in hard["items"]], ranked[:k])
        self.assertEqual(len(set(want)), len(want))  # no ties: the order is the losses' alone
        # the text after the block names the hardest in the order focald gives them
        named = [m for m in re.findall(r"`([^`]+)`", prose) if m in body["ids"]]
        self.assertEqual(named[:k], ranked[:k])


if __name__ == "__main__":
    sys.exit(harness.main())
