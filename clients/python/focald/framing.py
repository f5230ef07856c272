"""Batch bodies for focald: JSON, or the Open Inference Protocol's binary tensor framing.

The binary framing (README "Binary tensors") is a JSON header of
Inference-Header-Content-Length bytes followed by each tensor's raw
little-endian row-major bytes, in the order of the header's "inputs". It needs
NumPy; without NumPy every tensor is sent as JSON lists. Either way focald sees
the same float32 values, so the results are the same.

Tensors may be NumPy arrays, PyTorch tensors (detached and copied to the CPU
here; any float dtype), or nested Python lists. Logits and probabilities travel
as FP32, or as FP16/BF16 when that is their dtype (focald converts those
exactly); float64 is rounded to float32 here, as focald would. Integer targets
keep INT64/INT32/UINT8; float targets (multi-hot or soft rows) and boolean
targets (0/1, never class indices) go as FP32. Integer ids go as INT64, any
other ids as BYTES (UTF-8).

Responses are turned into the JSON response's shape in both cases: losses and
scores are lists of Python floats holding float32 values exactly (JSON's
9-digit decimals are rounded to float32 to match the binary bytes), with None
where a sample had nothing scored (and for "pred" of dense samples).
"""
import array
import json
import struct
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union, cast

from ._args import dumps
from .errors import FocaldError

# NumPy is optional (without it every batch is JSON) and imported on first need, so that programs
# that never send a batch (focalctl) do not pay for importing it. Typed as Any: the client runs (and is
# checked) without NumPy.
np: Any = None
_np_tried = False

# A tensor: a NumPy array, a torch tensor, a _BF16 or nested lists; a JSON document
Tensor = Any
JSON = Dict[str, Any]

OUTPUT_NAMES = ("losses", "p_t", "p_max", "margin", "norm_margin", "entropy", "cw_entropy", "el2n", "correct", "pred")
SCORE_NAMES = OUTPUT_NAMES[1:]
OCTET = "application/octet-stream"


def have_numpy() -> bool:
    """Whether NumPy can be imported (imports it the first time)."""
    global np, _np_tried
    if not _np_tried:
        _np_tried = True
        try:
            import numpy
            np = numpy
        except ImportError:
            np = None
    return np is not None


def _ndarray(x: Any) -> bool:
    """Whether x is a NumPy array or scalar (without importing NumPy: a caller holding one has)."""
    m = sys.modules.get("numpy")
    return m is not None and isinstance(x, (m.ndarray, m.generic))


# ---------------------------------------------------------------------------- tensors in

def _torch_tensor(x: Any) -> bool:
    """Whether x is a torch.Tensor (without importing torch when the caller never did)."""
    t = type(x)
    return t.__module__.startswith("torch") and hasattr(x, "detach") and hasattr(x, "dtype")


def _from_torch(x: Any) -> Any:
    """A torch tensor as a NumPy array (BF16 as its uint16 bit patterns, with a marker), detached and on the CPU."""
    x = x.detach()
    if x.device.type != "cpu":
        x = x.cpu()
    name = str(x.dtype)
    if name == "torch.bfloat16":  # NumPy has no bfloat16: keep the bits
        return _BF16(x.contiguous().view(sys.modules["torch"].int16).numpy().view("<u2"))
    if name in ("torch.complex64", "torch.complex128", "torch.complex32"):
        raise TypeError("complex tensors are not supported")
    return x.numpy()


class _BF16:
    """A bfloat16 tensor's bits (uint16 array): NumPy has no bfloat16 dtype."""

    __slots__ = ("bits",)

    def __init__(self, bits: Any) -> None:
        self.bits = bits

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.bits.shape)

    def to_f32(self) -> Any:
        return (self.bits.astype("<u4") << 16).view("<f4")


def as_array(x: Tensor) -> Any:
    """x (array, tensor or nested lists) as a NumPy array or _BF16. Needs NumPy."""
    if not have_numpy():
        raise RuntimeError("NumPy is needed for the binary framing")
    if isinstance(x, _BF16):
        return x
    if _torch_tensor(x):
        return _from_torch(x)
    return np.asarray(x)


def as_lists(x: Tensor) -> Any:
    """x as nested Python lists (the JSON form)."""
    if isinstance(x, _BF16):
        return x.to_f32().tolist()
    if _torch_tensor(x):
        x = x.detach()
        if x.device.type != "cpu":
            x = x.cpu()
        if str(x.dtype) in ("torch.bfloat16", "torch.float16"):
            x = x.float()
        return x.tolist()
    if _ndarray(x):
        return x.tolist()
    if isinstance(x, (list, tuple)):
        return [as_lists(v) for v in x]
    return x


