"""Every ActionRunner error survives pickling (Celery's prefork pool sends a failed run's
exception from the pool process to the main one) as itself, with its message and fields."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from actionrunner import errors as E

SAMPLES: list[Any] = [
    E.EndpointUnreachable("sqs", "http://127.0.0.1:1", ConnectionRefusedError("refused")),
    E.QueueMissing("a.fifo", None),
    E.TableMissing("state", "http://127.0.0.1:1"),
    E.QueueMisconfigured("a.fifo", ["FifoQueue is false", "no redrive policy"]),
    E.ActionInputError("tasks.x", {"n": "not an int"}),
    E.SchemaVersionRejected("tasks.x", 3, (1, 2)),
    E.MessageIdError("tasks.x", "MessageGroupId", "é" * 200, "is too long"),
    E.PayloadTooLarge("tasks.x", 2_000_000, 1_048_576),
    E.SendError("SQS refused 1 of 2 messages", [(1, "InternalError", "boom")]),
    E.IdempotencyKeyReused("tasks.x", "k", "a" * 64, "b" * 64),
    E.LeaseLost("k"),
    E.EffectRejected(2, "ConditionalCheckFailed", "exists"),
    E.ActionDefinitionError("no type hint for n"),
    E.ConfigurationError("plain message"),
    E.RetryLater("later", None, 5),
    E.IdempotencyInProgress("k", 12.5, 3),
]


@pytest.mark.parametrize("error", SAMPLES, ids=lambda e: type(e).__name__)
def test_errors_pickle_as_themselves(error: BaseException) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    fields = {k: v for k, v in vars(error).items() if k != "_made_with"}
    assert {k: v for k, v in vars(copy).items() if k != "_made_with"} == fields


def test_an_unpicklable_cause_is_left_behind() -> None:
    class Local(Exception):  # a class pickle cannot find by name
        pass

    copy = pickle.loads(pickle.dumps(E.EndpointUnreachable("sqs", None, Local("x"))))
    assert copy.service == "sqs" and "default AWS sqs endpoint: x;" in str(copy)
