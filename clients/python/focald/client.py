"""Client: one method per focald API call (README "HTTP API"), standard library only.

Every method returns focald's JSON answer as Python data (dicts and lists,
sample ids as strings) and raises FocaldError when focald refuses the request
or cannot be reached; a wrong argument is a TypeError or ValueError naming it,
raised before any request (_args.py). Listing calls that focald pages with cursors have an
iter_* twin that follows the cursors and yields one item at a time.
"""
import os
import ssl
import stat
import time
import urllib.parse
import uuid
from typing import Any, BinaryIO, Dict, Iterator, List, Mapping, Optional, Sequence, Union, cast

from . import _args, framing
from ._http import Body, Transport, bad_response
from ._retry import Backoff
from .errors import FocaldError

DEFAULT_URL = "http://127.0.0.1:8765"
HISTORY_FIELDS = ("seen", "last_loss", "mean_loss", "max_loss", "ema_loss", "confidence", "variability",
                  "correctness", "forgetting", "forgetting_events", "aum", "el2n", "label_issue_score",
                  "early_label_issue_score", "grand")
ORDERS = ("asc", "desc")
STATUSES = ("open", "queued", "in_review", "relabelled", "confirmed", "dismissed")
EXPORT_FORMATS = ("csv", "jsonl", "label-studio", "fiftyone", "ohif")

# focald's answers are JSON documents; tensors are NumPy arrays, torch tensors or nested lists
JSON = Dict[str, Any]
Tensor = Any
Loss = Union[str, Mapping[str, Any], None]
Status = Union[str, Sequence[str], None]
# post_batch(retries=...): 0.1 s doubling to 5 s; a Retry-After is honoured up to 30 s
RETRY_BACKOFF = Backoff(0.1, 5.0, 30.0)


def idempotency_header(key: str) -> str:
    """An Idempotency-Key header's value: the key as the IETF draft spells it, a quoted string."""
    return '"%s"' % key


def _seg(s: Union[str, int]) -> str:
    """One percent-encoded path segment (a dataset, sample id or queue name; '/' becomes %2F)."""
    return urllib.parse.quote(str(s), safe="")


def _ds(dataset: Any) -> str:
    """A dataset's name as a path segment, after checking that it is a str."""
    return _seg(_args.string("dataset", dataset))


def _sid(sample_id: Any) -> str:
    """A sample id as a path segment, after checking that it is one (a str or a 64-bit integer)."""
    return _seg(_args.sample_id("sample_id", sample_id))


def _flag(v: Optional[bool]) -> Optional[str]:
    """A boolean query parameter as focald spells it."""
    return None if v is None else ("true" if v else "false")


def _status_list(status: Status) -> Optional[str]:
    if status is None or isinstance(status, str):
        return status
    if not isinstance(status, (list, tuple, set, frozenset)) or not all(isinstance(v, str) for v in status):
        raise TypeError("status must be a review state (str) or a list of them, not %r" % (status,))
    return ",".join(status)


def _filters(by: Any, order: Any, run: Any, label: Any, label_issue: Any, min_seen: Any) -> Dict[str, Any]:
    """Checks the filters the rankings share (hard_examples, queues, exports); returns them with their
    integers as Python ints (a torch scalar's str() is not its number)."""
    return {"by": _args.opt_string("by", by), "order": _args.opt_string("order", order),
            "run": _args.opt_string("run", run), "label": _args.opt_integer("label", label),
            "label_issue": _args.opt_bool("label_issue", label_issue),
            "min_seen": _args.opt_integer("min_seen", min_seen, 0)}


class ExportStream:
    """An export's bytes as they arrive (iterate it once). After the last chunk, trailers holds the
    answer's trailer fields and skipped the Focald-Skipped count (None if there was none)."""

    def __init__(self, transport: Transport, path: str, query: Mapping[str, Any], chunk_size: int) -> None:
        self.trailers: Dict[str, str] = {}
        self._chunks = transport.stream("GET", path, query, chunk_size=chunk_size, trailers=self.trailers)

    def __iter__(self) -> "ExportStream":
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        self._chunks.close()

    @property
    def skipped(self) -> Optional[int]:
        v = self.trailers.get("focald-skipped")
        return int(v) if v is not None and v.isdigit() else None


class ExportSize(int):
    """The bytes an export wrote, with skipped: how many samples its format left out (or None)."""

    skipped: Optional[int]

    def __new__(cls, n: int, skipped: Optional[int]) -> "ExportSize":
        self = super().__new__(cls, n)
        self.skipped = skipped
        return self


