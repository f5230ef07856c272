"""Miner: report a training loop's predictions to focald without ever slowing the loop down.

    miner = Miner("cifar10", run="resnet18-seed0", loss="softmax_focal")
    for step, (idx, x, y) in enumerate(loader):
        logits = model(x)
        ...
        miner.observe(idx, logits, y, step=step, epoch=epoch)   # returns at once
    miner.close()                                               # flushes, at most close_timeout seconds

observe() copies the tensors (detached, on the CPU) into a bounded queue and
returns; one background thread takes everything queued, merges consecutive
observations that can share a request (same step and epoch, same shapes, no
sample twice), and posts them with Client.post_batch. The queue is bounded by
bytes (max_queue_bytes): when focald is slow or down and the queue is full, the
oldest queued observations are dropped and counted (dropped,
dropped_observations) - the training loop is never blocked and never sees an
exception from focald.

A request that fails because focald is unreachable or answers 5xx is sent again
with a backoff, with the same batch_id, so that a batch whose first attempt was
in fact committed is stored once (focald answers the retry with duplicate:
true). A batch focald refuses (4xx: bad shapes, labels out of range, ...) is
counted in rejected, and its error kept in last_error, and the next is sent.

Threads: observe(), stats(), flush() and close() may be called from any thread;
the queue and the counters are guarded by one lock (self._cond); only the
sender thread sends.
"""
import atexit
import collections
import logging
import threading
import time
import uuid
import weakref

from . import framing
from .client import Client, _loss_obj
from .errors import FocaldError

log = logging.getLogger("focald.miner")

_live = weakref.WeakSet()


@atexit.register
def _close_all():
    """At interpreter exit, flush the miners nobody closed (each within its close_timeout)."""
    for m in list(_live):
        m.close()


class _Chunk:
    """One observe() call: the tensors (private copies) and the batch fields."""

    __slots__ = ("ids", "xname", "x", "targets", "weights", "meta", "step", "epoch", "n", "nbytes")

    def __init__(self, ids, xname, x, targets, weights, meta, step, epoch, n):
        self.ids, self.xname, self.x, self.targets, self.weights = ids, xname, x, targets, weights
        self.meta, self.step, self.epoch, self.n = meta, step, epoch, n
        self.nbytes = sum(_nbytes(t, n) for t in (ids, x, targets, weights) if t is not None)


def _nbytes(x, n):
    """Memory a tensor holds: exact for arrays and tensors, an estimate for (nested) lists."""
    if hasattr(x, "element_size") and hasattr(x, "nelement"):  # torch
        return int(x.element_size() * x.nelement())
    nb = getattr(x, "nbytes", None)  # numpy
    if nb is not None:
        return int(nb)
    per_row, v = 1, x[0] if isinstance(x, (list, tuple)) and x else None
    while isinstance(v, (list, tuple)) and v:
        per_row *= len(v)
        v = v[0]
    return 32 * n * per_row  # a Python number in a list takes about 32 bytes


def _concat_arrays(tensors):
    """Tensors joined along the first dimension, as one NumPy array (bfloat16 stays bfloat16 when all are)."""
    np = framing.np
    arrs = [framing.as_array(t) for t in tensors]
    if all(isinstance(a, framing._BF16) for a in arrs):
        return framing._BF16(np.concatenate([a.bits for a in arrs], axis=0))
    arrs = [a.to_f32() if isinstance(a, framing._BF16) else a for a in arrs]
    return np.concatenate(arrs, axis=0)


def _concat_lists(tensors):
    return [row for t in tensors for row in framing.as_lists(t)]


def _tail_shape(x):
    """The shape after the first dimension (for lists: read off the first element)."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        return tuple(int(d) for d in shape[1:])
    dims, v = [], x[0] if x else None
    while isinstance(v, (list, tuple)):
        dims.append(len(v))
        v = v[0] if v else None
    return tuple(dims)


def _kind(x):
    """A coarse dtype: 'f' float, 'b' boolean, 'i' integer (lists: by their first element). Tensors of
    different kinds are not joined: booleans are 0/1 targets, integers class indices."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        v = x
        while isinstance(v, (list, tuple)) and v:
            v = v[0]
        return "b" if isinstance(v, bool) else "f" if isinstance(v, float) else "i"
    s = str(dt)
    if "bool" in s:
        return "b"
    return "f" if "float" in s else "i"


