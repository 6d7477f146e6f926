"""Bearer tokens with two scopes: ``submit`` (send actions, read runs) and ``admin`` (queues, DLQ).

Tokens are configured hashed (``ACTIONRUNNER_API_TOKENS``, SHA-256 hex digests); a request's token
is hashed and compared in constant time. No or unknown token → 401; known token without the
scope → 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ..settings import ApiToken

Scope = Literal["submit", "admin"]
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


def require(scope: Scope) -> Callable[..., ApiToken]:
    """A dependency that admits requests whose bearer token has ``scope``."""

    def check(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> ApiToken:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        token = _find(request.app.state.settings.api_tokens, credentials.credentials)
        if token is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token",
                                headers={"WWW-Authenticate": "Bearer"})
        if scope not in token.scopes:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"token {token.name!r} lacks the {scope!r} scope")
        return token

    return check
