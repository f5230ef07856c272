"""HTTP transport of the focald client: http.client with keep-alive, one connection per thread.

Each thread that uses a Client gets its own persistent connection (http.client
connections are not thread-safe), opened on first use and reused for every
later request. focald closes connections idle for longer than its
--connection-timeout: before reusing a connection the transport checks whether
the server has closed it, and opens a new one if so. When a reused connection
still fails before any byte of the answer arrived (the server closed it just
then), an idempotent request (GET, PUT, DELETE; a batch with a batch_id; a
/v1/loss evaluation; a review decision or a queue's creation with its
Idempotency-Key) is sent again once on a fresh connection; other requests raise
instead of risking being applied twice. Streaming answers (exports) use a connection of their own, closed when
the stream ends.

A request's timeout is a deadline for the whole request: connecting, sending
and reading the answer together (a retry on a fresh connection included). A
socket timeout alone bounds each read, so a server that trickles its answer a
byte at a time could hold a request for as long as it liked; instead, each
socket operation is given only what is left of the request's time. Streams
(exports) are the exception: their timeout bounds each read, as an export may
rightly take far longer than any one request.

TCP_NODELAY is set: request headers and tensor bodies go out in separate
writes, and Nagle's algorithm would otherwise hold the second write back for
the server's delayed ACK (tens of milliseconds per request).

A forked child (a DataLoader worker, say) never uses the connections it
inherited: they are the parent's sockets, and two processes reading one
connection would take each other's answers. After a fork each Transport
forgets them (and renews its lock, which another thread may have held) and the
child opens connections of its own.
"""
import http.client
import io
import json
import os
import select
import socket
import ssl
import threading
import time
import urllib.parse
import weakref
from typing import Any, Dict, Generator, Iterator, Mapping, Optional, Sequence, Union

from .errors import FocaldConnectionError, FocaldError

# A request body: bytes, or bytes-like parts sent in order without joining them.
Body = Union[bytes, bytearray, memoryview, Sequence[Union[bytes, bytearray, memoryview]]]
Query = Optional[Mapping[str, Any]]

_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)

_transports: "weakref.WeakSet[Transport]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """In a forked child, every Transport drops the parent's connections and renews its lock."""
    for t in list(_transports):
        t._forget_connections()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _time_left(deadline: float) -> float:
    """Seconds until deadline (a time.monotonic() value); raises socket.timeout once it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("timed out")
    return left


class _DeadlineReader(io.RawIOBase):
    """A socket's answer read through a socket.SocketIO, each read given what is left until deadline."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        super().__init__()
        self._sock = sock
        self._raw = sock.makefile("rb", buffering=0)  # holds the socket open as http.client's own file does
        self._deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> Optional[int]:
        self._sock.settimeout(_time_left(self._deadline))
        return self._raw.readinto(b)

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineConnection(http.client.HTTPConnection):
    """An HTTP connection with TCP_NODELAY whose operations keep to a deadline when one is set: connect,
    each write and each read of the answer are given what is left of it (see the module's docstring)."""

    deadline: Optional[float] = None
    response_class: Any  # a bound method making the answer, in place of the class

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.response_class = self._response

    def connect(self) -> None:
        if self.deadline is not None:
            self.timeout = _time_left(self.deadline)
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: Any) -> None:
        if self.deadline is not None and self.sock is not None:
            self.sock.settimeout(_time_left(self.deadline))
        super().send(data)

    def _response(self, sock: socket.socket, *args: Any, **kw: Any) -> http.client.HTTPResponse:
        resp = http.client.HTTPResponse(sock, *args, **kw)
        if self.deadline is not None:
            resp.fp.close()  # nothing read from it yet: the status line is read in begin()
            resp.fp = io.BufferedReader(_DeadlineReader(sock, self.deadline))
        return resp


class _DeadlineHTTPSConnection(_DeadlineConnection, http.client.HTTPSConnection):
    """The same over TLS (the handshake is part of connect, so it keeps to the deadline too)."""


