#!/usr/bin/python3
"""Console benchmark (issue 15): the first paint of a 1M-sample data map, and a decision seen in the table.

Starts $BUILD/focald on a fresh database, fills dataset "bench" with --samples ids over two epochs of run
"bench" (bench_daemon.fill, so every sample has a confidence and a variability), then drives Debian's
headless chromium through Selenium, as tests/browser/test_console.py does:
  1. first paint: --loads fresh loads of /ui/#/map/bench (about:blank between them, the HTTP cache
     disabled through the DevTools protocol, so each load fetches the page, its script and the data).
     A script the DevTools protocol adds to each new document (not the console's own code) polls every
     animation frame until the plot area of the #datamap canvas has a non-white pixel; the figure is that
     frame's time since navigation start (performance.timeOrigin). Resource Timing splits it into: before
     the datamap request starts (page, script, the dataset's detail), the request itself (focald's
     answer, start to last byte) and after it (parsing the JSON, drawing, the frame). One load before
     them warms the browser and is not counted.
  2. decision: on /ui/#/hard/bench, --decisions rows in turn: `j` selects the next row, then `c`
     confirms it. A capture listener takes the `c` keydown's timestamp, a MutationObserver on the row's
     status cell the moment it reads "confirmed", and an animation frame callback right after that the
     frame that shows it. Each decision is then checked through the API (GET .../samples/{id}).
Targets (issue 15): first paint <= 1000 ms, decision visible <= 100 ms (median, the frame after the
change). A miss is printed as MISSED; the script exits 0 either way, as the other benchmarks do.

usage: /usr/bin/python3 tests/bench/bench_console.py [--build build] [--samples 1000000] [--loads 7] [--decisions 7]
"""
import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "browser"))
import bench_daemon as bd  # noqa: E402
import chromium  # noqa: E402

from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402

DS = "bench"
PAINT_TARGET_MS, DECISION_TARGET_MS = 1000.0, 100.0

# Added to every new document before its own scripts run. On the data map page it polls each animation
# frame until the plot area (console.js pageMap: 44 px left margin, 10 px top, 560 x 560) holds ink: the
# axes and tick labels lie outside it, so only drawn data counts. The frame's timestamp is relative to
# navigation start.
PAINT_PROBE = r"""
(() => {
  if (!location.hash.startsWith('#/map/')) return;
  const b = window.__bench = { paint: null, frames: 0 };
  const X = 46, Y = 12, S = 556;
  function inked(c) {
    const d = c.getContext('2d').getImageData(X, Y, S, S).data;
    for (let i = 0; i < d.length; i += 4) if (d[i] < 250 || d[i + 1] < 250 || d[i + 2] < 250) return true;
    return false;
  }
  function tick(t) {
    b.frames++;
    const c = document.getElementById('datamap');
    if (c && inked(c)) { b.paint = t; return; }
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);
})();
"""

# Run after the paint: the navigation's and the datamap request's timings, in ms since navigation start.
PAINT_RESULT = r"""
const b = window.__bench;
if (!b || b.paint === null) return null;
const nav = performance.getEntriesByType('navigation')[0];
const res = performance.getEntriesByType('resource');
const dm = res.filter((e) => e.name.includes('/datamap?')).pop();
const dt = res.filter((e) => new URL(e.name).pathname === '/v1/datasets/' + arguments[0]).pop();
const c = document.getElementById('datamap');
return { paint: b.paint, frames: b.frames, dcl: nav.domContentLoadedEventEnd,
         dm_start: dm ? dm.startTime : null, dm_first_byte: dm ? dm.responseStart : null,
         dm_end: dm ? dm.responseEnd : null, dm_bytes: dm ? dm.encodedBodySize : null,
         dt_start: dt ? dt.startTime : null, dt_end: dt ? dt.responseEnd : null,
         js_end: Math.max(...res.filter((e) => /\.(js|css)$/.test(e.name)).map((e) => e.responseEnd)),
         total: c ? Number(c.dataset.total) : null, mode: c ? c.dataset.mode : null };
"""

