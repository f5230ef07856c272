#!/usr/bin/python3
"""What the integration tests share: a real focald and the way they talk to it, and their runner.

Daemon starts $BUILD/focald (default build/focald) on a free loopback port with a fresh temporary database
(or a given one), waits for GET /readyz, and stops it with a signal; it can vary the environment, the token,
TLS, the log directory and a command prefix. FocaldTestCase gives a test class one daemon for all its tests,
and per-test daemons through start_daemon; HardeningTestCase starts none of its own. main() runs a test
module: when a test fails, the log (stderr) of every daemon it used is printed, and the last line of output
is "ok N" when all N tests passed, or "failed K" when K failed, preceded by "ok P" for the P that passed
(tests/run-suites counts both kinds of line).

Used by test_api.py, test_hardening.py, test_review.py, test_binary.py, test_segments.py, test_consistency.py,
test_console.py, test_readme.py and tests/browser/test_console.py; tests/upgrade/ takes free_port, q and
poll_until from it. Python standard library only.
"""
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("BUILD", "build")
FOCALD = BUILD if os.path.basename(BUILD) == "focald" else os.path.join(BUILD, "focald")
if not os.path.isabs(FOCALD):
    FOCALD = os.path.join(ROOT, FOCALD)

# The newest schema version: one migration file per version (schema/NNN_*.sql).
NEWEST_SCHEMA = len([n for n in os.listdir(os.path.join(ROOT, "schema")) if re.fullmatch(r"[0-9]{3}_.*\.sql", n)])
# The databases older focalds wrote (tests/upgrade/make_fixtures.py): v<N>/db.sql is schema N's, as a dump.
UPGRADE_FIXTURES = os.path.join(ROOT, "tests", "upgrade", "fixtures")

EMA_ALPHA = 0.3  # focald's default --ema-alpha
HISTORY_FIELDS = ["seen", "last_loss", "mean_loss", "max_loss", "ema_loss", "confidence", "variability",
                  "correctness", "forgetting", "forgetting_events", "aum", "el2n", "label_issue_score",
                  "early_label_issue_score", "grand"]
# README "Hardest examples": each field's "harder when", its default order.
ORDER = {"seen": "desc", "last_loss": "desc", "mean_loss": "desc", "max_loss": "desc", "ema_loss": "desc",
         "variability": "desc", "forgetting": "desc", "forgetting_events": "desc", "el2n": "desc",
         "label_issue_score": "desc", "early_label_issue_score": "desc", "grand": "desc", "confidence": "asc",
         "correctness": "asc", "aum": "asc"}
