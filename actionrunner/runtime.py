"""One runtime object per process: the settings, the AWS clients, and every per-process object
built on them (the idempotency store, the shared rate limiters, the lease keeper, the run store,
the monitoring :class:`~actionrunner.sqs.monitor.Monitor`), each built once, when first needed.

It is made where a process starts (:mod:`actionrunner.startup`: the worker's main process and
each pool process, beat, Lambda's cold start, ``actionrunner api``); the code below them asks for
:func:`current` and passes what it got down.

    >>> rt = Runtime.from_settings(get_settings(), dynamodb=stub)    # doctest: +SKIP
    >>> use(rt)                                                      # doctest: +SKIP

A runtime never crosses a fork: :func:`current` in a forked child (a prefork pool process)
builds a new one from the same settings, so no two processes share a boto3 client or a thread.
With none installed, :func:`current` builds one from :func:`~actionrunner.settings.get_settings`
(scripts, tests), and follows it when the settings are read again.

This module knows the settings and the clients only; what else a runtime holds is named and
built by the module that owns it (``guard``: the store and the limiters, ``lease``: the keeper,
``runs``: the run store, ``sqs.monitor``: the monitors), with :meth:`Runtime.part`, so that no
module imports one that imports it back.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar, cast

from .settings import Service, Settings, get_settings
from .state.throttling import state_client_config

T = TypeVar("T")


class Runtime:
    """The process's settings, clients and per-process objects (see the module docstring).

    Clients passed in (``dynamodb``, ``sqs``, ``s3``: stand-ins in tests) are used for every
    request of that service; the others are built from the settings when first asked for."""

    def __init__(self, *, settings: Settings, dynamodb: Any = None, sqs: Any = None,
                 s3: Any = None) -> None:
        self.settings = settings
        self.pid = os.getpid()
        self._given = {k: v for k, v in (("dynamodb", dynamodb), ("sqs", sqs), ("s3", s3))
                       if v is not None}
        self._clients: dict[Hashable, Any] = {}
        self._parts: dict[Hashable, Any] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings: Settings, *, dynamodb: Any = None, sqs: Any = None,
                      s3: Any = None) -> Runtime:
        return cls(settings=settings, dynamodb=dynamodb, sqs=sqs, s3=s3)

    def __repr__(self) -> str:
        return f"<Runtime pid={self.pid} parts={sorted(map(str, self._parts))}>"

    # -- clients -------------------------------------------------------------------------------
    def client(self, service: Service) -> Any:
        """This runtime's boto3 client for ``service``, with the settings' defaults."""
        return self._client(service, service, lambda: self.settings.client(service))

    def state_client(self, max_attempts: int = 4) -> Any:
        """The state table's client (:func:`~actionrunner.state.throttling.state_client_config`:
        ``max_attempts`` tries per request, the state read timeout)."""
        return self._client("dynamodb", ("state", max_attempts), lambda: self.settings.client(
            "dynamodb", config=state_client_config(self.settings, max_attempts)))

    def _client(self, service: str, key: Hashable, build: Callable[[], Any]) -> Any:
        given = self._given.get(service)
        if given is not None:
            return given
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = self._clients[key] = build()
        return client

    @property
    def dynamodb(self) -> Any:
        """The state table's client (the idempotency store, the rate limiters, staged effects)."""
        return self.state_client()

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def s3(self) -> Any:
        return self.client("s3")

    # -- what the process builds on them -------------------------------------------------------
    def part(self, key: Hashable, build: Callable[[Runtime], T]) -> T:
        """The object named ``key``, built once with ``build(self)`` (thread-safe)."""
        # (cast: each key holds what its ``build`` made; the dict holds parts of every type)
        try:
            return cast(T, self._parts[key])
        except KeyError:
            pass
        with self._lock:
            if key not in self._parts:
                self._parts[key] = build(self)
            return cast(T, self._parts[key])

    def set_part(self, key: Hashable, value: Any) -> None:
        """Use ``value`` as ``key`` (``None``: build it again when next asked for)."""
        with self._lock:
            if value is None:
                self._parts.pop(key, None)
            else:
                self._parts[key] = value

    def fresh(self) -> Runtime:
        """A new runtime with the same settings and nothing built (a forked child's)."""
        return Runtime.from_settings(self.settings)


_current: Runtime | None = None
_installed = False  # True: set by use(); False: built from get_settings() by current()
_lock = threading.Lock()


def current() -> Runtime:
    """This process's runtime (a new one after a fork; see the module docstring)."""
    rt = _current
    if rt is not None and rt.pid == os.getpid() and (_installed or rt.settings is get_settings()):
        return rt
    return _rebuild()


def _rebuild() -> Runtime:
    global _current
    with _lock:
        rt, pid = _current, os.getpid()
        if rt is not None and rt.pid != pid:  # forked: same settings, nothing shared
            rt = _current = rt.fresh()
        elif rt is None or not (_installed or rt.settings is get_settings()):
            rt = _current = Runtime.from_settings(get_settings())
        return rt


def for_settings(settings: Settings) -> Runtime:
    """This process's runtime if it has ``settings``, else a new one of them (not installed: the
    process's runtime stays as it is)."""
    rt = _current
    if rt is not None and rt.pid == os.getpid() and rt.settings is settings:
        return rt
    return Runtime.from_settings(settings)


def use(rt: Runtime | None) -> Runtime | None:
    """Make ``rt`` this process's runtime (``None``: build one from the settings when next asked
    for); returns the one it replaces (tests put it back)."""
    global _current, _installed
    with _lock:
        previous = _current
        _current, _installed = rt, rt is not None
    return previous


@contextlib.contextmanager
def using(rt: Runtime) -> Iterator[Runtime]:
    """``rt`` as this process's runtime inside the block (tests); the one before it after."""
    global _current, _installed
    with _lock:
        previous = _current, _installed
        _current, _installed = rt, True
    try:
        yield rt
    finally:
        with _lock:
            _current, _installed = previous


def start(settings: Settings | None = None, **clients: Any) -> Runtime:
    """Build this process's runtime from ``settings`` (default: the environment's) and install
    it: what a process does when it starts (worker, pool process, Lambda, API)."""
    rt = Runtime.from_settings(settings or get_settings(), **clients)
    use(rt)
    return rt


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a lock held by another thread at the fork would never be released


os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = ["Runtime", "current", "for_settings", "start", "use", "using"]
