"""What the routes get from the application (made once, in :func:`.app.create_app`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from ..action import Action
from ..runs import RunStore
from ..runtime import Runtime
from ..settings import Settings
from ..state.apikeys import ApiKeyStore


@dataclass(frozen=True)
class Services:
    """The settings, the actions and the clients of one API application (boto3 clients are
    thread-safe; one each for the life of the app)."""

    settings: Settings
    actions: dict[str, Action]
    sqs: Any
    runs: RunStore
    api_keys: ApiKeyStore

    @classmethod
    def build(cls, settings: Settings, actions: dict[str, Action],
              rt: Runtime | None = None) -> Services:
        """The services of ``settings``, with the clients of ``rt`` (default: a runtime of
        their own)."""
        rt = rt or Runtime.from_settings(settings)
        sqs, dynamodb = rt.sqs, rt.client("dynamodb")
        return cls(settings=settings, actions=actions, sqs=sqs,
                   runs=RunStore(settings, client=dynamodb),
                   api_keys=ApiKeyStore(settings.state_table, dynamodb,
                                        ttl_seconds=settings.idempotency_ttl_seconds))


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


#: A route parameter of this type receives the application's :class:`Services`.
Deps = Annotated[Services, Depends(_services)]
