"""Serve moto over HTTP, with the CloudFormation property moto 5.2 drops filled in, and FIFO
order kept when several in-flight messages of a group come back at once.

``python -m actionrunner.moto_serve -H 127.0.0.1 -p 4566`` is ``python -m moto.server`` plus one
fix: moto's CloudFormation builds an ``AWS::DynamoDB::Table`` without its
``TimeToLiveSpecification`` (moto 5.2.5 reads every other table property, see
``moto/dynamodb/models/table.py``). Real CloudFormation enables TTL on create, so this launcher
applies the property the same way moto's own ``UpdateTimeToLive`` does. The stack's table is
then what AWS would create from the same template, and the deploy test reads TTL off it
instead of trusting the template.

And one SQS fix: when several received messages of one FIFO group become visible again together
(their receive's answer was lost, or the consumer died), moto 5.2 releases them one by one as its
receive loop reaches them, each time still counting the group as in flight because of the ones
not reached yet — so it delivers the *last* of them first (seq 9 before 7 and 8). SQS delivers
them in order. This launcher releases every message whose visibility ran out before a receive
looks at the queue, and counts a group as in flight only for messages still invisible (the
chaos benchmark found it: bench/chaos.py).

And one DynamoDB fix: moto cancels a TransactWriteItems by putting back a copy of each table it
took when the transaction began, so every write other requests (moto serves each in a thread of
its own) made to those tables meanwhile is undone — a completed idempotency record and its
staged effect vanished when another run's retried transaction was cancelled. This launcher
serves item reads and writes one at a time (a lock), so a transaction is atomic as on DynamoDB.
Nothing else of moto changes.
"""

from __future__ import annotations

import functools
import gc
import os
import sys
import threading
from typing import Any


def _enabled(value: Any) -> bool:
    """CloudFormation passes booleans through as JSON booleans or as "true"/"false"."""
    return value is True or str(value).lower() == "true"


def _patch(cls: type, name: str, value: Any) -> None:
    """Set ``cls.name`` to ``value``: one of moto's classes, patched in its server process (an
    assignment to a method, or a marker attribute, that mypy would refuse on the class)."""
    setattr(cls, name, value)


def patch_cloudformation_table_ttl() -> None:
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.table import Table

    if getattr(Table, "_actionrunner_ttl_patch", False):
        return
    create = Table.__dict__["create_from_cloudformation_json"].__func__  # (the classmethod's function)

    def create_from_cloudformation_json(cls: type[Table], /, resource_name: str,
                                        cloudformation_json: dict[str, Any], account_id: str,
                                        region_name: str, **kwargs: Any) -> Table:
        table: Table = create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        spec = cloudformation_json.get("Properties", {}).get("TimeToLiveSpecification")
        if spec:
            dynamodb_backends[account_id][region_name].update_time_to_live(
                table.name, {"AttributeName": spec.get("AttributeName"),
                             "Enabled": _enabled(spec.get("Enabled"))})
        return table

    _patch(Table, "create_from_cloudformation_json", classmethod(create_from_cloudformation_json))
    _patch(Table, "_actionrunner_ttl_patch", True)


def patch_sqs_fifo_redelivery_order() -> None:
    from moto.sqs.models import Queue, SQSBackend

    if getattr(SQSBackend, "_actionrunner_fifo_patch", False):
        return
    receive = SQSBackend.receive_message

    def receive_message(self: SQSBackend, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        queue = self.get_queue(queue_name)
        for message in [m for m in queue.pending_messages if m.visible]:
            queue.pending_messages.discard(message)  # its consumer timed out: back in line
        return receive(self, queue_name, *args, **kwargs)

    def pending_message_groups(self: Queue) -> set[str]:
        return {m.group_id for m in self.pending_messages if m.group_id is not None and not m.visible}

    _patch(SQSBackend, "receive_message", receive_message)
    _patch(Queue, "pending_message_groups", property(pending_message_groups))
    _patch(SQSBackend, "_actionrunner_fifo_patch", True)


#: DynamoDB calls that read or write items: one at a time (see the module docstring).
_DYNAMODB_ITEM_CALLS = ("put_item", "get_item", "update_item", "delete_item",
                        "transact_write_items")


def patch_dynamodb_transaction_isolation() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    if getattr(DynamoDBBackend, "_actionrunner_lock_patch", False):
        return
    lock = threading.RLock()  # a batch call goes through put_item/get_item: re-entrant

    def serialized(call: Any) -> Any:
        @functools.wraps(call)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return call(*args, **kwargs)
        return locked

    for name in _DYNAMODB_ITEM_CALLS:
        setattr(DynamoDBBackend, name, serialized(getattr(DynamoDBBackend, name)))
    _patch(DynamoDBBackend, "_actionrunner_lock_patch", True)


def main(argv: list[str] | None = None) -> None:
    patch_cloudformation_table_ttl()
    patch_sqs_fifo_redelivery_order()
    patch_dynamodb_transaction_isolation()
    if os.environ.get("ACTIONRUNNER_MOTO_GC") == "off":
        # moto keeps every item as Python objects in this one process; with ~10^5 items a full
        # cyclic collection pauses every request for a second or more (the benchmarks measure
        # per-second rates). Reference counting still frees what is not in a cycle.
        gc.disable()
    from moto.server import main as moto_main

    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