class Response:
    """A complete answer: status, headers (an http.client.HTTPMessage) and body bytes."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        """The body as JSON; a body that is not (a proxy's HTML page, say) is FocaldError "bad_response",
        with the answer's status: a 2xx means focald took the request even so."""
        try:
            return json.loads(self.body.decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise bad_response(self.status, "its body is not JSON (%s)" % e) from None


class Transport:
    """Sends requests to one focald base URL. Thread-safe: each thread has its own connection."""

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 30.0, user_agent: str = "focald-python",
                 ssl_context: Optional[ssl.SSLContext] = None) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError("focald URL must be http://host[:port][/prefix] or https://..., not %r" % url)
        self.url = url.rstrip("/")
        self.scheme = u.scheme
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.user_agent = user_agent
        self.ssl_context = ssl_context
        self._local = threading.local()
        # the newest log position a write's answer gave (Focald-Log-Position), and whether reads wait for it
        self.log_position = 0
        self.read_your_writes = False
        self._position_lock = threading.Lock()
        _transports.add(self)

    def _forget_connections(self) -> None:
        """In a forked child: the connections are the parent's (this process only lets go of its copies
        of their sockets, which leaves them open in the parent), and the lock may have been held by a
        thread that does not exist here."""
        self._local = threading.local()
        self._position_lock = threading.Lock()

    # ------------------------------------------------------------ log positions

    def observe_position(self, position: int) -> None:
        """Notes a log position this client has seen written (the newest is kept)."""
        with self._position_lock:
            if position > self.log_position:
                self.log_position = position

    def _note_position(self, headers: Any) -> None:
        value = headers.get("Focald-Log-Position") if headers is not None else None
        if value and value.isdigit():
            self.observe_position(int(value))

    def _with_after(self, method: str, path: str, query: Query) -> Query:
        """With read_your_writes, a read of the data waits (after=) for the newest position written."""
        if not self.read_your_writes or method not in ("GET", "HEAD") or not path.startswith("/v1/datasets"):
            return query
        position = self.log_position
        if position <= 0 or (query is not None and "after" in query):
            return query
        q = dict(query or {})
        q["after"] = position
        return q

    # ------------------------------------------------------------ connections

    def _new_connection(self, timeout: Optional[float] = None) -> _DeadlineConnection:
        timeout = self.timeout if timeout is None else timeout
        if self.scheme == "https":
            return _DeadlineHTTPSConnection(self.host, self.port, timeout=timeout, context=self.ssl_context)
        return _DeadlineConnection(self.host, self.port, timeout=timeout)

    def _connection(self) -> _DeadlineConnection:
        conn: Optional[_DeadlineConnection] = getattr(self._local, "conn", None)
        if conn is not None and conn.sock is not None and _closed_by_peer(conn.sock):
            self._drop_connection()
            conn = None
        if conn is None:
            conn = self._new_connection()
            self._local.conn = conn
            self._local.used = 0
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local.conn = None
        self._local.used = 0

    def close(self) -> None:
        """Closes this thread's connection (others close when their threads end)."""
        self._drop_connection()

    # ------------------------------------------------------------ requests

    def path(self, path: str, query: Query = None) -> str:
        """The request target: prefix + path + ?query (None values left out; lists joined by commas)."""
        target = self.prefix + path
        if query:
            items = []
            for k, v in query.items():
                if v is None:
                    continue
                if isinstance(v, (list, tuple, set, frozenset)):
                    v = ",".join(str(x) for x in v)
                elif isinstance(v, bool):
                    v = "true" if v else "false"
                items.append((k, str(v)))
            if items:
                target += "?" + urllib.parse.urlencode(items, quote_via=urllib.parse.quote)
        return target

    def _headers(self, extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
        h = {"User-Agent": self.user_agent, "Accept": "application/json"}
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        if extra:
            h.update(extra)
        return h

    def request(self, method: str, path: str, query: Query = None, body: Optional[Body] = None,
                headers: Optional[Mapping[str, str]] = None, timeout: Optional[float] = None,
                idempotent: Optional[bool] = None) -> Response:
        """Sends one request and reads the whole answer. Returns a Response for 2xx and 3xx.

        body: None, bytes, or a list of bytes-like parts (sent in order, without joining them).
        idempotent: whether sending the request twice does no harm (default: by method), which allows
        one silent retry when a kept-alive connection turns out to be closed.
        timeout: seconds the whole request may take, from connecting to the last byte of the answer
        (None: the Transport's timeout).
        Raises FocaldError for 4xx/5xx and FocaldConnectionError when focald cannot be reached, the
        request is not answered in time, or the answer is cut short.
        """
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        target = self.path(path, self._with_after(method, path, query))
        hdrs = self._headers(headers)
        if body is not None:
            hdrs["Content-Length"] = str(_body_length(body))
        limit = self.timeout if timeout is None else timeout
        deadline = None if limit is None else time.monotonic() + limit  # for both attempts together
        for attempt in (0, 1):
            conn = self._connection()
            reused = self._local.used > 0
            try:
                conn.deadline = deadline
                conn.timeout = limit  # with no deadline, each operation's; with one, connect() takes what is left
                if conn.sock is not None:
                    conn.sock.settimeout(limit)
                try:
                    conn.request(method, target, body=body, headers=hdrs)
                except _STALE:
                    # focald may have answered before taking the body (401, 413) and closed the
                    # connection while the body was still going out: that answer is the one to report
                    resp = _early_response(conn)
                    if resp is None:
                        raise
                else:
                    resp = conn.getresponse()
                data = resp.read()
                if resp.length is None and not resp.chunked and method != "HEAD" and resp.status not in (204, 304):
                    # focald gives every answer a Content-Length or chunks; one that ends only where the
                    # connection closed may have lost its headers (the length among them) and its body
                    raise http.client.IncompleteRead(data)
            except _STALE as e:
                self._drop_connection()
                if reused and attempt == 0 and idempotent:
                    continue  # most likely the server closed the idle connection just now
                raise self._connection_error(method, target, e) from e
            except (OSError, http.client.HTTPException) as e:
                self._drop_connection()
                raise self._connection_error(method, target, e) from e
            self._local.used += 1
            if resp.will_close:
                self._drop_connection()
            if resp.status >= 400:
                raise problem_error(resp.status, resp.headers, data, method, self.url + target)
            if 300 <= resp.status < 400:
                raise redirect_error(resp.status, resp.headers, method, self.url + target)
            self._note_position(resp.headers)
            return Response(resp.status, resp.headers, data)
        raise AssertionError("unreachable")

    def stream(self, method: str, path: str, query: Query = None, headers: Optional[Mapping[str, str]] = None,
               chunk_size: int = 65536, timeout: Optional[float] = None,
               trailers: Optional[Dict[str, str]] = None) -> Generator[bytes, None, None]:
        """Sends a request and yields the answer's body in chunks as it arrives, on a connection of
        its own (closed at the end, or when the generator is closed). Errors as for request(),
        raised before the first chunk. trailers: a dict that receives the trailer fields of a
        chunked answer (names in lower case) once the body has been read whole; http.client reads
        and drops them, so a chunked body is decoded here."""
        target = self.path(path, self._with_after(method, path, query))
        conn = self._new_connection(timeout)
        try:
            try:
                conn.request(method, target, headers=self._headers(headers))
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                raise self._connection_error(method, target, e) from e
            if resp.status >= 400:
                raise problem_error(resp.status, resp.headers, resp.read(), method, self.url + target)
            if 300 <= resp.status < 400:
                raise redirect_error(resp.status, resp.headers, method, self.url + target)
            if resp.chunked and trailers is not None:
                try:
                    yield from _read_chunked(resp.fp, chunk_size, trailers)
                except (OSError, http.client.HTTPException, ValueError) as e:
                    raise self._connection_error(method, target, e) from e
                return
            while True:
                try:
                    chunk = resp.read1(chunk_size) if hasattr(resp, "read1") else resp.read(chunk_size)
                except (OSError, http.client.HTTPException) as e:
                    raise self._connection_error(method, target, e) from e
                if not chunk:
                    break
                yield chunk
        finally:
            conn.close()

    def _connection_error(self, method: str, target: str, exc: BaseException) -> FocaldConnectionError:
        code = "timeout" if isinstance(exc, (socket.timeout, TimeoutError)) else "unreachable"
        what = ("timed out" if code == "timeout" else "answer cut short" if isinstance(exc, http.client.IncompleteRead)
                else "cannot reach focald")
        return FocaldConnectionError(code, "%s at %s: %s" % (what, self.url, exc or type(exc).__name__),
                                     method=method, url=self.url + target)


def _read_chunked(fp: Any, chunk_size: int, trailers: Dict[str, str]) -> Iterator[bytes]:
    """Yields the data of a chunked body read from fp (RFC 9112 section 7.1) and puts its trailer
    fields into trailers. A body cut before its last chunk raises http.client.IncompleteRead."""
    while True:
        line = fp.readline(1024)
        if not line.endswith(b"\n"):
            raise http.client.IncompleteRead(b"")
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            break
        while size:
            data = fp.read(min(size, chunk_size))
            if not data:
                raise http.client.IncompleteRead(b"", size)
            size -= len(data)
            yield data
        if fp.read(2) != b"\r\n":
            raise http.client.IncompleteRead(b"")
    while True:
        line = fp.readline(8192)
        if not line.endswith(b"\n"):
            raise http.client.IncompleteRead(b"")
        if line in (b"\r\n", b"\n"):
            return
        name, _, value = line.decode("latin-1").partition(":")
        trailers[name.strip().lower()] = value.strip()


def _early_response(conn: http.client.HTTPConnection) -> Optional[http.client.HTTPResponse]:
    """The answer the server sent before the request was fully sent, or None."""
    try:
        return conn.getresponse()
    except (OSError, http.client.HTTPException):
        return None


def _closed_by_peer(sock: socket.socket) -> bool:
    """Whether a kept-alive connection's socket was closed by the server: an idle HTTP connection
    has nothing to read, so a readable one is at EOF (or holds garbage: unusable either way)."""
    try:
        if hasattr(select, "poll"):  # poll has no FD_SETSIZE limit, unlike select
            p = select.poll()
            p.register(sock, select.POLLIN)
            readable = bool(p.poll(0))
        else:
            readable = bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True
    if not readable or not isinstance(sock, ssl.SSLSocket):
        return readable
    # TLS: the bytes waiting may be records that carry no data (TLS 1.3 session tickets); reading
    # without blocking consumes those and tells them from a close or stray data
    prev = sock.gettimeout()
    try:
        sock.settimeout(0)
        sock.recv(1)
        return True  # b"": closed; a byte: data nobody asked for; unusable either way
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        try:
            sock.settimeout(prev)
        except OSError:
            pass


def _body_length(body: Body) -> int:
    if isinstance(body, (bytes, bytearray, memoryview)):
        return memoryview(body).nbytes
    return sum(memoryview(p).nbytes for p in body)


def bad_response(status: int, why: str) -> FocaldError:
    """The FocaldError of an answer this client cannot read. Its status is the answer's: with a 2xx,
    focald took the request (a batch is stored), so it is not to be sent again as another."""
    return FocaldError(status, "bad_response", "focald's answer (%d) cannot be read: %s" % (status, why))


def redirect_error(status: int, headers: Any, method: Optional[str] = None, url: Optional[str] = None) -> FocaldError:
    """The FocaldError of a 3xx: focald never redirects, so the URL reaches something else (an ingress that
    moves http to https, say), and a request sent on to the new place could be sent twice. Not followed."""
    return FocaldError(status, "redirect", "%s %s was redirected to %s; give the client focald's own URL"
                       % (method or "", url or "", headers.get("Location") or "(no Location)"))


def problem_error(status: int, headers: Any, data: bytes, method: Optional[str] = None,
                  url: Optional[str] = None) -> FocaldError:
    """The FocaldError of an error answer: its problem body when it has one."""
    problem = {}
    try:
        doc = json.loads(data.decode("utf-8")) if data else {}
        if isinstance(doc, dict):
            problem = doc
    except (ValueError, UnicodeDecodeError):
        pass
    request_id = problem.get("request_id") or headers.get("X-Request-Id")
    retry_after = None
    ra = headers.get("Retry-After")
    if ra:
        try:
            retry_after = float(ra)
        except ValueError:
            retry_after = None
    code = problem.get("code") or "http_%d" % status
    detail = problem.get("detail")
    if detail is None and not problem and data:
        detail = data[:200].decode("utf-8", "replace").strip()
    return FocaldError(status, code, detail, title=problem.get("title"), field=problem.get("field"),
                       request_id=request_id, problem=problem, retry_after=retry_after, method=method, url=url)
