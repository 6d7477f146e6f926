"""A fault-injecting reverse proxy for SQS and DynamoDB: AWS on a bad day, on loopback.

    with FaultProxy(settings.dynamodb_endpoint_url, rate=0.05, seed=7) as proxy:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = proxy.url   # the client under test goes through it
        ...
        proxy.faults_by_kind()   # Counter({"throttle": 9, "reset": 8, "lost": 7, ...})
        proxy.faults_by_api()    # Counter({"PutItem": 12, "TransactWriteItems": 9, ...})

A :class:`~bench.proxy.CountingProxy` (it forwards and counts every request by API call, the
``X-Amz-Target`` header) that, for a share ``rate`` of the eligible requests — drawn from a
``random.Random(seed)``, so a run is repeatable up to thread interleaving — does one of these
instead of a plain forward (:data:`KINDS`):

===========  ===================================================================================
``error``    a 500 answer, not forwarded. The error body of the JSON protocol both services speak
             (``application/x-amz-json-1.0``): SQS ``{"__type": "com.amazonaws.sqs#InternalError"}``
             with ``x-amzn-query-error: InternalError;Receiver`` (SQS is "awsQueryCompatible":
             botocore takes the code from that header), DynamoDB
             ``com.amazonaws.dynamodb.v20120810#InternalServerError`` (with its ``x-amz-crc32``)
``throttle`` a 400 answer, not forwarded: SQS ``ThrottlingException`` whose query code is
             ``RequestThrottled`` (the code botocore reports), DynamoDB
             ``ProvisionedThroughputExceededException`` or ``ThrottlingException`` (half each)
``reset``    the connection is reset (TCP RST) before the request is forwarded: nothing happened
``lost``     the request is forwarded and applied, then the connection is reset: the answer is
             lost (a conditional write the client retries finds its own first attempt)
``slow``     the request is forwarded and applied, and the answer held ``slow_seconds`` (set it
             above the client's read timeout: the client gives up, ``ReadTimeoutError``)
===========  ===================================================================================

A boto3 client sees them as ``ClientError`` (``InternalError`` / ``InternalServerError``,
``RequestThrottled`` / ``ProvisionedThroughputExceededException`` / ``ThrottlingException``),
``ConnectionClosedError`` (reset, lost) and ``ReadTimeoutError`` (slow) — or, with botocore's
retries on, as nothing at all when a retry gets through. ``apis`` limits the faults to those API
calls (default: every call); ``kinds`` to those kinds. ``rate``, ``kinds`` and ``apis`` may be
changed while the proxy runs (e.g. ``proxy.rate = 1.0; proxy.kinds = ("reset",)``: the server is
down).
"""

from __future__ import annotations

import json
import random
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable, Collection
from http.server import BaseHTTPRequestHandler

from bench.proxy import CountingProxy

#: Every kind of fault, in the order tables list them.
KINDS = ("error", "throttle", "reset", "lost", "slow")
JSON_10 = "application/x-amz-json-1.0"
_DYNAMODB = "com.amazonaws.dynamodb.v20120810#"

#: (status, ``__type``, query-compatible code or None) of each answered fault, by service.
_ANSWERS: dict[str, dict[str, list[tuple[int, str, str | None]]]] = {
    "sqs": {
        "error": [(500, "com.amazonaws.sqs#InternalError", "InternalError;Receiver")],
        "throttle": [(400, "com.amazonaws.sqs#ThrottlingException", "RequestThrottled;Sender")],
    },
    "dynamodb": {
        "error": [(500, _DYNAMODB + "InternalServerError", None)],
        "throttle": [(400, _DYNAMODB + "ProvisionedThroughputExceededException", None),
                     (400, _DYNAMODB + "ThrottlingException", None)],
    },
}


def service_of(target: str | None) -> str:
    """``dynamodb`` for ``X-Amz-Target: DynamoDB_20120810.PutItem``, else ``sqs``."""
    return "dynamodb" if (target or "").startswith("DynamoDB") else "sqs"


def error_answer(service: str, status: int, error_type: str, query_code: str | None
                 ) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body of an AWS JSON-protocol error answer."""
    short = error_type.rsplit("#", 1)[-1]
    body = json.dumps({"__type": error_type,
                       "message": f"injected by bench/faults.py: {short} ({status})"}).encode()
    headers = [("Content-Type", JSON_10), ("x-amzn-RequestId", str(uuid.uuid4()))]
    if query_code:
        headers.append(("x-amzn-query-error", query_code))
    if service == "dynamodb":  # botocore checks DynamoDB answers against it when present
        headers.append(("x-amz-crc32", str(zlib.crc32(body) & 0xFFFFFFFF)))
    return headers, body


class FaultProxy(CountingProxy):
    """Forward to ``upstream`` (``http://host:port``), injecting faults (see the module docstring)."""

    def __init__(self, upstream: str, *, rate: float = 0.05, seed: int | None = None,
                 kinds: Collection[str] = KINDS, apis: Collection[str] | None = None,
                 slow_seconds: float = 31.0, host: str = "127.0.0.1", port: int = 0,
                 label: Callable[[str, bytes], str] | None = None) -> None:
        super().__init__(upstream, host=host, port=port, label=label)
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {KINDS}")
        self.rate, self.kinds, self.apis = rate, tuple(kinds), apis
        self.slow_seconds = slow_seconds
        self._random = random.Random(seed)
        self._faults: Counter[tuple[str, str]] = Counter()  # (kind, api) → injected

    # -- what was injected -----------------------------------------------------------------
    def faults(self) -> Counter[tuple[str, str]]:
        """Faults injected so far, by (kind, API call)."""
        with self._lock:
            return Counter(self._faults)

    def faults_by_kind(self) -> Counter[str]:
        return Counter({kind: n for kind in KINDS
                        if (n := sum(v for (k, _), v in self.faults().items() if k == kind))})

    def faults_by_api(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (_, api), n in self.faults().items():
            counts[api] += n
        return counts

    def reset_faults(self) -> Counter[tuple[str, str]]:
        """The faults so far, and start counting again from zero."""
        with self._lock:
            faults, self._faults = self._faults, Counter()
        return faults

    # -- one request -----------------------------------------------------------------------
    def choose(self, api: str) -> str | None:
        """The fault to inject into a call of ``api``, or None (counted when chosen)."""
        with self._lock:
            if not self.kinds or (self.apis is not None and api not in self.apis):
                return None
            if self.rate <= 0 or self._random.random() >= self.rate:
                return None
            kind = self._random.choice(self.kinds)
            self._faults[(kind, api)] += 1
            return kind

    def relay(self, handler: BaseHTTPRequestHandler) -> None:
        api, body = self.read_request(handler)
        kind = self.choose(api)
        if kind is None:
            self.relay_read(handler, api, body)
            return
        self._count(self.label(api, body) if self.label else api)
        service = service_of(handler.headers.get("X-Amz-Target"))
        if kind in ("error", "throttle"):
            with self._lock:
                status, error_type, query_code = self._random.choice(_ANSWERS[service][kind])
            headers, out = error_answer(service, status, error_type, query_code)
            self.respond(handler, status, headers, out)
        elif kind == "reset":
            self.reset_connection(handler)
        else:  # lost, slow: the upstream applies the request
            try:
                status, out_headers, out = self.forward_request(handler, body)
            except OSError:
                self.reset_connection(handler)
                return
            if kind == "lost":
                self.reset_connection(handler)
                return
            time.sleep(self.slow_seconds)
            try:
                self.respond(handler, status, out_headers, out)
            except OSError:  # the client gave up long ago
                handler.close_connection = True
