#!/usr/bin/python3
"""Integration tests of the console's server side: the static files under /ui/ and the data map.

usage: BUILD=build /usr/bin/python3 tests/integration/test_console.py [-v] [unittest names...]

The static files are checked as a browser would meet them: media types, the Content-Security-Policy
(no inline script), nosniff, ETag revalidation, no token needed for them while the API behind them
keeps asking for it. Local previews (--media-root) are served for images below the root only, whatever
the path, symbolic link or URL form that tries to lead out. The data map's counts, per-cell correctness and points are checked against an
independent binning, in Python, of the confidence, variability and correctness that hard-examples
reports for every sample. The last line of output is "ok N" or "failed K" (see harness.py).
"""
import math
import os
import random
import re
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ALL_STATES = "open,queued,in_review,relabelled,confirmed,dismissed"
UI_ROOT = os.path.join(harness.ROOT, "server", "ui")
TOKEN = "console-test-token-0123456789abcdef"


def csp_directives(value):
    out = {}
    for part in value.split(";"):
        words = part.split()
        if words:
            out[words[0]] = words[1:]
    return out


# ---------------------------------------------------------------------------- the static files

class ConsoleFilesTest(harness.FocaldTestCase):

    def assert_ui_headers(self, r):
        csp = csp_directives(r.header("Content-Security-Policy") or "")
        self.assertEqual(csp.get("script-src"), ["'self'"], r.headers)
        self.assertEqual(csp.get("default-src"), ["'none'"], r.headers)
        for directive, sources in csp.items():
            self.assertNotIn("'unsafe-inline'", sources, directive)
            self.assertNotIn("'unsafe-eval'", sources, directive)
        self.assertEqual(r.header("X-Content-Type-Options"), "nosniff")

    def test_console_redirects_ui_to_ui_slash(self):
        r = self.d.get("/ui")
        self.assertEqual(r.status, 308, r)
        self.assertEqual(r.header("Location"), "/ui/")
        self.assertEqual(r.body, b"")

    def test_console_index_is_html_with_external_scripts_only(self):
        r = self.d.get("/ui/")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("Content-Type"), "text/html; charset=utf-8")
        self.assert_ui_headers(r)
        self.assertEqual(r.header("Cache-Control"), "no-cache")
        with open(os.path.join(UI_ROOT, "index.html"), "rb") as f:
            self.assertEqual(r.body, f.read())
        html = r.body.decode("utf-8")
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I)
        self.assertTrue(scripts, "the page loads a script")
        for attrs, inline in scripts:
            self.assertRegex(attrs, r'src="[a-z0-9._-]+\.js"', "a script from focald, by relative name")
            self.assertEqual(inline.strip(), "", "no inline script")
        self.assertNotRegex(html, r"(?i)\son[a-z]+\s*=", "no inline event handlers")
        for ref in re.findall(r'(?:src|href)="([^"#]+)"', html):
            self.assertNotRegex(ref, r"^(?:[a-z]+:|//)", "nothing from the network: %s" % ref)

    def test_console_every_file_is_served_with_its_media_type(self):
        types = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8"}
        names = sorted(os.listdir(UI_ROOT))
        self.assertIn("console.js", names)
        for name in names:
            r = self.d.get("/ui/" + name)
            self.assertEqual(r.status, 200, (name, r))
            self.assertEqual(r.header("Content-Type"), types[os.path.splitext(name)[1]], name)
            self.assert_ui_headers(r)
            with open(os.path.join(UI_ROOT, name), "rb") as f:
                self.assertEqual(r.body, f.read(), name)
            for path in re.findall(r"""(?:fetch|api)\(\s*["'`](https?:)""", r.body.decode("utf-8")):
                self.fail("%s fetches from the network: %s" % (name, path))

    def test_console_etag_revalidates_with_304(self):
        r = self.d.get("/ui/console.js")
        etag = r.header("ETag")
        self.assertRegex(etag or "", r'^"[0-9a-f]{16}"$')
        r2 = self.d.get("/ui/console.js", headers={"If-None-Match": etag})
        self.assertEqual(r2.status, 304, r2)
        self.assertEqual(r2.body, b"")
        self.assertEqual(r2.header("ETag"), etag)
        r3 = self.d.get("/ui/console.js", headers={"If-None-Match": '"0000000000000000", ' + etag})
        self.assertEqual(r3.status, 304)
        r4 = self.d.get("/ui/console.js", headers={"If-None-Match": '"0000000000000000"'})
        self.assertEqual(r4.status, 200)
        self.assertEqual(r4.body, r.body)
        self.assertNotEqual(self.d.get("/ui/console.css").header("ETag"), etag, "each file its own tag")

    def test_console_head_answers_without_a_body(self):
        g = self.d.get("/ui/console.css")
        h = self.d.request("HEAD", "/ui/console.css")
        self.assertEqual(h.status, 200)
        self.assertEqual(h.body, b"")
        for name in ("Content-Type", "ETag", "Content-Security-Policy", "X-Content-Type-Options"):
            self.assertEqual(h.header(name), g.header(name), name)
        self.assertEqual(h.header("Content-Length"), str(len(g.body)))

    def test_console_unknown_file_is_a_404_problem(self):
        for path in ("/ui/nope.js", "/ui/index.htm", "/ui/..", "/ui/%2e%2e%2fopenapi.json", "/ui/console.js%00",
                     "/ui/a/console.js", "/ui/console.js/"):
            r = self.d.get(path)
            self.assertProblem(r, 404, "not_found")

    def test_console_refuses_query_parameters_and_other_methods(self):
        self.assertProblem(self.d.get("/ui/?x=1"), 400, "bad_query", "x")
        self.assertProblem(self.d.get("/ui/console.js?v=2"), 400, "bad_query", "v")
        r = self.d.post("/ui/console.js", {})
        self.assertProblem(r, 405, "method_not_allowed")
        self.assertIn("GET", r.header("Allow"))


