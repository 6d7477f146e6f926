"""The FastAPI application: ``create_app()``, routers per resource (:mod:`.routers`), errors
answered in one place (:mod:`.errors`), tokens checked before bodies are read (:mod:`.auth`),
bodies capped (:mod:`.limits`), ``/docs`` from local files (:mod:`.docs`)."""

from __future__ import annotations

from fastapi import FastAPI

from .. import runtime
from ..action import Action, is_action
from ..settings import Settings
from . import docs, errors
from .deps import Services
from .limits import BodyLimit
from .routers import actions, concurrency, dlq, health, queues, runs


def _registry() -> dict[str, Action]:
    from ..app import app
    from ..startup import import_action_modules

    import_action_modules(app)
    return {name: task for name, task in app.tasks.items() if is_action(task)}


def create_app(settings: Settings | None = None) -> FastAPI:
    """The admin API for ``settings`` (default: from the environment). Its clients are those of
    the process's runtime (:mod:`actionrunner.runtime`), or, for settings other than the
    process's, of a runtime of the application's own."""
    rt = runtime.current() if settings is None else runtime.for_settings(settings)
    settings = rt.settings
    api = FastAPI(
        title="ActionRunner admin API",
        version="1",
        description="Submit actions to the SQS FIFO queue, follow their runs, work the DLQ. "
                    "Authenticate with `Authorization: Bearer <token>`.",
        docs_url=None, redoc_url=None,  # FastAPI's pages load from a CDN: .docs serves its own
    )
    api.state.settings = settings
    api.state.runtime = rt
    api.state.services = Services.build(settings, _registry(), rt)
    errors.install(api)
    api.add_middleware(BodyLimit, max_bytes=settings.api_max_body_bytes)
    for module in (health, actions, runs, queues, dlq, concurrency):
        api.include_router(module.router)
    docs.install(api)
    return api
