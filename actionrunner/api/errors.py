"""The one mapping of the admin API's errors to HTTP answers.

Routes raise; :func:`install` turns what they raise into answers:

=====================================================  =========================================
raised                                                 answer
=====================================================  =========================================
:class:`Unavailable` (see :func:`upstream`)            503 ``"{service} is unavailable"``
:class:`~actionrunner.errors.ActionInputError`         422, one entry per invalid field
:class:`~actionrunner.errors.ActionError`              422 with its message
:class:`~actionrunner.state.apikeys.KeyReused`         422 with its message
:class:`~fastapi.exceptions.RequestValidationError`    422, one entry per invalid parameter
:class:`~fastapi.HTTPException`                        its status and detail
=====================================================  =========================================

Every answer is bounded (:func:`bounded`): a string of the detail (a message that quotes a value,
an entry's ``loc``) is cut to :data:`MAX_ECHO` characters (its head and tail), an entry's
``input`` is kept only when it is that short, and at most :data:`MAX_ENTRIES` entries are listed,
so a 300 KB value is never sent back.

A 503 names the service and the kind of error only: the cause (endpoint URLs, account ids, role
names in an AccessDenied) is logged, never answered.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from kombu.exceptions import OperationalError
from starlette.exceptions import HTTPException

from ..errors import ActionError, ActionInputError, ConfigurationError
from ..logging import get_logger
from ..state.apikeys import KeyReused

log = get_logger("actionrunner.api")

#: Errors that mean SQS (or DynamoDB) cannot be reached or used right now → 503.
UNAVAILABLE = (ConfigurationError, OperationalError, BotoCoreError, OSError, ClientError)


#: The most characters of any one string an error answer carries (values are cut, not echoed).
MAX_ECHO = 120
#: The most entries (invalid fields) an error answer lists.
MAX_ENTRIES = 10


def bounded(detail: Any) -> Any:
    """``detail`` with every string cut to :data:`MAX_ECHO` characters (its head and tail), the
    ``input`` of each entry dropped unless short, and lists cut to :data:`MAX_ENTRIES` entries."""
    if isinstance(detail, str):
        if len(detail) <= MAX_ECHO:
            return detail
        half = MAX_ECHO // 2  # the head and the tail: a message's reason is often at its end
        return f"{detail[:half]}…[{len(detail) - 2 * half:,} characters]…{detail[-half:]}"
    if isinstance(detail, dict):
        out = {}
        for key, value in detail.items():
            if key == "input" and len(repr(value)) > MAX_ECHO:
                continue
            if key == "ctx" or key == "url":  # pydantic's context may hold the value again
                continue
            out[bounded(str(key))] = bounded(value)
        return out
    if isinstance(detail, list | tuple):
        items = [bounded(item) for item in detail[:MAX_ENTRIES]]
        if len(detail) > MAX_ENTRIES:
            items.append({"msg": f"and {len(detail) - MAX_ENTRIES:,} more"})
        return items
    return detail


def _answer(status: int, detail: Any, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"detail": bounded(jsonable_encoder(detail))},
                        headers=headers)


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
    return _answer(503, f"{exc} ({kind})")


def _invalid_inputs(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ActionInputError)
    return _answer(422, [{"loc": ["body", *field.split(".")], "msg": msg, "type": "value_error"}
                         for field, msg in exc.field_errors.items()])


def _unprocessable(request: Request, exc: Exception) -> JSONResponse:
    return _answer(422, str(exc))


def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _answer(422, exc.errors())


def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):  # no body (as FastAPI's own handler)
        return Response(status_code=exc.status_code, headers=exc.headers)
    return _answer(exc.status_code, exc.detail, headers=exc.headers)


def install(api: FastAPI) -> None:
    """Answer the errors above on ``api``."""
    api.add_exception_handler(Unavailable, _unavailable)
    api.add_exception_handler(ActionInputError, _invalid_inputs)
    api.add_exception_handler(ActionError, _unprocessable)
    api.add_exception_handler(KeyReused, _unprocessable)
    api.add_exception_handler(RequestValidationError, _invalid_request)
    api.add_exception_handler(HTTPException, _http)
