"""The test helpers the client tests share: a real focald on a free port, and small TCP fakes.

Daemon is the repository's one focald harness (tests/integration/harness.py) as these tests use it: it
starts $BUILD/focald (default build/focald, relative to the repository root) on a free loopback port with
its database in a fresh temporary directory, waits for /readyz, and stops it with SIGTERM. It can be
stopped and started again on the same port and database (the Miner's recovery tests).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)                      # clients/python
ROOT = os.path.dirname(os.path.dirname(PYDIR))     # the repository
sys.path.insert(0, PYDIR)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import harness  # noqa: E402  (the one focald harness of the repository's tests)

BUILD = os.environ.get("BUILD", "build")
FOCALD = BUILD if os.path.basename(BUILD) == "focald" else os.path.join(BUILD, "focald")
if not os.path.isabs(FOCALD):
    FOCALD = os.path.join(ROOT, FOCALD)
FOCALCTL = os.path.join(ROOT, "clients", "focalctl")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable

_TEMP = []


free_port = harness.free_port


def tempdir(prefix="focald-clients-"):
    d = tempfile.mkdtemp(prefix=prefix)
    _TEMP.append(d)
    return d


def cleanup_temp():
    for d in _TEMP:
        shutil.rmtree(d, ignore_errors=True)
    del _TEMP[:]


class Daemon(harness.Daemon):
    """One focald for the client tests: the integration tests' harness (tests/integration/harness.py),
    started at once on a free loopback port with its own database, commits durable against a crash of
    focald, warnings logged; none of the tests' FOCALD_* variables reach it. token: the daemon's
    FOCALD_TOKEN (the client under test must send it); tls: HTTPS with a fresh self-signed certificate
    (self.cert). A restart (stop, then start) keeps the port."""

    def __init__(self, args=(), token=None, tls=False):
        self.dir = tempdir()
        self.cert = key = None
        extra = []
        if tls:
            self.cert, key = self_signed_cert(self.dir)
            extra = ["--tls-cert", self.cert, "--tls-key", key]
        super().__init__("clients", db_dir=self.dir, args=["--durability", "normal", "--log-level", "warn"]
                         + list(args) + extra, env={"FOCALD_TOKEN": token} if token else None, tls_ca=self.cert,
                         clean_env=True)
        self.start()

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("https" if self.cert else "http", self.port)

    def start(self, timeout=20.0):
        if not os.access(FOCALD, os.X_OK):
            raise RuntimeError("%s is not built (make -j2)" % FOCALD)
        return super().start(timeout, port=self.port)

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Stops focald; returns its exit status."""
        return super().stop(sig, timeout)

    def log(self):
        return self.log_text()[-4000:]


def self_signed_cert(directory):
    """(cert, key) paths of a fresh self-signed certificate for 127.0.0.1, made with openssl."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    if not shutil.which("openssl"):
        raise RuntimeError("openssl is not installed (make test installs it)")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class DaemonTestCase(unittest.TestCase):
    """A test class with one focald for all its tests (self.d, self.url)."""

    daemon_args = ()

    @classmethod
    def setUpClass(cls):
        cls.d = Daemon(cls.daemon_args)
        cls.url = cls.d.url

    @classmethod
    def tearDownClass(cls):
        rc = cls.d.stop()
        if rc not in (0, None):
            sys.stderr.write("focald exited with %s; its log:\n%s\n" % (rc, cls.d.log()))


# ---------------------------------------------------------------------------- TCP fakes

class Proxy:
    """A TCP proxy in front of a real focald that can misbehave, one connection at a time.

    mode "pass": forwards both ways. "drop_response": forwards the request, waits for focald's whole
    answer, then closes the client's connection without passing it on (a batch committed whose answer
    was lost). "hang": accepts and reads but never answers. The mode may be changed at any time;
    drop_next drops that many responses before passing the rest. `drops` counts dropped responses
    and `connections` accepted connections.
    """

    def __init__(self, target_port, mode="pass", drop_next=0):
        self.target_port = target_port
        self.mode = mode
        self.drop_next = drop_next  # in mode "pass": drop this many responses first
        self.drops = 0
        self.connections = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self._stop = False
        self._open = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self._stop = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            for s in self._open:
                try:
                    s.close()
                except OSError:
                    pass

    def _accept(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with self._lock:
                self._open.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        up = None
        try:
            while not self._stop:
                req = _read_http_message(c, request=True)
                if req is None:
                    return
                if self.mode == "hang":
                    while not self._stop and c.recv(65536):
                        pass
                    return
                if up is None:
                    up = socket.create_connection(("127.0.0.1", self.target_port))
                    with self._lock:
                        self._open.append(up)
                up.sendall(req)
                resp = _read_http_message(up, request=False)
                if resp is None:
                    return
                if self.mode == "drop_response" or self.drop_next > 0:
                    self.drop_next -= 1
                    self.drops += 1
                    return
                c.sendall(resp)
        except OSError:
            return
        finally:
            for s in (c, up):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass


class Trickler:
    """A stand-in HTTP server that answers every request with a complete 200 JSON answer, sent one byte
    every interval seconds: each read of the client gets a byte well within a socket timeout, so only a
    deadline for the whole request ends it. `requests` counts the requests read."""

    ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n"
              b'{"datasets": []}\n')

    def __init__(self, interval=0.2, answer=None, cut=None):
        """answer: the bytes to send (ANSWER by default); cut: send only that many, then close."""
        self.interval = interval
        self.answer = (answer or self.ANSWER)[:cut]
        self.cut = cut is not None
        self.requests = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        self._stop.set()
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            while _read_http_message(c, request=True) is not None:
                self.requests += 1
                for i in range(len(self.answer)):
                    if self._stop.wait(self.interval):
                        return
                    c.sendall(self.answer[i:i + 1])
                if self.cut:
                    return
        except OSError:
            return
        finally:
            c.close()


def _read_http_message(s, request):
    """One HTTP/1.1 message with a Content-Length body (or none), as bytes; None at EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return head + b"\r\n\r\n" + rest[:length]
