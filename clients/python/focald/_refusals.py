"""RefusalLog: the Miner's refused requests logged without flooding the training log.

When focald refuses every call (a wrong loss config, say), a line per refused call would bury the
trainer's own output: hundreds of lines a minute. So the first refusal with each status and code is
logged as it comes; later ones are counted and summed up in at most one line per interval ("focald
refused 840 more requests (26880 samples) in the last 60 s: 840 with 422 invalid_loss; the latest:
..."), and in a last line when the Miner's sender stops (flush()). The first refusal after a quiet
interval is logged in full again. The Miner's counters (rejected, last_error) count every refusal
whatever is logged.

refuses_every_call() says when a refused request of many calls would be refused call by call the same
way, so that the Miner refuses it whole instead of sending each call alone to find the one at fault.

Not thread-safe: the Miner's sender thread alone uses its RefusalLog.
"""
import logging
import time
from typing import Dict, List, Optional, Set, Tuple

from .errors import FocaldError

Key = Tuple[Optional[int], str]  # (status, code)

# The members of a batch that hold something per sample or per call (a binary body names its tensors as
# their entries in /inputs): a problem whose field points into one of them may concern one call alone.
_PER_CALL = frozenset(("ids", "logits", "probs", "targets", "weights", "meta", "segments", "inputs"))


class Unencodable(FocaldError):
    """The client could not encode a request of the Miner's calls, so it was never sent: a number JSON
    cannot carry (NaN or infinity; binary=False or no NumPy, a ValueError) or a meta value JSON has no
    form for (a TypeError), the exception in __cause__. It is refused
    here as focald refuses a call's data (status None, code not_encodable, no field): the Miner sends
    the calls again one at a time, so that only those at fault are lost."""

    @classmethod
    def of(cls, e: Exception) -> "Unencodable":
        u = cls(None, "not_encodable", "the calls cannot be sent as JSON: %s" % e)
        u.__cause__ = e
        return u

    @property
    def client_error(self) -> bool:
        return True

    @property
    def retryable(self) -> bool:
        return False


def refuses_every_call(e: FocaldError) -> bool:
    """Whether focald, having refused a request of many calls with e, would refuse each of its calls sent
    alone the same way. True for a missing or wrong token (401, 403); for a 4xx whose field names a member
    that each call's request carries unchanged (/loss and everything under it, /run, /batch_id, a query
    parameter: anything outside the per-sample members above); for bad_name without a field (the dataset's
    name, in the request's path); and for class_count_conflict, since the calls of one request share
    their class count (it is part of the layout that groups them). False for
    anything else: a field inside the per-sample members (a label out of range, an id twice in a call,
    /segments/3/step) names one call's data; a 4xx without a field may be one call's doing too (bad_json
    from an integer id beyond 64 bits) or a size a smaller request passes (413); and a 5xx given up on
    may be the size of the request (out of memory)."""
    if e.status in (401, 403):
        return True
    if e.status is None or not 400 <= e.status < 500:
        return False
    if e.code == "class_count_conflict":
        return True
    field = e.field or ""
    if not field:
        # a bad_name without a field is the dataset's name, in the path every request of the Miner's has
        return e.code == "bad_name"
    head = field.split("/", 2)[1] if field.startswith("/") else field
    return head not in _PER_CALL


class RefusalLog:
    """Logs refusals to logger: the first of each kind at once, the rest in a summary per interval (s)."""

    def __init__(self, logger: logging.Logger, interval: float) -> None:
        self.log = logger
        self.interval = interval
        self._logged: Set[Key] = set()       # the kinds already logged in full
        self._logged_at = 0.0                # time.monotonic() of the last line
        self._unlogged: Dict[Key, List[int]] = {}  # refused since the last line: kind -> [requests, samples]
        self._latest: Optional[FocaldError] = None

    def note(self, e: FocaldError, n: int) -> None:
        """Logs a refusal of n samples: at once when it is the first with its status and code, or the
        first after a quiet interval; else counts it for the next summary, logged when the interval
        since the last line has passed."""
        now = time.monotonic()
        key = (e.status, e.code)
        quiet = not self._unlogged and now - self._logged_at >= self.interval
        if key not in self._logged or quiet:
            self._logged.add(key)
            self._logged_at = now
            self.log.warning("%s %d samples: %s", "focald refused" if e.status is not None else "focald miner could not send",
                             n, e)
            return
        counts = self._unlogged.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += n
        self._latest = e
        if now - self._logged_at >= self.interval:
            self.flush(now)

    def flush(self, now: Optional[float] = None) -> None:
        """Logs the refusals counted since the last line, if any, in one line."""
        if not self._unlogged:
            return
        now = time.monotonic() if now is None else now
        requests = sum(c[0] for c in self._unlogged.values())
        samples = sum(c[1] for c in self._unlogged.values())
        kinds = ", ".join("%d with %s %s" % (c[0], status if status is not None else "no status", code)
                          for (status, code), c in self._unlogged.items())
        self.log.warning("focald refused %d more requests (%d samples) in the last %.0f s: %s; the latest: %s",
                         requests, samples, now - self._logged_at, kinds, self._latest)
        self._unlogged = {}
        self._logged_at = now
