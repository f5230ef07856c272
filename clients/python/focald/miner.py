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

- observe() copies the tensors into a preallocated buffer (a "slab": one array each for ids, logits or
  probs, targets and weights, sized for many steps) and records the step, epoch and row count of the
  call. Nothing is allocated per call once the slabs exist, and nothing is done per element in Python:
  a call shaped like the previous one with CPU tensors is three NumPy slice assignments under the lock;
  a CUDA tensor is copied with Tensor.copy_(non_blocking=True) into pinned memory, so that observe never
  waits for the GPU (the sender waits on a CUDA event before reading); lists are converted by NumPy.
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
  loop is never blocked and never sees an exception from focald. A slab's size counts its list of
  segments (a slot per row) with its arrays, and what it holds beyond them, string ids, meta and each
  call's (n, step, epoch) tuple, is counted against the same bound as it comes in (a slab's "extra"
  bytes): a path per sample takes several times the bytes of its logits, and with 2-class rows the
  segments alone would take a third more than the arrays, which would otherwise escape the bound.
- A request that fails because focald is unreachable or answers 5xx is sent again after a backoff, with
  the same batch_id, so a request that was in fact committed is stored once (focald answers the retry
  duplicate: true). The backoff is waited on its own event, which only close() sets: observe() does
  not wake the sender while focald is down. A request focald refuses (4xx: labels out of range, an id
  twice in one call, ...) is sent again one observe() call at a time, so that only the calls at fault
  are refused; they are counted in rejected and the error kept in last_error.