class ConsoleTokenTest(harness.FocaldTestCase):
    """With a token, the console's files are open (a page load carries no Authorization); the API is not."""

    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon(cls.__name__)
        cls.d.env = dict(os.environ, FOCALD_TOKEN=TOKEN)
        cls.d.start()

    def test_console_files_need_no_token_but_the_api_does(self):
        for path in ("/ui", "/ui/", "/ui/console.js"):
            self.assertIn(self.d.get(path).status, (200, 308), path)
        for path in ("/v1/datasets", "/openapi.json", "/ui/../v1/datasets", "/ui/x/../../v1/datasets",
                     "/v1/datasets/x/datamap"):
            r = self.d.get(path)
            self.assertProblem(r, 401, "unauthorized")
        r = self.d.get("/v1/datasets", headers={"Authorization": "Bearer " + TOKEN})
        self.assertEqual(r.status, 200, r)


# ---------------------------------------------------------------------------- the data map

def cell_of(v, lo, hi, n):
    """README "The data map": floor((v - lo) / (hi - lo) * n), the upper edge in the last cell."""
    i = int(math.floor((v - lo) / (hi - lo) * n))
    return min(max(i, 0), n - 1)


def expected_map(items, x0=0.0, x1=0.5, y0=0.0, y1=1.0, bins=64, min_seen=1):
    """Bins hard-examples items as the data map should: (counts, mean correctness per cell, points)."""
    counts = [0] * (bins * bins)
    sums = [0.0] * (bins * bins)
    points = {}
    for it in items:
        if it["seen"] < min_seen:
            continue
        x, y = harness.f32(it["variability"]), harness.f32(it["confidence"])
        if not (x0 <= x <= x1 and y0 <= y <= y1):
            continue
        c = cell_of(y, y0, y1, bins) * bins + cell_of(x, x0, x1, bins)
        counts[c] += 1
        sums[c] += harness.f32(it["correctness"])
        points[it["id"]] = (x, y, harness.f32(it["correctness"]), it["label"], it["status"])
    means = [sums[c] / counts[c] if counts[c] else None for c in range(bins * bins)]
    return counts, means, points


