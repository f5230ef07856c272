"""The exceptions the focald client raises.

Every failure of a call is a FocaldError. An answer from focald with an error
status carries focald's problem body (RFC 9457: type, title, status, detail,
plus focald's code, field and request_id); a failure to reach focald at all
(refused, reset, timed out, an answer cut short) is the subclass FocaldConnectionError, whose status
is None, and which is also a ConnectionError.
"""

from typing import Any, Dict, Optional, Tuple, Type

__all__ = ["FocaldError", "FocaldConnectionError"]


class FocaldError(Exception):
    """focald answered with an error status (4xx or 5xx).

    Attributes:
        status: the HTTP status (int); None for a connection failure.
        code: focald's stable error code, e.g. "dataset_not_found" ("http_<status>"
            when the body was not a problem document, for example from a proxy).
        title, detail: the problem's human-readable summary and specifics.
        field: the JSON pointer or query parameter at fault, or None.
        request_id: the X-Request-Id of the request (quote it when reading focald's log).
        problem: the whole problem body as a dict ({} when there was none).
        retry_after: seconds from Retry-After (503), or None.
        method, url: the request that failed.
    """

    def __init__(self, status: Optional[int], code: str, detail: Optional[str] = None, *, title: Optional[str] = None,
                 field: Optional[str] = None, request_id: Optional[str] = None,
                 problem: Optional[Dict[str, Any]] = None, retry_after: Optional[float] = None,
                 method: Optional[str] = None, url: Optional[str] = None) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        self.field = field
        self.request_id = request_id
        self.problem: Dict[str, Any] = dict(problem or {})
        self.retry_after = retry_after
        self.method = method
        self.url = url
        super().__init__(self._message())

    def _message(self) -> str:
        head = "%s %s" % (self.status, self.code) if self.status is not None else self.code
        text = self.detail or self.title or ""
        msg = "%s: %s" % (head, text) if text else head
        if self.field:
            msg += " (field %s)" % self.field
        if self.request_id:
            msg += " [request %s]" % self.request_id
        return msg

    @property
    def client_error(self) -> bool:
        """True for a 4xx: the request itself was refused, and sending it again will not help."""
        return self.status is not None and 400 <= self.status < 500

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later: focald unreachable, 5xx (503 overloaded,
        draining or starting; 507 storage full) or 429."""
        return self.status is None or self.status >= 500 or self.status == 429

    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]:
        kwargs = dict(title=self.title, field=self.field, request_id=self.request_id, problem=self.problem,
                      retry_after=self.retry_after, method=self.method, url=self.url)
        return _rebuild, (type(self), self.status, self.code, self.detail, kwargs)


class FocaldConnectionError(FocaldError, ConnectionError):
    """focald could not be reached or did not answer in time (status None; code "unreachable" or
    "timeout"). The underlying exception is in __cause__. Also a ConnectionError (an OSError), so code
    that already handles connection failures catches it."""

    def __init__(self, code: str, detail: Optional[str] = None, **kw: Any) -> None:
        super().__init__(None, code, detail, **kw)


def _rebuild(cls: Type[FocaldError], status: Optional[int], code: str, detail: Optional[str],
             kwargs: Dict[str, Any]) -> FocaldError:
    if issubclass(cls, FocaldConnectionError):
        return cls(code, detail, **kwargs)
    return cls(status, code, detail, **kwargs)
