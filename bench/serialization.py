"""Serialization: bytes on the wire and encode/decode time per message, stock Celery vs ActionRunner.

    actionrunner bench serialization [--repeat 200]

For a small task (two ints), a 10 kB and a 500 kB payload: the SQS body stock kombu sends with the
json, pickle and msgpack serializers (a base64 envelope around a base64 body), and ActionRunner's
compact format (JSON text, zlib over 64 kB). Encode = task arguments → SQS body; decode = SQS body
→ arguments, as the worker does. SQS bills each started 64 KB of a message as one request.

Then the small action's message as ActionRunner's send path really makes it (``.delay()``
through the transport, nothing sent; a fresh process per format): its body and attributes in the
compact format (the default) and in stock Celery's (``ACTIONRUNNER_WIRE_FORMAT=celery``, which
workers still read). ``--show`` prints the bodies.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import math
import random
import string
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kombu.serialization import dumps, loads
from rich.table import Table

from actionrunner.sqs import codec
from bench.harness import make_console, pyplot

ROOT = Path(__file__).resolve().parents[1]
PLOT = ROOT / "docs" / "bench" / "serialization.png"
console = make_console()
codec.register()

HEADERS = {
    "lang": "py", "task": "tasks.demo.add", "id": str(uuid.uuid4()), "shadow": None, "eta": None,
    "expires": None, "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
    "root_id": None, "parent_id": None, "argsrepr": "()", "kwargsrepr": "{'a': 1, 'b': 2}",
    "origin": "gen4242@worker-host", "ignore_result": True, "replaced_task_nesting": 0,
    "stamped_headers": None, "stamps": {},
}
PROPERTIES = {"correlation_id": HEADERS["id"], "reply_to": str(uuid.uuid4()), "delivery_mode": 2,
              "delivery_info": {"exchange": "", "routing_key": "actions.fifo"}, "priority": 0}
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def payloads() -> dict[str, dict[str, Any]]:
    rng = random.Random(7)

    def text(n: int) -> str:
        return "".join(rng.choice(string.ascii_letters + " ") for _ in range(n))

    rows = [{"id": i, "name": text(30), "tags": [text(5) for _ in range(3)], "score": rng.random()}
            for i in range(4000)]
    return {
        "small (2 ints)": {"a": 1, "b": 2},
        "10 kB": {"note": text(9_800)},
        "500 kB": {"rows": rows[: int(500_000 / 125)]},
    }


def stock(serializer: str) -> tuple[Callable[[dict[str, Any]], str], Callable[[str], Any]]:
    def encode(kwargs: dict[str, Any]) -> str:
        content_type, encoding, body = dumps(((), kwargs, EMBED), serializer=serializer)
        raw = body if isinstance(body, bytes) else body.encode("utf-8")
        message = {"body": base64.b64encode(raw).decode(), "content-encoding": encoding,
                   "content-type": content_type, "headers": HEADERS,
                   "properties": {**PROPERTIES, "body_encoding": "base64",
                                  "delivery_tag": str(uuid.uuid4())}}
        return base64.b64encode(json.dumps(message).encode()).decode()

    def decode(sqs_body: str) -> Any:
        envelope = json.loads(base64.b64decode(sqs_body))
        return loads(base64.b64decode(envelope["body"]), envelope["content-type"],
                     envelope["content-encoding"], accept={envelope["content-type"]})

    return encode, decode


def compact() -> tuple[Callable[[dict[str, Any]], str], Callable[[str], Any]]:
    def encode(kwargs: dict[str, Any]) -> str:
        message = {"body": codec.dumps([[], kwargs, EMBED]), "content-encoding": "utf-8",
                   "content-type": "application/json", "headers": HEADERS,
                   "properties": {**PROPERTIES, "delivery_tag": str(uuid.uuid4())}}
        return codec.encode(message, compress_over=65_536)

    def decode(sqs_body: str) -> Any:
        envelope = json.loads(sqs_body)
        body: Any = envelope["body"]
        if envelope["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        if envelope["headers"].get("compression"):
            body = zlib.decompress(body)
        return loads(body, envelope["content-type"], envelope["content-encoding"])

    return encode, decode


def timed(fn: Callable[[], Any], repeat: int) -> float:
    best = math.inf
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best * 1e6


# -- what the send path really sends ---------------------------------------------------------
#: The small action: tasks.demo.noop(shard: int, n: int), sent with .delay().
SMALL_ACTION = ("tasks.demo", "noop", {"shard": 1, "n": 2})
#: What a compact small action's message may weigh (body + attributes; issue 23).
SMALL_BUDGET = 450

_CAPTURE = """
import json, sys
from unittest import mock
from kombu.transport.virtual.base import queue_declare_ok_t
from actionrunner.sqs import transport
captured = []
def put(self, queue, message, **kw):
    captured.append(self._encode_entry(queue, message))
