"""The one mapping of the admin API's errors to HTTP answers.

Routes raise; :func:`install` turns what they raise into answers:

=====================================================  =========================================
raised                                                 answer
=====================================================  =========================================
:class:`Unavailable` (see :func:`upstream`)            503 ``"{service} is unavailable"``
:class:`~actionrunner.errors.ActionInputError`         422, one entry per invalid field
:class:`~actionrunner.errors.ActionError`              422 with its message
:class:`~actionrunner.state.apikeys.KeyReused`         422 with its message
=====================================================  =========================================

A 503 names the service and the kind of error only: the cause (endpoint URLs, account ids, role
names in an AccessDenied) is logged, never answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError

from ..errors import ActionError, ActionInputError, ConfigurationError
from ..logging import get_logger
from ..state.apikeys import KeyReused

log = get_logger("actionrunner.api")

#: Errors that mean SQS (or DynamoDB) cannot be reached or used right now → 503.
UNAVAILABLE = (ConfigurationError, OperationalError, BotoCoreError, OSError, ClientError)


class Unavailable(Exception):
    """``service`` could not be reached or used; the cause is chained (``__cause__``)."""

    def __init__(self, service: str) -> None:
        super().__init__(f"{service} is unavailable")
        self.service = service


@contextmanager
def upstream(service: str) -> Iterator[None]:
    """Calls to ``service`` inside the block that fail with one of :data:`UNAVAILABLE` raise
    :class:`Unavailable` (→ 503)."""
    try:
        yield
    except UNAVAILABLE as exc:
        raise Unavailable(service) from exc


def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    cause = exc.__cause__
    log.warning("api-upstream-unavailable", path=request.url.path, service=getattr(exc, "service", None),
                error=repr(cause)[:500])
    kind = type(cause).__name__ if cause is not None else "error"
    return JSONResponse(status_code=503, content={"detail": f"{exc} ({kind})"})


def _invalid_inputs(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ActionInputError)
    return JSONResponse(status_code=422, content={"detail": [
        {"loc": ["body", *field.split(".")], "msg": msg, "type": "value_error"}
        for field, msg in exc.field_errors.items()]})


def _unprocessable(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": str(exc)})


def install(api: FastAPI) -> None:
    """Answer the errors above on ``api``."""
    api.add_exception_handler(Unavailable, _unavailable)
    api.add_exception_handler(ActionInputError, _invalid_inputs)
    api.add_exception_handler(ActionError, _unprocessable)
    api.add_exception_handler(KeyReused, _unprocessable)
