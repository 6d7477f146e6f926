"""A counting reverse proxy for SQS (or DynamoDB): what a client asks of the server, by API call.

    with CountingProxy("http://127.0.0.1:5056") as proxy:
        os.environ["AWS_ENDPOINT_URL_SQS"] = proxy.url     # point the client under test at it
        ...
        proxy.counts()   # Counter({"ReceiveMessage": 12, "DeleteMessageBatch": 5, ...})

A threaded HTTP server on 127.0.0.1 that forwards every request, unchanged, to the real endpoint
and counts it, when it arrives, by its ``X-Amz-Target`` header (``AmazonSQS.ReceiveMessage``
counts as ``ReceiveMessage``; the old query protocol's ``Action=`` is understood too). The
``Host`` header is rewritten to the upstream's, so queue URLs the server hands out are its own:
fauxqs builds queue URLs from the Host header and matches them by exact string. ReceiveMessage
responses with no message are also counted (in the window their request arrived in), as
``ReceiveMessage (empty)``. A ``label(api, body)`` function, if given, names what is counted
instead (e.g. by queue: ``ReceiveMessage → events``, its empty part
``ReceiveMessage (empty) → events``).

``latency_ms`` delays every request by that much before it is forwarded, so a local server
answers as slowly as AWS does in-region (e.g. 5 ms for DynamoDB, 10 ms for SQS): what a pool
slot or a thread spends waiting on a request then shows in the benchmarks
(``actionrunner bench throughput --latency-ddb-ms 5 --latency-sqs-ms 10``). The proxy speaks
any AWS JSON protocol: in front of DynamoDB it counts ``PutItem``, ``BatchWriteItem``...

Subclasses change what happens to a request by overriding :meth:`CountingProxy.relay` with the
pieces it is made of (``read_request``, ``relay_read``, ``forward_request``, ``respond``,
``reset_connection``): bench/faults.py's ``FaultProxy`` injects AWS faults that way.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

#: Request headers that describe one connection, not the request: never forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
              "host", "content-length"}
EMPTY_RECEIVE = "ReceiveMessage (empty)"


def api_name(headers: http.client.HTTPMessage, body: bytes) -> str:
    """``ReceiveMessage`` from ``X-Amz-Target: AmazonSQS.ReceiveMessage`` (or ``Action=``)."""
    target = headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    action = parse_qs(body.decode("latin-1")).get("Action")
    return action[0] if action else "(other)"


class _Server(ThreadingHTTPServer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.to_reset: set[socket.socket] = set()  # connections to end with a TCP reset

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (a worker stopped mid long poll) is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        if request in self.to_reset:  # no FIN first: SO_LINGER 0 makes close() send a RST
            self.to_reset.discard(request)
            self.close_request(request)
            return
        super().shutdown_request(request)


def has_messages(body: bytes) -> bool:
    """Whether a ReceiveMessage response (JSON, or the query protocol's XML) holds a message."""
    try:
        return bool(json.loads(body).get("Messages"))
    except ValueError:
        return b"<Message>" in body


class CountingProxy:
    """Forward to ``upstream`` (``http://host:port``), counting requests by API call."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0,
                 label: Callable[[str, bytes], str] | None = None,
                 latency_ms: float = 0.0) -> None:
        target = urlparse(upstream)
        self.label = label
        #: Added to every request before it is forwarded (AWS's in-region round trip, say).
        self.latency = max(0.0, latency_ms) / 1000
        self.upstream_host, self.upstream_port = target.hostname or "127.0.0.1", target.port or 80
        self._counts: Counter[str] = Counter()
        self._epoch = 0  # bumped by reset(): a response is counted in its request's window only
        self._lock = threading.Lock()
        self._local = threading.local()
        self.server = _Server((host, port), self._handler_class())
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def counts(self) -> Counter[str]:
        """A copy of the counts so far."""
        with self._lock:
            return Counter(self._counts)

    def reset(self) -> Counter[str]:
        """The counts so far, and start again from zero."""
        with self._lock:
            counts, self._counts = self._counts, Counter()
            self._epoch += 1
        return counts

    def _count(self, name: str, epoch: int | None = None) -> int:
        """Count ``name`` (if still in window ``epoch``); the current window."""
        with self._lock:
            if epoch in (None, self._epoch):
                self._counts[name] += 1
            return self._epoch

    def _upstream(self, fresh: bool = False) -> http.client.HTTPConnection:
        """This thread's keep-alive connection to the upstream."""
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
            self._local.conn = conn
        return conn

    def forward(self, method: str, path: str, headers: dict[str, str], body: bytes
                ) -> tuple[int, list[tuple[str, str]], bytes]:
        headers = {**headers, "Host": f"{self.upstream_host}:{self.upstream_port}",
                   "Content-Length": str(len(body))}
        for attempt in (1, 2):  # an idle keep-alive connection the server closed: reconnect once
            conn = self._upstream(fresh=attempt == 2)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            except (ConnectionError, http.client.HTTPException):
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # -- one request: read, forward, answer (subclasses change what happens in between) --------
    def relay(self, handler: BaseHTTPRequestHandler) -> None:
        """Forward one request to the upstream and its answer back, counting it."""
        self.relay_read(handler, *self.read_request(handler))

    def relay_read(self, handler: BaseHTTPRequestHandler, api: str, body: bytes) -> None:
        """:meth:`relay` of a request already read (its API name and body)."""
        name = self.label(api, body) if self.label else api
        epoch = self._count(name)  # on arrival: a long poll counts when it starts
        if self.latency:
            time.sleep(self.latency)
        try:
            status, out_headers, out = self.forward_request(handler, body)
        except OSError as exc:
            handler.send_error(502, f"upstream: {exc}")
            return
        if api == "ReceiveMessage" and status == 200 and not has_messages(out):
            self._count(name.replace(api, EMPTY_RECEIVE, 1), epoch)
        self.respond(handler, status, out_headers, out)

    @staticmethod
    def read_request(handler: BaseHTTPRequestHandler) -> tuple[str, bytes]:
        """The request's API name and body."""
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        return api_name(handler.headers, body), body

    def forward_request(self, handler: BaseHTTPRequestHandler, body: bytes
                        ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Send the request ``handler`` read (with ``body``) upstream; status, headers, body."""
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in HOP_BY_HOP}
        return self.forward(handler.command, handler.path, headers, body)

    @staticmethod
    def respond(handler: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]],
                body: bytes) -> None:
        """Answer the client."""
        handler.send_response_only(status)
        for key, value in headers:
            if key.lower() not in HOP_BY_HOP:
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def reset_connection(self, handler: BaseHTTPRequestHandler) -> None:
        """End the client's connection with a TCP reset, answering nothing."""
        sock = handler.connection
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.close_connection = True
        self.server.to_reset.add(sock)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as boto3 expects
            # headers and body go out in two writes: without TCP_NODELAY the second waits for the
            # client's delayed ACK (~40 ms a request), which would slow a sequential client down
            disable_nagle_algorithm = True

            def _relay(self) -> None:
                proxy.relay(self)

            do_POST = do_GET = do_PUT = do_DELETE = _relay

            def log_message(self, *args: object) -> None:  # quiet
                pass

        return Handler

    def start(self) -> CountingProxy:
        self._thread = threading.Thread(target=self.server.serve_forever, name="sqs-proxy",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> CountingProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DynamoMeter:
    """A ``label`` for a proxy in front of DynamoDB that also counts the items each write
    request writes (:attr:`written`): BatchWriteItem's entries, TransactWriteItems' items (each
    billed twice: a transactional write is two write units), one for Put/Update/DeleteItem."""

    WRITES = ("PutItem", "UpdateItem", "DeleteItem")

    def __init__(self) -> None:
        self.written: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, api: str, body: bytes) -> str:
        units = 0
        if api in self.WRITES:
            units = 1
        elif api in ("BatchWriteItem", "TransactWriteItems"):
            try:
                request = json.loads(body)
            except ValueError:
                request = {}
            if api == "BatchWriteItem":
                units = sum(len(v) for v in (request.get("RequestItems") or {}).values())
            else:
                units = 2 * len(request.get("TransactItems") or [])
        if units:
            with self._lock:
                self.written["write units"] += units
        return api

    def reset(self) -> Counter[str]:
        with self._lock:
            written, self.written = self.written, Counter()
        return written


class Proxies:
    """Counting proxies in front of a local stack's SQS and DynamoDB, with optional latency;
    the environment (``AWS_ENDPOINT_URL_SQS`` / ``_DYNAMODB``) points at them while open."""

    def __init__(self, sqs_url: str, dynamodb_url: str, *, sqs_latency_ms: float = 0.0,
                 dynamodb_latency_ms: float = 0.0,
                 sqs_label: Callable[[str, bytes], str] | None = None) -> None:
        self.meter = DynamoMeter()
        self.sqs = CountingProxy(sqs_url, label=sqs_label, latency_ms=sqs_latency_ms)
        self.dynamodb = CountingProxy(dynamodb_url, label=self.meter,
                                      latency_ms=dynamodb_latency_ms)
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> Proxies:
        import os

        from actionrunner.settings import get_settings

        self.sqs.start()
        self.dynamodb.start()
        for name, url in (("AWS_ENDPOINT_URL_SQS", self.sqs.url),
                          ("AWS_ENDPOINT_URL_DYNAMODB", self.dynamodb.url)):
            self._saved[name] = os.environ.get(name)
            os.environ[name] = url
        get_settings.cache_clear()
        return self

    def __exit__(self, *exc: object) -> None:
        import os

        from actionrunner.settings import get_settings

        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        get_settings.cache_clear()
        self.sqs.stop()
        self.dynamodb.stop()