MAX_PAGE = 10000  # focald's largest page (k, limit)


def _page_size(page_size: Any) -> int:
    """An iterator's page size, at most focald's largest page: a larger one only takes more pages."""
    return min(_args.integer("page_size", page_size, 1), MAX_PAGE)


MAX_TIMEOUT = 1e6  # seconds a request may take: any longer is no deadline a socket can keep


class Client:
    """A connection to one focald.

    url: focald's base URL; default $FOCALD_URL, else http://127.0.0.1:8765. A path
        after the host (a reverse proxy's prefix) is kept.
    token: bearer token sent as "Authorization: Bearer ..."; default $FOCALD_TOKEN.
    timeout: seconds a request may take in all, from connecting to the last byte of the answer (a
        server trickling its answer cannot hold a request longer); for exports, each read's.
    binary: how batches are sent. None (default): the binary tensor framing when NumPy can be
        imported, else JSON. True: always binary (needs NumPy). False: always JSON.
    ca_file: for an https URL, the PEM certificate(s) to trust (focald's own, when it is
        self-signed); default $FOCALD_CA_FILE, else the system's trust store.
    ssl_context: an ssl.SSLContext for https, instead of ca_file.
    read_your_writes: every read of the data asks focald (after=) to answer only once it has applied the
        newest write this client has seen answered (log_position), waiting at most focald's --read-wait.
        For a cluster of focald nodes behind one URL, or several clients (observe_position). Needs a focald
        that knows after=.

    A Client may be shared between threads; each thread keeps its own keep-alive connection.
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, timeout: float = 30.0,
                 binary: Optional[bool] = None, ca_file: Optional[str] = None,
                 ssl_context: Optional[ssl.SSLContext] = None, read_your_writes: bool = False) -> None:
        self.url = (_args.opt_string("url", url) or os.environ.get("FOCALD_URL") or DEFAULT_URL).rstrip("/")
        timeout = _args.number("timeout", timeout, 0.0)
        if not 0 < timeout <= MAX_TIMEOUT:  # inf would pass to the socket and fail every request there
            raise ValueError("timeout = %r is out of range: it must be more than 0 and at most %g seconds"
                             % (timeout, MAX_TIMEOUT))
        _args.opt_string("token", token)
        _args.opt_bool("binary", binary)
        if token is None:
            token = os.environ.get("FOCALD_TOKEN") or None
        ca_file = ca_file or os.environ.get("FOCALD_CA_FILE") or None
        if ssl_context is None and ca_file:
            ssl_context = ssl.create_default_context(cafile=ca_file)
        if binary and not framing.have_numpy():
            raise RuntimeError("binary=True needs NumPy, which cannot be imported")
        self.binary = framing.have_numpy() if binary is None else bool(binary)
        self.timeout = timeout
        self._t = Transport(self.url, token=token, timeout=timeout, ssl_context=ssl_context)
        self._t.read_your_writes = read_your_writes

    @property
    def log_position(self) -> int:
        """The newest log position a write's answer gave this client (Focald-Log-Position), 0 before any."""
        return self._t.log_position

    def observe_position(self, position: int) -> None:
        """Makes this client's reads (with read_your_writes) wait for position too: a write another client
        made, on another node of a cluster, say."""
        self._t.observe_position(_args.integer("position", position, 0))

    def __repr__(self) -> str:
        return "Client(%r, binary=%r)" % (self.url, self.binary)

    def close(self) -> None:
        """Closes the calling thread's connection. The client stays usable (it reconnects)."""
        self._t.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------ plumbing

    def _get(self, path: str, query: Optional[Mapping[str, Any]] = None, timeout: Optional[float] = None) -> JSON:
        return cast(JSON, self._t.request("GET", path, query, timeout=timeout).json())

    def _send_json(self, method: str, path: str, doc: Any, query: Optional[Mapping[str, Any]] = None) -> JSON:
        body = _args.dumps(doc)
        return cast(JSON, self._t.request(method, path, query, body=body,
                                          headers={"Content-Type": "application/json"}).json())

    def _delete(self, path: str, headers: Optional[Mapping[str, str]] = None) -> JSON:
        return cast(JSON, self._t.request("DELETE", path, headers=headers).json())

    def _send_keyed(self, method: str, path: str, doc: Any, key: Optional[str], retries: int) -> JSON:
        """Sends a write of the review loop with an Idempotency-Key (key, or a fresh uuid4) and, since
        focald applies one key's request once and answers a repeat with the first answer, sends it again
        with the same key up to `retries` times when focald cannot be reached, the answer was lost, or
        focald answers 5xx or 429 (RETRY_BACKOFF's waits between tries)."""
        retries = _args.integer("retries", retries, 0)
        body = None if doc is None else _args.dumps(doc)
        headers = {"Idempotency-Key": idempotency_header(_args.opt_string("idempotency_key", key) or str(uuid.uuid4()))}
        if body is not None:
            headers["Content-Type"] = "application/json"
        attempt = 0
        while True:
            try:
                return cast(JSON, self._t.request(method, path, body=body, headers=headers, idempotent=True).json())
            except FocaldError as e:
                if attempt >= retries or not e.retryable:
                    raise
                attempt += 1
                time.sleep(RETRY_BACKOFF.delay(attempt, e.retry_after))

    # ------------------------------------------------------------ scoring

    def post_batch(self, dataset: str, ids: Tensor, logits: Tensor = None, targets: Tensor = None, *,
                   probs: Tensor = None, run: Optional[str] = None, batch_id: Optional[str] = None,
                   epoch: Optional[int] = None, step: Optional[int] = None, loss: Loss = None, weights: Tensor = None,
                   meta: Optional[Mapping[str, Any]] = None, ohem_k: Optional[int] = None,
                   outputs: Optional[Sequence[str]] = None, retries: int = 0,
                   segments: Optional[Sequence[Mapping[str, Any]]] = None) -> JSON:
        """Scores a batch and records it in the dataset's history (POST /v1/datasets/{dataset}/batches).

        ids: N sample ids (ints or strings). logits or probs: (N, C) or (N, M, C). targets: N class
        indices, (N, C) multi-hot or soft rows, (N, M) or (N, M, C) for dense outputs, or N numbers in
        [0, 1] with C = 1. Arrays, torch tensors and nested lists are all accepted.
        loss: a loss type name ("softmax_focal") or the full loss object ({"type", "gamma", ...}).
        meta: {"<id>": {...}} stored with the samples. ohem_k: list the k hardest in "hardest".
        outputs: which per-sample outputs to return: with the binary framing exactly these (default
            losses and every score); a JSON answer always has losses and scores. "grad" (d loss / d input,
            nested as the input: N x C or N x M x C) and "grad_norm" (per sample) come only when named, and
            only from evaluate (POST /v1/loss).
        segments: many training steps in one request (README "Many steps in one request"): a list of
            {"n", "step", "epoch"}, one per step, whose n add up to N; each is recorded as a batch of
            its own, with exactly the history of posting them one by one.
        retries: how many times to send the batch again when focald is unreachable or answers 5xx;
            a batch_id is made up when none is given, so that a retried batch is stored once.

        Returns the batch response: dataset, run, batch_id, accepted, duplicate, loss, losses,
        scores (p_t, p_max, margin, norm_margin, entropy, cw_entropy, el2n, correct, pred), hardest.
        """
        path = "/v1/datasets/%s/batches" % _ds(dataset)
        run = _args.opt_string("run", run)
        batch_id = _args.opt_string("batch_id", batch_id)
        epoch = _args.opt_integer("epoch", epoch, 0, _args.MAX_EPOCH)
        step = _args.opt_integer("step", step, 0, _args.MAX_STEP)
        retries = _args.integer("retries", retries, 0)
        if segments is not None:
            if isinstance(segments, (str, bytes, Mapping)) or not isinstance(segments, Sequence):
                raise TypeError("segments must be a list of {\"n\", \"step\", \"epoch\"}, not %s"
                                % type(segments).__name__)
            segments = [_segment(k, g) for k, g in enumerate(segments)]
        if retries and batch_id is None:
            batch_id = "py-" + uuid.uuid4().hex
        fields = {"run": run, "batch_id": batch_id, "epoch": epoch, "step": step, "segments": segments,
                  "loss": _loss_obj(loss), "meta": _args.meta_keys(meta), "ohem_k": _args.opt_integer("ohem_k", ohem_k, 0)}
        return self._score(path, fields, ids, logits, probs, targets, weights, outputs, retries)

    def evaluate(self, logits: Tensor = None, targets: Tensor = None, *, probs: Tensor = None, ids: Tensor = None,
                 loss: Loss = None, weights: Tensor = None, ohem_k: Optional[int] = None,
                 outputs: Optional[Sequence[str]] = None) -> JSON:
        """Computes losses and scores without storing anything (POST /v1/loss).

        As post_batch; ids default to 0..N-1. Returns the same response (dataset, run and batch_id None),
        with "grad" and "grad_norm" when outputs names them.
        """
        if (logits is None) == (probs is None):
            raise ValueError("give exactly one of logits and probs")
        x = logits if logits is not None else probs
        if ids is None:
            ids = list(range(_rows("logits" if logits is not None else "probs", x)))
        fields = {"loss": _loss_obj(loss), "ohem_k": _args.opt_integer("ohem_k", ohem_k, 0)}
        return self._score("/v1/loss", fields, ids, logits, probs, targets, weights, outputs, 0)

    def post_batch_body(self, dataset: str, body: Union[Mapping[str, Any], bytes]) -> JSON:
        """Posts a batch body exactly as the HTTP API takes it (POST /v1/datasets/{dataset}/batches):
        a dict, or the bytes of a JSON document (a file's contents, say). Returns the batch response
        as post_batch does; focald's refusal of the body (400, 422) is a FocaldError."""
        return self._post_body("/v1/datasets/%s/batches" % _ds(dataset), body)

    def evaluate_body(self, body: Union[Mapping[str, Any], bytes]) -> JSON:
        """Evaluates a body exactly as the HTTP API takes it (POST /v1/loss), storing nothing: a dict,
        or the bytes of a JSON document. Returns the response as evaluate does."""
        return self._post_body("/v1/loss", body)

    def _post_body(self, path: str, body: Union[Mapping[str, Any], bytes]) -> JSON:
        if isinstance(body, Mapping):
            data = _args.dumps(body)
        elif isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        else:
            raise TypeError("a body is a dict or JSON bytes, not %r" % type(body).__name__)
        resp = self._t.request("POST", path, body=data, headers={"Content-Type": "application/json"},
                               idempotent=path == "/v1/loss")
        return framing.normalize_json_result(resp.json())

    def _score(self, path: str, fields: Dict[str, Any], ids: Tensor, logits: Tensor, probs: Tensor, targets: Tensor,
               weights: Tensor, outputs: Optional[Sequence[str]], retries: int) -> JSON:
        if (logits is None) == (probs is None):
            raise ValueError("give exactly one of logits and probs")
        if targets is None:
            raise ValueError("targets are required")
        xname, x = ("logits", logits) if logits is not None else ("probs", probs)
        n = framing.check_ids(ids)
        for name, t in ((xname, x), ("targets", targets), ("weights", weights)):
            if t is not None and _rows(name, t) != n:
                raise ValueError("%s has %d rows for %d ids" % (name, _rows(name, t), n))
        if outputs is not None and (isinstance(outputs, str) or not all(isinstance(o, str) for o in outputs)):
            raise TypeError("outputs must be a list of output names, not %r" % (outputs,))
        body: Body
        if self.binary:
            parts, hlen = framing.binary_body(fields, ids, xname, x, targets, weights, outputs=outputs)
            headers = {"Content-Type": framing.OCTET, "Inference-Header-Content-Length": str(hlen),
                       "Accept": framing.OCTET}
            body = parts
        else:
            body = framing.json_body(fields, ids, xname, x, targets, weights, outputs=outputs)
            headers = {"Content-Type": "application/json"}
        attempt = 0
        while True:
            try:
                resp = self._t.request("POST", path, body=body, headers=headers,
                                       idempotent=path == "/v1/loss" or fields.get("batch_id") is not None)
                break
            except FocaldError as e:
                if attempt >= retries or not e.retryable:
                    raise
                attempt += 1
                time.sleep(RETRY_BACKOFF.delay(attempt, e.retry_after))
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        try:
            if ctype == framing.OCTET:
                echo = {"batch_id": fields.get("batch_id")} if path != "/v1/loss" else {}
                return framing.decode_binary_result(resp.headers, resp.body, echo)
            doc = resp.json()
            if not isinstance(doc, dict):
                raise TypeError("a %s, not an object" % type(doc).__name__)
            return framing.normalize_json_result(doc)
        except FocaldError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
            # never a ValueError to the caller: the Miner reads those as a batch it could not encode
            raise bad_response(resp.status, "%s: %s" % (type(e).__name__, e)) from None

    # ------------------------------------------------------------ hard examples

    def hard_examples(self, dataset: str, *, by: Optional[str] = None, order: Optional[str] = None,
                      k: Optional[int] = None, run: Optional[str] = None, label: Optional[int] = None,
                      label_issue: Optional[bool] = None, min_seen: Optional[int] = None, status: Status = None,
                      cursor: Optional[str] = None) -> JSON:
        """One page of the hardest samples (GET /v1/datasets/{dataset}/hard-examples).

        by: a history field (default mean_loss). order: "desc" (largest first) or "asc"; by default
        the field's own, hardest first (README "Hardest examples"). k: page size, 1..10000 (default 100; fewer when the items' JSON passes 16 MiB, large meta:
        next_cursor goes on from there). run: a run name
        or "*" (the mean over runs, the default). label: the sample's last label. label_issue: True for only
        the samples whose label focald flags (README "History fields"), False for only the others. min_seen: at least
        this many observations. status: a review state or a list of them (default: those still
        waiting for a decision). cursor: next_cursor of the previous page.
        Returns {"dataset", "run", "by", "order", "items", "next_cursor"}.
        """
        f = _filters(by, order, run, label, label_issue, min_seen)
        label, min_seen = f["label"], f["min_seen"]
        q = {"by": by, "order": order, "k": _args.opt_integer("k", k), "run": run, "label": label,
             "label_issue": _flag(label_issue), "min_seen": min_seen, "status": _status_list(status),
             "cursor": _args.opt_string("cursor", cursor)}
        return self._get("/v1/datasets/%s/hard-examples" % _ds(dataset), q)

    def iter_hard_examples(self, dataset: str, *, limit: Optional[int] = None, page_size: int = 1000,
                           **filters: Any) -> Iterator[JSON]:
        """Yields hard examples, hardest first, following the cursors: at most limit items (all when None).
        filters: as hard_examples (by, order, run, label, label_issue, min_seen, status).

        Each page is the ranking as of its own request: while batches arrive, a sample that moves between
        two pages can be yielded twice or not at all. iter_export lists every sample once."""
        limit = _args.opt_integer("limit", limit, 0)
        page_size = _page_size(page_size)
        cursor, n = None, 0
        while limit is None or n < limit:
            k = page_size if limit is None else min(page_size, limit - n)
            page = self.hard_examples(dataset, k=k, cursor=cursor, **filters)
            for item in page["items"]:
                yield item
                n += 1
            cursor = page.get("next_cursor")
            if not cursor or not page["items"]:
                return

    # ------------------------------------------------------------ samples, review, meta

    def sample(self, dataset: str, sample_id: Union[str, int], run: Optional[str] = None) -> JSON:
        """A sample's status, meta, corrected label and per-run history with its recent observations
        (GET /v1/datasets/{dataset}/samples/{id})."""
        return self._get("/v1/datasets/%s/samples/%s" % (_ds(dataset), _sid(sample_id)),
                         {"run": _args.opt_string("run", run)})

    def review(self, dataset: str, sample_id: Union[str, int], status: str, *, label: Any = None,
               reviewer: Optional[str] = None, note: Optional[str] = None, retries: int = 3,
               idempotency_key: Optional[str] = None) -> JSON:
        """Records a review decision (POST .../samples/{id}/review).

        status: open, queued, in_review, relabelled (give the corrected label), confirmed or dismissed.
        Returns {"id", "from", "status", "label_before", "label", "reviewer", "note", "at"}.
        An illegal transition is a 409 FocaldError.
        The decision goes with an Idempotency-Key (idempotency_key, or a fresh uuid4), and is sent again
        with the same key up to `retries` times when focald is unreachable, the answer is lost, or focald
        answers 5xx: focald records it once and answers a repeat as it answered the first."""
        path = "/v1/datasets/%s/samples/%s/review" % (_ds(dataset), _sid(sample_id))
        doc: JSON = {"status": _args.string("status", status)}
        if label is not None:
            doc["label"] = label
        if reviewer is not None:
            doc["reviewer"] = _args.string("reviewer", reviewer)
        if note is not None:
            doc["note"] = _args.string("note", note)
        return self._send_keyed("POST", path, doc, idempotency_key, retries)

    def reviews(self, dataset: str, sample_id: Union[str, int]) -> JSON:
        """A sample's audit trail: {"id", "status", "corrected_label", "reviews": [{"from", "to",
        "label_before", "label_after", "reviewer", "note", "at"}, ...]} oldest first."""
        return self._get("/v1/datasets/%s/samples/%s/reviews" % (_ds(dataset), _sid(sample_id)))

    def set_meta(self, dataset: str, sample_id: Union[str, int], meta: Mapping[str, Any]) -> JSON:
        """Replaces a sample's metadata (PUT .../samples/{id}/meta): uri, study_uid, series_uid, sop_uid,
        patient_id, tags and free fields. Returns {"id", "meta"}."""
        path = "/v1/datasets/%s/samples/%s/meta" % (_ds(dataset), _sid(sample_id))
        return self._send_json("PUT", path, _args.mapping("meta", meta))

    # ------------------------------------------------------------ relabel feed

    def relabels(self, dataset: str, since: Optional[str] = None, limit: Optional[int] = None) -> JSON:
        """One page of the relabel feed (GET /v1/datasets/{dataset}/relabels): corrected labels and
        withdrawals, in commit order, after the cursor `since`.
        Returns {"dataset", "relabels": [...], "next_cursor"}; keep next_cursor for the next pull."""
        return self._get("/v1/datasets/%s/relabels" % _ds(dataset),
                         {"since": _args.opt_string("since", since), "limit": _args.opt_integer("limit", limit)})

    def relabel_feed(self, dataset: str, since: Optional[str] = None, page_size: int = 1000) -> "RelabelFeed":
        """An iterator over the relabel feed from `since` to its current end; its .cursor is where to
        resume next time (see RelabelFeed)."""
        _ds(dataset)
        return RelabelFeed(self, dataset, _args.opt_string("since", since), _page_size(page_size))

    # ------------------------------------------------------------ queues

    def create_queue(self, dataset: str, name: str, *, by: Optional[str] = None, order: Optional[str] = None,
                     run: Optional[str] = None, size: Optional[int] = None, label: Optional[int] = None,
                     label_issue: Optional[bool] = None, min_seen: Optional[int] = None,
                     max_per_label: Optional[int] = None, min_per_label: Optional[int] = None,
                     quotas: Optional[Mapping[Any, Mapping[str, int]]] = None,
                     dedupe_by: Optional[str] = None, retries: int = 3,
                     idempotency_key: Optional[str] = None) -> JSON:
        """Builds a named review queue from the hardest open samples (POST /v1/datasets/{dataset}/queues).

        quotas: {label: {"min": a, "max": b}} per-label overrides of min_per_label/max_per_label.
        dedupe_by: a meta key (e.g. "patient_id"): at most one sample per value.
        Returns the queue's summary (name, created_at, size, reviewed, progress, params).
        Sent with an Idempotency-Key and retried with it as review() is: a retry of a queue focald built
        gets its summary again, not a 409 for the name."""
        path = "/v1/datasets/%s/queues" % _ds(dataset)
        f = _filters(by, order, run, label, label_issue, min_seen)
        label, min_seen = f["label"], f["min_seen"]
        for key, count in (("size", size), ("max_per_label", max_per_label), ("min_per_label", min_per_label)):
            _args.opt_integer(key, count)
        _args.opt_string("dedupe_by", dedupe_by)
        doc: JSON = {"name": _args.string("name", name)}
        for k, v in (("by", by), ("order", order), ("run", run), ("size", size), ("label", label),
                     ("label_issue", label_issue), ("min_seen", min_seen),
                     ("max_per_label", max_per_label), ("min_per_label", min_per_label), ("dedupe_by", dedupe_by)):
            if v is not None:
                doc[k] = v
        if quotas is not None:
            doc["quotas"] = {str(lab): _args.mapping("quotas[%r]" % (lab,), q)
                             for lab, q in _args.mapping("quotas", quotas).items()}
        return self._send_keyed("POST", path, doc, idempotency_key, retries)

    def queues(self, dataset: str) -> JSON:
        """The dataset's queues with their progress: {"queues": [...]}."""
        return self._get("/v1/datasets/%s/queues" % _ds(dataset))

    def queue(self, dataset: str, name: str, offset: Optional[int] = None, limit: Optional[int] = None) -> JSON:
        """A queue's summary and its items in order, from offset (default 0), at most limit (default 1000):
        fewer when their JSON passes 16 MiB (large meta); the next page starts at offset + len(items)."""
        return self._get("/v1/datasets/%s/queues/%s" % (_ds(dataset), _seg(_args.string("name", name))),
                         {"offset": _args.opt_integer("offset", offset), "limit": _args.opt_integer("limit", limit)})

    def iter_queue(self, dataset: str, name: str, page_size: int = 1000) -> Iterator[JSON]:
        """Yields every item of a queue in order."""
        _ds(dataset)
        _args.string("name", name)
        page_size = _page_size(page_size)
        offset = 0
        while True:
            page = self.queue(dataset, name, offset=offset, limit=page_size)
            for item in page["items"]:
                yield item
            offset += len(page["items"])
            if not page["items"] or offset >= page.get("size", offset):
                return

    def delete_queue(self, dataset: str, name: str) -> JSON:
        """Deletes a queue; its samples still queued go back to open. Returns {"deleted", "released"}.
        Sent with a fresh Idempotency-Key, so that a silent resend on a connection focald had just
        closed gets the deletion's answer again rather than a 404."""
        return self._delete("/v1/datasets/%s/queues/%s" % (_ds(dataset), _seg(_args.string("name", name))),
                            headers={"Idempotency-Key": idempotency_header(str(uuid.uuid4()))})

    # ------------------------------------------------------------ exports

    def iter_export(self, dataset: str, format: str = "csv", *, queue: Optional[str] = None, by: Optional[str] = None,
                    order: Optional[str] = None, run: Optional[str] = None, label: Optional[int] = None,
                    label_issue: Optional[bool] = None, min_seen: Optional[int] = None, status: Status = None,
                    k: Optional[int] = None, local_files_root: Optional[str] = None,
                    chunk_size: int = 65536) -> ExportStream:
        """Yields an export's bytes as focald streams them (GET /v1/datasets/{dataset}/export).

        format: csv, jsonl, label-studio, fiftyone or ohif. queue: export a queue, in its order;
        otherwise the hardest samples with the filters of hard_examples; k: at most k samples.
        local_files_root (label-studio): Label Studio's LOCAL_FILES_DOCUMENT_ROOT, so that local
        paths become its /data/local-files/ URLs. Errors (unknown dataset, queue or run; a bad
        filter) are raised before the first chunk. Returns an ExportStream: iterate it for the
        bytes; once it is read whole, its skipped attribute says how many samples the format left
        out (no image Label Studio can open, no local file for FiftyOne, no study for OHIF)."""
        path = "/v1/datasets/%s/export" % _ds(dataset)
        f = _filters(by, order, run, label, label_issue, min_seen)
        label, min_seen = f["label"], f["min_seen"]
        _args.string("format", format)
        _args.opt_string("queue", queue)
        _args.opt_string("local_files_root", local_files_root)
        q = {"format": format, "queue": queue, "by": by, "order": order, "run": run, "label": label,
             "label_issue": _flag(label_issue), "min_seen": min_seen,
             "status": _status_list(status), "k": _args.opt_integer("k", k), "local_files_root": local_files_root}
        return ExportStream(self._t, path, q, _args.integer("chunk_size", chunk_size, 1))

    def export(self, dataset: str, dest: Union[str, "os.PathLike[str]", BinaryIO], format: str = "csv",
               **kw: Any) -> ExportSize:
        """Streams an export into dest (a path, or a binary file object) in constant memory.
        Returns the number of bytes written, an int whose skipped attribute is the number of samples
        the format left out (None if focald did not say). Arguments as iter_export. When dest is a
        path to a regular file (or to none yet), a failed export leaves no partial file behind, and a
        file it replaces keeps its permissions; a symlink's target is written, and a FIFO or a device
        (/dev/stdout) is written through."""
        if not hasattr(dest, "write") and not isinstance(dest, (str, os.PathLike)):
            raise TypeError("dest must be a path or a binary file object, not %s" % type(dest).__name__)
        chunks = self.iter_export(dataset, format, **kw)
        if hasattr(dest, "write"):
            n = 0
            for chunk in chunks:
                dest.write(chunk)
                n += len(chunk)
            return ExportSize(n, chunks.skipped)
        assert not isinstance(dest, BinaryIO)  # checked above: a path
        # the file a symlink names is the one written (the link stays); a FIFO, a terminal or /dev/stdout is
        # written through as it is, since renaming a file over it would replace it rather than write to it
        real = os.path.realpath(dest)
        try:
            st: Optional[os.stat_result] = os.stat(real)
        except FileNotFoundError:
            st = None
        n = 0
        if st is not None and not stat.S_ISREG(st.st_mode):
            with open(real, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    n += len(chunk)
            return ExportSize(n, chunks.skipped)
        tmp = "%s.part-%d" % (real, os.getpid())
        try:
            with open(tmp, "wb") as f:
                if st is not None:  # the file it replaces keeps its permissions (an export may name patients)
                    os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
                for chunk in chunks:
                    f.write(chunk)
                    n += len(chunk)
            os.replace(tmp, real)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return ExportSize(n, chunks.skipped)

    # ------------------------------------------------------------ datasets

    def datasets(self) -> List[JSON]:
        """Every dataset: a list of {"name", "samples", "observations", "runs", "created_at"}."""
        return cast(List[JSON], self._get("/v1/datasets")["datasets"])

    def dataset(self, name: str) -> JSON:
        """One dataset with its runs (samples, observations, classes, last_step, loss_quantiles)."""
        return self._get("/v1/datasets/%s" % _seg(_args.string("name", name)))

    def delete_dataset(self, name: str) -> JSON:
        """Removes a dataset and everything recorded for it. Returns {"deleted", "samples", "observations"}."""
        return self._delete("/v1/datasets/%s" % _seg(_args.string("name", name)))

    # ------------------------------------------------------------ health and documents

    def health(self) -> JSON:
        """{"live": bool, "ready": bool, "status": "ready" | "starting" | "draining" | "unreachable"}.
        Never raises for an unhealthy or unreachable focald: that is the answer."""
        try:
            self._get("/livez", timeout=min(self.timeout, 5.0))
        except FocaldError:
            return {"live": False, "ready": False, "status": "unreachable"}
        try:
            doc = self._get("/readyz", timeout=min(self.timeout, 5.0))
            return {"live": True, "ready": True, "status": doc.get("status", "ready")}
        except FocaldError as e:
            if e.status is None:
                return {"live": False, "ready": False, "status": "unreachable"}
            return {"live": True, "ready": False, "status": e.code}

    def livez(self) -> JSON:
        """GET /livez: {"status": "ok"}; raises when focald does not answer."""
        return self._get("/livez")

    def readyz(self) -> JSON:
        """GET /readyz: {"status": "ready"}; raises FocaldError (503) while starting or draining."""
        return self._get("/readyz")

    def metrics(self) -> str:
        """The Prometheus text of GET /metrics."""
        return self._t.request("GET", "/metrics", headers={"Accept": "text/plain"}).body.decode("utf-8")

    def openapi(self) -> JSON:
        """The OpenAPI 3 document of this focald's API."""
        return self._get("/openapi.json")


class RelabelFeed:
    """Iterates over the relabel feed from a cursor to the feed's current end.

    After (or during) iteration, .cursor is the position to pass as `since` next time, so that a
    training pipeline applies each correction once:

        feed = client.relabel_feed("scans", since=saved)
        for r in feed:
            apply(r["id"], r["label"], r["withdrawn"])
        saved = feed.cursor
    """

    def __init__(self, client: Client, dataset: str, since: Optional[str] = None, page_size: int = 1000) -> None:
        self.client = client
        self.dataset = dataset
        self.cursor = since
        self.page_size = page_size

    def __iter__(self) -> Iterator[JSON]:
        while True:
            page = self.client.relabels(self.dataset, since=self.cursor, limit=self.page_size)
            entries = page["relabels"]
            for e in entries:
                yield e
            self.cursor = page.get("next_cursor", self.cursor)
            if len(entries) < self.page_size:
                return


def _loss_obj(loss: Loss) -> Optional[Dict[str, Any]]:
    if loss is None or isinstance(loss, dict):
        return loss
    if isinstance(loss, str):
        return {"type": loss}
    raise TypeError("loss must be a loss type name or a dict, not %r" % type(loss).__name__)


def _rows(name: str, t: Tensor) -> int:
    """The first dimension of a tensor argument (an array, a tensor or a list): TypeError for anything
    else, ValueError for a 0-d one."""
    if isinstance(t, (str, bytes, Mapping)):
        raise TypeError("%s must be an array, a tensor or a list, not %s" % (name, type(t).__name__))
    shape = getattr(t, "shape", None)
    if shape is not None:
        if len(shape) == 0:
            raise ValueError("%s is 0-d: it needs a first dimension of one row per sample" % name)
        return int(shape[0])
    try:
        return len(t)
    except TypeError:
        raise TypeError("%s must be an array, a tensor or a list, not %s" % (name, type(t).__name__)) from None


def _segment(k: int, g: Any) -> Dict[str, Any]:
    """segments[k] checked: {"n", "step", "epoch"}, with its integers as Python ints."""
    name = "segments[%d]" % k
    _args.mapping(name, g)
    out = dict(g)
    out["n"] = _args.integer(name + "['n']", g.get("n"), 1)
    for key, hi in (("step", _args.MAX_STEP), ("epoch", _args.MAX_EPOCH)):
        if g.get(key) is not None:
            out[key] = _args.integer("%s[%r]" % (name, key), g[key], 0, hi)
    return out
