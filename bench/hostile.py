"""``actionrunner bench hostile``: malformed and hostile messages against a real worker.

Every kind of message a worker must survive is put on the queue by hand (around every check a
sender makes), each followed by a healthy message in the same group, beside healthy traffic in
other groups, on moto (several messages of a group per receive) and on fauxqs (one). For each
kind it prints what became of it — dead-lettered with its reason / ran / lost / worker stopped —,
whether its follower ran after it, and whether the worker is still running. No object outside the
payload bucket may be read or deleted: a foreign object is planted and checked afterwards.

The catalogue (:data:`KINDS`) is shared with the test suite (tests/test_hostile.py), which
asserts the same outcomes on both emulators and for the Lambda runtime.
"""

from __future__ import annotations

import argparse
import base64
import json
import pickle
import time
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from actionrunner.sqs.claimcheck import KEY_PREFIX, POINTER_CLASS, SIZE_ATTRIBUTE


@dataclass
class Context:
    """What a kind needs to build its message."""

    app: Any
    task: str  #: the follower's action
    kwargs: dict[str, Any]  #: valid inputs of it
    bad_kwargs: dict[str, Any]  #: inputs that do not validate
    queue: str
    payload_bucket: str | None
    foreign_bucket: str
    foreign_key: str


@dataclass
class Hostile:
    body: str
    attributes: dict[str, Any] = field(default_factory=dict)


def envelope(ctx: Context, *, task: str | None = None, kwargs: dict[str, Any] | None = None,
             **headers: Any) -> dict[str, Any]:
    """A well-formed protocol-2 envelope (compact format), as a dict to spoil."""
    task_id = str(uuid.uuid4())
    message = ctx.app.amqp.as_task_v2(task_id, task or ctx.task, args=(),
                                      kwargs=kwargs if kwargs is not None else ctx.kwargs)
    return {"body": json.dumps(list(message.body)), "content-encoding": "utf-8",
            "content-type": "application/json", "headers": {**message.headers, **headers},
            "properties": {**message.properties, "delivery_mode": 2, "priority": 0,
                           "delivery_info": {"exchange": "", "routing_key": ctx.queue}}}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _spoiled(ctx: Context, change: Callable[[dict[str, Any]], None]) -> Hostile:
    env = envelope(ctx)
    change(env)
    return Hostile(json.dumps(env))


def _compressed(ctx: Context, data: bytes) -> Hostile:
    env = envelope(ctx)
    env["headers"]["compression"] = "application/x-gzip"
    env["properties"]["body_encoding"] = "base64"
    env["body"] = _b64(data)
    return Hostile(json.dumps(env))


def _pointer(bucket: str, key: str, size: int = 100) -> Hostile:
    return Hostile(json.dumps([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}]),
                   {SIZE_ATTRIBUTE: {"DataType": "Number", "StringValue": str(size)}})