class DataMapTest(harness.FocaldTestCase):
    DS = "carto"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rnd = random.Random(15)
        n = 240
        cls.ids = ["s%03d" % i for i in range(n)]
        labels = [i % 3 for i in range(n)]
        # each sample's own level of confidence and noise: spread over the map
        level = [rnd.uniform(-3, 3) for _ in range(n)]
        noise = [rnd.choice([0.0, 0.5, 2.0, 4.0]) for _ in range(n)]
        for run, steps in (("r1", 6), ("r2", 3)):
            for step in range(steps):
                # r2 sees only the first two thirds of the samples; s000-s009 only once in r1
                ids = [s for i, s in enumerate(cls.ids) if (run == "r1" or i < 160) and (i >= 10 or step == 0)]
                logits = []
                for s in ids:
                    i = int(s[1:])
                    z = level[i] + rnd.gauss(0, 1) * noise[i]
                    row = [0.0, 0.0, 0.0]
                    row[labels[i]] = z
                    logits.append(row)
                cls.d.ok_batch(cls.DS, {"run": run, "step": step, "ids": ids, "logits": logits,
                                        "targets": [labels[int(s[1:])] for s in ids],
                                        "loss": {"type": "softmax_focal"}})
        # a decision, so that points carry more than one status
        r = cls.d.post("/v1/datasets/%s/samples/s100/review" % cls.DS, {"status": "dismissed"})
        assert r.status == 200, r

    def items(self, run="*"):
        r = self.d.hard(self.DS, run=run, k=10000, status=ALL_STATES)
        self.assertEqual(r.status, 200, r)
        return r.json()["items"]

    def datamap(self, **params):
        qs = urllib.parse.urlencode(params)
        return self.d.get("/v1/datasets/%s/datamap%s" % (self.DS, "?" + qs if qs else ""))

    def assert_map(self, got, items, **rect):
        counts, means, points = expected_map(items, **rect)
        self.assertEqual(got["counts"], counts)
        self.assertEqual(got["total"], sum(counts))
        self.assertEqual(len(got["correctness"]), len(means))
        for c, (g, w) in enumerate(zip(got["correctness"], means)):
            if w is None:
                self.assertIsNone(g, "cell %d is empty" % c)
            else:
                self.assertAlmostEqual(g, w, delta=1e-6, msg="cell %d" % c)
        return points

    def test_datamap_counts_match_the_samples_fields_for_each_run(self):
        spread = set()
        for run in ("r1", "r2", "*"):
            items = self.items(run)
            r = self.datamap(run=run, bins=16, limit=0)
            self.assertEqual(r.status, 200, r)
            m = r.json()
            self.assertEqual((m["dataset"], m["run"], m["x"], m["y"], m["bins"]),
                             (self.DS, run, "variability", "confidence", 16))
            self.assertEqual((m["x0"], m["x1"], m["y0"], m["y1"]), (0, 0.5, 0, 1))
            self.assert_map(m, items, bins=16)
            self.assertEqual(m["total"], len(items), "the default rectangle holds every sample")
            self.assertIsNone(m["points"], "more samples than the limit: no points")
            spread.add(sum(1 for c in m["counts"] if c))
        self.assertGreater(min(spread), 8, "the fixture spreads over the map")
        self.assertEqual(self.datamap(run="r2", bins=4).json()["total"], 160)

    def test_datamap_lists_points_when_the_rectangle_holds_few(self):
        items = self.items("r1")
        rect = dict(x0=0.05, x1=0.3, y0=0.2, y1=0.7)
        r = self.datamap(run="r1", bins=8, limit=10000, **rect)
        self.assertEqual(r.status, 200, r)
        m = r.json()
        want = self.assert_map(m, items, bins=8, **rect)
        self.assertGreater(len(want), 5, "the rectangle holds some samples")
        self.assertLess(len(want), len(items), "and not all")
        got = {p["id"]: (harness.f32(p["x"]), harness.f32(p["y"]), harness.f32(p["correctness"]), p["label"], p["status"]) for p in m["points"]}
        self.assertEqual(len(got), len(m["points"]), "each sample once")
        self.assertEqual(got, want)
        # exactly at the limit: listed; one under it: not
        n = m["total"]
        self.assertEqual(len(self.datamap(run="r1", bins=8, limit=n, **rect).json()["points"]), n)
        self.assertIsNone(self.datamap(run="r1", bins=8, limit=n - 1, **rect).json()["points"])

    def test_datamap_min_seen_leaves_out_samples_seen_less(self):
        items = self.items("r1")
        r = self.datamap(run="r1", bins=10, min_seen=2, limit=10000)
        self.assertEqual(r.status, 200, r)
        m = r.json()
        self.assert_map(m, items, bins=10, min_seen=2)
        self.assertEqual(m["total"], len(items) - 10)
        self.assertFalse({"s%03d" % i for i in range(10)} & {p["id"] for p in m["points"]})

    def test_datamap_status_of_points_follows_reviews(self):
        m = self.datamap(run="r1", limit=10000).json()
        status = {p["id"]: p["status"] for p in m["points"]}
        self.assertEqual(status["s100"], "dismissed")
        self.assertEqual(status["s101"], "open")

    def test_datamap_bad_queries_are_400_naming_the_parameter(self):
        for params, field in [({"bins": 0}, "bins"), ({"bins": 257}, "bins"), ({"bins": "x"}, "bins"),
                              ({"limit": -1}, "limit"), ({"limit": 10001}, "limit"), ({"x0": "nan"}, "x0"),
                              ({"y0": "inf"}, "y0"), ({"x1": ""}, "x1"), ({"x0": 0.3, "x1": 0.3}, "x1"),
                              ({"y0": 0.9, "y1": 0.1}, "y1"), ({"min_seen": 0}, "min_seen"),
                              ({"run": "no/such"}, "run"), ({"zoom": 2}, "zoom"), ({"rect": "0,1"}, "rect"),
                              # decimal numbers only: strtod would also take these
                              ({"x1": " 0.5"}, "x1"), ({"x1": "+0.5"}, "x1"), ({"x1": "0x1p-1"}, "x1"),
                              ({"y1": "infinity"}, "y1"), ({"y0": "-nan"}, "y0")]:
            self.assertProblem(self.datamap(**params), 400, "bad_query", field)
        for x0, x1 in (("-0", ".5"), ("-.1", "5E-1"), ("0.0e0", "1e+0")):
            self.assertEqual(self.datamap(x0=x0, x1=x1).status, 200, (x0, x1))
        self.assertProblem(self.d.get("/v1/datasets/%s/datamap?bins=4&bins=5" % self.DS), 400, "bad_query", "bins")

    def test_datamap_unknown_dataset_and_run_are_404(self):
        self.assertProblem(self.d.get("/v1/datasets/nope/datamap"), 404, "dataset_not_found")
        self.assertProblem(self.datamap(run="r9"), 404, "run_not_found", "run")
        self.assertProblem(self.datamap(run="r" * 64), 404, "run_not_found", "run")  # the longest name is read whole
        self.assertProblem(self.datamap(x0="0." + "0" * 200 + "x"), 400, "bad_query", "x0")

    def test_dataset_review_progress_counts_each_state(self):
        r = self.d.get("/v1/datasets/%s" % self.DS)
        self.assertEqual(r.status, 200, r)
        review = r.json()["review"]
        want = {s: 0 for s in ALL_STATES.split(",")}
        for it in self.items("*"):
            want[it["status"]] += 1
        self.assertEqual(review, want)
        self.assertEqual(review["dismissed"], 1)
        self.assertEqual(sum(review.values()), r.json()["samples"])

    def test_datamap_changes_nothing(self):
        before = self.items("*")
        self.datamap(run="r1", limit=10000)
        self.datamap(bins=0)
        self.assertEqual(self.items("*"), before)


