#!/usr/bin/python3
"""The console in a real browser: headless Chromium driven by Selenium against a real focald.

usage: BUILD=build /usr/bin/python3 tests/browser/test_console.py [-v] [unittest names...]

Each test class starts $BUILD/focald with a fixture dataset posted through the API; the tests load
/ui/ in Debian's chromium (through chromium-driver and python3-selenium, which make test installs),
act as a user would (drag on the data map, press keys, type a token) and check the result through the
API, never through the page's own idea of it. Screenshots go to $BUILD/test-artifacts/. The browser's
console is checked for Content-Security-Policy violations after each test. The last line of output is
"ok N" or "failed K" (see tests/integration/harness.py).
"""
import json
import os
import random
import sys
import tempfile
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import harness  # noqa: E402

import chromium  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.common.exceptions import StaleElementReferenceException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

ARTIFACTS = os.path.join(os.path.dirname(harness.FOCALD), "test-artifacts")
TOKEN = "browser-test-token-0123456789abcdef"
DS = "cons"
# the console's data map geometry (console.js pageMap): the plot's left and top margins and its size
PAD, TOP, W, H = 44, 10, 560, 560


def new_driver():
    return chromium.headless(browser_log=True)


def post_fixture(d, ds=DS, n=120, runs=(("r1", 6), ("r2", 3)), seed=4):
    """n samples of 3 classes whose p_t levels and noise spread them over the data map."""
    rnd = random.Random(seed)
    ids = ["s%03d" % i for i in range(n)]
    labels = [i % 3 for i in range(n)]
    level = [rnd.uniform(-3, 3) for _ in range(n)]
    noise = [rnd.choice([0.0, 0.5, 2.0, 4.0]) for _ in range(n)]
    meta = {"s001": {"uri": "http://127.0.0.1:%d/ui/console.css" % d.port},
            "s002": {"study_uid": "1.2.840.1", "series_uid": "1.2.840.1.2", "uri": "/data/s002.dcm"}}
    for run, steps in runs:
        for step in range(steps):
            logits = []
            for i in range(n):
                row = [0.0, 0.0, 0.0]
                row[labels[i]] = level[i] + rnd.gauss(0, 1) * noise[i]
                logits.append(row)
            body = {"run": run, "step": step, "ids": ids, "logits": logits, "targets": labels,
                    "loss": {"type": "softmax_focal"}}
            if step == 0:
                body["meta"] = meta
            d.ok_batch(ds, body)
    return ids