def _pickled(ctx: Context) -> Hostile:
    env = envelope(ctx)
    env["content-type"] = "application/x-python-serialize"
    env["content-encoding"] = "binary"
    env["properties"]["body_encoding"] = "base64"
    env["body"] = _b64(pickle.dumps(((), ctx.kwargs, {})))
    return Hostile(json.dumps(env))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(env: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = env
        for part in parents:
            target = target[part]
        target[last] = value
    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    def change(env: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = env
        for part in parents:
            target = target[part]
        target.pop(last, None)
    return change


#: kind → (build, the error type it must be dead-lettered with)
KINDS: dict[str, tuple[Callable[[Context], Hostile], str]] = {
    "body not JSON": (lambda c: Hostile("this is not JSON {"), "NotJson"),
    "nested too deeply": (lambda c: Hostile("[" * 100_000 + "]" * 100_000), "NotJson"),
    "envelope not an object": (lambda c: Hostile(json.dumps(["task", 1])), "BadEnvelope"),
    "properties not an object": (lambda c: _spoiled(c, _set("properties", "x")), "BadEnvelope"),
    "headers not an object": (lambda c: _spoiled(c, _set("headers", ["task"])), "BadEnvelope"),
    "body not text": (lambda c: _spoiled(c, _set("body", {"a": 1})), "BadEnvelope"),
    "task body not [args, kwargs, embed]": (
        lambda c: _spoiled(c, _set("body", '{"args": []}')), "BadEnvelope"),
    "marked base64, is not": (
        lambda c: _spoiled(c, lambda e: (_set("properties.body_encoding", "base64")(e),
                                         _set("body", "%%% not base64 %%%")(e))), "BadEncoding"),
    "bad zlib data": (lambda c: _compressed(c, b"this is not zlib data"), "BadCompression"),
    "truncated zlib data": (
        lambda c: _compressed(c, zlib.compress(envelope(c)["body"].encode())[:-6]), "BadCompression"),
    "decompression bomb (64 MiB)": (
        lambda c: _compressed(c, zlib.compress(b"0" * (64 * 1_048_576), 9)), "MessageTooLarge"),
    "pickle content type": (_pickled, "ContentTypeRefused"),
    "unknown action": (lambda c: Hostile(json.dumps(envelope(c, task="tests.no_such_action"))),
                       "UnknownAction"),
    "no task header": (lambda c: _spoiled(c, _drop("headers.task")), "BadTaskHeader"),
    "task header not text": (lambda c: _spoiled(c, _set("headers.task", 42)), "BadTaskHeader"),
    "eta not a time": (lambda c: _spoiled(c, _set("headers.eta", "yesterday")), "BadTaskHeader"),
    "inputs that do not validate": (
        lambda c: Hostile(json.dumps(envelope(c, kwargs=c.bad_kwargs))), "ActionInputError"),
    "refused schema version": (
        lambda c: Hostile(json.dumps(envelope(c, ar_schema=99))), "SchemaVersionRejected"),
    "pointer to a foreign bucket": (
        lambda c: _pointer(c.foreign_bucket, c.foreign_key), "PointerRefused"),
    "pointer outside the payload prefix": (
        lambda c: _pointer(c.payload_bucket or "none", "secrets/key"), "PointerRefused"),
    "malformed pointer": (lambda c: Hostile(json.dumps([POINTER_CLASS, "oops"])), "PointerRefused"),
    "pointer to a missing object": (
        lambda c: _pointer(c.payload_bucket or "none", f"{KEY_PREFIX}missing-{uuid.uuid4()}"),
        "PayloadMissing"),
    **{f"Celery built-in {name}": (
        lambda c, name=name: Hostile(json.dumps(envelope(c, task=name, kwargs={}))),
        "BuiltinTaskRefused")
       for name in ("celery.starmap", "celery.chunks", "celery.map", "celery.chord_unlock",
                    "celery.backend_cleanup")},
    "eta beyond what SQS can hold": (
        lambda c: Hostile(json.dumps(envelope(c, eta="2099-01-01T00:00:00+00:00"))), "EtaTooFar"),
    "expired before it ran": (
        lambda c: Hostile(json.dumps(envelope(c, expires="2000-01-01T00:00:00+00:00"))),
        "MessageExpired"),
    "pointer declaring 10 GB": (
        lambda c: _pointer(c.payload_bucket or "none", f"{KEY_PREFIX}big", size=10**10),
        "MessageTooLarge"),
}


def plant_foreign_object(s3: Any, bucket: str) -> str:
    """An object in a bucket the worker must never read or delete; returns its key."""
    try:
        s3.create_bucket(Bucket=bucket)
    except Exception as exc:  # already there
        if "BucketAlready" not in str(exc):
            raise
    key = f"{KEY_PREFIX}{uuid.uuid4()}"
    s3.put_object(Bucket=bucket, Key=key, Body=b"secret")
    return key


def send_kinds(sqs: Any, url: str, ctx: Context, group_of: Callable[[str], str],
               follower: Callable[[str], None]) -> dict[str, str]:
    """Send each kind, then a healthy follower in its group; kind → group."""
    groups = {}
    for index, (kind, (build, _)) in enumerate(KINDS.items()):
        hostile = build(ctx)
        group = group_of(f"k{index}")
        sqs.send_message(QueueUrl=url, MessageBody=hostile.body, MessageGroupId=group,
                         MessageDeduplicationId=uuid.uuid4().hex,
                         **({"MessageAttributes": hostile.attributes} if hostile.attributes else {}))
        follower(f"k{index}")
        groups[kind] = group
    return groups


def dead_letters(sqs: Any, dlq_url: str, groups: set[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Receive (and delete) the DLQ's messages of ``groups`` until all arrived: group → message."""
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while set(found) < groups and time.monotonic() < deadline:
        response = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       MessageSystemAttributeNames=["All"],
                                       MessageAttributeNames=["All"])
        for message in response.get("Messages", []):
            group = message["Attributes"].get("MessageGroupId", "")
            if group in groups:
                found[group] = message
                sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
    return found


def error_type(message: dict[str, Any]) -> str:
    return str(message["MessageAttributes"]["actionrunner.error_type"]["StringValue"])


def run_bench(sqs_server: str, healthy: int) -> tuple[list[tuple[str, str, str, str]], bool, bool]:
    """One emulator: (kind, expected, outcome, follower) rows, worker still running, foreign
    object intact."""
    from actionrunner.app import app

    from . import harness

    rows: list[tuple[str, str, str, str]] = []
    with harness.local_stack(sqs_server, ACTIONRUNNER_IMPORTS="bench.actions",
                             ACTIONRUNNER_PAYLOAD_BUCKET=f"ar-payloads-{uuid.uuid4().hex[:8]}",
                             ACTIONRUNNER_WAIT_TIME_SECONDS="1") as (_, settings):
        from actionrunner import provision

        provision.apply_bucket(settings)
        sqs, s3 = settings.client("sqs"), settings.client("s3")
        url = sqs.get_queue_url(QueueName=settings.queue_name)["QueueUrl"]
        dlq_url = sqs.get_queue_url(QueueName=settings.dlq_name)["QueueUrl"]
        foreign = f"foreign-{uuid.uuid4().hex[:8]}"
        foreign_key = plant_foreign_object(s3, foreign)
        run = uuid.uuid4().hex[:8]
        record = harness.record_file(f"hostile-{sqs_server}")
        ctx = Context(app, "bench.actions.probe", {"group": "x", "seq": 1, "run": run},
                      {"group": "x", "seq": "not a number", "run": run}, settings.queue_name,
                      settings.payload_bucket, foreign, foreign_key)
        with harness.environ(ACTIONRUNNER_BENCH_RECORD=str(record)):
            harness.quiet_sender()
            from bench.actions import probe

            def follow(group: str) -> None:
                probe.delay(group=f"{run}-{group}", seq=1, run=run)

            with harness.worker("actionrunner", 4, f"hostile-{sqs_server}-worker") as proc:
                groups = send_kinds(sqs, url, ctx, lambda g: f"bench:{run}-{g}", follow)
                probe.delay_many([{"group": f"{run}-healthy{i % 5}", "seq": i, "run": run}
                                  for i in range(healthy)])
                letters = dead_letters(sqs, dlq_url, set(groups.values()),
                                       timeout=settings.visibility_timeout + 15)
                harness.wait_records(record, len(KINDS) + healthy, 30)
                alive = proc.poll() is None
        ran = {r["group"]: r for r in harness.read_records(record)}
        for kind, (_, expected) in KINDS.items():
            group = groups[kind]
            letter = letters.get(group)
            follower = ran.get(group.removeprefix("bench:"))
            if letter is not None:
                outcome = f"dead-lettered: {error_type(letter)}"
            else:
                outcome = "worker stopped" if not alive else "lost (not in the DLQ)"
            if follower is None:
                after = "did not run"
            elif letter is None:
                after = "ran"
            else:
                entered = int(letter["Attributes"]["SentTimestamp"]) / 1000
                after = "ran after it" if follower["start"] + 0.05 >= entered else "ran BEFORE it"
            rows.append((kind, expected, outcome, after))
        healthy_ran = sum(1 for r in harness.read_records(record) if "-healthy" in r["group"])
        rows.append(("(healthy traffic, other groups)", f"{healthy} ran", f"{healthy_ran} ran", "-"))
        try:
            intact = s3.get_object(Bucket=foreign, Key=foreign_key)["Body"].read() == b"secret"
        except Exception:
            intact = False
    return rows, alive, intact


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="actionrunner bench hostile", description=__doc__)
    parser.add_argument("--sqs", choices=["moto", "fauxqs", "both"], default="both")
    parser.add_argument("--healthy", type=int, default=20, help="healthy actions in other groups")
    args = parser.parse_args(argv)
    from rich.markup import escape
    from rich.table import Table

    from . import harness

    console = harness.make_console()
    for server in (["moto", "fauxqs"] if args.sqs == "both" else [args.sqs]):
        rows, alive, intact = run_bench(server, args.healthy)
        table = Table(title=f"hostile messages, SQS from {server}")
        for column in ("kind", "expected", "outcome", "its same-group follower"):
            table.add_column(column)
        for row in rows:
            ok = row[2].endswith(row[1]) and row[3] in ("ran after it", "-")
            table.add_row(*(escape(cell) for cell in row), style=None if ok else "red")
        console.print(table)
        console.print(f"worker still running: {'yes' if alive else 'NO'}; foreign object read or "
                      f"deleted: {'no' if intact else 'YES'}")


if __name__ == "__main__":
    main()