# ---------------------------------------------------------------------------- local previews

class MediaRootTest(harness.FocaldTestCase):
    """--media-root: a sample's image under the root is served; nothing outside it, by any path."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory(prefix="focald-media-")
        base = cls.tmp.name
        root = os.path.join(base, "media")
        outside = os.path.join(base, "outside")
        for d in (root, os.path.join(root, "sub"), outside, os.path.join(outside, "dir")):
            os.makedirs(d)
        cls.inside = harness.png(3, 2)
        cls.secret = harness.png(1, 1, (1, 2, 3)) + b"SECRET"
        files = {os.path.join(root, "a.png"): cls.inside, os.path.join(root, "sub", "b b.JPG"): b"\xff\xd8\xff\xe0jpeg",
                 os.path.join(root, "notes.txt"): b"text", os.path.join(root, "fake.png.txt"): b"x",
                 os.path.join(outside, "secret.png"): cls.secret, os.path.join(outside, "dir", "s.png"): cls.secret}
        for path, data in files.items():
            with open(path, "wb") as f:
                f.write(data)
        os.symlink(os.path.join(outside, "secret.png"), os.path.join(root, "link.png"))       # a file link out
        os.symlink(os.path.join(outside, "dir"), os.path.join(root, "dirlink"))               # a directory link out
        os.symlink("a.png", os.path.join(root, "inner.png"))                                  # a link that stays in
        os.symlink(os.path.join(root, "notes.txt"), os.path.join(root, "notes.png"))          # a link to a non-image
        os.mkfifo(os.path.join(root, "fifo.png"))
        os.makedirs(os.path.join(root, "dir.png"))
        cls.root, cls.outside = root, outside
        cls.d = harness.Daemon(cls.__name__, args=["--media-root", os.path.join(base, "media", "sub", "..")]).start()
        cls.uris = {
            "rel": "a.png", "abs": os.path.join(root, "a.png"), "url": "file://" + urllib.parse.quote(root + "/a.png"),
            "url-localhost": "file://localhost" + root + "/a.png", "space": "sub/b b.JPG", "inner": "inner.png",
            "dotdot-in": "sub/../a.png",
            # refused: every way out, and what is not an image file
            "up": "../outside/secret.png", "up2": "sub/../../outside/secret.png", "abs-out": os.path.join(outside, "secret.png"),
            "link": "link.png", "dirlink": "dirlink/s.png", "url-out": "file://" + outside + "/secret.png",
            "url-dotdot": "file://" + root + "/%2e%2e/outside/secret.png", "url-host": "file://evil/" + root + "/a.png",
            "etc": "/etc/passwd", "txt": "notes.txt", "png-link-to-txt": "notes.png", "fake": "fake.png.txt",
            "fifo": "fifo.png", "dir": "dir.png", "missing": "nope.png", "http": "http://127.0.0.1:1/a.png",
            "root": "", "nul": "a.png%00", "root-itself": root,
        }
        meta = {sid: {"uri": uri} for sid, uri in cls.uris.items()}
        ids = list(cls.uris) + ["no-meta"]
        cls.d.ok_batch("med", {"ids": ids, "logits": [[0.0, 1.0]] * len(ids), "targets": [1] * len(ids), "meta": meta})

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.tmp.cleanup()

    def media(self, sid, d=None):
        return (d or self.d).get("/v1/datasets/med/samples/%s/media" % harness.q(sid))

    def test_media_serves_images_under_the_root(self):
        for sid in ("rel", "abs", "url", "url-localhost", "inner", "dotdot-in"):
            r = self.media(sid)
            self.assertEqual(r.status, 200, (sid, r))
            self.assertEqual(r.header("Content-Type"), "image/png", sid)
            self.assertEqual(r.body, self.inside, sid)
            self.assertEqual(r.header("X-Content-Type-Options"), "nosniff")
        r = self.media("space")
        self.assertEqual((r.status, r.header("Content-Type")), (200, "image/jpeg"))

    def test_media_refuses_every_path_out_of_the_root(self):
        for sid in ("up", "up2", "abs-out", "link", "dirlink", "url-out", "url-dotdot", "url-host", "etc", "txt",
                    "png-link-to-txt", "fake", "fifo", "dir", "missing", "http", "root", "nul", "root-itself", "no-meta"):
            r = self.media(sid)
            self.assertProblem(r, 404, "not_found")
            self.assertNotIn(b"SECRET", r.body, sid)
            self.assertNotIn(b"root:", r.body, sid)

    def test_media_unknown_dataset_and_sample(self):
        self.assertProblem(self.d.get("/v1/datasets/nope/samples/rel/media"), 404, "dataset_not_found")
        self.assertProblem(self.media("nobody"), 404, "sample_not_found")

    def test_media_off_without_a_media_root(self):
        d = self.start_daemon()
        d.ok_batch("med", {"ids": ["rel"], "logits": [[0.0, 1.0]], "targets": [1], "meta": {"rel": {"uri": self.uris["abs"]}}})
        self.assertProblem(self.media("rel", d), 404, "not_found")

    def test_media_root_must_be_a_directory(self):
        for bad in (os.path.join(self.root, "a.png"), os.path.join(self.root, "nope")):
            d = harness.Daemon(self.id(), args=["--media-root", bad])
            d.port = harness.free_port()
            import subprocess
            p = subprocess.run(d.command(), capture_output=True, timeout=10)
            self.assertEqual(p.returncode, 2, p)
            self.assertIn(b"--media-root", p.stderr + p.stdout)



# ---------------------------------------------------------------------------- the series of the sample view

def series_model(obs, cap):
    """The series a cap of points keeps of obs (one (step, loss, p_t) per observation, in order): the stride is
    the least power of two that leaves at most cap of observations 0, s, 2s, ...; those are the points."""
    if cap == 0 or not obs:
        return {"stride": 1, "points": []}
    s = 1
    while -(-len(obs) // s) > cap:
        s *= 2
    return {"stride": s, "points": [{"observation": j, "step": obs[j][0], "loss": obs[j][1], "p_t": obs[j][2]}
                                    for j in range(0, len(obs), s)]}


class SeriesTest(harness.FocaldTestCase):
    """A sample's down-sampled series (GET .../samples/{id}, per run) against series_model, live, after a restart
    that loads it from the snapshot and after one that rebuilds it from the batch log, with other caps."""

    def post_steps(self, d, ds, first, last, run="r"):
        """Batches of steps first .. last - 1 of samples a (every step), b (every third) and c (every step, its
        positions all ignored at odd steps, so it has no p_t there; no step given at multiples of 5).
        Returns {(run, id): [(step, loss, p_t)]} of what the answers said."""
        seen = {}
        for step in range(first, last):
            ids = ["a", "c"] + (["b"] if step % 3 == 0 else [])
            rnd = random.Random(step)
            logits = [[rnd.uniform(-3, 3), rnd.uniform(-3, 3), rnd.uniform(-3, 3)] for _ in ids]
            targets = [1, -1 if step % 2 else 2] + ([0] if len(ids) == 3 else [])
            body = {"run": run, "ids": ids, "logits": logits, "targets": targets, "loss": {"type": "softmax_focal"}}
            if step % 5:
                body["step"] = step
            out = d.ok_batch(ds, body)
            for i, sid in enumerate(ids):
                seen.setdefault((run, sid), []).append((body.get("step"), out["losses"][i], out["scores"]["p_t"][i]))
        return seen

    def series(self, d, ds, sid, run="r"):
        r = d.get("/v1/datasets/%s/samples/%s?run=%s" % (ds, sid, run))
        self.assertEqual(r.status, 200, r)
        return r.json()["runs"][0]["series"]

    def check(self, d, ds, obs, cap):
        for (run, sid), o in obs.items():
            self.assertEqual(self.series(d, ds, sid, run), series_model(o, cap), (run, sid, cap, len(o)))

    def test_series_matches_the_model_live_and_across_restarts(self):
        ds = "series"
        # the snapshot after every commit: the first steps reach the database as snapshot rows
        d = self.start_daemon(args=("--series-points", "5", "--snapshot-interval", "0"))
        obs = self.post_steps(d, ds, 0, 29)
        self.check(d, ds, obs, 5)
        self.assertEqual(d.stop(), 0)
        # no snapshot for an hour: what follows is rebuilt from the batch log by the next start
        d2 = self.start_daemon(db_dir=d.db_dir, args=("--series-points", "5", "--snapshot-interval", "3600"))
        self.check(d2, ds, obs, 5)
        more = self.post_steps(d2, ds, 29, 71)
        for k, v in more.items():
            obs.setdefault(k, []).extend(v)
        self.check(d2, ds, obs, 5)
        live = {sid: self.series(d2, ds, sid) for sid in "abc"}
        d2.kill9()
        d3 = self.start_daemon(db_dir=d.db_dir, args=("--series-points", "5", "--snapshot-interval", "3600"))
        self.check(d3, ds, obs, 5)
        self.assertEqual({sid: self.series(d3, ds, sid) for sid in "abc"}, live)
        # the first point is always the first observation; the points are evenly spaced
        for sid in "abc":
            pts = live[sid]["points"]
            self.assertEqual(pts[0]["observation"], 0)
            self.assertEqual({b["observation"] - a["observation"] for a, b in zip(pts, pts[1:])}, {live[sid]["stride"]})
        self.assertEqual(d3.stop(), 0)
        # a smaller cap keeps what it would have kept from the start, from the snapshot and from the log alike
        d4 = self.start_daemon(db_dir=d.db_dir, args=("--series-points", "3"))
        self.check(d4, ds, obs, 3)

    def test_series_grows_exactly_as_the_model_observation_by_observation(self):
        ds = "series-grow"
        for cap in (1, 4, 7):
            d = self.start_daemon(args=("--series-points", str(cap)))
            obs = {}
            for step in range(40):
                for k, v in self.post_steps(d, ds, step, step + 1).items():
                    obs.setdefault(k, []).extend(v)
                self.check(d, ds, obs, cap)
            self.assertEqual(d.stop(), 0)

    def test_series_zero_points_keeps_none(self):
        ds = "series-off"
        d = harness.Daemon(self.id())
        d.env = dict(os.environ, FOCALD_SERIES_POINTS="0")  # the environment, as the config conventions say
        d.start()
        self.addCleanup(self._stop_checked, d)
        obs = self.post_steps(d, ds, 0, 12)
        self.check(d, ds, obs, 0)
        self.assertEqual(self.series(d, ds, "a"), {"stride": 1, "points": []})
        self.assertEqual(d.stop(), 0)
        # turned on later, a series begins with the next observation: its index counts the earlier ones
        d2 = self.start_daemon(db_dir=d.db_dir, args=("--series-points", "4"))
        later = self.post_steps(d2, ds, 12, 20)
        s = self.series(d2, ds, "a")
        want = series_model(later[("r", "a")], 4)
        for p in want["points"]:
            p["observation"] += len(obs[("r", "a")])
        self.assertEqual(s, want)

    def test_series_default_is_sixteen_points(self):
        ds = "series-default"
        obs = self.post_steps(self.d, ds, 0, 50)
        self.check(self.d, ds, obs, 16)


if __name__ == "__main__":
    sys.exit(harness.main())