# Arms the measurement of one decision on row i of the hardest examples.
DECISION_ARM = r"""
const i = arguments[0];
const tr = document.querySelectorAll('#hard tbody tr')[i];
const cell = tr.querySelector('.status');
const b = window.__dec = { id: tr.dataset.id, before: cell.textContent, selected: tr.classList.contains('selected'),
                           key: null, dom: null, frame: null };
const onKey = (ev) => { if (ev.key === 'c' && b.key === null) b.key = ev.timeStamp; };
window.addEventListener('keydown', onKey, true);
const mo = new MutationObserver(() => {
  if (cell.textContent !== 'confirmed' || b.dom !== null) return;
  b.dom = performance.now();
  mo.disconnect();
  window.removeEventListener('keydown', onKey, true);
  requestAnimationFrame(() => { b.frame = performance.now(); });
});
mo.observe(cell, { childList: true, characterData: true, subtree: true });
performance.clearResourceTimings();
return [b.id, b.before, b.selected];
"""

DECISION_RESULT = r"""
const b = window.__dec;
if (!b || b.frame === null) return null;
const rv = performance.getEntriesByType('resource').filter((e) => e.name.includes('/review')).pop();
return { id: b.id, key: b.key, dom: b.dom, frame: b.frame,
         post_start: rv ? rv.startTime : null, post_end: rv ? rv.responseEnd : null };
"""


def new_driver():
    drv = chromium.headless()
    drv.execute_cdp_cmd("Network.enable", {})
    drv.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    drv.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": PAINT_PROBE})
    return drv


def poll(drv, script, args=(), timeout=30.0):
    """Runs script until it returns something other than null; None after timeout seconds."""
    end = time.time() + timeout
    while time.time() < end:
        got = drv.execute_script(script, *args)
        if got is not None:
            return got
        time.sleep(0.02)
    return None


