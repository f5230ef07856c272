"""Miner: report a training loop's predictions to focald without slowing the loop down.

    miner = Miner("cifar10", run="resnet18-seed0", loss="softmax_focal")
    for step, (idx, x, y) in enumerate(loader):
        logits = model(x)
        ...
        miner.observe(idx, logits, y, step=step, epoch=epoch)   # a copy, then returns
    miner.close()                                               # sends the rest, at most close_timeout s

The loss. focald computes the loss from the logits and targets the Miner sends; `loss` says which one.
Without it focald uses its default, sigmoid_focal (torchvision's convention: one sigmoid per class). A
softmax classifier (cross-entropy training, class-index targets) should pass loss="softmax_focal".

How it keeps the training loop's cost small:

- observe() copies the tensors into a preallocated buffer, a slab (_slab.py says how), and records the
  step, epoch and row count of the call: nothing is allocated per call once the slabs exist, and
  nothing is done per element in Python.
- One sender thread sends a slab when it has been filling for flush_interval seconds (default 0.1) or is
  full: one request for many steps, each step a segment with its own step and epoch (README "Many steps
  in one request"), so focald keeps exactly the history that a request per step would give. Why a thread
  and not a sender process fed through shared memory: the sender's Python work is a few large bytes
  operations and a JSON header with one entry per step, 1 to 1.5 ms per request of 300 steps (cProfile
  of the sender over 20 requests), so at one request per 0.1 s it holds the GIL 1% to 1.5% of the time. A process would take that off the
  GIL, but costs a second copy through shared memory, a process to start and watch, and a protocol
  between the two, for at most that 1.5%. tests/bench/bench_miner.py measures the whole cost on a real
  training loop (BENCHMARKS.md).
- The slabs are bounded by max_queue_bytes. When focald is slow or down and they are all full, the
  oldest unsent slab is dropped and counted (dropped samples, dropped_observations calls): the training
  loop is never blocked and never sees an exception from focald. What a slab holds beyond its arrays
  (string ids, meta, segments: its "extra" bytes, _slab.py) counts against the same bound as it comes in.
- A request that fails because focald is unreachable or answers 5xx is sent again after a backoff, with
  the same batch_id, so a request that was in fact committed is stored once (focald answers the retry
  duplicate: true). The backoff is waited on its own event, which only close() sets: observe() does
  not wake the sender while focald is down. A 500 answered three times in a row refuses the request
  whole: focald may have committed it before failing to write its answer, so it is never sent again
  in parts under other batch_ids. A request focald refuses (4xx) for something in the calls'
  data (labels out of range, an id twice in one call, ...: the problem's field points into ids, the
  tensors, meta or segments) is sent again one observe() call at a time, so that only the calls at fault
  are refused. A refusal that each call would get alike (a wrong loss config: field /loss; a wrong
  token) refuses the request whole, with no more requests (_refusals.refuses_every_call). A call refused
  alone for its size (413) is sent in halves instead (_refuse_or_halve). Either way the refused calls
  are counted in rejected and the error kept in last_error.
- Logging never floods the training log. Refusals are logged by a RefusalLog (_refusals.py): the first
  with each status and code as it comes, the rest summed up in at most one line a minute and in a last
  line when the sender stops. Retries are logged once when focald starts failing and once when it
  answers again. The counters count every refusal and retry either way.

Threads: observe(), stats(), flush() and close() may be called from any thread; the slabs and the
counters are guarded by one lock (self._cond); only the sender thread sends.

Fork: a forked child (a DataLoader worker) has no sender thread, its copy of the lock may have been held
by the parent's sender at the fork, and its copy of the buffers is the parent's, which the parent sends.
So in the child every Miner starts afresh: a new lock, empty buffers, zero counters, a batch_id prefix of
its own (the parent's batch_ids are not the child's to reuse) and a sender thread of its own. A child of
multiprocessing (a DataLoader worker) ends with os._exit(), skipping atexit, so there the Miners are
closed as at exit by one of multiprocessing's exit finalizers (_close_at_process_exit).

The sender thread starts on the first observe() that buffers something, in the parent as in a child: a
DataLoader worker that never observes keeps no idle thread. The start is in the general path of
observe(), which every Miner takes first (the fast path needs a slab that only it makes), so the fast
path does not test for it.
"""
import atexit
import collections
import logging
import os
import sys
import threading
import time
import uuid
import warnings
import weakref
from typing import Any, Deque, Dict, List, Mapping, Optional, Tuple, Union

