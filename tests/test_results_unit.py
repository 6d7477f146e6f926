"""The result backend's pure rules (actionrunner/results.py): how a run record becomes Celery's
task meta (an exception rebuilt with its own arguments), and how many parts end a chord."""

from __future__ import annotations

from typing import Any

from celery.result import AsyncResult, GroupResult

from actionrunner.errors import error_args_of
from actionrunner.results import chord_size, meta_of_run
from actionrunner.settle import Reason


class TwoArgs(Exception):
    pass


def test_an_exception_keeps_arguments_that_are_more_than_its_message() -> None:
    assert error_args_of(TwoArgs("Task expected to fail", "test")) == '["Task expected to fail", "test"]'
    assert error_args_of(ValueError(3)) == "[3]"
    # the message alone is enough; what JSON cannot hold, or a huge one, is not kept
    assert error_args_of(ValueError("boom")) is None
    assert error_args_of(ValueError()) is None
    assert error_args_of(ValueError(object(), 1)) is None
    assert error_args_of(ValueError("x" * 600, 1)) is None
    assert error_args_of(None) is None
    reason = Reason.of(TwoArgs("a", "b"), attempt=3)
    assert reason.fields()["error_args"] == '["a", "b"]'
    assert "error_args" not in Reason.of(ValueError("boom"), attempt=3).fields()


def test_a_run_record_gives_the_exception_its_stored_arguments() -> None:
    run = {"status": "dead-lettered", "error_type": "TwoArgs", "error": "('a', 'b')",
           "error_args": '["a", "b"]', "action": "t.fail"}
    assert meta_of_run("id1", run)["result"]["exc_message"] == ["a", "b"]
    # no (or unreadable) stored arguments: the message
    for stored in (None, "not json", '{"a": 1}'):
        run = {"status": "dead-lettered", "error_type": "ValueError", "error": "boom",
               "error_args": stored}
        assert meta_of_run("id2", run)["result"]["exc_message"] == ["boom"]


def _results(*ids: str) -> list[Any]:
    return [AsyncResult(i) for i in ids]


def test_a_chord_ends_at_the_size_the_sender_gave_else_at_the_tasks_under_its_header() -> None:
    # header: [add, chain(add, group(add, add))]: the chain's result is its group's
    inner = GroupResult("inner", _results("b", "c"))
    deps = GroupResult("outer", [AsyncResult("a"), inner])
    assert chord_size({"task": "body"}, {}, deps) == 3  # the tasks under the header, not len 2
    assert chord_size({"task": "body"}, {"parts": {"N": "3"}}, deps) == 3  # set_chord_size
    assert chord_size({"task": "body", "chord_size": 4}, {"parts": {"N": "3"}}, deps) == 4
    # Task.add_to_chord: one more part each
    assert chord_size({"task": "body"}, {"parts": {"N": "3"}, "added": {"N": "2"}}, deps) == 5


def test_a_running_run_is_started_only_when_tracked_as_on_celery() -> None:
    run = {"status": "running", "action": "t.add"}
    assert meta_of_run("id3", run)["status"] == "STARTED"
    assert meta_of_run("id3", run, track_started=False)["status"] == "PENDING"
    assert meta_of_run("id3", {"status": "retrying"}, track_started=False)["status"] == "RETRY"


def test_a_result_that_is_a_celery_result_is_kept_as_celerys_backends_keep_it() -> None:
    import orjson

    from actionrunner.runs import _json_default

    group_result = GroupResult("g1", _results("a", "b"))
    assert orjson.loads(orjson.dumps(group_result, default=_json_default)) == \
        orjson.loads(orjson.dumps(group_result.as_tuple()))
    assert _json_default(ValueError("x")) == "x"  # anything else: its text