def one_load(drv, base, timeout):
    drv.get("about:blank")
    drv.get(f"{base}/ui/#/map/{DS}")
    return poll(drv, PAINT_RESULT, (DS,), timeout=timeout)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def verdict(value, target):
    return "met" if value <= target else "MISSED"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--samples", type=int, default=1000000)
    ap.add_argument("--loads", type=int, default=7, help="measured page loads of the data map")
    ap.add_argument("--decisions", type=int, default=7, help="measured decisions, one row each (at most 50)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for a paint or a decision")
    args = ap.parse_args()
    if not 1 <= args.decisions <= 50:
        ap.error("--decisions must be 1 to 50 (the table's first page)")
    tmp = tempfile.mkdtemp(prefix="focald-bench-console-")
    port = bd.free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(os.path.join(tmp, "focald.log"), "w")
    proc = subprocess.Popen([f"{args.build}/focald", "--listen", f"127.0.0.1:{port}", "--db", f"{tmp}/f.db",
                             "--log-level", "warn"], stderr=log)
    drv = None
    try:
        bd.wait_ready(port)
        print(f"# focald console benchmark; machine: {os.cpu_count()} cores; command: "
              f"/usr/bin/python3 tests/bench/bench_console.py --build {args.build}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        t0 = time.time()
        for epoch in (0, 1):
            bd.fill(conn, args.samples, epoch=epoch)
        d = bd.get_json(conn, f"/v1/datasets/{DS}")
        print(f"fill: {d['samples']} samples, {d['observations']} observations, two epochs ({time.time() - t0:.0f} s)")

        drv = new_driver()
        warm = one_load(drv, base, args.timeout)
        print("warm-up load (not counted): " + (f"first paint {warm['paint']:.0f} ms" if warm else "no paint"))
        loads = []
        for _ in range(args.loads):
            r = one_load(drv, base, args.timeout)
            if r is None:
                print(f"a load drew nothing within {args.timeout:.0f} s")
                loads.append({"paint": float("inf"), "dm_start": None})
                continue
            if r["total"] != d["samples"]:
                raise RuntimeError(f"the map drew {r['total']} samples, the dataset has {d['samples']}")
            loads.append(r)

        drv.get("about:blank")
        drv.get(f"{base}/ui/#/hard/{DS}")
        rows = poll(drv, "const n = document.querySelectorAll('#hard tbody tr').length; return n ? n : null;",
                    timeout=args.timeout) or 0
        if rows < args.decisions:
            raise RuntimeError(f"the table shows {rows} rows, {args.decisions} decisions asked")
        decisions = []
        for i in range(args.decisions):
            ActionChains(drv).send_keys("j").perform()
            sid, before, selected = drv.execute_script(DECISION_ARM, i)
            if not selected:
                raise RuntimeError(f"row {i} ({sid}) is not selected after j")
            ActionChains(drv).send_keys("c").perform()
            r = poll(drv, DECISION_RESULT, timeout=args.timeout)
            if r is None:
                print(f"row {i} ({sid}) did not show 'confirmed' within {args.timeout:.0f} s")
                decisions.append({"dom": float("inf"), "frame": float("inf"), "post": None})
                continue
            stored = bd.get_json(conn, f"/v1/datasets/{DS}/samples/{sid}")["status"]
            if stored != "confirmed":
                raise RuntimeError(f"{sid}: the table says confirmed, the API says {stored}")
            decisions.append({"id": sid, "before": before, "dom": r["dom"] - r["key"], "frame": r["frame"] - r["key"],
                              "post": (r["post_end"] - r["post_start"]) if r["post_start"] is not None else None})
    finally:
        if drv is not None:
            drv.quit()
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)

    paint = [x["paint"] for x in loads]
    ok = [x for x in loads if x.get("dm_start") is not None]
    before_req = [x["dm_start"] for x in ok]
    request = [x["dm_end"] - x["dm_start"] for x in ok]
    waiting = [x["dm_first_byte"] - x["dm_start"] for x in ok]
    after = [x["paint"] - x["dm_end"] for x in ok]
    dcl = [x["dcl"] for x in ok]
    assets = [x["js_end"] for x in ok]
    detail = [x["dt_end"] - x["dt_start"] for x in ok if x["dt_start"] is not None]
    kib = ok[0]["dm_bytes"] / 1024 if ok and ok[0]["dm_bytes"] else float("nan")
    print(f"\nfirst paint of the data map, {d['samples']} samples, {args.loads} fresh loads, HTTP cache disabled "
          f"(ms since navigation start):")
    print("| measure | median | max |\n|---|---:|---:|")
    print(f"| first frame with the data drawn | **{med(paint):.0f}** | {max(paint):.0f} |")
    print(f"| page ready (DOMContentLoaded) | {med(dcl):.0f} | {max(dcl, default=float('nan')):.0f} |")
    print(f"| console.js and console.css loaded | {med(assets):.0f} | {max(assets, default=float('nan')):.0f} |")
    print(f"| before the datamap request (page, script, dataset detail) | {med(before_req):.0f} | "
          f"{max(before_req, default=float('nan')):.0f} |")
    print(f"|   of which the dataset's detail, GET /v1/datasets/{DS}, start to last byte | {med(detail):.0f} | "
          f"{max(detail, default=float('nan')):.0f} |")
    print(f"| the datamap request, start to last byte ({kib:.0f} KiB) | {med(request):.0f} | "
          f"{max(request, default=float('nan')):.0f} |")
    print(f"|   of which waiting for the first byte | {med(waiting):.0f} | {max(waiting, default=float('nan')):.0f} |")
    print(f"| after it: JSON, drawing, the frame | {med(after):.0f} | {max(after, default=float('nan')):.0f} |")
    dom = [x["dom"] for x in decisions]
    frame = [x["frame"] for x in decisions]
    post = [x["post"] for x in decisions if x["post"] is not None]
    print(f"\ndecision (c on the selected row of the hardest examples), {args.decisions} rows, "
          f"each checked through the API (ms from the keydown):")
    print("| measure | median | max |\n|---|---:|---:|")
    print(f"| status cell reads 'confirmed' (DOM) | {med(dom):.1f} | {max(dom):.1f} |")
    print(f"| the frame that shows it | **{med(frame):.1f}** | {max(frame):.1f} |")
    print(f"| the POST .../review request, start to last byte | {med(post):.1f} | "
          f"{max(post, default=float('nan')):.1f} |")
    print(f"\ntarget first paint <= {PAINT_TARGET_MS:.0f} ms: {verdict(med(paint), PAINT_TARGET_MS)} "
          f"(median {med(paint):.0f} ms)")
    print(f"target decision visible <= {DECISION_TARGET_MS:.0f} ms: {verdict(med(frame), DECISION_TARGET_MS)} "
          f"(median {med(frame):.1f} ms)")


if __name__ == "__main__":
    main()