def copy_tensor(x: Tensor) -> Tensor:
    """A private copy of x, taken where observe() is called so the caller may reuse its buffers.
    Torch tensors stay tensors (copied to the CPU); arrays are copied; lists are copied one level deep."""
    if _torch_tensor(x):
        x = x.detach()
        return x.cpu() if x.device.type != "cpu" else x.clone()
    if _ndarray(x):
        return x.copy()
    if isinstance(x, (list, tuple)):
        return list(x)
    return x


def length(x: Tensor) -> int:
    """Number of rows (first dimension) of x."""
    if isinstance(x, _BF16):
        return x.shape[0]
    shape = getattr(x, "shape", None)
    if shape is not None:
        return int(shape[0]) if len(shape) else 0
    return len(x)


# ---------------------------------------------------------------------------- JSON bodies

def targets_as_numbers(t: Any) -> Any:
    """Boolean targets as 0.0/1.0: multi-hot rows, or binary targets of a single-output model.
    focald reads integer targets as class indices, and with the sigmoid family index C means
    background, so True sent as the index 1 of a one-output model would mean "negative"."""
    if isinstance(t, bool):
        return float(t)
    if isinstance(t, list):
        return [targets_as_numbers(v) for v in t]
    return t


def json_body(fields: Mapping[str, Any], ids: Tensor, xname: str, x: Tensor, targets: Tensor,
              weights: Tensor = None, outputs: Optional[Sequence[str]] = None) -> bytes:
    """The JSON request body (bytes) of a batch: fields (run, batch_id, loss, ...) plus the tensors.
    outputs: names beyond the JSON answer's own losses and scores (grad, grad_norm) are returned."""
    doc = {k: v for k, v in fields.items() if v is not None}
    if outputs is not None:
        doc["outputs"] = list(outputs)
    doc["ids"] = [_json_id(i) for i in as_lists(ids)]
    doc[xname] = as_lists(x)
    doc["targets"] = targets_as_numbers(as_lists(targets))
    if weights is not None:
        doc["weights"] = as_lists(weights)
    return _dumps_naming(doc)


def _dumps_naming(doc: Mapping[str, Any]) -> bytes:
    """dumps(doc), whose ValueError for a NaN or an infinity names the member that holds it (json says
    only "Out of range float values are not JSON compliant")."""
    try:
        return dumps(doc)
    except ValueError:
        for k, v in doc.items():
            try:
                dumps(v)
            except ValueError:
                tensor = k in ("logits", "probs", "targets", "weights")
                raise ValueError("%s holds NaN or an infinity, which JSON cannot carry%s" % (
                    k, " (in the binary framing, with NumPy, focald refuses it: 422 not_finite)" if tensor
                    else "")) from None
        raise


def _json_id(i: Any) -> Any:
    if isinstance(i, bytes):
        return i.decode("utf-8")
    if isinstance(i, int) and not -0x8000000000000000 <= i <= 0x7FFFFFFFFFFFFFFF:
        return str(i)  # JSON integers beyond int64 are refused; the decimal string is the same sample
    return i


# ---------------------------------------------------------------------------- binary bodies

_INT_TARGETS = {"i8": "INT64", "i4": "INT32", "u1": "UINT8"}


def _float_tensor(a: Any) -> Tuple[str, Any]:
    """(datatype, contiguous little-endian array) of a float tensor for logits, probs or weights."""
    if isinstance(a, _BF16):
        return "BF16", np.ascontiguousarray(a.bits, dtype="<u2")
    if a.dtype == np.float16:
        return "FP16", np.ascontiguousarray(a, dtype="<f2")
    if a.dtype.kind not in "fiub":
        raise TypeError("a tensor of dtype %s cannot be sent as numbers" % a.dtype)
    return "FP32", np.ascontiguousarray(a, dtype="<f4")