from . import _args, framing
from .client import Client, _loss_obj
from ._refusals import RefusalLog, Unencodable, refuses_every_call
from ._retry import Backoff
from ._slab import Layout, Tensor, _Slab, _cpu_tensor, _layout_of, _row_bytes, _slab_bytes
from .errors import FocaldError

log = logging.getLogger("focald.miner")

# At most one summary of the refusals logged per this many seconds (see _refusals.py).
_REFUSAL_LOG_INTERVAL = 60.0
# A slab made for a call of another layout than the previous slab's has room for this many such calls.
_SWITCH_CALLS = 8

_live: "weakref.WeakSet[Miner]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    """At interpreter exit, flush the miners nobody closed, each within its close_timeout of the same
    start: they all stop taking observations first, so exit waits for the longest close_timeout, not
    their sum."""
    t0 = time.monotonic()
    closing = [m for m in list(_live) if m._begin_close()]
    for m in closing:
        m._finish_close(m.close_timeout - (time.monotonic() - t0), m.close_timeout)


def _after_fork_in_child() -> None:
    """In a forked child, every Miner starts afresh (see the module's docstring), and a child of
    multiprocessing (a DataLoader worker) closes them when it ends (see _close_at_process_exit)."""
    for m in list(_live):
        m._after_fork()
    mp_util = sys.modules.get("multiprocessing.util")
    if mp_util is not None and _live:
        mp_util.register_after_fork(_fork_token, _close_at_process_exit)


class _ForkToken:
    """What multiprocessing's registry of after-fork callbacks holds (weakly) for this module."""


_fork_token = _ForkToken()


def _close_at_process_exit(_: Any) -> None:
    """In a child of multiprocessing (a DataLoader worker), registers _close_all to run when the child
    ends. Such a child ends with os._exit(), which skips atexit: without this, what its Miners had
    buffered would be lost unsaid. multiprocessing runs its exit finalizers instead, but empties their
    registry after the fork, then runs its after-fork callbacks, which is when this one runs."""
    sys.modules["multiprocessing.util"].Finalize(None, _close_all, exitpriority=0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _positive(name: str, v: Any) -> float:
    """A number of seconds that must be more than 0 (a backoff of 0 would retry a down focald in a
    busy loop, taking the GIL from the training loop)."""
    f = _args.number(name, v, 0.0)
    if f <= 0:
        raise ValueError("%s = %r is out of range: it must be more than 0 seconds" % (name, f))
    return f


def _step_epoch(step: Any, epoch: Any) -> Tuple[Optional[int], Optional[int]]:
    """A call's step and epoch as Python ints (NumPy integers and one-element integer tensors
    taken), checked against focald's bounds: TypeError or ValueError naming the argument."""
    return (_args.opt_integer("step", step, 0, _args.MAX_STEP),
            _args.opt_integer("epoch", epoch, 0, _args.MAX_EPOCH))


class Miner:
    """Reports observations to focald from a background thread; never blocks or raises on focald's account.

    dataset: the dataset the observations go to. run: the run name (focald's default "default").
    loss: a loss type name or loss object, as in Client.post_batch. Default: focald's, sigmoid_focal
        (one sigmoid per class, torchvision's convention); pass "softmax_focal" for a softmax classifier.
    client: a Client to send with; else one is made from url, token and ca_file ($FOCALD_URL,
        $FOCALD_TOKEN, $FOCALD_CA_FILE), with request_timeout (seconds a request may take in all) and binary.
    flush_interval: seconds a request collects steps before it is sent (sooner when max_batch samples
        are collected). close() and flush() send at once.
    max_queue_bytes: the bound on the buffers holding unsent observations; past it the oldest unsent
        request's observations are dropped.
    max_batch: at most this many samples in one request.
    retry_initial, retry_max: the backoff between attempts (seconds), doubling from initial to max;
        a Retry-After from focald is honoured up to retry_max.
    close_timeout: how long close() waits for the buffers to drain by default.
    batch_id_prefix: the start of every batch_id this Miner sends (default: random). It must differ
        between processes (DDP's ranks) and between runs of the program: focald takes a batch_id it has
        stored with the same samples as a retry and stores nothing of it (counted in duplicates), and
        refuses one stored with other samples (422 batch_id_reused, counted in rejected and logged).

    Counters (attributes, samples unless said otherwise): observed, sent (acknowledged by focald),
    duplicates (acknowledged as already stored: a retry of a committed request), dropped (buffer
    overflow, or still unsent when close() gave up), dropped_observations (observe() calls dropped
    whole), rejected (in calls focald refused with 4xx), retries (requests sent again), batches
    (requests acknowledged); pending (buffered or being sent); last_error (the latest FocaldError, or
    None); stats() returns them all as a dict.
    """

    def __init__(self, dataset: str, *, run: Optional[str] = None, loss: Union[str, Mapping[str, Any], None] = None,
                 client: Optional[Client] = None, url: Optional[str] = None, token: Optional[str] = None,
                 binary: Optional[bool] = None, ca_file: Optional[str] = None, flush_interval: float = 0.1,
                 max_queue_bytes: int = 256 << 20, max_batch: int = 16384, request_timeout: float = 10.0,
                 retry_initial: float = 0.2, retry_max: float = 5.0, close_timeout: float = 10.0,
                 batch_id_prefix: Optional[str] = None) -> None:
        # every argument is checked here: a wrong one would otherwise refuse every request in the
        # background, seen only in the log and the counters
        self.dataset = _args.focald_name("dataset", dataset)
        self.run = None if run is None else _args.focald_name("run", run)
        self.loss = _loss_obj(loss)
        if client is not None and not callable(getattr(client, "post_batch", None)):
            raise TypeError("client must be a focald.Client, not %s" % type(client).__name__)
        self.flush_interval = _args.number("flush_interval", flush_interval, 0.0)
        self.max_queue_bytes = _args.integer("max_queue_bytes", max_queue_bytes, 1)
        self.max_batch = _args.integer("max_batch", max_batch, 1)
        self.retry_initial = _positive("retry_initial", retry_initial)
        self.retry_max = _positive("retry_max", retry_max)
        self.close_timeout = _args.number("close_timeout", close_timeout, 0.0)
        _positive("request_timeout", request_timeout)
        self._backoff = Backoff(self.retry_initial, self.retry_max)
        if batch_id_prefix is not None:
            _args.string("batch_id_prefix", batch_id_prefix)
        self.client = client if client is not None else Client(url, token=token, timeout=request_timeout,
                                                               binary=binary, ca_file=ca_file)
        self._prefix = batch_id_prefix or "miner-" + uuid.uuid4().hex[:16]
        self._seq = 0
        self._have_numpy = framing.have_numpy()
        self._warned_loss = False
        self._closing = False
        self._closed = False
        self._start()
        _live.add(self)

    def _start(self) -> None:
        """Sets up the empty buffers, the counters, the lock and the sender thread (started by observe())."""
        self._cond = threading.Condition()
        self._cur: Optional[_Slab] = None      # the slab observe() fills
        self._last_layout: Optional[Layout] = None  # the layout of the latest slab made (see _start_slab)
        self._last_cap = 0                     # and its rows
        self._ready: Deque[_Slab] = collections.deque()  # full or due slabs, oldest first
        self._free: List[_Slab] = []           # emptied slabs of the current layout, for reuse
        self._allocated = 0                    # bytes of every slab that exists
        self._extra = 0                        # extra bytes of the slabs queued or in flight (string ids, meta)
        self._queued_n = 0                     # samples in _cur and _ready
        self._inflight: Optional[_Slab] = None
        self._inflight_dropped = False         # close() gave up on the in-flight slab and counted it
        self._inflight_done = 0                # its samples already sent or refused (a split sends it in parts)
        self._flushing = 0
        self._abandon = threading.Event()      # close() gave up: the only thing that ends a backoff early
        self._failing = False
        self._refusals = RefusalLog(log, _REFUSAL_LOG_INTERVAL)  # the sender thread's alone

        self.observed = 0
        self.sent = 0
        self.duplicates = 0
        self.dropped = 0
        self.dropped_observations = 0
        self.rejected = 0
        self.retries = 0
        self.batches = 0
        self.last_error: Optional[Exception] = None

        self._thread = threading.Thread(target=self._run, name="focald-miner", daemon=True)
        self._sending = False                  # the thread was started (by the first observe())

    def _after_fork(self) -> None:
        """In a forked child: drops the parent's buffers (the parent sends them) and lock, and starts
        afresh with a batch_id prefix of this process."""
        if self._closed:
            _live.discard(self)
            return
        self._prefix = "%s-p%d" % (self._prefix, os.getpid())
        self._seq = 0
        self._start()

    def __repr__(self) -> str:
        return "Miner(%r, %s)" % (self.dataset, ", ".join("%s=%s" % kv for kv in self.stats().items()
                                                          if kv[0] != "last_error"))

    # ------------------------------------------------------------ the training loop's side

    def observe(self, ids: Tensor, logits: Tensor = None, targets: Tensor = None, *, probs: Tensor = None,
                step: Optional[int] = None, epoch: Optional[int] = None, weights: Tensor = None,
                meta: Optional[Mapping[str, Any]] = None) -> None:
        """Copies one batch of predictions into the Miner's buffers and returns.

        ids: N sample ids. logits or probs: (N, C) or (N, M, C) (torch tensors, on any device, arrays or
        lists; copied here, so the caller may reuse its buffers at once). targets: as for
        Client.post_batch. step, epoch: the training step and epoch (integers >= 0, at most 2^47 - 1 and
        65534; NumPy integers and one-element torch tensors too). weights, meta: as for Client.post_batch
        (each sample's meta dict copied too). Raises TypeError or ValueError for a wrong argument (a bug in
        the caller), which is then neither counted nor kept, never for focald's state.
        """
        # step and epoch go into the request's JSON header: a NumPy or torch integer would not encode
        # there, and a value focald refuses would lose the call, so they are checked here (ints in
        # range pass with two comparisons)
        if not (step is None or type(step) is int and 0 <= step <= _args.MAX_STEP) or \
                not (epoch is None or type(epoch) is int and 0 <= epoch <= _args.MAX_EPOCH):
            step, epoch = _step_epoch(step, epoch)
        if meta is not None:
            meta = _args.meta_keys(meta)  # integer ids as keys (NumPy's too) as focald reads them
        # The fast path: a call exactly like the slab's previous one (shapes, dtypes, CPU torch tensors),
        # copied with three NumPy assignments. Anything else takes _observe(), which checks the call.
        x = logits if probs is None else probs
        key: Optional[Tuple[Any, ...]]
        try:
            key = (logits is None, probs is None, type(x), ids.shape, x.shape, targets.shape, ids.dtype, x.dtype,
                   targets.dtype, None if weights is None else (weights.shape, weights.dtype))
        except AttributeError:
            key = None
        with self._cond:
            slab = self._cur
            if key is not None and slab is not None and slab.fast and slab.key == key and not self._closed:
                a = slab.n
                b = a + slab.key_n
                if b <= slab.cap and slab.nseg < slab.segcap:
                    try:
                        slab.put_cpu(ids, x, targets, weights, a, b)
                    except TypeError:  # a tensor on a GPU this time: the general path copies it
                        pass
                    else:
                        self._add_extra(slab.note(b - a, step, epoch, meta))
                        self.observed += b - a
                        self._queued_n += b - a
                        if slab.nseg == 1:
                            slab.t0 = time.monotonic()
                            self._cond.notify_all()
                        return
        self._observe(ids, logits, probs, targets, weights, step, epoch, meta, key)

    def _observe(self, ids: Tensor, logits: Tensor, probs: Tensor, targets: Tensor, weights: Tensor,
                 step: Optional[int], epoch: Optional[int], meta: Optional[Mapping[str, Any]],
                 key: Optional[Tuple[Any, ...]]) -> None:
        if (logits is None) == (probs is None):
            raise ValueError("give exactly one of logits and probs")
        if targets is None:
            raise ValueError("targets are required")
        xname, x = ("logits", logits) if logits is not None else ("probs", probs)
        n = framing.check_ids(ids)
        if framing.length(x) != n or framing.length(targets) != n:
            raise ValueError("ids, %s and targets disagree on the number of samples (%d, %d, %d)"
                             % (xname, n, framing.length(x), framing.length(targets)))
        if weights is not None and framing.length(weights) != n:
            raise ValueError("weights has %d rows for %d samples" % (framing.length(weights), n))
        if n == 0:
            return
        with self._cond:
            if self._closed:
                raise RuntimeError("observe() after close()")
            if not self._sending:
                self._sending = True
                self._thread.start()
            layout = self._layout(ids, xname, x, targets, weights)
            slab = self._cur
            if slab is None or slab.layout != layout or slab.n + n > slab.cap or slab.nseg == slab.segcap:
                slab = self._start_slab(layout, n, x)
            tt = slab.tensor_type
            slab.fast = key is not None and tt is not None and slab.str_ids is None and len(ids.shape) == 1 and all(
                _cpu_tensor(t, tt) for t in (ids, x, targets, weights) if t is not None)
            slab.key, slab.key_n = key, n
            added = slab.put(ids, x, targets, weights, n, step, epoch, meta)  # a call it refuses leaves no trace
            self.observed += n
            self._queued_n += n
            self._add_extra(added)
            if slab.nseg == 1:
                slab.t0 = time.monotonic()
                self._cond.notify_all()  # the sender times this slab from now

    def _layout(self, ids: Tensor, xname: str, x: Tensor, targets: Tensor, weights: Tensor) -> Layout:
        """The layout of a call (see _layout_of); warns once when the loss is most likely not the model's."""
        layout = _layout_of(ids, xname, x, targets, weights, self._have_numpy)
        tail, kind = layout[2], layout[3]
        if kind == "f" and tail and tail[-1] >= 2 and layout[4] == tail[:-1]:
            # the shape of class indices, but floats (or booleans): focald refuses every such call
            # (class indices are integers), so every step would be lost in the background
            raise TypeError("targets of shape (N%s) over %d classes are class indices, which must be integers, "
                            "not %s: pass targets.long() (multi-hot or soft rows have the shape of the %s)"
                            % ("".join(", %d" % d for d in layout[4]), tail[-1],
                               getattr(targets, "dtype", "floats"), xname))
        if self.loss is None and xname == "logits" and kind == "i" and len(tail) == 1 and tail[0] >= 2 \
                and not self._warned_loss:
            # class indices over C >= 2 logits: most likely a softmax classifier, which focald's default
            # (one sigmoid per class, alpha 0.25) scores differently from its training loss
            self._warned_loss = True
            warnings.warn("Miner(%r): no loss given, so focald scores these class-index targets with its default, "
                          "sigmoid_focal (one sigmoid per class, alpha 0.25); for a softmax classifier trained with "
                          "cross-entropy pass loss=\"cross_entropy\" (or \"softmax_focal\"), or pass "
                          "loss=\"sigmoid_focal\" to keep the default and silence this" % self.dataset, UserWarning,
                          stacklevel=4)
        return layout

    def _start_slab(self, layout: Layout, n: int, x: Tensor) -> _Slab:
        """Hands the current slab to the sender and makes an empty one current: a free one, a new one
        within max_queue_bytes, or the oldest unsent one, whose observations are dropped. Lock held.

        The first slab has the full size (_rows_for). A call of another layout than the previous slab's
        gets a slab of eight such calls' rows (_SWITCH_CALLS), and each slab after it of the same layout
        twice the rows of the one before, up to the full size. Layouts that change from call to call
        (dense outputs whose length M follows each batch's padding) would otherwise each take a slab
        sized for thousands of rows for one call's few: the bound, counted in allocated bytes, would then
        drop observations while focald keeps up, and every call would allocate megabytes. A steady
        layout reaches the full size within a few slabs."""
        last = self._last_layout
        self._last_layout = layout
        if self._cur is not None and self._cur.n:
            self._ready.append(self._cur)
            self._cond.notify_all()
        elif self._cur is not None:
            self._recycle(self._cur)
        self._cur = None
        if self._free and self._free[-1].layout != layout:
            for s in self._free:
                self._allocated -= s.nbytes
            self._free = []
        slab: Optional[_Slab] = None
        if self._free and self._free[-1].cap >= n:
            slab = self._free.pop()
        else:
            rows = self._rows_for(layout)
            if last is None:
                cap = max(n, rows)
            elif last == layout:
                cap = max(n, min(rows, 2 * self._last_cap))
            else:
                cap = max(n, min(rows, _SWITCH_CALLS * n))
            self._last_cap = cap
            nbytes = _slab_bytes(layout, cap)
            while self._ready and self._allocated + self._extra + nbytes > self.max_queue_bytes:
                old = self._ready.popleft()
                self.dropped += old.n
                self.dropped_observations += old.nseg
                self._queued_n -= old.n
                self._extra -= old.extra
                if old.layout == layout and old.cap >= n and old.pooled:
                    old.reset()
                    slab = old
                    break
                self._allocated -= old.nbytes
            if slab is None:
                pin = layout[0] == "torch" and framing._torch_tensor(x) and x.device.type == "cuda"
                slab = _Slab(layout, cap, pin)
                slab.pooled = cap == rows
                self._allocated += slab.nbytes
        self._cur = slab
        return slab

    def _add_extra(self, nbytes: int) -> None:
        """Counts nbytes more held by the slabs beyond their arrays; past max_queue_bytes, drops the oldest
        unsent slabs (never the one filling, nor the one being sent). Lock held."""
        self._extra += nbytes
        while self._ready and self._allocated + self._extra > self.max_queue_bytes:
            old = self._ready.popleft()
            self.dropped += old.n
            self.dropped_observations += old.nseg
            self._queued_n -= old.n
            self._extra -= old.extra
            self._recycle(old)

    def _rows_for(self, layout: Layout) -> int:
        """A slab's rows: max_batch, or fewer so that eight slabs fit in max_queue_bytes."""
        per_row = _row_bytes(layout) + 8  # and its slot in the list of segments
        return max(1, min(self.max_batch, self.max_queue_bytes // (8 * per_row)))

    def _recycle(self, slab: _Slab) -> None:
        """An empty slab back to the pool (lock held)."""
        if slab.pooled and (not self._free or self._free[-1].layout == slab.layout) and (
                self._cur is None or self._cur.layout == slab.layout):
            slab.reset()
            self._free.append(slab)
        else:
            self._allocated -= slab.nbytes

    @property
    def pending(self) -> int:
        """Samples buffered or being sent."""
        with self._cond:
            return self._pending()

    def _pending(self) -> int:
        inflight = self._inflight.n - self._inflight_done if self._inflight is not None and not self._inflight_dropped \
            else 0
        return self._queued_n + inflight

    def stats(self) -> Dict[str, Any]:
        """The counters as a dict (see the class docstring)."""
        with self._cond:
            return {"observed": self.observed, "sent": self.sent, "duplicates": self.duplicates,
                    "dropped": self.dropped, "dropped_observations": self.dropped_observations,
                    "rejected": self.rejected, "retries": self.retries, "batches": self.batches,
                    "pending": self._pending(), "last_error": self.last_error}

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Sends everything observed so far at once and waits until it is sent (or refused). Returns
        True if the buffers drained, False after timeout seconds (None: close_timeout)."""
        deadline = time.monotonic() + (self.close_timeout if timeout is None else timeout)
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()
            try:
                while self._ready or (self._cur is not None and self._cur.n) or self._inflight is not None:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout: Optional[float] = None) -> bool:
        """Sends what is buffered and stops the sender, waiting at most timeout seconds (None:
        close_timeout). What is still unsent then is counted in dropped. Returns True when everything
        was sent (or refused), False when close gave up. Idempotent."""
        timeout = self.close_timeout if timeout is None else timeout
        if not self._begin_close():
            return not self._abandon.is_set()
        return self._finish_close(timeout, timeout)

    def _begin_close(self) -> bool:
        """Tells the sender to send what is buffered and stop. False when already closed."""
        with self._cond:
            if self._closed:
                return False
            self._closed = True
            self._closing = True
            self._cond.notify_all()
        return True

    def _finish_close(self, wait: float, timeout: float) -> bool:
        """Waits up to wait seconds for the sender, then gives up on what is unsent (close's answer);
        timeout is the time given in all, for the log."""
        if self._sending:  # else nothing was ever observed: nothing to send
            self._thread.join(max(0.0, wait))
        _live.discard(self)
        if not self._thread.is_alive():
            return True
        with self._cond:
            self._abandon.set()
            unsent = list(self._ready) + ([self._cur] if self._cur is not None else [])
            for s in unsent:
                self.dropped += s.n
                self.dropped_observations += s.nseg
                self._extra -= s.extra
            self._ready.clear()
            self._cur = None
            self._queued_n = 0
            if self._inflight is not None:
                self.dropped += self._inflight.n - self._inflight_done  # the parts not sent or refused yet
                self._inflight_dropped = True
            self._cond.notify_all()
        log.warning("focald miner closed with %d samples unsent after %.1f s", self.dropped, timeout)
        return False

    def __enter__(self) -> "Miner":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ the sender thread

    def _next(self) -> Optional[_Slab]:
        """The next slab to send, or None to stop. Lock held; waits."""
        while True:
            if self._abandon.is_set():
                return None
            if self._ready:
                return self._ready.popleft()
            cur = self._cur
            wait: Optional[float] = None
            if cur is not None and cur.n:
                wait = cur.t0 + self.flush_interval - time.monotonic()
                if wait <= 0 or self._closing or self._flushing:
                    self._cur = None
                    return cur
            elif self._closing:
                return None
            self._cond.wait(wait)

    def _run(self) -> None:
        while True:
            with self._cond:
                slab = self._next()
                if slab is not None:
                    self._queued_n -= slab.n
                    self._inflight = slab
            if slab is None:
                self._refusals.flush()  # what was refused since the last line
                return
            try:
                self._send(slab)
            except Exception as e:  # never let the thread die: a bug here must not stop reporting
                with self._cond:
                    lost = slab.n - self._inflight_done  # the parts of a split already sent or refused are not
                    self.rejected += lost
                    if self._inflight_dropped:
                        self.dropped -= lost
                    self.last_error = e
                log.exception("focald miner: unexpected error; %d samples lost", lost)
            finally:
                with self._cond:
                    self._inflight = None
                    self._inflight_dropped = False
                    self._inflight_done = 0
                    self._extra -= slab.extra
                    self._recycle(slab)
                    self._cond.notify_all()

    def _segments(self, slab: _Slab, lo: int = 0, hi: Optional[int] = None) -> List[Dict[str, int]]:
        out = []
        for seg in slab.seg[lo:slab.nseg if hi is None else hi]:
            assert seg is not None  # the first nseg are set
            n, step, epoch = seg
            g = {"n": n}
            if step is not None:
                g["step"] = step
            if epoch is not None:
                g["epoch"] = epoch
            out.append(g)
        return out

    def _send(self, slab: _Slab) -> None:
        self._seq += 1
        batch_id = "%s-%d" % (self._prefix, self._seq)
        res = self._post(slab, 0, slab.nseg, batch_id, slab.n)
        if not isinstance(res, FocaldError):
            return
        if refuses_every_call(res) or (res.status or 0) >= 500 or (res.status or 500) < 400:
            # each call alone would be refused the same way (a wrong loss, a wrong token): one refusal.
            # A 5xx that persisted may have come after focald committed the request (a 500 for lack of
            # memory to write the answer): sent again in parts under other batch_ids, its samples would
            # be stored twice, so the request is given up whole. So is a redirect (3xx): every call
            # would meet it
            self._refuse(res, slab.n)
            return
        if slab.nseg == 1:
            self._refuse_or_halve(res, slab, 0, 0, slab.n, batch_id)
            return
        # refused for something in the calls' data: send them one by one, so that only those at fault
        # are refused
        row = 0
        for k in range(slab.nseg):
            seg = slab.seg[k]
            assert seg is not None
            n = seg[0]
            if self._abandon.is_set():
                return
            res = self._post(slab, k, k + 1, "%s.%d" % (batch_id, k), n, row)
            if isinstance(res, FocaldError):
                if refuses_every_call(res):  # the rest would be refused as this call was
                    self._refuse(res, slab.n - row)
                    return
                self._refuse_or_halve(res, slab, k, row, n, "%s.%d" % (batch_id, k))
            row += n

    def _refuse_or_halve(self, e: FocaldError, slab: _Slab, k: int, row: int, n: int, batch_id: str) -> None:
        """Call k's rows [row, row + n), refused alone with e, are counted refused; unless e is 413
        (a body past focald's --max-body: the call is too large, not wrong), when they are sent in two
        halves, each a segment with the call's step and epoch (and halved again while refused so), so
        that a large call is stored rather than lost."""
        if e.status != 413 or n < 2:
            self._refuse(e, n)
            return
        half = n // 2
        for j, (lo, m) in enumerate(((row, half), (row + half, n - half))):
            if self._abandon.is_set():
                return
            res = self._post(slab, k, k + 1, "%s.h%d" % (batch_id, j), m, lo)
            if isinstance(res, FocaldError):
                self._refuse_or_halve(res, slab, k, lo, m, "%s.h%d" % (batch_id, j))

    def _refuse(self, e: FocaldError, n: int) -> None:
        """Counts n samples refused with e, and logs the refusal (sparingly)."""
        with self._cond:
            self.rejected += n
            self._inflight_done += n
            if self._inflight_dropped:  # close() gave up on it, but the answer came after all
                self.dropped -= n
        self._refusals.note(e, n)

    def _post(self, slab: _Slab, k0: int, k1: int, batch_id: str, n: int,
              row: int = 0) -> Union[Dict[str, Any], FocaldError, None]:
        """Sends calls [k0, k1) of slab (rows from row, n of them: of one call, n may be a part of it)
        until acknowledged, refused or abandoned. Returns the response, the refusal (a FocaldError, which the caller counts), or None
        when abandoned."""
        ids, x, targets, weights = slab.tensors(row, row + n)
        segs = self._segments(slab, k0, k1)
        if k1 - k0 == 1:
            segs[0]["n"] = n  # a part of the call, when it is sent in halves
        meta = slab.meta
        if meta and n < slab.n:
            keep = {str(i) for i in framing.as_lists(ids)}
            meta = {i: v for i, v in meta.items() if str(i) in keep} or None
        kw = {slab.layout[1]: x}
        attempt = 0
        while True:
            try:
                res = self.client.post_batch(self.dataset, ids, targets=targets, run=self.run, batch_id=batch_id,
                                             loss=self.loss, weights=weights, meta=meta, segments=segs,
                                             outputs=(), **kw)
            except (ValueError, TypeError) as v:
                # never sent (a NaN for JSON; a meta value JSON has no form for): refused here, as focald
                # refuses one call's data
                e = Unencodable.of(v)
                with self._cond:
                    self.last_error = e
                return e
            except FocaldError as e:
                with self._cond:
                    self.last_error = e
                if e.status is None or not 200 <= e.status < 300:
                    give_up = not e.retryable or (e.status == 500 and attempt >= 2)
                    if give_up:
                        return e
                    if self._abandon.is_set():
                        return None  # counted as dropped by close()
                    if not self._failing:
                        self._failing = True
                        log.warning("focald miner: %s; retrying in the background (buffers bound %d bytes)", e,
                                    self.max_queue_bytes)
                    attempt += 1
                    delay = self._backoff.delay(attempt, e.retry_after)
                    # woken early only by close() giving up (which counted this request as dropped); a
                    # plain close keeps retrying until its timeout, and observe() never wakes this wait
                    if self._abandon.wait(delay):
                        return None
                    with self._cond:
                        self.retries += 1
                    continue
                # a 2xx: focald took the request and stored it, only its answer could not be read (a
                # proxy's page in its place, say). Sent again, under this batch_id or others, it would be
                # stored twice: it counts as sent
                log.warning("focald miner: %s; the batch was stored", e)
                res = {}
            with self._cond:
                if self._failing:
                    log.info("focald miner: focald answers again")
                    self._failing = False
                if self._inflight_dropped:  # close() gave up on it, but it got through after all
                    self.dropped -= n
                self.sent += n
                self._inflight_done += n
                self.batches += 1
                if res.get("duplicate"):
                    self.duplicates += n
            return res