- Logging never floods the training log. Of the refusals, the first with each status and code is
  logged as it comes; later ones are counted and summed up in at most one line a minute ("focald
  refused 840 more requests (26880 samples) in the last 60 s: 840 with 422 invalid_loss; the latest:
  ..."), and in a last line when the sender stops. A wrong loss config refuses every call: a line per
  call would bury the trainer's own output. Retries are logged once when focald starts failing and
  once when it answers again. The counters count every refusal and retry either way.

Threads: observe(), stats(), flush() and close() may be called from any thread; the slabs and the
counters are guarded by one lock (self._cond); only the sender thread sends.

Fork: a forked child (a DataLoader worker) has no sender thread, its copy of the lock may have been held
by the parent's sender at the fork, and its copy of the buffers is the parent's, which the parent sends.
So in the child every Miner starts afresh: a new lock, empty buffers, zero counters, a batch_id prefix of
its own (the parent's batch_ids are not the child's to reuse) and a sender thread of its own.

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
from typing import Any, Deque, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from . import framing
from .client import Client, _loss_obj
from ._retry import Backoff
from .errors import FocaldError

log = logging.getLogger("focald.miner")

# At most one summary of the refusals logged per this many seconds (see the module's docstring).
_REFUSAL_LOG_INTERVAL = 60.0

_live: "weakref.WeakSet[Miner]" = weakref.WeakSet()

# (backend, xname, x's tail shape, target kind, targets' tail shape, weights' tail shape or None, id kind)
Layout = Tuple[str, str, Tuple[int, ...], str, Tuple[int, ...], Optional[Tuple[int, ...]], str]
# (n, step, epoch) of one observe() call
Segment = Tuple[int, Optional[int], Optional[int]]
Tensor = Any


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
    """In a forked child, every Miner starts afresh (see the module's docstring)."""
    for m in list(_live):
        m._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _torch() -> Any:
    return sys.modules.get("torch")


def _tail_shape(x: Tensor) -> Tuple[int, ...]:
    """The shape after the first dimension (for lists: read off the first element)."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        return tuple(int(d) for d in shape[1:])
    dims: List[int] = []
    v = x[0] if x else None
    while isinstance(v, (list, tuple)):
        dims.append(len(v))
        v = v[0] if v else None
    return tuple(dims)


def _kind(x: Tensor) -> str:
    """'f' float, 'b' boolean, 'i' integer (lists: by their first element). Integer targets are class
    indices; booleans are 0/1 targets, sent as floats (see framing.targets_as_numbers)."""
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


def _ids_kind(ids: Tensor) -> str:
    """'i' for integer ids (INT64 on the wire), 's' for any other (strings)."""
    dt = getattr(ids, "dtype", None)
    if dt is not None:
        s = str(dt)
        return "i" if ("int" in s and "uint64" not in s) else "s"
    return "i" if all(type(i) is int for i in ids) else "s"  # bool is not an id


class _Slab:
    """Observations of one layout waiting to be sent: cap rows of preallocated arrays, filled in order,
    and the (n, step, epoch) of each observe() call in it."""

    __slots__ = ("layout", "key", "backend", "cap", "segcap", "n", "nseg", "ids", "x", "t", "w", "ids_np", "x_np",
                 "t_np", "w_np", "str_ids", "seg", "meta", "t0", "event", "cuda", "nbytes", "pooled", "tensor_type", "fast", "key_n",
                 "extra")
    # the buffers are torch tensors, NumPy arrays or lists, by backend: typed as Any
    ids: Any
    x: Any
    t: Any
    w: Any
    ids_np: Any
    x_np: Any
    t_np: Any
    w_np: Any
    key: Optional[Tuple[Any, ...]]
    str_ids: Optional[List[Any]]
    seg: List[Optional[Segment]]
    meta: Optional[Dict[str, Any]]
    event: Any
    tensor_type: Any
    nbytes: int
    extra: int  # bytes held beyond the preallocated arrays: string ids, meta, segment tuples (estimated)

    def __init__(self, layout: Layout, cap: int, pin: bool) -> None:
        backend, xname, xtail, tkind, ttail, wtail, idkind = layout
        self.layout, self.backend, self.cap = layout, backend, cap
        self.key = None  # the calls the fast path of observe() takes: shapes, dtypes and types, as checked once
        self.fast = False  # those calls' tensors are all CPU torch tensors with NumPy dtypes
        self.key_n = 0
        self.tensor_type = _torch().Tensor if backend == "torch" else None
        self.segcap = _segcap(cap)
        self.n = self.nseg = 0
        self.seg = [None] * self.segcap  # (n, step, epoch) per call: the tuples are the only per-call objects
        self.meta = None
        self.t0 = 0.0
        self.event = None
        self.cuda = False
        self.str_ids = [] if idkind == "s" else None
        self.pooled = True
        self.extra = 0
        if backend == "list":
            self.ids = [] if idkind == "i" else None
            self.x, self.t, self.w = [], [], ([] if wtail is not None else None)
            self.ids_np = self.x_np = self.t_np = self.w_np = None
            self.nbytes = cap * 8 * (2 + _prod(xtail) + _prod(ttail) + (_prod(wtail) if wtail is not None else 0)) \
                + _seg_list_bytes(cap)
            return
        np = framing.np
        tdt = "<i8" if tkind == "i" else "<f4"
        if backend == "torch":
            torch = _torch()
            self.ids = torch.empty((cap,), dtype=torch.int64, pin_memory=pin) if idkind == "i" else None
            self.x = torch.empty((cap,) + xtail, dtype=torch.float32, pin_memory=pin)
            self.t = torch.empty((cap,) + ttail, dtype=torch.int64 if tkind == "i" else torch.float32, pin_memory=pin)
            self.w = torch.empty((cap,) + wtail, dtype=torch.float32, pin_memory=pin) if wtail is not None else None
            self.ids_np = self.ids.numpy() if self.ids is not None else None
            self.x_np, self.t_np = self.x.numpy(), self.t.numpy()
            self.w_np = self.w.numpy() if self.w is not None else None
        else:
            self.ids = self.ids_np = np.empty((cap,), "<i8") if idkind == "i" else None
            self.x = self.x_np = np.empty((cap,) + xtail, "<f4")
            self.t = self.t_np = np.empty((cap,) + ttail, tdt)
            self.w = self.w_np = np.empty((cap,) + wtail, "<f4") if wtail is not None else None
        self.nbytes = sum(a.nbytes for a in (self.ids_np, self.x_np, self.t_np, self.w_np) if a is not None) \
            + _seg_list_bytes(cap)

    def reset(self) -> None:
        self.seg[:self.nseg] = [None] * self.nseg  # the tuples go with the extra bytes that counted them
        self.n = self.nseg = 0
        self.meta = None
        self.extra = 0
        self.cuda = False
        if self.str_ids is not None:
            del self.str_ids[:]
        if self.backend == "list":
            for a in (self.ids, self.x, self.t, self.w):
                if a is not None:
                    del a[:]

    def put(self, ids: Tensor, x: Tensor, targets: Tensor, weights: Tensor, n: int, step: Optional[int],
            epoch: Optional[int], meta: Optional[Mapping[str, Any]]) -> int:
        """Copies one call's tensors in after the rows already there (the caller checked the room).
        Returns the bytes it added to extra, for the caller to count against the bound."""
        a, b = self.n, self.n + n
        if self.fast:
            self.put_cpu(ids, x, targets, weights, a, b)
        elif self.backend == "list":
            if self.ids is not None:
                self.ids.extend(framing.as_lists(ids))
            self.x.extend(framing.as_lists(x))
            self.t.extend(framing.targets_as_numbers(framing.as_lists(targets)))
            if self.w is not None:
                self.w.extend(framing.as_lists(weights))
        else:
            if self.str_ids is None:
                self._copy(self.ids, self.ids_np, a, b, ids)
            self._copy(self.x, self.x_np, a, b, x)
            self._copy(self.t, self.t_np, a, b, targets)
            if self.w is not None:
                self._copy(self.w, self.w_np, a, b, weights)
            if self.cuda:
                if self.event is None:
                    self.event = _torch().cuda.Event()
                self.event.record()  # the sender waits for the copies queued so far
        added = 0
        if self.str_ids is not None:
            str_ids = framing.as_lists(ids)
            self.str_ids.extend(str_ids)
            added = sum(map(sys.getsizeof, str_ids)) + 8 * len(str_ids)
            self.extra += added
        return added + self.note(n, step, epoch, meta)

    def put_cpu(self, ids: Tensor, x: Tensor, targets: Tensor, weights: Tensor, a: int, b: int) -> None:
        """Copies a call of CPU torch tensors with NumPy dtypes into rows [a, b): the common case, in
        straight-line code. Raises TypeError for a tensor NumPy cannot take (a GPU's, bfloat16)."""
        self.ids_np[a:b] = ids.numpy()
        self.x_np[a:b] = (x.detach() if x.requires_grad else x).numpy()
        self.t_np[a:b] = (targets.detach() if targets.requires_grad else targets).numpy()
        if self.w is not None:
            self.w_np[a:b] = (weights.detach() if weights.requires_grad else weights).numpy()

    def note(self, n: int, step: Optional[int], epoch: Optional[int], meta: Optional[Mapping[str, Any]]) -> int:
        """Records a call of n rows just copied in: its segment, and its meta. Returns the bytes it
        added to extra."""
        self.seg[self.nseg] = (n, step, epoch)
        self.nseg += 1
        self.n += n
        added = _SEG_BYTES
        if meta:
            if self.meta is None:
                self.meta = {}
            # each sample's dict is copied as the tensors are: the caller may change or reuse it at once
            self.meta.update((k, dict(v) if isinstance(v, Mapping) else v) for k, v in meta.items())
            added += _size_of(meta)
        self.extra += added
        return added

    def _copy(self, dst: Any, dst_np: Any, a: int, b: int, src: Tensor) -> None:
        tt = self.tensor_type
        if tt is not None and isinstance(src, tt):
            if src.requires_grad:
                src = src.detach()
            if src.device.type == "cpu":
                try:
                    dst_np[a:b] = src.numpy()  # NumPy's copy costs less than Tensor.copy_ for a small tensor
                    return
                except TypeError:  # bfloat16 has no NumPy dtype: Tensor.copy_ converts it, as for a GPU's
                    pass
            elif src.is_cuda:
                self.cuda = True  # the sender waits on this slab's event before reading it
            # asynchronous from a GPU into pinned memory (observe never waits for the GPU); from a CPU
            # tensor the same call is an ordinary copy
            dst[a:b].copy_(src, non_blocking=True)
            return
        if framing._torch_tensor(src):
            src = framing.as_array(src)
        if isinstance(src, framing._BF16):
            src = src.to_f32()
        dst_np[a:b] = src

    def tensors(self, lo: int = 0, hi: Optional[int] = None) -> Tuple[Any, Any, Any, Any]:
        """(ids, x, targets, weights) of rows [lo, hi), as the client sends them (views, no copies)."""
        hi = self.n if hi is None else hi
        if self.cuda:
            self.event.synchronize()
        ids = self.str_ids[lo:hi] if self.str_ids is not None else self.ids_np[lo:hi] if self.ids_np is not None \
            else self.ids[lo:hi]
        if self.backend == "list":
            return ids, self.x[lo:hi], self.t[lo:hi], self.w[lo:hi] if self.w is not None else None
        return ids, self.x_np[lo:hi], self.t_np[lo:hi], self.w_np[lo:hi] if self.w_np is not None else None


def _cpu_tensor(t: Any, tt: Any) -> bool:
    """Whether t is a CPU torch tensor whose .numpy() works (no bfloat16 or complex)."""
    return isinstance(t, tt) and not t.is_cuda and str(t.dtype) != "torch.bfloat16" and not t.dtype.is_complex


def _size_of(v: Any, depth: int = 0) -> int:
    """An estimate of the bytes v holds (dicts, lists and tuples followed four levels deep)."""
    n = sys.getsizeof(v)
    if depth < 4:
        if isinstance(v, Mapping):
            n += sum(_size_of(k, depth + 1) + _size_of(x, depth + 1) for k, x in v.items())
        elif isinstance(v, (list, tuple)):
            n += sum(_size_of(x, depth + 1) for x in v)
    return n


# The bytes of one call's segment: the (n, step, epoch) tuple, and its n and step, which in most calls are
# ints beyond CPython's cache of small ones (the epoch rarely is).
_SEG_BYTES = sys.getsizeof((0, 0, 0)) + 2 * sys.getsizeof(1 << 20)


def _segcap(cap: int) -> int:
    """The segments a slab of cap rows has room for."""
    return max(16, cap)


def _seg_list_bytes(cap: int) -> int:
    """The bytes of the list of segments of a slab of cap rows (its slots, without the tuples)."""
    return sys.getsizeof([]) + 8 * _segcap(cap)


def _prod(shape: Sequence[int]) -> int:
    p = 1
    for d in shape:
        p *= d
    return p


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
        self.dataset = dataset
        self.run = run
        self.loss = _loss_obj(loss)
        self.client = client if client is not None else Client(url, token=token, timeout=request_timeout,
                                                               binary=binary, ca_file=ca_file)
        self.flush_interval = float(flush_interval)
        self.max_queue_bytes = int(max_queue_bytes)
        self.max_batch = max(1, int(max_batch))
        self.retry_initial = float(retry_initial)
        self.retry_max = float(retry_max)
        self._backoff = Backoff(self.retry_initial, self.retry_max)
        self.close_timeout = float(close_timeout)
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
        self._ready: Deque[_Slab] = collections.deque()  # full or due slabs, oldest first
        self._free: List[_Slab] = []           # emptied slabs of the current layout, for reuse
        self._allocated = 0                    # bytes of every slab that exists
        self._extra = 0                        # extra bytes of the slabs queued or in flight (string ids, meta)
        self._queued_n = 0                     # samples in _cur and _ready
        self._inflight: Optional[_Slab] = None
        self._inflight_dropped = False         # close() gave up on the in-flight slab and counted it
        self._flushing = 0
        self._abandon = threading.Event()      # close() gave up: the only thing that ends a backoff early
        self._failing = False
        # the refusals' log, kept by the sender thread alone: the (status, code) already logged, when the
        # last line was, and what was refused since: (status, code) -> [requests, samples]
        self._refusal_log_interval = _REFUSAL_LOG_INTERVAL
        self._refusals_logged: Set[Tuple[Optional[int], str]] = set()
        self._refusal_logged_at = 0.0
        self._refusals_unlogged: Dict[Tuple[Optional[int], str], List[int]] = {}
        self._refusal_latest: Optional[FocaldError] = None

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
        Client.post_batch. step, epoch: the training step and epoch (integers >= 0). weights, meta: as
        for Client.post_batch (each sample's meta dict copied too). Raises ValueError for inconsistent arguments (a bug in the caller), never
        for focald's state.
        """
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
        n = framing.length(ids)
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
            self.observed += n
            added = slab.put(ids, x, targets, weights, n, step, epoch, meta)
            self._queued_n += n
            self._add_extra(added)
            if slab.nseg == 1:
                slab.t0 = time.monotonic()
                self._cond.notify_all()  # the sender times this slab from now

    def _layout(self, ids: Tensor, xname: str, x: Tensor, targets: Tensor, weights: Tensor) -> Layout:
        if not self._have_numpy:
            backend = "list"
        elif framing._torch_tensor(x):
            backend = "torch"
        else:
            backend = "numpy"
        tail, kind = _tail_shape(x), "i" if _kind(targets) == "i" else "f"
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
        return (backend, xname, tail, kind, _tail_shape(targets),
                _tail_shape(weights) if weights is not None else None, _ids_kind(ids))

    def _start_slab(self, layout: Layout, n: int, x: Tensor) -> _Slab:
        """Hands the current slab to the sender and makes an empty one current: a free one, a new one
        within max_queue_bytes, or the oldest unsent one, whose observations are dropped. Lock held."""
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
            cap = max(n, rows)
            nbytes = self._estimate(layout, cap)
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
        per_row = self._row_bytes(layout) + 8  # and its slot in the list of segments
        return max(1, min(self.max_batch, self.max_queue_bytes // (8 * per_row)))

    @staticmethod
    def _row_bytes(layout: Layout) -> int:
        """The bytes of one row of a slab's arrays."""
        backend, xname, xtail, tkind, ttail, wtail, idkind = layout
        per = 8 + 4 * _prod(xtail) + (8 if tkind == "i" else 4) * _prod(ttail)
        if wtail is not None:
            per += 4 * _prod(wtail)
        return per * (2 if backend == "list" else 1)

    @classmethod
    def _estimate(cls, layout: Layout, rows: int) -> int:
        """The nbytes of a slab of rows rows: its arrays and its list of segments."""
        return rows * cls._row_bytes(layout) + _seg_list_bytes(rows)

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
        inflight = self._inflight.n if self._inflight is not None and not self._inflight_dropped else 0
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
                self.dropped += self._inflight.n
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
                self._log_refusals(time.monotonic())  # what was refused since the last line
                return
            try:
                self._send(slab)
            except Exception as e:  # never let the thread die: a bug here must not stop reporting
                log.exception("focald miner: unexpected error; %d samples lost", slab.n)
                with self._cond:
                    self.rejected += slab.n
                    self.last_error = e
            finally:
                with self._cond:
                    self._inflight = None
                    self._inflight_dropped = False
                    self._extra -= slab.extra
                    self._recycle(slab)
                    self._cond.notify_all()

    def _note_refusal(self, e: FocaldError, n: int) -> None:
        """Logs a refusal of n samples: at once when it is the first with its status and code, or the
        first after a quiet interval; else counts it for the next summary, logged when the interval
        since the last line has passed."""
        now = time.monotonic()
        key = (e.status, e.code)
        quiet = not self._refusals_unlogged and now - self._refusal_logged_at >= self._refusal_log_interval
        if key not in self._refusals_logged or quiet:
            self._refusals_logged.add(key)
            self._refusal_logged_at = now
            log.warning("focald refused %d samples: %s", n, e)
            return
        counts = self._refusals_unlogged.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += n
        self._refusal_latest = e
        if now - self._refusal_logged_at >= self._refusal_log_interval:
            self._log_refusals(now)

    def _log_refusals(self, now: float) -> None:
        """Logs the refusals counted since the last line, if any, in one line."""
        if not self._refusals_unlogged:
            return
        requests = sum(c[0] for c in self._refusals_unlogged.values())
        samples = sum(c[1] for c in self._refusals_unlogged.values())
        kinds = ", ".join("%d with %s %s" % (c[0], status if status is not None else "no status", code)
                          for (status, code), c in self._refusals_unlogged.items())
        log.warning("focald refused %d more requests (%d samples) in the last %.0f s: %s; the latest: %s",
                    requests, samples, now - self._refusal_logged_at, kinds, self._refusal_latest)
        self._refusals_unlogged = {}
        self._refusal_logged_at = now

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
        if isinstance(res, FocaldError) and slab.nseg > 1:
            # refused: send the calls one by one, so that only those at fault are refused
            row = 0
            for k in range(slab.nseg):
                seg = slab.seg[k]
                assert seg is not None
                n = seg[0]
                if self._abandon.is_set():
                    return
                self._post(slab, k, k + 1, "%s.%d" % (batch_id, k), n, row)
                row += n

    def _post(self, slab: _Slab, k0: int, k1: int, batch_id: str, n: int,
              row: int = 0) -> Union[Dict[str, Any], FocaldError, None]:
        """Sends calls [k0, k1) of slab (rows from row, n of them) until acknowledged, refused or
        abandoned. Returns the response, the refusal (a FocaldError, counted in rejected only for a
        single call), or None when abandoned."""
        ids, x, targets, weights = slab.tensors(row, row + n)
        segs = self._segments(slab, k0, k1)
        meta = slab.meta
        if meta and k1 - k0 < slab.nseg:
            keep = {str(i) for i in framing.as_lists(ids)}
            meta = {i: v for i, v in meta.items() if str(i) in keep} or None
        kw = {slab.layout[1]: x}
        attempt = 0
        while True:
            try:
                res = self.client.post_batch(self.dataset, ids, targets=targets, run=self.run, batch_id=batch_id,
                                             loss=self.loss, weights=weights, meta=meta, segments=segs,
                                             outputs=(), **kw)
            except FocaldError as e:
                with self._cond:
                    self.last_error = e
                give_up = not e.retryable or (e.status == 500 and attempt >= 2)
                if give_up:
                    if k1 - k0 > 1 and e.status != 401 and e.status != 403:
                        return e  # split by the caller
                    with self._cond:
                        self.rejected += n
                    self._note_refusal(e, n)
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
            return res
