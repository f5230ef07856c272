"""The one backoff of the focald client: how long to wait before sending a request again.

Client.post_batch(retries=...) sleeps these waits; the Miner waits them on an
event that only close() sets, so that observe() never shortens them.
"""
from typing import Optional

__all__ = ["Backoff"]


class Backoff:
    """Waits of initial seconds, doubling with each attempt up to maximum. A Retry-After from focald
    (503 while overloaded or draining) lengthens a wait to what it asks, up to retry_after_max
    (default maximum), so that a wrong header cannot stall a caller for long."""

    def __init__(self, initial: float, maximum: float, retry_after_max: Optional[float] = None) -> None:
        self.initial = float(initial)
        self.maximum = float(maximum)
        self.retry_after_max = float(maximum if retry_after_max is None else retry_after_max)

    def delay(self, attempt: int, retry_after: Optional[float] = None) -> float:
        """Seconds to wait before attempt number `attempt` (1 for the first retry, 2, ...)."""
        d = min(self.maximum, self.initial * 2.0 ** min(max(attempt, 1) - 1, 60))
        if retry_after:
            d = max(d, min(retry_after, self.retry_after_max))
        return d
