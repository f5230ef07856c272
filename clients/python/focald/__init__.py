"""focald's Python client: post training batches, mine hard examples, run the review loop.

    from focald import Client, Miner, FocaldError

Client has one method per HTTP API call (README "HTTP API"); Miner reports a
training loop's predictions from a background thread; FocaldError is raised for
every failed call. The core needs only the standard library; with NumPy,
batches travel in the binary tensor framing, and PyTorch tensors are accepted
as they are.
"""
from .client import DEFAULT_URL, EXPORT_FORMATS, HISTORY_FIELDS, STATUSES, Client, RelabelFeed
from .errors import FocaldConnectionError, FocaldError
from .miner import Miner

__version__ = "0.1.0"
__all__ = ["Client", "Miner", "RelabelFeed", "FocaldError", "FocaldConnectionError", "DEFAULT_URL",
           "HISTORY_FIELDS", "STATUSES", "EXPORT_FORMATS", "__version__"]
