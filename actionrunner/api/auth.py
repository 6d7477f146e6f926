"""Bearer tokens with two scopes: ``submit`` (send actions, read runs) and ``admin`` (queues, DLQ).

Tokens are configured hashed (``ACTIONRUNNER_API_TOKENS``, SHA-256 hex digests); a request's token
is hashed and compared in constant time. No or unknown token → 401; known token without the
scope → 403. The routers of :func:`router` check the token before the request's body is read:
an unauthenticated request costs no body parsing, however large or deep its body.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from ..settings import ApiToken, Scope

_bearer = HTTPBearer(auto_error=False, description="A token made by `actionrunner api-token`.")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(name: str, scopes: list[Scope]) -> tuple[str, ApiToken]:
    """A fresh random token and the (hashed) entry to configure for it."""
    token = "ar_" + secrets.token_urlsafe(32)
    return token, ApiToken(name=name, sha256=hash_token(token), scopes=list(scopes))


def _find(tokens: list[ApiToken], presented: str) -> ApiToken | None:
    digest = hash_token(presented)
    found = None
    for token in tokens:  # compare with every entry: no early exit to time
        if hmac.compare_digest(token.sha256, digest):
            found = token
    return found


def authenticate(request: Request, scope: Scope) -> ApiToken:
    """The request's token, if it has ``scope``; else 401 (none, unknown) or 403 (no scope)."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("Authorization"))
    if not credentials or scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    token = _find(request.app.state.settings.api_tokens, credentials)
    if token is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token",
                            headers={"WWW-Authenticate": "Bearer"})
    if scope not in token.scopes:
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"token {token.name!r} lacks the {scope!r} scope")
    return token


def require(scope: Scope) -> Callable[..., ApiToken]:
    """A dependency that admits requests whose bearer token has ``scope`` (and declares the bearer
    scheme in the OpenAPI document)."""

    def check(
        request: Request,
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiToken:
        return authenticate(request, scope)

    return check


def _checked_first(scope: Scope) -> type[APIRoute]:
    """A route class that authenticates a request before FastAPI reads and parses its body."""

    class Authenticated(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def checked(request: Request) -> Response:
                authenticate(request, scope)
                return await handler(request)

            return checked

    return Authenticated


def router(scope: Scope, **kwargs: Any) -> APIRouter:
    """A router whose every route needs a token with ``scope``, checked before the body is read."""
    return APIRouter(route_class=_checked_first(scope), dependencies=[Depends(require(scope))],
                     **kwargs)
