"""One runtime per process (:mod:`actionrunner.runtime`): what guard, lease, runs, the state table's
client and the monitors use is the process's runtime, stand-in clients included; a forked child
(a prefork pool process) gets a runtime of its own, sharing no client with its parent.

No server: stand-in clients, and boto3 clients that are made but never called.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from actionrunner import runs, runtime
from actionrunner.runtime import Runtime
from actionrunner.settings import Settings, get_settings
from actionrunner.sqs.monitor import monitor_for
from actionrunner.state import effects, guard, lease, table
from actionrunner.state.memory import MemoryStore


class StandIn:
    """A client that records the operations called on it and answers each with ``{}``."""

    class exceptions:  # noqa: N801  (boto3's name)
        class ConditionalCheckFailedException(Exception):
            pass

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, operation: str) -> Any:
        if operation.startswith("_"):
            raise AttributeError(operation)

        def call(**_: Any) -> dict[str, Any]:
            self.calls.append(operation)
            return {}

        return call


class Task:
    name = "tests.runtime.limited"
    rate_limit_shared, bucket, idempotent = "5/s", None, None


def test_guard_runs_lease_and_the_table_client_use_the_runtime_with_its_stand_in_clients() -> None:
    dynamodb, sqs = StandIn(), StandIn()
    rt = Runtime.from_settings(Settings(state_table="rt-table"), dynamodb=dynamodb, sqs=sqs)
    with runtime.using(rt):
        assert runtime.current() is rt
        assert table.client() is dynamodb and rt.sqs is sqs
        assert rt.state_client(3) is dynamodb and rt.client("dynamodb") is dynamodb
        store = guard.get_store()
        assert store is guard.get_store() and store.client is dynamodb  # type: ignore[attr-defined]
        assert store.table == "rt-table"  # type: ignore[attr-defined]
        limiter = guard.limiter_for(Task())
        assert limiter is guard.limiter_for(Task()) and limiter is not None
        assert limiter.client is dynamodb and limiter.table == "rt-table"
        assert lease.keeper() is lease.keeper(rt)
        assert runs.run_store() is runs.run_store(rt) and runs.run_store().client is dynamodb
        assert guard.is_idempotent(Task()) is rt.settings.idempotency

        effects.commit(None, [{"Put": {"TableName": "rt-table", "Item": {}}}])  # the table client
        runs.run_store().record("started", {"id": "r1", "action": "tests.runtime.limited"})
        assert dynamodb.calls == ["transact_write_items", "update_item"]

        monitor = monitor_for("http://127.0.0.1:1", "ar-", "all", lambda: sqs)
        assert monitor is monitor_for("http://127.0.0.1:1", "ar-", "all", lambda: StandIn())
        assert monitor.client is sqs

        memory = MemoryStore(ttl_seconds=60, lease_seconds=30)
        guard.use_store(memory)  # the old name: the store of the process's runtime
        assert guard.get_store() is memory and guard.get_store(rt) is memory
        guard.use_store(None)
        assert guard.get_store() is not memory and guard.get_store().client is dynamodb  # type: ignore[attr-defined]

    other = Runtime.from_settings(Settings(), dynamodb=StandIn())
    with runtime.using(other):
        assert guard.get_store() is not store and lease.keeper() is not lease.keeper(rt)
        assert monitor_for("http://127.0.0.1:1", "ar-", "all", StandIn) is not monitor
    assert runtime.current() is not rt and runtime.current().settings is get_settings()


def test_without_one_installed_the_runtime_follows_the_settings() -> None:
    first = runtime.current()
    assert first is runtime.current() and first.settings is get_settings()
    assert runtime.for_settings(first.settings) is first
    assert runtime.for_settings(Settings()) is not first  # other settings: a runtime of their own
    assert runtime.current() is first


@pytest.mark.parametrize("injected", [False, True])
def test_a_forked_child_gets_a_runtime_of_its_own(injected: bool) -> None:
    stand_in = StandIn() if injected else None
    parent = Runtime.from_settings(get_settings(), dynamodb=stand_in)
    with runtime.using(parent):
        built = {"dynamodb": parent.dynamodb, "sqs": parent.sqs, "store": guard.get_store(),
                 "keeper": lease.keeper(), "runs": runs.run_store()}
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, and leave without pytest's teardown
            status = 1
            try:
                os.close(read)
                child = runtime.current()
                now = {"dynamodb": table.client(), "sqs": child.sqs, "store": guard.get_store(),
                       "keeper": lease.keeper(), "runs": runs.run_store()}
                report = {
                    "new": child is not parent and child.pid == os.getpid(),
                    "settings": child.settings is parent.settings,
                    "stable": runtime.current() is child,
                    "shared": sorted(k for k in built if now[k] is built[k]),
                    "own_client": guard.get_store().client is child.dynamodb,  # type: ignore[attr-defined]
                    "stand_in": child.dynamodb is stand_in,
                }
                os.write(write, json.dumps(report).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(write)
        with os.fdopen(read) as pipe:
            report = json.loads(pipe.read() or "{}")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert runtime.current() is parent  # the parent's is untouched
    assert report == {"new": True, "settings": True, "stable": True, "shared": [],
                      "own_client": True, "stand_in": False}