def _target_tensor(a: Any) -> Tuple[str, Any]:
    """(datatype, contiguous little-endian array) of targets: integers as class indices, the rest as FP32."""
    if isinstance(a, _BF16):
        return "FP32", np.ascontiguousarray(a.to_f32())
    kind = a.dtype.kind
    if kind == "b":  # booleans are 0/1 targets (see targets_as_numbers), not class indices
        return "FP32", np.ascontiguousarray(a, dtype="<f4")
    if kind in "iu":
        key = "%s%d" % (kind, a.dtype.itemsize)
        if key in ("i8", "i4", "u1"):
            return _INT_TARGETS[key], np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        if kind == "i" and a.dtype.itemsize < 4 or kind == "u" and a.dtype.itemsize == 2:
            return "INT32", np.ascontiguousarray(a, dtype="<i4")
        return "INT64", np.ascontiguousarray(a, dtype="<i8")
    if kind == "f":
        return "FP32", np.ascontiguousarray(a, dtype="<f4")
    raise TypeError("targets of dtype %s are not supported" % a.dtype)


def check_ids(ids: Tensor, name: str = "ids") -> int:
    """The number of ids in ids, after checking that they are N sample ids: a one-dimensional array or
    tensor of integers or strings, or a list of ints and strings (NumPy integers too). TypeError for
    anything else (floats, booleans, a str alone), ValueError for another shape."""
    if isinstance(ids, (str, bytes)) or ids is None:
        raise TypeError("%s must be a list, array or tensor of N sample ids, not %s" % (name, type(ids).__name__))
    shape = getattr(ids, "shape", None)
    if shape is not None:
        if len(shape) != 1:
            raise ValueError("%s must be one-dimensional, N ids, not of shape %s" % (name, tuple(shape)))
        kind = str(ids.dtype)
        if _torch_tensor(ids):
            ok = "int" in kind
        else:
            ok = getattr(ids.dtype, "kind", "") in "iuUSO"
        if not ok:
            raise TypeError("%s must be integers or strings, not %s" % (name, kind))
        return int(shape[0])
    try:
        n = len(ids)
    except TypeError:
        raise TypeError("%s must be a list, array or tensor of N sample ids, not %s"
                        % (name, type(ids).__name__)) from None
    for k, i in enumerate(ids):
        if type(i) is int or isinstance(i, str):
            continue
        if isinstance(i, bool) or not (isinstance(i, (int, bytes)) or (_ndarray(i) and i.dtype.kind in "iuUS")):
            raise TypeError("%s[%d] must be an int or a str, not %s" % (name, k, type(i).__name__))
    return n


def _ids_tensor(ids: Tensor) -> Tuple[str, List[int], bytes]:
    """(datatype, shape, bytes) of the ids: INT64 when all are integers of 64 bits, else BYTES (an
    integer beyond int64 as its decimal string, which focald takes as that integer's sample)."""
    if _torch_tensor(ids) or _ndarray(ids):
        a = as_array(ids)
        if a.dtype.kind in "iu" and not (a.dtype.kind == "u" and a.dtype.itemsize == 8 and len(a)
                                         and int(a.max()) > 0x7FFFFFFFFFFFFFFF):
            return "INT64", [len(a)], np.ascontiguousarray(a, dtype="<i8").tobytes()
        ids = a.tolist()
    ids = list(ids)
    if all(type(i) is int for i in ids):  # bool is not an id
        try:
            return "INT64", [len(ids)], _i64_bytes(ids)
        except OverflowError:
            pass
    parts = []
    for i in ids:
        if _ndarray(i):
            i = i.item()
        b = i if isinstance(i, bytes) else str(i).encode("utf-8")
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return "BYTES", [len(ids)], b"".join(parts)


def _i64_bytes(ints: Sequence[int]) -> bytes:
    a = array.array("q", ints)
    if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big-endian hosts
        a.byteswap()
    return a.tobytes()


def binary_body(fields: Mapping[str, Any], ids: Tensor, xname: str, x: Tensor, targets: Tensor, weights: Tensor = None,
                binary_response: bool = True,
                outputs: Optional[Sequence[str]] = None) -> Tuple[List[Union[bytes, memoryview]], int]:
    """(parts, header length) of a binary request: a list of bytes-like parts to send in order."""
    have_numpy()
    header: JSON = {k: v for k, v in fields.items() if v is not None}
    inputs: List[JSON] = []
    blobs: List[Union[bytes, memoryview]] = []

    def add(name: str, datatype: str, shape: Sequence[int], data: Any) -> None:
        mv = memoryview(data).cast("B") if not isinstance(data, bytes) else data
        inputs.append({"name": name, "datatype": datatype, "shape": list(shape),
                       "parameters": {"binary_data_size": len(mv)}})
        blobs.append(mv)

    dt, shape, data = _ids_tensor(ids)
    add("ids", dt, shape, data)
    dt, a = _float_tensor(as_array(x))
    add(xname, dt, a.shape, a)
    dt, a = _target_tensor(as_array(targets))
    add("targets", dt, a.shape, a)
    if weights is not None:
        dt, a = _float_tensor(as_array(weights))
        add("weights", dt, a.shape, a)
    header["inputs"] = inputs
    if outputs is not None:  # () asks for none: the answer is its header
        header["outputs"] = [{"name": n} for n in outputs]
    if binary_response:
        header["parameters"] = {"binary_data_output": True}
    head = _dumps_naming(header)
    parts: List[Union[bytes, memoryview]] = [head]
    return parts + blobs, len(head)