# Every route the server answers (server/api.c's route table, README "HTTP API").
ROUTES = [
    ("GET", "/livez"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json"),
    ("POST", "/v1/loss"), ("GET", "/v1/datasets"), ("GET", "/v1/datasets/{dataset}"),
    ("DELETE", "/v1/datasets/{dataset}"), ("POST", "/v1/datasets/{dataset}/batches"),
    ("GET", "/v1/datasets/{dataset}/hard-examples"), ("GET", "/v1/datasets/{dataset}/samples/{id}"),
]
ANY = object()

_TEMP_DIRS = []   # removed at exit, after failure reports have read the logs
_DAEMONS = []     # every daemon started, for printing logs of failed tests
_log_serial = [0]  # numbers the daemons' log files


# ---------------------------------------------------------------------------- helpers

def f32(x):
    """x rounded to float32, as a Python float (what focald receives exactly)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def q(s):
    """Percent-encodes one path segment (UTF-8; '/', ' ', '%' and '+' included)."""
    return urllib.parse.quote(str(s), safe="")


def close(a, b, rel=1e-5, abs_=1e-6):
    return a is not None and b is not None and abs(a - b) <= max(rel * abs(b), abs_)


def key_utf8(s):
    return s.encode("utf-8")


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def sigmoid_focal_element(z, t, alpha=0.25, gamma=2.0):
    """torchvision's sigmoid focal loss of one element, float64."""
    s = sigmoid(z)
    ce = max(z, 0.0) - z * t + math.log1p(math.exp(-abs(z)))
    p_t = s * t + (1 - s) * (1 - t)
    a_t = alpha * t + (1 - alpha) * (1 - t)
    return a_t * (1 - p_t) ** gamma * ce


def png(w=2, h=1, rgb=(200, 30, 30)):
    """A valid PNG of w x h pixels of one colour."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    raw = b"".join(b"\x00" + bytes(rgb) * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def load_dump(sql_path, db):
    """Makes the database db (a new file) from the SQL dump at sql_path, as an upgrade fixture's db.sql."""
    with open(sql_path) as f:
        text = f.read()
    c = sqlite3.connect(db, isolation_level=None)
    try:
        c.executescript(text)
    finally:
        c.close()


def poll_until(proc, probe, timeout, interval=0.02):
    """Calls probe() until it returns true (True), proc (a Popen, or None) exits, or timeout seconds pass
    (False). A probe that raises OSError or an HTTP client error counts as not yet: a focald that is
    starting refuses connections, or closes them, before it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            if probe():
                return True
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(interval)
    return False


def read_response(s, deadline):
    """Reads one HTTP response off socket s until the connection closes, its Content-Length is complete, or
    time.monotonic() passes deadline. Returns (the bytes read, how it ended: 'answered' (complete), 'closed'
    (by the peer, or a reset) or 'timeout')."""
    buf = b""
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            part = s.recv(65536)
        except socket.timeout:
            break
        except OSError:
            return buf, "closed"
        if not part:
            return buf, "closed"
        buf += part
        head, sep, body = buf.partition(b"\r\n\r\n")
        if sep:
            m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            if m and len(body) >= int(m.group(1)):
                return buf, "answered"
    return buf, "timeout"


# The signals whose default action ends a process and which focald takes (README, "Signals"): to drain, or to
# log and ignore. Faults (SIGSEGV, SIGABRT, ...) keep their default.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGXCPU, signal.SIGPWR)
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO,
                   signal.SIGSTKFLT) + tuple(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))


def default_signals():
    """Gives focald the default disposition of every signal it takes, as an init system or a shell in a
    terminal does, whatever the tests were started under (nohup ignores SIGHUP, and an ignored signal stays
    ignored across exec)."""
    for sig in STOP_SIGNALS + IGNORED_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # list of (name, value)
        self.body = body
        self._json = None

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def json(self):
        if self._json is None:
            self._json = json.loads(self.body.decode("utf-8"))
        return self._json

    def __repr__(self):
        return "HTTP %d %s" % (self.status, self.body[:600].decode("utf-8", "replace"))


def parse_raw_response(data):
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(x.strip() for x in line.split(":", 1)) for line in lines[1:] if ":" in line]
    return Resp(status, headers, body)


class Daemon:
    """One focald process on a free loopback port with its database in a temporary directory."""

    def __init__(self, owner, db_dir=None, args=(), env=None, token=None, tls_ca=None, log_dir=None,
                 wrapper=(), listen_host="127.0.0.1", clean_env=False):
        """owner: the test or class it serves (its log is printed when that fails). env: variables added
        to this process's environment; token: a bearer token sent with every request; tls_ca: speak HTTPS,
        trusting that CA file; log_dir: where its stderr logs go (default beside the database); wrapper: a
        command prefix (prlimit, say); listen_host: the --listen host; clean_env: none of this process's
        FOCALD_* variables reach the daemon (its settings are then its flags and env only)."""
        self.owner = owner  # a class name, or a test id
        if db_dir is None:
            td = tempfile.TemporaryDirectory(prefix="focald-it-")
            _TEMP_DIRS.append(td)
            db_dir = td.name
        self.db_dir = db_dir
        self.db = os.path.join(db_dir, "f.db")
        self.args = [str(a) for a in args]
        self.proc = None
        self.port = None
        self.env = dict(os.environ, **env) if env else None  # None: this process's environment
        if clean_env:
            given = env or {}
            self.env = {k: v for k, v in (self.env or os.environ).items() if not k.startswith("FOCALD_") or k in given}
        self.token = token
        self.tls_ca = tls_ca
        self.log_dir = log_dir or self.db_dir
        self.wrapper = list(wrapper)
        self.listen_host = listen_host
        self.log_paths = []
        _DAEMONS.append(self)

    # -- process

    def command(self):
        return self.wrapper + [FOCALD, "--listen", "%s:%d" % (self.listen_host, self.port), "--db", self.db] + self.args

    def next_log_path(self):
        _log_serial[0] += 1
        return os.path.join(self.log_dir, "focald-stderr-%03d.log" % _log_serial[0])

    def start(self, timeout=10.0, port=None):
        """Starts focald and waits until it is ready; returns self. port: listen there (a restart on the
        port it had); by default a free one, and another if that was taken meanwhile."""
        for attempt in range(3):
            self.port = port or free_port()
            log_path = self.next_log_path()
            self.log_paths.append(log_path)
            with open(log_path, "wb") as log:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                             env=self.env, preexec_fn=default_signals)
            if poll_until(self.proc, lambda: self.get("/readyz", timeout=1).status == 200, timeout, 0.01):
                return self
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("focald did not answer GET /readyz with 200 within %.0f s" % timeout)
            if "cannot listen" not in self.log_text(log_path) or attempt == 2 or port:
                raise AssertionError("focald exited with status %s while starting: %s"
                                     % (self.proc.returncode, self.log_text(log_path)[-800:]))
        raise AssertionError("unreachable")

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Sends sig and waits; returns the exit status (negative: killed by a signal)."""
        if not self.running():
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("focald did not exit within %.0f s of signal %d" % (timeout, sig))

    def kill9(self):
        self.proc.kill()
        return self.proc.wait(10)

    def log_text(self, path=None):
        out = []
        for p in [path] if path else self.log_paths:
            try:
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)

    # -- HTTP

    def conn(self, timeout=10.0):
        if self.tls_ca:
            ctx = ssl.create_default_context(cafile=self.tls_ca)
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10.0, conn=None):
        """body: dict/list (sent as JSON), bytes (sent as is) or None. headers: a value None omits
        the header. With conn, the request goes over that (keep-alive) connection. The daemon's token,
        if it has one, goes with every request that does not set Authorization itself."""
        if self.token and not (headers and "Authorization" in headers):
            headers = dict(headers or {}, Authorization="Bearer " + self.token)
        hdrs = {}
        if body is not None and not isinstance(body, (bytes, bytearray)):
            body = json.dumps(body).encode("utf-8")
        if body is not None:
            hdrs["Content-Type"] = "application/json"
        hdrs.update(headers or {})
        c = conn or self.conn(timeout)
        try:
            c.putrequest(method, path, skip_accept_encoding=True)
            for k, v in hdrs.items():
                if v is not None:
                    c.putheader(k, v)
            if body is not None:
                c.putheader("Content-Length", str(len(body)))
            c.endheaders(body)
            r = c.getresponse()
            data = r.read()
            return Resp(r.status, r.getheaders(), data)
        finally:
            if conn is None:
                c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)

    def post_chunked(self, path, body, chunk=500, headers=None):
        c = self.conn()
        try:
            c.putrequest("POST", path, skip_accept_encoding=True)
            c.putheader("Content-Type", "application/json")
            c.putheader("Transfer-Encoding", "chunked")
            for k, v in (headers or {}).items():
                c.putheader(k, v)
            c.endheaders()
            for i in range(0, len(body), chunk):
                part = body[i:i + chunk]
                c.send(b"%x\r\n" % len(part) + part + b"\r\n")
            c.send(b"0\r\n\r\n")
            r = c.getresponse()
            return Resp(r.status, r.getheaders(), r.read())
        finally:
            c.close()

    def raw(self, data, timeout=5.0):
        """Sends raw bytes and reads the response until the connection closes or the body is complete."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(data)
            buf, _ = read_response(s, time.monotonic() + timeout)
            if not buf:
                raise AssertionError("no response within %.0f s" % timeout)
            return parse_raw_response(buf)

    # -- API shorthands

    def batch(self, dataset, body, **kw):
        return self.post("/v1/datasets/%s/batches" % q(dataset), body, **kw)

    def ok_batch(self, dataset, body, **kw):
        r = self.batch(dataset, body, **kw)
        if r.status != 200:
            raise AssertionError("POST batches to %s: %r" % (dataset, r))
        return r.json()

    def loss(self, body, **kw):
        r = self.post("/v1/loss", body, **kw)
        if r.status != 200:
            raise AssertionError("POST /v1/loss: %r" % r)
        return r.json()

    def dataset(self, name):
        return self.get("/v1/datasets/%s" % q(name))

    def metric(self, name):
        """The value of an unlabelled series in /metrics (a float), or None if it is not there."""
        r = self.get("/metrics")
        assert r.status == 200, r
        for line in r.body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split(" ", 1)[1])
        return None

    def sample(self, dataset, sid, run=None):
        path = "/v1/datasets/%s/samples/%s" % (q(dataset), q(sid))
        if run is not None:
            path += "?run=" + q(run)
        return self.get(path)

    def hard(self, dataset, **params):
        qs = urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        return self.get("/v1/datasets/%s/hard-examples%s" % (q(dataset), "?" + qs if qs else ""))

    def all_hard(self, dataset, page=10000, **params):
        """Every item of a hard-examples query, following next_cursor."""
        items, cursor = [], None
        for _ in range(10000):
            p = dict(params, k=page)
            if cursor:
                p["cursor"] = cursor
            r = self.hard(dataset, **p)
            if r.status != 200:
                raise AssertionError("hard-examples: %r" % r)
            j = r.json()
            items += j["items"]
            cursor = j["next_cursor"]
            if not cursor:
                return items
        raise AssertionError("hard-examples paging did not end")


class FocaldTestCase(unittest.TestCase):
    """Base: one daemon per class (setUpClass), plus per-test daemons via start_daemon."""
    daemon_args = ()
    maxDiff = None
    class_daemon = True  # False: the class starts no daemon; each test starts what it needs

    @classmethod
    def setUpClass(cls):
        if cls.class_daemon:
            cls.d = Daemon(cls.__name__, args=cls.daemon_args).start()

    @classmethod
    def tearDownClass(cls):
        if not cls.class_daemon:
            return
        rc = cls.d.stop()
        if rc != 0:
            raise AssertionError("%s's focald exited with status %s after SIGTERM" % (cls.__name__, rc))

    def start_daemon(self, db_dir=None, args=()):
        d = Daemon(self.id(), db_dir=db_dir, args=args).start()
        self.addCleanup(self._stop_checked, d)
        return d

    def _stop_checked(self, d):
        if d.running():
            rc = d.stop()
            self.assertEqual(rc, 0, "focald exited with status %s after SIGTERM" % rc)

    def ds_name(self, suffix=""):
        """A dataset name unique to this test."""
        name = self.id().rsplit(".", 1)[-1].replace("test_", "", 1)
        name = re.sub(r"[^A-Za-z0-9._-]", "-", name + suffix)
        if len(name) > 64:
            name = name[:55] + "-%08x" % (hash(name) & 0xffffffff)
        return name

    # -- assertions

    def assertProblem(self, r, status, code, field=ANY):
        """A problem+json response with the given status and code (either may be a tuple of choices)."""
        ctx = "response: %r" % r
        statuses = status if isinstance(status, tuple) else (status,)
        codes = code if isinstance(code, tuple) else (code,)
        self.assertIn(r.status, statuses, ctx)
        self.assertTrue((r.header("Content-Type") or "").startswith("application/problem+json"),
                        "Content-Type %r; %s" % (r.header("Content-Type"), ctx))
        p = r.json()
        for k in ("type", "title", "status", "detail", "code", "request_id"):
            self.assertIn(k, p, ctx)
        self.assertEqual(p["status"], r.status, ctx)
        self.assertIn(p["code"], codes, ctx)
        self.assertTrue(isinstance(p["detail"], str) and p["detail"], ctx)
        self.assertTrue(isinstance(p["title"], str) and p["title"], ctx)
        self.assertEqual(p["request_id"], r.header("X-Request-Id"), ctx)
        if r.status == 503:
            self.assertIsNotNone(r.header("Retry-After"), ctx)
        if field is not ANY:
            fields = field if isinstance(field, tuple) else (field,)
            got = p.get("field")
            if None in fields and got in (None, ""):
                return p
            self.assertIn(got, fields, ctx)
        return p

    def assertClose(self, got, want, msg="", rel=1e-5, abs_=1e-6):
        self.assertTrue(close(got, want, rel, abs_), "%s: got %r, expected %r" % (msg, got, want))


# ---------------------------------------------------------------------------- request bodies

def clf_logits(label, correct, c=3, shift=0.0):
    """A logit row of c classes predicted correctly (argmax = label) or not."""
    z = [f32(-1.0 + 0.05 * k) for k in range(c)]
    if correct:
        z[label] = f32(2.0 + shift)
    else:
        z[label] = f32(-0.5 + shift)
        z[(label + 1) % c] = f32(1.5 + shift)
    return z


def base_body(**over):
    """A valid 3-sample, 3-class batch for the bad-input table."""
    b = {"run": "default", "step": 1, "ids": ["s0", "s1", "s2"],
         "logits": [[2.0, -1.0, 0.5], [0.1, 0.2, -0.3], [-1.5, 1.0, 0.0]], "targets": [0, 1, 2]}
    for k, v in over.items():
        if v is DROP:
            b.pop(k, None)
        else:
            b[k] = v
    return b


DROP = object()


def raw_json(body):
    return json.dumps(body).encode("utf-8")


def replace_raw(body, old, new):
    """The JSON text of body with old (a unique marker number) replaced by a raw token."""
    text = json.dumps(body)
    assert text.count(old) == 1, (old, text)
    return text.replace(old, new).encode("utf-8")


MARK = 123456.5  # a number that appears once in a body, replaced by a raw token
ALL_STATES = "open,queued,in_review,relabelled,confirmed,dismissed"


def run_focald(args, env=None, timeout=5.0):
    """Runs focald expecting it to exit: returns (exit status, its output). None as the status when it
    was still running after timeout (it is then killed)."""
    p = subprocess.Popen([FOCALD] + [str(a) for a in args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=dict(os.environ, **env) if env else None)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        return None, out.decode("utf-8", "replace")


def each_thread_failing(test, args, timeout=20.0):
    """Starts focald (FOCALD plus args) once through the fault shim to count the threads it creates until it is
    ready, then again with each of those creations failing in turn (FOCALD_FAULT_THREAD). Each such start must
    exit 1 in bounded time with error lines "cannot start a thread" naming the thread (a "thread" field; for
    libmicrohttpd's, its listener too) and the reason. Returns the thread names the errors gave."""
    shim = os.path.join(os.path.dirname(FOCALD), "tests", "libfaultvfs.so")
    env = dict(os.environ, LD_PRELOAD=shim,
               ASAN_OPTIONS="verify_asan_link_order=0:" + os.environ.get("ASAN_OPTIONS", ""))
    td = tempfile.mkdtemp(prefix="focald-threads-")
    try:
        trace = os.path.join(td, "trace")

        def start(extra, ready_marker):
            p = subprocess.Popen([FOCALD] + [str(a) for a in args(td)], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(env, **extra))
            out, ready = [], False
            for line in p.stdout:
                out.append(line.decode("utf-8", "replace"))
                if '"ready' in out[-1]:
                    ready = True
                    if ready_marker:
                        open(ready_marker, "w").close()
                    p.terminate()
            try:
                rc = p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            return ready, rc, "".join(out)

        marker = os.path.join(td, "ready")
        ready, rc, out = start({"FOCALD_FAULT_TRACE": trace}, marker)
        test.assertTrue(ready, out[-800:])
        with open(trace) as f:
            count = sum(1 for line in f if line.startswith("thread "))
        test.assertGreaterEqual(count, 5, "threads created while starting")
        names = set()
        for n in range(1, count + 1):
            with test.subTest(thread=n):
                ready, rc, out = start({"FOCALD_FAULT_THREAD": str(n)}, None)
                lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
                errors = [x for x in lines if x.get("level") == "error"]
                test.assertFalse(ready, "thread %d failed to start and focald still became ready: %s" % (n, out[-800:]))
                test.assertEqual(rc, 1, "thread %d: %s" % (n, out[-800:]))
                test.assertTrue(errors, "thread %d failed without an error line: %s" % (n, out[-800:]))
                said = json.dumps(errors)
                test.assertTrue(all(x.get("msg") == "cannot start a thread" and x.get("thread") for x in errors),
                                "the error does not say which thread could not start: %s" % said)
                # EAGAIN's text, or libmicrohttpd's own words for its threads
                test.assertTrue("resource temporarily unavailable" in said.lower() or "no system resources" in said,
                                "the error does not give the reason: %s" % said)
                names.update(x["thread"] for x in errors if "thread" in x)
        return names
    finally:
        shutil.rmtree(td, ignore_errors=True)


def temp_dir(prefix="focald-hard-"):
    td = tempfile.TemporaryDirectory(prefix=prefix)
    _TEMP_DIRS.append(td)
    return td.name


def mount_tmpfs(test, size):
    """A tmpfs of size (as mount(8) takes it: "1m") mounted on a fresh directory and unmounted when test ends,
    and a directory for logs beside it, not on it. Returns (mount point, log directory). Mounting needs root,
    which the integration suite runs as: a test that cannot mount fails."""
    root = temp_dir()
    mnt = os.path.join(root, "mnt")
    os.mkdir(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", mnt], capture_output=True)
    test.assertEqual(r.returncode, 0, "cannot mount a tmpfs (the integration suite runs as root): %s"
                     % r.stderr.decode().strip())
    test.addCleanup(subprocess.run, ["umount", "-l", mnt], capture_output=True)
    logs = os.path.join(root, "logs")
    os.mkdir(logs)
    return mnt, logs


class HardeningTestCase(FocaldTestCase):
    """No class daemon: each test starts what it needs."""
    class_daemon = False

    def start_daemon(self, db_dir=None, args=(), **kw):
        d = Daemon(self.id(), db_dir=db_dir, args=args, **kw).start()
        self.addCleanup(self._stop_checked, d)
        return d

    def assertUnauthorized(self, r):
        p = self.assertProblem(r, 401, "unauthorized")
        self.assertTrue((r.header("WWW-Authenticate") or "").startswith("Bearer"),
                        "401 without WWW-Authenticate: Bearer: %r %r" % (r.headers, r))
        return p


# ---------------------------------------------------------------------------- running

class LoggingResult(unittest.TextTestResult):
    """Prints the stderr of the daemons a failed test used."""

    def _print_logs(self, test):
        tid = test.id()
        desc = str(test)
        for d in _DAEMONS:
            owner = d.owner
            if owner == tid or ("." + owner + ".") in tid or ("." + owner + ")") in desc:
                text = d.log_text()
                lines = text.splitlines()
                self.stream.write("\n---- focald stderr for %s (%s, last %d of %d lines)\n"
                                  % (tid, d.db_dir, min(60, len(lines)), len(lines)))
                self.stream.write("\n".join(lines[-60:]) + "\n----\n")
                self.stream.flush()

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._print_logs(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._print_logs(test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._print_logs(test)


def main():
    if not os.access(FOCALD, os.X_OK):
        print("%s is not built (run make)" % FOCALD)
        print("failed 1")
        return 1
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=LoggingResult)
    prog = unittest.main(module="__main__", testRunner=runner, exit=False)
    res = prog.result
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    passed = res.testsRun - len(res.skipped) - failed
    for td in _TEMP_DIRS:
        td.cleanup()
    sys.stdout.flush()
    # tests/run-suites counts "ok N" as passed, "failed K" as failed and "skipped S" as skipped; the last
    # line decides
    if res.skipped:
        print("skipped %d" % len(res.skipped))
    print("ok %d" % passed)
    if failed:
        print("failed %d" % failed)
    return 0 if failed == 0 else 1