class ConsoleBrowserCase(harness.FocaldTestCase):
    daemon_env = None

    @classmethod
    def setUpClass(cls):
        cls.d = harness.Daemon(cls.__name__, args=cls.daemon_args)
        if cls.daemon_env:
            cls.d.env = dict(os.environ, **cls.daemon_env)
        cls.d.start()
        cls.fixture()
        os.makedirs(ARTIFACTS, exist_ok=True)
        cls.driver = new_driver()

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        super().tearDownClass()

    @classmethod
    def fixture(cls):
        post_fixture(cls.d)

    def setUp(self):
        self.driver.get("about:blank")
        self.driver.get_log("browser")  # drop what earlier tests left

    def tearDown(self):
        self.driver.save_screenshot(os.path.join(ARTIFACTS, self.id().rsplit(".", 1)[-1] + ".png"))
        csp = [e["message"] for e in self.driver.get_log("browser") if "Content Security Policy" in e["message"]]
        self.assertEqual(csp, [], "the page broke its Content-Security-Policy")

    # -- helpers

    def api(self, method, path, body=None):
        headers = {"Authorization": "Bearer " + TOKEN} if self.daemon_env else None
        r = self.d.request(method, path, body, headers=headers)
        self.assertLess(r.status, 300, r)
        return r.json()

    def open(self, hash_path):
        self.driver.get("http://127.0.0.1:%d/ui/#/%s" % (self.d.port, hash_path))

    def wait(self, cond, timeout=10, msg=""):
        # an element found by cond may be replaced before it is read (the page renders again after a
        # decision): that poll is tried again, as one that found nothing is
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)).until(lambda drv: cond(), msg)

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def wait_for(self, css, timeout=10):
        return self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, css), timeout, "no %s" % css)[0]

    def press(self, keys):
        ActionChains(self.driver).send_keys(keys).perform()

    def canvas_pixels(self):
        """The data map canvas as (width, height, RGBA bytes)."""
        w, h, data = self.driver.execute_script(
            "const c = document.getElementById('datamap');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "return [c.width, c.height, Array.from(d)];")
        return w, h, data

    def map_query(self, **params):
        return self.api("GET", "/v1/datasets/%s/datamap?%s" % (DS, urllib.parse.urlencode(params)))


def to_px(x, y, rect):
    return (PAD + (x - rect["x0"]) / (rect["x1"] - rect["x0"]) * W,
            TOP + H - (y - rect["y0"]) / (rect["y1"] - rect["y0"]) * H)


def is_white(data, w, x, y):
    i = 4 * (int(y) * w + int(x))
    return data[i] >= 250 and data[i + 1] >= 250 and data[i + 2] >= 250


FULL = {"x0": 0, "x1": 0.5, "y0": 0, "y1": 1}


class DataMapBrowserTest(ConsoleBrowserCase):

    @classmethod
    def fixture(cls):
        post_fixture(cls.d)
        post_fixture(cls.d, ds="big", n=2500, runs=(("r1", 3),), seed=9)

    def test_browser_datamap_draws_its_points(self):
        self.open("map/%s?run=r1" % DS)
        canvas = self.wait_for("#datamap[data-mode]")
        self.assertEqual(canvas.get_attribute("data-mode"), "points")
        m = self.map_query(run="r1", limit=10000)
        self.assertEqual(int(canvas.get_attribute("data-total")), m["total"])
        w, h, data = self.canvas_pixels()
        occupied = set()
        for p in m["points"]:
            x, y = to_px(p["x"], p["y"], FULL)
            self.assertFalse(is_white(data, w, x, y), "no dot at %s (%r)" % (p["id"], p))
            occupied.add((int(x) // 10, int(y) // 10))
        # somewhere in the plot far from every point stays blank
        empty = [(gx, gy) for gx in range(PAD // 10 + 1, (PAD + W) // 10 - 1) for gy in range(2, (TOP + H) // 10 - 1)
                 if not any((gx + dx, gy + dy) in occupied for dx in (-1, 0, 1) for dy in (-1, 0, 1))]
        self.assertTrue(empty, "the fixture leaves part of the map empty")
        for gx, gy in empty[:50]:
            self.assertTrue(is_white(data, w, gx * 10 + 5, gy * 10 + 5), "ink at an empty place %r" % ((gx, gy),))

    def test_browser_datamap_bins_a_large_dataset(self):
        self.open("map/big")
        canvas = self.wait_for("#datamap[data-mode]")
        self.assertEqual(canvas.get_attribute("data-mode"), "bins")
        m = self.api("GET", "/v1/datasets/big/datamap?bins=64&limit=0")
        self.assertEqual(int(canvas.get_attribute("data-total")), 2500)
        w, h, data = self.canvas_pixels()
        cw, ch = W / 64, H / 64
        filled = 0
        for j in range(64):
            for i in range(64):
                cx, cy = PAD + (i + 0.5) * cw, TOP + H - (j + 0.5) * ch
                if m["counts"][j * 64 + i]:
                    filled += 1
                    self.assertFalse(is_white(data, w, cx, cy), "cell %d,%d has samples but no ink" % (i, j))
                elif i % 7 == 0 and j % 7 == 0 and not any(
                        m["counts"][jj * 64 + ii] for jj in range(max(0, j - 1), min(64, j + 2))
                        for ii in range(max(0, i - 1), min(64, i + 2))):
                    self.assertTrue(is_white(data, w, cx, cy), "cell %d,%d is empty but inked" % (i, j))
        self.assertGreater(filled, 20)

    def test_browser_brushing_a_region_lists_its_samples(self):
        self.open("map/%s?run=r1" % DS)
        canvas = self.wait_for("#datamap[data-mode]")
        m = self.map_query(run="r1", limit=10000)
        # a rectangle around the middle of the points
        xs = sorted(p["x"] for p in m["points"])
        ys = sorted(p["y"] for p in m["points"])
        rect = {"x0": xs[len(xs) // 5], "x1": xs[4 * len(xs) // 5], "y0": ys[len(ys) // 5], "y1": ys[4 * len(ys) // 5]}
        ax, ay = to_px(rect["x0"], rect["y1"], FULL)
        bx, by = to_px(rect["x1"], rect["y0"], FULL)
        # offsets are from the element's centre, which is the centre of the drawing inside its border
        cw, chh = int(canvas.get_attribute("width")), int(canvas.get_attribute("height"))
        (ActionChains(self.driver).move_to_element_with_offset(canvas, int(ax - cw / 2), int(ay - chh / 2)).click_and_hold()
         .move_to_element_with_offset(canvas, int(bx - cw / 2), int(by - chh / 2)).release().perform())
        self.wait_for("#brushed tbody tr")
        listed = {tr.get_attribute("data-id") for tr in self.driver.find_elements(By.CSS_SELECTOR, "#brushed tbody tr")}
        # every point clearly inside is listed; none clearly outside is (a pixel of slack at the edges)
        slack_x, slack_y = 2 * 0.5 / W, 2 * 1.0 / H
        inside = {p["id"] for p in m["points"] if rect["x0"] + slack_x < p["x"] < rect["x1"] - slack_x
                  and rect["y0"] + slack_y < p["y"] < rect["y1"] - slack_y}
        near = {p["id"] for p in m["points"] if rect["x0"] - slack_x <= p["x"] <= rect["x1"] + slack_x
                and rect["y0"] - slack_y <= p["y"] <= rect["y1"] + slack_y}
        self.assertTrue(inside, "the rectangle holds samples")
        self.assertLessEqual(inside, listed)
        self.assertLessEqual(listed, near)
        self.assertIn("%d samples selected" % len(listed), self.find("#brush-list h3").text)
        # zoom to it: the map now holds the selection only
        self.find("#zoom").click()
        self.wait(lambda: "x0=" in self.driver.current_url and self.driver.find_elements(By.CSS_SELECTOR, "#datamap[data-mode]"))
        total = int(self.find("#datamap").get_attribute("data-total"))
        self.assertEqual(total, len(listed))


class DecisionsBrowserTest(ConsoleBrowserCase):

    def sample(self, sid):
        return self.api("GET", "/v1/datasets/%s/samples/%s" % (DS, sid))

    def set_reviewer(self, name):
        who = self.find("#reviewer")
        who.clear()
        who.send_keys(name + "\t")

    def test_browser_confirm_and_relabel_by_keyboard(self):
        self.open("sample/%s/s005" % DS)
        self.wait_for("#sample[data-id='s005'] .decisions")
        self.set_reviewer("alice")
        self.find("body").click()
        self.press("c")
        self.wait(lambda: self.sample("s005")["status"] == "confirmed", msg="c confirms")
        self.wait(lambda: self.find("#sample-status").text == "confirmed", msg="the page shows it")
        trail = self.api("GET", "/v1/datasets/%s/samples/s005/reviews" % DS)["reviews"]
        self.assertEqual((trail[-1]["to"], trail[-1]["reviewer"]), ("confirmed", "alice"))

        self.open("sample/%s/s006" % DS)
        self.wait_for("#sample[data-id='s006'] .decisions")
        self.press("r")
        picker = self.wait_for("#class-picker")
        self.assertEqual(len(picker.find_elements(By.CSS_SELECTOR, "[data-class]")), 3, "the run's three classes")
        self.press("2")
        self.wait(lambda: self.sample("s006")["status"] == "relabelled", msg="r 2 relabels")
        self.assertEqual(self.sample("s006")["corrected_label"], 2)
        # u reopens; d dismisses
        self.wait(lambda: self.find("#sample-status").text == "relabelled")
        self.press("u")
        self.wait(lambda: self.sample("s006")["status"] == "open", msg="u reopens")
        self.wait(lambda: self.find("#sample-status").text == "open")
        self.press("d")
        self.wait(lambda: self.sample("s006")["status"] == "dismissed", msg="d dismisses")
        # Escape in the picker changes nothing
        self.open("sample/%s/s007" % DS)
        self.wait_for("#sample[data-id='s007'] .decisions")
        self.press("r")
        self.wait_for("#class-picker")
        self.press("\ue00c")  # Escape
        self.wait(lambda: not self.driver.find_elements(By.CSS_SELECTOR, "#class-picker"))
        self.assertEqual(self.sample("s007")["status"], "open")

    def test_browser_decision_whose_answer_is_lost_is_sent_again_with_its_key(self):
        """Each decision goes with an Idempotency-Key; when the answer is lost after focald committed it, the
        console sends it again with the same key, and focald records it once."""
        self.open("sample/%s/s008" % DS)
        self.wait_for("#sample[data-id='s008'] .decisions")
        self.driver.execute_script(
            "const f = window.fetch; window.sentKeys = []; let lose = 1;"
            "window.fetch = (url, opts) => {"
            "  if (!new URL(url, location.href).pathname.endsWith('/review')) return f(url, opts);"
            "  window.sentKeys.push(opts.headers['Idempotency-Key']);"
            "  return f(url, opts).then((res) => lose-- > 0 ? Promise.reject(new TypeError('lost')) : res);"
            "};")
        self.find("body").click()
        self.press("c")
        self.wait(lambda: self.find("#sample-status").text == "confirmed", msg="the page shows the decision")
        keys = self.driver.execute_script("return window.sentKeys")
        self.assertEqual(len(keys), 2, keys)
        self.assertEqual(keys[0], keys[1], "the retry has the first one's key")
        self.assertRegex(keys[0], r'^"[0-9a-f-]{32,36}"$')
        trail = self.api("GET", "/v1/datasets/%s/samples/s008/reviews" % DS)["reviews"]
        self.assertEqual([e["to"] for e in trail], ["confirmed"], "recorded once")
        # the next decision has a key of its own
        self.press("u")
        self.wait(lambda: self.sample("s008")["status"] == "open", msg="u reopens")
        keys = self.driver.execute_script("return window.sentKeys")
        self.assertEqual(len(keys), 3)
        self.assertNotEqual(keys[2], keys[0])

    def test_browser_sample_view_preview_and_ohif_link(self):
        self.open("sample/%s/s002" % DS)
        link = self.wait_for("#ohif-link")
        self.assertEqual(link.get_attribute("href"), self.sample("s002")["viewer_url"])
        self.assertIn("StudyInstanceUIDs=1.2.840.1", link.get_attribute("href"))
        self.assertFalse(self.driver.find_elements(By.CSS_SELECTOR, ".preview img"), "no preview for a local file")
        self.open("sample/%s/s001" % DS)
        img = self.wait_for(".preview img")
        self.assertEqual(img.get_attribute("src"), "http://127.0.0.1:%d/ui/console.css" % self.d.port)
        self.assertFalse(self.driver.find_elements(By.CSS_SELECTOR, "#ohif-link"))

    def series_pixels(self, run):
        """The run's series chart on the sample page as (width, height, RGBA bytes, data-points, data-x)."""
        return self.driver.execute_script(
            "const c = document.querySelector(`.series-chart[data-run='${arguments[0]}']`);"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "return [c.width, c.height, Array.from(d), +c.dataset.points, c.dataset.x];", run)

    def test_browser_sample_view_charts_the_series(self):
        sample = self.sample("s010")
        self.open("sample/%s/s010" % DS)
        self.wait_for(".series-chart[data-run='r2']")
        # the chart's plot area (inside its margins: console.js SERIES_PAD) holds the two lines' colours
        colours = {"loss": (0x1a, 0x56, 0xdb), "p_t": (0xd9, 0x77, 0x06)}
        for r in sample["runs"]:
            w, h, data, npoints, x = self.series_pixels(r["run"])
            self.assertEqual(npoints, len(r["series"]["points"]), r["run"])
            self.assertGreater(npoints, 1, "the fixture observes every sample several times")
            self.assertEqual(x, "step")
            seen = {k: 0 for k in colours}
            ink = 0
            for y in range(12 + 1, h - 30 - 1):
                for xx in range(48 + 1, w - 40 - 1):
                    i = 4 * (y * w + xx)
                    px = tuple(data[i:i + 3])
                    ink += px[0] < 250 or px[1] < 250 or px[2] < 250
                    for k, c in colours.items():
                        seen[k] += all(abs(a - b) <= 12 for a, b in zip(px, c))
            self.assertGreater(ink, 200, "the plot area is not blank (run %s)" % r["run"])
            for k, n in seen.items():
                self.assertGreater(n, 20, "the %s line is drawn (run %s)" % (k, r["run"]))

    def test_browser_walks_a_queue_to_the_end(self):
        self.api("POST", "/v1/datasets/%s/queues" % DS, {"name": "walk", "size": 4, "by": "mean_loss", "run": "r1"})
        items = self.api("GET", "/v1/datasets/%s/queues/walk" % DS)["items"]
        order = [it["id"] for it in items]
        self.open("queue/%s/walk" % DS)
        keys = ["c", "d", "r", "c"]
        for i, (sid, key) in enumerate(zip(order, keys)):
            self.wait_for("#queue-sample[data-id='%s']" % sid)
            self.assertIn("%d / 4 reviewed" % i, self.find("#queue-progress").text)
            self.press(key)
            if key == "r":
                self.wait_for("#class-picker")
                self.press("1")
        self.wait_for("#queue-done")
        self.assertIn("4 / 4 reviewed", self.find("#queue-progress").text)
        q = self.api("GET", "/v1/datasets/%s/queues/walk" % DS)
        self.assertEqual(q["reviewed"], 4)
        got = {it["id"]: (it["status"], it["corrected_label"]) for it in q["items"]}
        self.assertEqual(got, {order[0]: ("confirmed", None), order[1]: ("dismissed", None),
                               order[2]: ("relabelled", 1), order[3]: ("confirmed", None)})
        # u at the end reopens the last decision and shows that sample again
        self.press("u")
        self.wait_for("#queue-sample[data-id='%s']" % order[3])
        self.assertEqual(self.api("GET", "/v1/datasets/%s/samples/%s" % (DS, order[3]))["status"], "open")
        self.assertIn("3 / 4 reviewed", self.find("#queue-progress").text)

    def test_browser_a_malformed_address_is_an_error_not_a_hang(self):
        """A hash with broken percent-encoding (typed, or a mangled link) says so; the next address works."""
        for bad in ("sample/%s/%%E0%%A4" % DS, "sample/%s/%%" % DS, "hard/%%zz"):
            with self.subTest(address=bad):
                self.open(bad)
                err = self.wait_for("#main p.error")
                self.assertIn("not a valid console address", err.text)
                self.assertNotIn("Loading", self.find("#main").text)
        self.driver.execute_script("location.hash = '#/sample/%s/s003'" % DS)
        self.wait_for("#sample[data-id='s003'] .decisions")
        errors = [e["message"] for e in self.driver.get_log("browser") if "Uncaught" in e["message"]]
        self.assertEqual(errors, [])

    def test_browser_a_page_overtaken_by_a_newer_address_is_never_shown(self):
        """The page of an address left before it loaded neither replaces the newer page nor takes its keys:
        the keys act on the sample shown, the one the address names."""
        self.open("")
        self.wait_for("article.dataset[data-dataset='%s']" % DS)
        # hold the hardest examples' answers back, so the hard page finishes loading after the sample page
        self.driver.execute_script(
            "const f = window.fetch;"
            "window.fetch = (url, opts) => String(url).includes('/hard-examples')"
            "  ? new Promise((r) => setTimeout(r, 1500)).then(() => f(url, opts)) : f(url, opts);"
            "location.hash = '#/hard/%s?run=r1&k=10';" % DS)
        self.wait(lambda: self.find("#main").text.startswith("Loading"))
        self.driver.execute_script("location.hash = '#/sample/%s/s011';" % DS)
        self.wait_for("#sample[data-id='s011'] .decisions")
        time.sleep(2.5)  # the held-back hard page has finished loading by now
        self.assertTrue(self.driver.find_elements(By.CSS_SELECTOR, "#sample[data-id='s011']"), "the sample page stays")
        self.assertFalse(self.driver.find_elements(By.CSS_SELECTOR, "#hard"), "the overtaken hard page is not shown")
        hard_before = self.api("GET", "/v1/datasets/%s/hard-examples?run=r1&k=10" % DS)["items"]
        self.press("jd")
        self.wait(lambda: self.sample("s011")["status"] == "dismissed", msg="d dismisses the sample shown")
        for it in hard_before:
            if it["id"] != "s011":
                self.assertEqual(self.sample(it["id"])["status"], it["status"], it["id"])

    def test_browser_queue_mode_walks_past_decisions_made_in_another_tab(self):
        """Two reviewers (or tabs) on one queue: a decision the other made meanwhile is refused with 409
        and changes nothing; the page then counts it and walks on to the next sample still undecided,
        passing over those the other decided too. The hard table and the sample page show the state as
        it is after a 409."""
        self.api("POST", "/v1/datasets/%s/queues" % DS, {"name": "tabs", "size": 5, "by": "mean_loss", "run": "r1"})
        order = [it["id"] for it in self.api("GET", "/v1/datasets/%s/queues/tabs" % DS)["items"]]
        self.open("queue/%s/tabs" % DS)
        self.wait_for("#queue-sample[data-id='%s']" % order[0])
        # the other tab: confirms the first three
        for sid in order[:3]:
            self.api("POST", "/v1/datasets/%s/samples/%s/review" % (DS, sid), {"status": "confirmed", "reviewer": "bob"})
        self.press("d")
        self.wait(lambda: "cannot go to dismissed" in self.find("#toast").text, msg="the 409 is shown")
        self.wait_for("#queue-sample[data-id='%s']" % order[3])
        self.assertIn("3 / 5 reviewed", self.find("#queue-progress").text)
        self.assertEqual([self.sample(sid)["status"] for sid in order[:3]], ["confirmed"] * 3)
        self.press("d")
        self.wait(lambda: self.sample(order[3])["status"] == "dismissed", msg="d dismisses the sample shown")
        self.wait_for("#queue-sample[data-id='%s']" % order[4])
        self.assertIn("4 / 5 reviewed", self.find("#queue-progress").text)
        # the sample page: a 409 shows the sample's state now
        self.open("sample/%s/%s" % (DS, order[4]))
        self.wait(lambda: self.find("#sample-status").text == "queued")
        self.api("POST", "/v1/datasets/%s/samples/%s/review" % (DS, order[4]), {"status": "confirmed"})
        self.press("c")
        self.wait(lambda: self.find("#sample-status").text == "confirmed", msg="the page shows the other's decision")
        # the hard table: the row shows it too
        self.open("hard/%s?run=r1&k=10" % DS)
        self.wait_for("#hard tbody tr")
        first = self.driver.find_elements(By.CSS_SELECTOR, "#hard tbody tr")[0].get_attribute("data-id")
        self.api("POST", "/v1/datasets/%s/samples/%s/review" % (DS, first), {"status": "dismissed"})
        self.press("jc")
        self.wait(lambda: self.driver.find_elements(By.CSS_SELECTOR, "#hard tbody tr .status")[0].text == "dismissed")
        self.assertEqual(self.sample(first)["status"], "dismissed")

    def test_browser_queue_mode_shows_the_sample_of_the_last_key(self):
        """j pressed twice while the first sample is slow to load shows the second one, and the decision
        keys act on it (and u reopens it), whichever answer comes last."""
        self.api("POST", "/v1/datasets/%s/queues" % DS, {"name": "skip", "size": 5, "by": "max_loss", "run": "r2"})
        order = [it["id"] for it in self.api("GET", "/v1/datasets/%s/queues/skip" % DS)["items"]]
        self.open("queue/%s/skip" % DS)
        self.wait_for("#queue-sample[data-id='%s']" % order[0])
        self.driver.execute_script(
            "const f = window.fetch, slow = '/samples/' + encodeURIComponent(arguments[0]);"
            "window.fetch = (url, opts) => String(url).endsWith(slow)"
            "  ? new Promise((r) => setTimeout(r, 1500)).then(() => f(url, opts)) : f(url, opts);", order[1])
        self.press("jj")
        self.wait_for("#queue-sample[data-id='%s']" % order[2])
        time.sleep(2.5)  # the slow answer for the first j has come by now
        self.assertEqual(self.find("#queue-sample").get_attribute("data-id"), order[2])
        self.assertIn("sample 3 of 5", self.find("#queue-mode").text)
        self.press("c")
        self.wait(lambda: self.sample(order[2])["status"] == "confirmed", msg="c confirms the sample shown")
        self.assertEqual(self.sample(order[1])["status"], "queued")
        self.wait_for("#queue-sample[data-id='%s']" % order[3])
        self.press("u")
        self.wait(lambda: self.sample(order[2])["status"] == "open", msg="u reopens the sample decided")


class HardExamplesBrowserTest(ConsoleBrowserCase):

    def test_browser_hard_examples_page_and_filters(self):
        self.open("hard/%s?by=mean_loss&run=r1&k=20" % DS)
        self.wait_for("#hard tbody tr")
        want = self.api("GET", "/v1/datasets/%s/hard-examples?by=mean_loss&run=r1&k=40" % DS)["items"]
        rows = lambda: [tr.get_attribute("data-id") for tr in self.driver.find_elements(By.CSS_SELECTOR, "#hard tbody tr")]
        self.assertEqual(rows(), [it["id"] for it in want[:20]])
        self.find("#more").click()
        self.wait(lambda: len(rows()) == 40, msg="the next page is appended")
        self.assertEqual(rows(), [it["id"] for it in want])
        # a label filter through the form
        lab = self.find("#hard-form input[name=label]")
        lab.send_keys("1")
        self.find("#hard-form button[type=submit]").click()
        self.wait(lambda: "label=1" in self.driver.current_url)
        self.wait(lambda: rows() and all(int(r[1:]) % 3 == 1 for r in rows()), msg="only label 1")
        want1 = self.api("GET", "/v1/datasets/%s/hard-examples?by=mean_loss&run=r1&label=1&k=20" % DS)["items"]
        self.wait(lambda: rows() == [it["id"] for it in want1])

    def test_browser_hard_table_decisions_by_keyboard(self):
        self.open("hard/%s?by=max_loss&run=r2&k=10" % DS)
        self.wait_for("#hard tbody tr")
        ids = [tr.get_attribute("data-id") for tr in self.driver.find_elements(By.CSS_SELECTOR, "#hard tbody tr")]
        status = lambda sid: self.api("GET", "/v1/datasets/%s/samples/%s" % (DS, sid))["status"]
        cell = lambda i: self.driver.find_elements(By.CSS_SELECTOR, "#hard tbody tr .status")[i].text
        self.press("jjc")  # the second row
        self.wait(lambda: cell(1) == "confirmed", msg="the table shows the decision")
        self.assertEqual(status(ids[1]), "confirmed")
        self.assertEqual(status(ids[0]), "open")
        self.press("k")
        self.press("r")
        self.wait_for("#class-picker")
        self.press("2")
        self.wait(lambda: cell(0) == "relabelled")
        s = self.api("GET", "/v1/datasets/%s/samples/%s" % (DS, ids[0]))
        self.assertEqual((s["status"], s["corrected_label"]), ("relabelled", 2))
        # the relabel feed page lists it
        self.open("relabels/%s" % DS)
        row = self.wait_for("#relabels tbody tr[data-id='%s']" % ids[0])
        self.assertEqual(row.find_elements(By.TAG_NAME, "td")[1].text, "2")

    def test_browser_overview_lists_datasets_runs_and_queues(self):
        self.api("POST", "/v1/datasets/%s/queues" % DS, {"name": "ov", "size": 3})
        self.open("")
        art = self.wait_for("article.dataset[data-dataset='%s']" % DS)
        text = art.text
        self.assertIn("120 samples", text)
        detail = self.api("GET", "/v1/datasets/%s" % DS)
        self.assertIn("%d observations" % detail["observations"], text)
        runs = [tr.find_elements(By.TAG_NAME, "td")[0].text for tr in art.find_elements(By.CSS_SELECTOR, "table.runs tbody tr")]
        self.assertEqual(runs, [r["name"] for r in detail["runs"]])
        self.assertIn("0 / 3 reviewed", text)
        decided = sum(detail["review"][k] for k in ("relabelled", "confirmed", "dismissed"))
        self.assertIn("%d / 120 decided" % decided, text)
        for k, n in detail["review"].items():
            self.assertIn("%s %d" % (k, n), art.find_element(By.CSS_SELECTOR, "p.review").text)
        self.assertEqual(detail["review"]["queued"], 3, "the queue's samples")


    def test_browser_overview_passes_over_a_dataset_deleted_while_it_loads(self):
        """A dataset in the list that is gone by the time its detail is asked for (404) is left out; the
        others are shown, not an error."""
        self.open("")
        self.wait_for("article.dataset[data-dataset='%s']" % DS)
        # the list names one more dataset than there is, as it would just before a deletion
        self.driver.execute_script(
            "const f = window.fetch;"
            "window.fetch = async (url, opts) => {"
            "  const r = await f(url, opts);"
            "  if (String(url) !== '/v1/datasets') return r;"
            "  const j = await r.json();"
            "  j.datasets.unshift(Object.assign({}, j.datasets[0], {name: 'gone-meanwhile'}));"
            "  return new Response(JSON.stringify(j), {status: 200, headers: {'Content-Type': 'application/json'}});"
            "};"
            "document.querySelector('article.dataset').dataset.before = '1';"
            "location.hash = '#/overview';")
        self.wait_for("article.dataset[data-dataset='%s']:not([data-before]), #main .error" % DS)
        self.assertFalse(self.driver.find_elements(By.CSS_SELECTOR, "article.dataset[data-dataset='gone-meanwhile']"))
        self.assertFalse(self.driver.find_elements(By.CSS_SELECTOR, "#main .error"), self.find("#main").text)


class MediaRootBrowserCase(ConsoleBrowserCase):
    """A focald with a --media-root of its own holding one image, x.png of image_size pixels; fixture() posts
    the samples that point at it."""
    image_size = (1, 1)

    @classmethod
    def setUpClass(cls):
        cls.media = tempfile.TemporaryDirectory(prefix="focald-browser-media-")
        cls.daemon_args = ("--media-root", cls.media.name)
        with open(os.path.join(cls.media.name, "x.png"), "wb") as f:
            f.write(harness.png(*cls.image_size))
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.media.cleanup()


class MediaBrowserTest(MediaRootBrowserCase):
    """--media-root: the sample view previews a local image (fetched with the API, shown from a blob: URL)."""
    image_size = (7, 5)

    @classmethod
    def fixture(cls):
        cls.d.ok_batch(DS, {"ids": ["img", "away"], "logits": [[0.0, 1.0], [1.0, 0.0]], "targets": [1, 0],
                            "meta": {"img": {"uri": "x.png"}, "away": {"uri": "../x.png"}}})

    def test_browser_previews_a_local_image_under_the_media_root(self):
        self.open("sample/%s/img" % DS)
        img = self.wait_for("#local-preview")
        self.wait(lambda: self.driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img))
        size = self.driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
        self.assertEqual(size, [7, 5])
        self.assertTrue(img.get_attribute("src").startswith("blob:"))
        self.open("sample/%s/away" % DS)
        self.wait(lambda: "no preview" in self.find("figure.preview").text)
        self.assertFalse(self.driver.find_elements(By.CSS_SELECTOR, "#local-preview"))


# Sample ids a browser cannot put in a URL path as they are (fetch() removes "." and ".." segments, "%2e"
# spellings included) or that must survive percent-encoding; tests/integration/test_review.py has the same family.
ALL = "open,queued,in_review,relabelled,confirmed,dismissed"
AWKWARD = [".", "..", "%2e", "%2E%2e", "a/b", "../x", "?", "#", "%", "a+b", " x", "é ✓"]


class AwkwardIdsBrowserTest(MediaRootBrowserCase):
    """Samples whose ids a browser would rewrite in a path: the console reaches each one (page, preview,
    decisions, queue mode, the hardest-examples table), and every change lands on that sample only."""
    image_size = (3, 2)

    @classmethod
    def fixture(cls):
        for ds in ("dots", "dotsq", "dotsh"):
            n = len(AWKWARD)
            cls.d.ok_batch(ds, {"ids": AWKWARD, "logits": [[0.0, 0.2 * i] for i in range(n)], "targets": [0] * n,
                                "meta": {sid: {"uri": "x.png", "n": i} for i, sid in enumerate(AWKWARD)}})

    def status(self, ds, sid):
        return self.api("GET", "/v1/datasets/%s/samples/%s" % (ds, harness.q(sid)))["status"]

    def statuses(self, ds):
        items = self.api("GET", "/v1/datasets/%s/hard-examples?status=%s&k=100" % (ds, ALL))["items"]
        return {it["id"]: it["status"] for it in items}

    def shown(self, css, sid):
        return self.driver.execute_script("const e = document.querySelector(arguments[0]); return !!e && e.dataset.id === arguments[1];",
                                          css, sid)

    def test_browser_awkward_ids_sample_page_preview_and_decision(self):
        for i, sid in enumerate(AWKWARD):
            with self.subTest(id=sid):
                self.open("sample/dots/%s" % harness.q(sid))
                self.wait(lambda: self.shown("#sample", sid), msg="the page of %r" % sid)
                self.wait_for("#sample .decisions")
                # the meta and the preview are this sample's (the media route got the right id)
                self.assertIn('"n": %d' % i, self.find("pre.meta").text)
                img = self.wait_for("#local-preview")
                self.wait(lambda: self.driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img))
                self.find("body").click()
                self.press("c")
                self.wait(lambda: self.status("dots", sid) == "confirmed", msg="c confirms %r" % sid)
                self.wait(lambda: self.find("#sample-status").text == "confirmed", msg="the page shows it")
        self.assertEqual(self.statuses("dots"), {sid: "confirmed" for sid in AWKWARD}, "each decision on its own sample")
        errors = [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]
        self.assertEqual(errors, [])

    def test_browser_awkward_ids_queue_mode(self):
        self.api("POST", "/v1/datasets/dotsq/queues", {"name": "dots", "size": len(AWKWARD)})
        order = [it["id"] for it in self.api("GET", "/v1/datasets/dotsq/queues/dots")["items"]]
        self.assertEqual(sorted(order), sorted(AWKWARD))
        self.open("queue/dotsq/dots")
        for i, sid in enumerate(order):
            self.wait(lambda: self.shown("#queue-sample", sid), msg="queue mode shows %r" % sid)
            self.press("d")
            self.wait(lambda: self.status("dotsq", sid) == "dismissed", msg="d dismisses %r" % sid)
        self.wait_for("#queue-done")
        self.assertEqual(self.statuses("dotsq"), {sid: "dismissed" for sid in AWKWARD})

    def test_browser_awkward_ids_hard_table_and_links(self):
        self.open("hard/dotsh?k=100")
        self.wait_for("#hard tbody tr")
        rows = [tr.get_attribute("data-id") for tr in self.driver.find_elements(By.CSS_SELECTOR, "#hard tbody tr")]
        self.assertEqual(sorted(rows), sorted(AWKWARD))
        for i, sid in enumerate(rows):
            self.press("jc")  # the next row
            self.wait(lambda: self.status("dotsh", sid) == "confirmed", msg="c confirms row %d, %r" % (i, sid))
        self.assertEqual(self.statuses("dotsh"), {sid: "confirmed" for sid in AWKWARD})
        # each row's link opens that sample's page
        for sid in rows:
            with self.subTest(id=sid):
                self.open("hard/dotsh?k=100&status=confirmed")
                link = self.wait(lambda: [a for a in self.driver.find_elements(By.CSS_SELECTOR, "#hard tbody tr a")
                                          if a.text == sid.strip()], msg="the link of %r" % sid)[0]
                link.click()
                self.wait(lambda: self.shown("#sample", sid), msg="the page of %r" % sid)


# Rewrites every viewer_url the console reads into a script link. focald refuses a --viewer-url that is not
# http(s), so none of its answers holds one; the console must still show one as text (from a proxy, say). The
# script runs in each page before the console's own, through the browser's DevTools protocol (not the page's
# Content-Security-Policy, which forbids inline scripts).
VIEWER_URL_AS_SCRIPT = """
const parse = JSON.parse;
JSON.parse = function (text, reviver) {
  return parse(text, function (k, v) {
    if (k === 'viewer_url' && typeof v === 'string') v = 'javascript:alert(1)//' + v;
    return reviver ? reviver.call(this, k, v) : v;
  });
};
"""


class UnsafeUrlsBrowserTest(ConsoleBrowserCase):
    """Only absolute http(s) URLs from the data become links or images: a meta uri or viewer link of another
    scheme (here a viewer_url rewritten into a script link as the console reads it) is never clickable nor
    loaded."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": VIEWER_URL_AS_SCRIPT})
    URIS = {"js": "javascript:alert(1)", "JS": "JAVASCRIPT:alert(1)", "sp": " javascript:alert(1)",
            "tab": "java\tscript:alert(1)", "data": "data:image/svg+xml,<svg onload=alert(1)>",
            "vb": "vbscript:msgbox(1)", "rel": "//evil.example/x.png", "ok": "http://127.0.0.1:1/x.png"}

    @classmethod
    def fixture(cls):
        ids = sorted(cls.URIS) + ["dicom"]
        meta = {sid: {"uri": u} for sid, u in cls.URIS.items()}
        meta["dicom"] = {"study_uid": "1.2.3"}
        cls.d.ok_batch(DS, {"ids": ids, "logits": [[0.0, 1.0]] * len(ids), "targets": [0] * len(ids), "meta": meta})

    def links(self):
        return self.driver.execute_script(
            "return [...document.querySelectorAll('a[href], img[src]')].map((e) => e.getAttribute('href') ?? e.getAttribute('src'));")

    def test_browser_unsafe_urls_are_text_never_links_or_images(self):
        for sid in sorted(self.URIS) + ["dicom"]:
            with self.subTest(id=sid):
                self.open("sample/%s/%s" % (DS, sid))
                self.wait_for("#sample[data-id='%s'] .decisions" % sid)
                if sid == "dicom":
                    self.assertTrue(self.driver.execute_script(
                        "return JSON.parse('{\"viewer_url\": \"http://x\"}').viewer_url").startswith("javascript:"))
                    self.assertFalse(self.driver.find_elements(By.CSS_SELECTOR, "#ohif-link"), "no link to a script")
                else:
                    self.wait(lambda: self.URIS[sid] in self.find("figure.preview figcaption").get_attribute("textContent"))
                for u in self.links():
                    self.assertRegex(u, r"^(#|https?://[^/]|blob:|/)", sid)
                self.assertEqual(bool(self.driver.find_elements(By.CSS_SELECTOR, ".preview img:not(#local-preview)")), sid == "ok")


class TokenBrowserTest(ConsoleBrowserCase):
    daemon_env = {"FOCALD_TOKEN": TOKEN}

    @classmethod
    def fixture(cls):
        cls.d.ok_batch = lambda ds, body: cls.d.request(
            "POST", "/v1/datasets/%s/batches" % ds, body, headers={"Authorization": "Bearer " + TOKEN}).json()
        post_fixture(cls.d, n=12, runs=(("r1", 2),))

    def test_browser_asks_for_the_token_and_keeps_it_for_the_tab(self):
        self.open("")
        dialog = self.wait_for("#token-dialog:not([hidden])")
        self.assertTrue(dialog.is_displayed())
        self.find("#token-input").send_keys(TOKEN + "\n")
        self.wait_for("article.dataset[data-dataset='%s']" % DS)
        stored = self.driver.execute_script(
            "return [sessionStorage.getItem('focald.token'), localStorage.length, document.cookie];")
        self.assertEqual(stored, [TOKEN, 0, ""])
        # a wrong token is asked for again
        self.driver.execute_script("sessionStorage.setItem('focald.token', 'wrong-token-wrong-token');")
        self.open("hard/%s" % DS)
        self.driver.refresh()
        self.wait_for("#token-dialog:not([hidden])")
        self.find("#token-input").send_keys(TOKEN + "\n")
        self.wait_for("#hard tbody tr")


if __name__ == "__main__":
    sys.exit(harness.main())