class Miner:
    """Reports observations to focald from a background thread; never blocks or raises on focald's account.

    dataset: the dataset the observations go to. run: the run name (focald's default "default").
    loss: a loss type name or loss object, as in Client.post_batch (default: focald's sigmoid focal).
    client: a Client to send with; else one is made from url, token and ca_file ($FOCALD_URL,
        $FOCALD_TOKEN, $FOCALD_CA_FILE), with request_timeout and binary.
    max_queue_bytes: the queue's bound (tensor bytes); past it the oldest observations are dropped.
    max_batch: merge consecutive observations into requests of at most this many samples.
    retry_initial, retry_max: the backoff between attempts (seconds), doubling from initial to max;
        a Retry-After from focald is honoured up to retry_max.
    close_timeout: how long close() waits for the queue to drain by default.

    Counters (attributes, samples unless said otherwise): observed, sent (acknowledged by focald),
    duplicates (acknowledged as already stored: a retry of a committed batch), dropped (queue overflow,
    or still unsent when close() gave up), dropped_observations (observe() calls dropped whole),
    rejected (in batches focald refused with 4xx), retries (requests sent again), batches (requests
    acknowledged); pending (queued or being sent); last_error (the latest FocaldError, or None);
    stats() returns them all as a dict.
    """

    def __init__(self, dataset, *, run=None, loss=None, client=None, url=None, token=None, binary=None, ca_file=None,
                 max_queue_bytes=256 << 20, max_batch=16384, request_timeout=10.0, retry_initial=0.2,
                 retry_max=5.0, close_timeout=10.0, batch_id_prefix=None):
        self.dataset = dataset
        self.run = run
        self.loss = _loss_obj(loss)
        self.client = client if client is not None else Client(url, token=token, timeout=request_timeout,
                                                               binary=binary, ca_file=ca_file)
        self.max_queue_bytes = int(max_queue_bytes)
        self.max_batch = int(max_batch)
        self.retry_initial = float(retry_initial)
        self.retry_max = float(retry_max)
        self.close_timeout = float(close_timeout)
        self._prefix = batch_id_prefix or "miner-" + uuid.uuid4().hex[:16]
        self._seq = 0

        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._queued_n = 0
        self._queued_bytes = 0
        self._inflight_n = 0
        self._inflight_dropped = False  # the in-flight batch was counted as dropped by close()
        self._closing = False
        self._closed = False
        self._abandon = False
        self._failing = False

        self.observed = 0
        self.sent = 0
        self.duplicates = 0
        self.dropped = 0
        self.dropped_observations = 0
        self.rejected = 0
        self.retries = 0
        self.batches = 0
        self.last_error = None

        self._thread = threading.Thread(target=self._run, name="focald-miner", daemon=True)
        self._thread.start()
        _live.add(self)

    def __repr__(self):
        return "Miner(%r, %s)" % (self.dataset, ", ".join("%s=%s" % kv for kv in self.stats().items()
                                                          if kv[0] != "last_error"))

    # ------------------------------------------------------------ the training loop's side

    def observe(self, ids, logits=None, targets=None, *, probs=None, step=None, epoch=None, weights=None,
                meta=None):
        """Queues one batch of predictions and returns at once.

        ids: N sample ids. logits or probs: (N, C) or (N, M, C) (torch tensors, arrays or lists; copied
        here, so the caller may reuse its buffers). targets: as for Client.post_batch. step, epoch:
        the training step and epoch (integers >= 0). weights, meta: as for Client.post_batch.
        Raises ValueError for inconsistent arguments (a bug in the caller), never for focald's state.
        """
        if (logits is None) == (probs is None):
            raise ValueError("give exactly one of logits and probs")
        if targets is None:
            raise ValueError("targets are required")
        xname, x = ("logits", logits) if logits is not None else ("probs", probs)
        n = framing.length(ids)
        if framing.length(x) != n or framing.length(targets) != n:
            raise ValueError("ids, %s and targets disagree on the number of samples (%d, %d, %d)"
                             % (xname, n, framing.length(x), framing.length(targets)))
        if n == 0:
            return
        chunk = _Chunk(framing.copy_tensor(ids), xname, framing.copy_tensor(x), framing.copy_tensor(targets),
                       framing.copy_tensor(weights) if weights is not None else None,
                       dict(meta) if meta else None, step, epoch, n)
        with self._cond:
            if self._closed:
                raise RuntimeError("observe() after close()")
            self.observed += n
            self._queue.append(chunk)
            self._queued_n += n
            self._queued_bytes += chunk.nbytes
            while self._queued_bytes > self.max_queue_bytes and len(self._queue) > 1:
                old = self._queue.popleft()
                self._queued_n -= old.n
                self._queued_bytes -= old.nbytes
                self.dropped += old.n
                self.dropped_observations += 1
            self._cond.notify_all()

    @property
    def pending(self):
        """Samples queued or being sent."""
        with self._cond:
            return self._queued_n + (0 if self._inflight_dropped else self._inflight_n)

    def stats(self):
        """The counters as a dict (see the class docstring)."""
        with self._cond:
            return {"observed": self.observed, "sent": self.sent, "duplicates": self.duplicates,
                    "dropped": self.dropped, "dropped_observations": self.dropped_observations,
                    "rejected": self.rejected, "retries": self.retries, "batches": self.batches,
                    "pending": self._queued_n + (0 if self._inflight_dropped else self._inflight_n),
                    "last_error": self.last_error}

    def flush(self, timeout=None):
        """Waits until everything observed so far is sent (or refused). Returns True if the queue
        drained, False after timeout seconds (None: close_timeout)."""
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        with self._cond:
            while self._queue or self._inflight_n:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout=None):
        """Sends what is queued and stops the sender, waiting at most timeout seconds (None:
        close_timeout). What is still unsent then is counted in dropped. Returns True when everything
        was sent (or refused), False when close gave up. Idempotent."""
        timeout = self.close_timeout if timeout is None else timeout
        with self._cond:
            if self._closed:
                return not self._abandon
            self._closed = True
            self._closing = True
            self._cond.notify_all()
        self._thread.join(max(0.0, timeout))
        _live.discard(self)
        if not self._thread.is_alive():
            return True
        with self._cond:
            self._abandon = True
            self.dropped += self._queued_n
            self.dropped_observations += len(self._queue)
            self._queue.clear()
            self._queued_n = 0
            self._queued_bytes = 0
            if self._inflight_n:
                self.dropped += self._inflight_n
                self._inflight_dropped = True
            self._cond.notify_all()
        log.warning("focald miner closed with %d samples unsent after %.1f s", self.dropped, timeout)
        return False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ the sender thread

    def _run(self):
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._abandon or (not self._queue and self._closing):
                    return
                parts = self._take()
                n = sum(c.n for c in parts)
                self._inflight_n = n
            try:
                self._send(parts, n)
            except Exception as e:  # never let the thread die: a bug here must not stop reporting
                log.exception("focald miner: unexpected error; %d samples lost", n)
                with self._cond:
                    self.rejected += n
                    self.last_error = e
            finally:
                with self._cond:
                    self._inflight_n = 0
                    self._inflight_dropped = False
                    self._cond.notify_all()

    def _take(self):
        """Pops the next request's observations: the first queued one and the ones right after it that
        can share its request. Called with the lock held."""
        first = self._queue.popleft()
        parts = [first]
        n = first.n
        keys = None
        while self._queue and n + self._queue[0].n <= self.max_batch and self._compatible(first, self._queue[0]):
            if keys is None:
                keys = {str(i) for i in framing.as_lists(first.ids)}
            nxt_keys = {str(i) for i in framing.as_lists(self._queue[0].ids)}
            if keys & nxt_keys:
                break
            keys |= nxt_keys
            c = self._queue.popleft()
            parts.append(c)
            n += c.n
        for c in parts:
            self._queued_n -= c.n
            self._queued_bytes -= c.nbytes
        return parts

    @staticmethod
    def _compatible(a, b):
        return (a.step == b.step and a.epoch == b.epoch and a.xname == b.xname
                and (a.weights is None) == (b.weights is None)
                and _tail_shape(a.x) == _tail_shape(b.x) and _tail_shape(a.targets) == _tail_shape(b.targets)
                and _kind(a.x) == _kind(b.x) and _kind(a.targets) == _kind(b.targets))

    def _merge(self, parts):
        """(ids, x, targets, weights, meta) of the request made of parts."""
        first = parts[0]
        if len(parts) == 1:
            return first.ids, first.x, first.targets, first.weights, first.meta
        ids = []
        for c in parts:
            ids.extend(framing.as_lists(c.ids))
        meta = {}
        for c in parts:
            if c.meta:
                meta.update(c.meta)
        if framing.have_numpy():
            cat = _concat_arrays
        else:
            cat = _concat_lists
        return (ids, cat([c.x for c in parts]), cat([c.targets for c in parts]),
                cat([c.weights for c in parts]) if first.weights is not None else None, meta or None)

    def _send(self, parts, n):
        first = parts[0]
        ids, x, targets, weights, meta = self._merge(parts)
        self._seq += 1
        batch_id = "%s-%d" % (self._prefix, self._seq)
        kw = {first.xname: x}
        attempt = 0
        while True:
            try:
                res = self.client.post_batch(self.dataset, ids, targets=targets, run=self.run, batch_id=batch_id,
                                             epoch=first.epoch, step=first.step, loss=self.loss, weights=weights,
                                             meta=meta, outputs=("losses",), **kw)
            except FocaldError as e:
                with self._cond:
                    self.last_error = e
                    abandon = self._abandon
                give_up = not e.retryable or (e.status == 500 and attempt >= 2)
                if give_up or abandon:
                    with self._cond:
                        if give_up:
                            self.rejected += n
                        elif not self._inflight_dropped:
                            self.dropped += n
                    if give_up:
                        log.warning("focald refused a batch of %d samples: %s", n, e)
                    return
                if not self._failing:
                    self._failing = True
                    log.warning("focald miner: %s; retrying in the background (queue bound %d bytes)", e,
                                self.max_queue_bytes)
                attempt += 1
                delay = min(self.retry_max, self.retry_initial * 2 ** min(attempt - 1, 20))
                if e.retry_after:
                    delay = max(delay, min(e.retry_after, self.retry_max))
                with self._cond:
                    # woken early only by close() giving up (which counted this batch as dropped);
                    # a plain close keeps retrying until its timeout
                    if self._cond.wait_for(lambda: self._abandon, timeout=delay):
                        return
                    self.retries += 1
                continue
            with self._cond:
                if self._failing:
                    log.info("focald miner: focald answers again")
                    self._failing = False
                if self._inflight_dropped:  # close() gave up on it, but it got through after all
                    self.dropped -= n
                self.sent += n
                self.batches += 1
                if res.get("duplicate"):
                    self.duplicates += n
            return