# ---------------------------------------------------------------------------- responses out

def _f32_lists(values: List[Optional[float]]) -> List[Optional[float]]:
    """A list of JSON numbers rounded to float32 exactly as the binary bytes hold them; None stays None."""
    if not values:
        return list(values)
    if any(v is None for v in values):
        rounded = array.array("f", [0.0 if v is None else v for v in values]).tolist()
        return [None if v is None else r for v, r in zip(values, rounded)]
    rounded = array.array("f", cast(List[float], values)).tolist()  # no None here
    return cast(List[Optional[float]], rounded)


def _f32_nested(values: Any) -> Any:
    """_f32_lists at every depth of a nested list (grad is (N, C) or (N, M, C))."""
    if isinstance(values, list) and values and isinstance(values[0], list):
        return [_f32_nested(v) for v in values]
    return _f32_lists(values) if isinstance(values, list) else values


def normalize_json_result(doc: JSON) -> JSON:
    """A JSON batch response with its per-sample numbers as float32 values (see the module docstring)."""
    for k in ("losses", "grad", "grad_norm"):
        if isinstance(doc.get(k), list):
            doc[k] = _f32_nested(doc[k])
    scores = doc.get("scores")
    if isinstance(scores, dict):
        for k, v in scores.items():
            if k != "pred" and isinstance(v, list):
                scores[k] = _f32_lists(v)
    return doc


def decode_binary_result(headers: Any, body: bytes, fields: Mapping[str, Any]) -> JSON:
    """A binary batch response in the JSON response's shape. fields: what the request sent (batch_id)."""
    hl = headers.get("Inference-Header-Content-Length")
    if hl is None or not hl.isdigit() or int(hl) > len(body):
        raise FocaldError(200, "bad_response", "the binary answer's Inference-Header-Content-Length is %r" % hl)
    hlen = int(hl)
    have_numpy()
    head = json.loads(body[:hlen].decode("utf-8"))
    out: Dict[str, List[Any]] = {}
    off = hlen
    for o in head.get("outputs", []):
        n = o["parameters"]["binary_data_size"]
        dt = {"FP32": "<f4", "INT32": "<i4"}[o["datatype"]]
        count = n // np.dtype(dt).itemsize
        shape = [int(d) for d in o.get("shape", [count])]
        if int(np.prod(shape)) != count or off + n > len(body):
            raise FocaldError(200, "bad_response", "the binary answer's output %r has shape %r and %d bytes"
                              % (o.get("name"), shape, n))
        a = np.frombuffer(body, dtype=dt, count=count, offset=off)
        off += n
        if o["datatype"] == "INT32":  # pred: -1 where nothing was scored (JSON's null)
            out[o["name"]] = [None if v < 0 else v for v in a.tolist()]
        else:
            # nested as the JSON answer nests it: grad is (N, C) or (N, M, C), the others (N)
            vals = a.reshape(shape).tolist()
            if np.isnan(a).any():
                vals = _nan_to_none(vals)
            out[o["name"]] = vals
    if off != len(body):
        raise FocaldError(200, "bad_response",
                          "the binary answer's outputs take %d bytes of %d" % (off - hlen, len(body) - hlen))
    doc: JSON = {"dataset": head.get("dataset"), "run": head.get("run"), "batch_id": fields.get("batch_id"),
           "accepted": head.get("accepted"), "duplicate": head.get("duplicate"), "loss": head.get("loss")}
    if "losses" in out:
        doc["losses"] = out["losses"]
    scores = {k: out[k] for k in SCORE_NAMES if k in out}
    if scores:
        doc["scores"] = scores
    for k in ("grad", "grad_norm"):
        if k in out:
            doc[k] = out[k]
    doc["hardest"] = head.get("hardest", [])
    return doc


def _nan_to_none(vals: Any) -> Any:
    """NaN (JSON's null for a sample with nothing scored) as None, at any depth."""
    if isinstance(vals, list):
        return [_nan_to_none(v) for v in vals]
    return None if vals != vals else vals
