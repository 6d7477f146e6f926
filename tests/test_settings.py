"""Settings: one typed object, ACTIONRUNNER_ prefix, boto3's endpoint variables, clear errors."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from actionrunner.celery_config import celery_config
from actionrunner.settings import Settings


def test_queue_name_must_be_fifo_and_the_error_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONRUNNER_QUEUE_NAME", "orders")
    with pytest.raises(ValidationError) as caught:
        Settings()
    message = str(caught.value)
    assert "ACTIONRUNNER_QUEUE_NAME='orders' must end with '.fifo'" in message
    assert "'orders.fifo'" in message


def test_dlq_must_differ_from_the_queue() -> None:
    with pytest.raises(ValidationError, match="must be a queue of its own"):
        Settings(queue_name="a.fifo", dlq_name="a.fifo")


def test_endpoint_and_region_follow_boto3_conventions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1111")
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:2222/")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    settings = Settings()
    assert settings.sqs_endpoint_url == "http://127.0.0.1:2222"
    assert settings.dynamodb_endpoint_url == "http://127.0.0.1:1111"
    assert settings.region == "eu-west-1"
    options = celery_config(settings)["broker_transport_options"]
    assert options["endpoint_url"] == "http://127.0.0.1:2222"
    assert options["region"] == "eu-west-1"


def test_endpoint_without_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", "127.0.0.1:2222")
    with pytest.raises(ValidationError, match="needs a scheme"):
        Settings()


def test_imports_are_comma_separated_and_follow_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACTIONRUNNER_IMPORTS", "team.actions, other.actions,")
    settings = Settings()
    assert settings.imports == ["team.actions", "other.actions"]
    assert settings.all_imports == ["team.actions", "other.actions"]  # no `tasks` unless configured
    assert celery_config(settings)["imports"] == ["team.actions", "other.actions"]
    monkeypatch.setenv("ACTIONRUNNER_DEFAULT_IMPORTS", "tasks")
    assert Settings().all_imports == ["tasks", "team.actions", "other.actions"]