fake_url = "http://127.0.0.1:9/000000000000/"
with mock.patch.object(transport.Channel, "queue_declare",
                       lambda self, queue=None, *a, **k: queue_declare_ok_t(queue, 0, 0)), \
        mock.patch.object(transport.Channel, "_put", put), \
        mock.patch.object(transport.Channel, "_new_queue", lambda self, q, **kw: fake_url + q), \
        mock.patch.object(transport, "resolve_queue_url", lambda c, n, e: fake_url + n):
    import importlib
    from actionrunner.app import app
    module, name, inputs = json.loads(sys.argv[1])
    getattr(importlib.import_module(module), name).delay(**inputs)
print(json.dumps(captured[0]))
"""


def capture(wire_format: str, call: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    """The SendMessage parameters the real send path (``.delay()``, through ActionRunner's
    transport; nothing is sent) makes for ``call`` in ``wire_format``."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ACTIONRUNNER_WIRE_FORMAT": wire_format,
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
           "ACTIONRUNNER_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    env.pop("AWS_ENDPOINT_URL_SQS", None)
    out = subprocess.run([sys.executable, "-c", _CAPTURE, json.dumps(call)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    entry: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return entry


def attributes_bytes(attributes: dict[str, Any]) -> int:
    """What SQS counts of message attributes: each name, type and value."""
    total = 0
    for name, value in (attributes or {}).items():
        data = value.get("StringValue") or value.get("BinaryValue") or ""
        total += len(name.encode()) + len(value.get("DataType", "").encode()) + len(
            data if isinstance(data, bytes) else str(data).encode())
    return total


def sent_messages(show: bool) -> None:
    """The small action's message as the send path makes it, in both wire formats."""
    table = Table(title=f"the small action's message as .delay() sends it "
                        f"({SMALL_ACTION[0]}.{SMALL_ACTION[1]}(**{SMALL_ACTION[2]}))")
    for column in ("wire format", "body bytes", "attribute bytes", "body + attributes",
                   f"≤ {SMALL_BUDGET} B"):
        table.add_column(column, justify="right")
    for wire_format in ("compact", "celery"):
        entry = capture(wire_format, SMALL_ACTION)
        body = len(entry["MessageBody"].encode())
        attrs = attributes_bytes(entry.get("MessageAttributes") or {})
        table.add_row(wire_format + (" (default)" if wire_format == "compact" else " (stock)"),
                      f"{body:,}", f"{attrs:,}", f"[b]{body + attrs:,}[/]",
                      "yes" if body + attrs <= SMALL_BUDGET else "no")
        if show:
            console.print(f"{wire_format}: {entry['MessageBody']}")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="actionrunner bench serialization", description=__doc__)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--show", dest="capture_inputs", action="store_true",
                        help="print the small action's message bodies too")
    args = parser.parse_args(argv)
    formats = {"stock json": stock("json"), "stock pickle": stock("pickle"),
               "stock msgpack": stock("msgpack"), "ActionRunner compact": compact()}
    results: dict[str, dict[str, tuple[int, float, float]]] = {}
    for size, kwargs in payloads().items():
        for name, (encode, decode) in formats.items():
            body = encode(kwargs)
            decoded = decode(body)
            assert decoded[1] == kwargs, name  # round trip
            repeat = max(3, args.repeat if "small" in size else args.repeat // 20)
            results.setdefault(size, {})[name] = (
                len(body.encode()),
                timed(functools.partial(encode, kwargs), repeat),
                timed(functools.partial(decode, body), repeat))
    table = Table(title="bytes on the wire and µs per message (encode: arguments → SQS body)")
    for column in ("payload", "format", "bytes", "vs stock json", "64 KB chunks", "encode µs", "decode µs"):
        table.add_column(column, justify="right")
    for size, by_format in results.items():
        base = by_format["stock json"][0]
        for name, (nbytes, enc, dec) in by_format.items():
            table.add_row(size, name, f"{nbytes:,}", f"{nbytes / base:.0%}",
                          str(math.ceil(nbytes / 65_536)), f"{enc:,.1f}", f"{dec:,.1f}")
    console.print(table)
    sent_messages(args.capture_inputs)
    plt = pyplot()
    if plt is not None:
        PLOT.parent.mkdir(parents=True, exist_ok=True)
        fig, axes = plt.subplots(1, len(results), figsize=(11, 3.6))
        for ax, (size, by_format) in zip(axes, results.items(), strict=True):
            names = list(by_format)
            ax.bar(range(len(names)), [by_format[n][0] for n in names],
                   color=["#bbb", "#999", "#777", "tab:blue"])
            ax.set_xticks(range(len(names)), [n.replace("stock ", "stock\n").replace("ActionRunner ", "AR\n")
                                              for n in names], fontsize=8)
            ax.set_title(size)
            ax.set_ylabel("bytes per message")
        fig.tight_layout()
        fig.savefig(PLOT, dpi=110)
        console.print(f"plot: {PLOT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
