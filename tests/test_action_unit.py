"""Declaring and preparing actions: validation, message group, dedup id. No server needed."""

from __future__ import annotations

import datetime as dt

import pytest

from actionrunner import action
from actionrunner.errors import (
    ActionDefinitionError,
    ActionError,
    ActionInputError,
    MessageIdError,
)


@action(group="tenant:{tenant_id}", name="tests.unit.recalc")
def recalc(tenant_id: str, season: int, at: dt.date | None = None) -> dict:
    return {"tenant": tenant_id, "season": season, "at": at}


@action(group=lambda tenant_id, **_: f"t-{tenant_id.upper()}", key="{tenant_id}", name="tests.unit.keyed")
def keyed(tenant_id: str, n: int = 0) -> None:
    return None


@action(name="tests.unit.plain")
def plain(x: int) -> int:
    return x


def test_group_comes_from_the_template_over_the_inputs() -> None:
    call = recalc.prepare(kwargs={"tenant_id": "t1", "season": 3})
    assert call.group == "tenant:t1"
    assert call.kwargs == {"tenant_id": "t1", "season": 3, "at": None}


def test_positional_inputs_are_named_and_values_are_sent_as_json() -> None:
    call = recalc.prepare(("t1", "3"), {"at": "2026-11-27"})
    assert call.kwargs == {"tenant_id": "t1", "season": 3, "at": "2026-11-27"}


def test_dedup_id_is_deterministic_and_never_random() -> None:
    first = recalc.prepare(kwargs={"tenant_id": "t1", "season": 3})
    again = recalc.prepare(kwargs={"season": 3, "tenant_id": "t1"})
    other = recalc.prepare(kwargs={"tenant_id": "t1", "season": 4})
    assert first.dedup_id == again.dedup_id
    assert first.dedup_id != other.dedup_id
    assert len(first.dedup_id) == 64


def test_key_and_group_callables() -> None:
    a = keyed.prepare(kwargs={"tenant_id": "ab", "n": 1})
    b = keyed.prepare(kwargs={"tenant_id": "ab", "n": 2})
    assert a.group == "t-AB"
    assert a.dedup_id == b.dedup_id  # the key is the tenant only


def test_default_group_is_the_action_name() -> None:
    assert plain.prepare(kwargs={"x": 1}).group == "tests.unit.plain"


def test_bad_input_names_each_bad_field() -> None:
    with pytest.raises(ActionInputError) as caught:
        recalc.prepare(kwargs={"tenant_id": 5, "season": "third", "extra": 1})
    errors = caught.value.field_errors
    assert set(errors) == {"tenant_id", "season", "extra"}
    assert "season" in str(caught.value) and "tests.unit.recalc" in str(caught.value)


def test_missing_input_is_named() -> None:
    with pytest.raises(ActionInputError) as caught:
        recalc.prepare(kwargs={"tenant_id": "t1"})
    assert caught.value.field_errors == {"season": "Field required"}


def test_too_many_positional_inputs() -> None:
    with pytest.raises(ActionInputError, match="positional"):
        plain.prepare((1, 2))


def test_group_over_sqs_limits_is_refused() -> None:
    with pytest.raises(MessageIdError, match="at most 128"):
        recalc.prepare(kwargs={"tenant_id": "x" * 200, "season": 1})
    with pytest.raises(MessageIdError, match="characters SQS refuses"):
        recalc.prepare(kwargs={"tenant_id": "has space", "season": 1})


def test_misspelled_sqs_option_is_an_error_not_a_silent_default() -> None:
    with pytest.raises(ActionError, match="use MessageGroupId="):
        recalc.apply_async(kwargs={"tenant_id": "t1", "season": 1}, message_group_id="g")


def test_unknown_decorator_option_fails_at_declaration() -> None:
    with pytest.raises(ActionDefinitionError, match="unknown option 'retires'"):
        @action(retires=3)
        def typo(x: int) -> None: ...


def test_template_naming_an_unknown_input_fails_at_declaration() -> None:
    with pytest.raises(ActionDefinitionError, match=r"names \['tenant'\]"):
        @action(group="tenant:{tenant}")
        def wrong(tenant_id: str) -> None: ...


def test_var_args_are_refused() -> None:
    with pytest.raises(ActionDefinitionError, match=r"\*args is not supported"):
        @action
        def star(*args: int) -> None: ...


def test_called_directly_it_validates_and_runs_locally() -> None:
    assert recalc("t1", "3") == {"tenant": "t1", "season": 3, "at": None}
    with pytest.raises(ActionInputError):
        recalc("t1", "three")
