"""The checks of the client's arguments, made before any request, and the JSON encoding of what they hold.

A wrong argument is the caller's bug: it gets a TypeError (the wrong kind of value) or a ValueError (the
right kind, out of range) naming the argument, here, rather than a 422 from focald, a request to a
dataset called "None", or a traceback from inside json or http.client. focald checks everything again;
these checks catch what Python can tell on its own, and leave to focald what it alone knows (whether a
name is taken, a label in range).

A training loop's numbers are often NumPy or torch scalars (a step from np.arange, an epoch from a
tensor): integers are taken in any form operator.index() takes (int, NumPy integers, one-element integer
tensors) and become Python ints; bool is not an integer here. dumps() writes JSON whose values may be
NumPy scalars, arrays or torch tensors (meta values, a loss's gamma), as their Python values.
"""
import json
import operator
import re
from typing import Any, Dict, Mapping, Optional

# focald's names: datasets, runs, queues (README "Names")
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
# focald's bounds on a batch's step and epoch (README, POST /v1/datasets/{dataset}/batches)
MAX_STEP = (1 << 47) - 1
MAX_EPOCH = 65534
INT64_MAX = (1 << 63) - 1


def _what(v: Any) -> str:
    return type(v).__name__


def integer(name: str, v: Any, lo: Optional[int] = None, hi: Optional[int] = None) -> int:
    """v as a Python int: an int, a NumPy integer or a one-element integer tensor; TypeError for
    anything else (bool, float, str), ValueError outside [lo, hi]."""
    if isinstance(v, bool):
        raise TypeError("%s must be an integer, not bool" % name)
    try:
        i = operator.index(v)
    except TypeError:
        raise TypeError("%s must be an integer, not %s" % (name, _what(v))) from None
    if (lo is not None and i < lo) or (hi is not None and i > hi):
        raise ValueError("%s = %d is out of range: it must be in [%s, %s]"
                         % (name, i, "-inf" if lo is None else lo, "inf" if hi is None else hi))
    return i


def opt_integer(name: str, v: Any, lo: Optional[int] = None, hi: Optional[int] = None) -> Optional[int]:
    """integer(), or None for None."""
    return None if v is None else integer(name, v, lo, hi)


def number(name: str, v: Any, lo: Optional[float] = None) -> float:
    """v as a float (an int or float, NumPy's too; not bool); ValueError below lo or NaN."""
    if isinstance(v, bool) or not hasattr(v, "__float__") or isinstance(v, (str, bytes)):
        raise TypeError("%s must be a number, not %s" % (name, _what(v)))
    f = float(v)
    if f != f or (lo is not None and f < lo):
        raise ValueError("%s = %r is out of range: it must be at least %s" % (name, f, lo))
    return f


def string(name: str, v: Any) -> str:
    """v, which must be a str."""
    if not isinstance(v, str):
        raise TypeError("%s must be a str, not %s" % (name, _what(v)))
    return v


def opt_string(name: str, v: Any) -> Optional[str]:
    return None if v is None else string(name, v)


def focald_name(name: str, v: Any) -> str:
    """A dataset's or run's name as focald takes it for writing: [A-Za-z0-9._-]{1,64}, not . or .."""
    s = string(name, v)
    if not NAME_RE.match(s) or s in (".", ".."):
        raise ValueError("%s %r is not a name focald takes: 1 to 64 of A-Z a-z 0-9 . _ -, and not . or .."
                         % (name, s))
    return s


def sample_id(name: str, v: Any) -> Any:
    """One sample id: a str, or an integer of 64 bits (returned as a Python int)."""
    if isinstance(v, str):
        return v
    return integer(name, v, -INT64_MAX - 1, INT64_MAX)


def opt_bool(name: str, v: Any) -> Optional[bool]:
    if v is None or isinstance(v, bool):
        return v
    if type(v).__name__ == "bool_":  # NumPy's
        return bool(v)
    raise TypeError("%s must be True, False or None, not %s" % (name, _what(v)))


def mapping(name: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise TypeError("%s must be a dict, not %s" % (name, _what(v)))
    return v


def meta_keys(meta: Optional[Mapping[Any, Any]], name: str = "meta") -> Optional[Dict[Any, Any]]:
    """A batch's meta ({id: {...}}) with keys JSON can write: strings and ints as they are, NumPy's
    integers and one-element integer tensors as ints (JSON writes an int key as its decimal string, the
    same sample, README "Names"); TypeError for any other key."""
    if meta is None:
        return None
    mapping(name, meta)
    if all(type(k) is str or type(k) is int for k in meta):
        return dict(meta)
    return {k if type(k) is str else sample_id("a key of %s" % name, k): v for k, v in meta.items()}


def _default(o: Any) -> Any:
    """What json makes of a value it does not know: NumPy scalars and arrays, torch tensors."""
    item = getattr(o, "tolist", None)  # NumPy scalars and arrays, torch tensors: Python numbers or lists
    if item is not None and callable(item) and type(o).__module__.split(".")[0] in ("numpy", "torch"):
        if hasattr(o, "detach"):
            o = o.detach().cpu()
        return o.tolist()
    raise TypeError("%s cannot be sent as JSON" % _what(o))


def dumps(doc: Any) -> bytes:
    """doc as compact UTF-8 JSON; NaN and infinities are a ValueError (JSON has no such numbers)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False, default=_default).encode("utf-8")
