"""The Miner's buffers: a slab holds the observations of one layout until the sender sends them.

A slab is one preallocated array each for ids, logits or probs, targets and weights, sized for many
steps, and the (n, step, epoch) of each observe() call copied into it (its segments). observe() copies a
call's tensors in after the rows already there: nothing is allocated per call once the slabs exist, and
nothing is done per element in Python. A call shaped like the previous one with CPU tensors is three
NumPy slice assignments (put_cpu); a CUDA tensor is copied with Tensor.copy_(non_blocking=True) into
pinned memory, so that observe never waits for the GPU (the sender waits on the slab's CUDA event before
reading); lists are converted by NumPy. Without NumPy a slab keeps Python lists.

A slab's layout (backend, which of logits or probs, the tail shapes, the kinds of targets and ids) is
what its arrays can take: a call of another layout starts another slab.

Its size, nbytes, counts its arrays and its list of segments (a slot per row). What it holds beyond them
is its "extra" bytes, estimated as calls come in: string ids, meta, and each call's (n, step, epoch)
tuple. The Miner counts both against max_queue_bytes: a path per sample takes several times the bytes of
its logits, and with 2-class rows (24 bytes of arrays) the segments alone would take a third more than
the arrays, which would otherwise escape the bound.

Slabs are not thread-safe: the Miner guards them with its lock.
"""
import numbers
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from . import framing

# (backend, xname, x's tail shape, target kind, targets' tail shape, weights' tail shape or None, id kind)
Layout = Tuple[str, str, Tuple[int, ...], str, Tuple[int, ...], Optional[Tuple[int, ...]], str]
# (n, step, epoch) of one observe() call
Segment = Tuple[int, Optional[int], Optional[int]]
Tensor = Any


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
    """'f' float, 'b' boolean, 'i' integer. Integer targets are class indices; booleans are 0/1 targets,
    sent as floats (see framing.targets_as_numbers). Lists by every element, as the client sends them: one
    number that is not whole (0.7 in [[1, 0], [0.7, 0.3]], a numpy float) makes them floats."""
    dt = getattr(x, "dtype", None)
    if dt is None:
        kinds = set()
        stack = [x]
        while stack:
            v = stack.pop()
            if isinstance(v, (list, tuple)):
                stack.extend(v)
            elif isinstance(v, bool):
                kinds.add("b")
            elif isinstance(v, numbers.Integral):
                kinds.add("i")
            else:
                return "f"  # a float of any kind (or something focald is to refuse, as a float)
        return "b" if kinds == {"b"} else "i"
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
        Returns the bytes it added to extra, for the caller to count against the bound. A call whose
        tensors cannot be copied (a TypeError or ValueError) leaves the slab as it was: its rows are
        counted (n) only once all of them are in."""
        a, b = self.n, self.n + n
        if self.fast:
            self.put_cpu(ids, x, targets, weights, a, b)
        elif self.backend == "list":
            rows = (framing.as_lists(ids) if self.ids is not None else None, framing.as_lists(x),
                    framing.targets_as_numbers(framing.as_lists(targets)),
                    framing.as_lists(weights) if self.w is not None else None)
            for dst, src in zip((self.ids, self.x, self.t, self.w), rows):
                if dst is not None:
                    dst.extend(src)
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


def _layout_of(ids: Tensor, xname: str, x: Tensor, targets: Tensor, weights: Tensor, have_numpy: bool) -> Layout:
    """The layout of one observe() call: the slabs its tensors fit in."""
    if not have_numpy:
        backend = "list"
    elif framing._torch_tensor(x):
        backend = "torch"
    else:
        backend = "numpy"
    return (backend, xname, _tail_shape(x), "i" if _kind(targets) == "i" else "f", _tail_shape(targets),
            _tail_shape(weights) if weights is not None else None, _ids_kind(ids))


def _row_bytes(layout: Layout) -> int:
    """The bytes of one row of a slab's arrays."""
    backend, xname, xtail, tkind, ttail, wtail, idkind = layout
    per = 8 + 4 * _prod(xtail) + (8 if tkind == "i" else 4) * _prod(ttail)
    if wtail is not None:
        per += 4 * _prod(wtail)
    return per * (2 if backend == "list" else 1)


def _slab_bytes(layout: Layout, rows: int) -> int:
    """The nbytes of a slab of rows rows: its arrays and its list of segments."""
    return rows * _row_bytes(layout) + _seg_list_bytes(rows)


def _prod(shape: Sequence[int]) -> int:
    p = 1
    for d in shape:
        p *= d
    return p
