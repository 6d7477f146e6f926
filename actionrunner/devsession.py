"""What ``actionrunner dev`` hands to other shells, and how it keeps its processes up.

* :func:`write_env_file` writes ``.local/dev.env``: one file to ``source`` in a fresh shell
  (``set -a; . .local/dev.env; set +a``) that points boto3 at the local stack, sets
  ``ACTIONRUNNER_IMPORTS`` as the stack has it, puts the virtualenv's ``bin`` first on ``PATH``
  (``actionrunner``, ``celery``, ``python``), and holds the session's API token and URL.
* :class:`Supervisor` restarts a process of the stack that exits while the stack runs (e.g. a
  worker stopped with ``celery control shutdown``); one that keeps exiting right after its start
  is left down, said so, and the rest stays up.
* :class:`PidRecord` (``.local/dev.pids``) names every process of the running stack by PID (and
  start time, so a reused PID is never taken for one of ours): a second ``actionrunner dev``
  whose ports are taken names them, and ``actionrunner dev --stop`` ends them.
* :func:`missing_credentials` is the one sentence said instead of botocore's traceback when a
  shell that was not given ``.local/dev.env`` runs the CLI or a worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The file ``actionrunner dev`` writes for other shells (relative to the working directory).
ENV_FILE = Path(".local/dev.env")
#: The running stack's processes (relative to the working directory).
PID_FILE = Path(".local/dev.pids")
#: Variables of the stack's environment that go into ``.local/dev.env`` besides AWS's: every
#: setting (``ACTIONRUNNER_*``: imports, lanes, queue names, waits...) the stack runs with.
SETTINGS_PREFIX = "ACTIONRUNNER_"


def write_env_file(path: Path, aws_env: Mapping[str, str], env: Mapping[str, str], *,
                   api_url: str | None = None, api_token: str | None = None) -> Path:
    """Write the file a fresh shell sources to use the running stack; returns its path.

    It holds every ``ACTIONRUNNER_*`` setting of ``env`` (what the stack's processes run with,
    ``ACTIONRUNNER_LANES`` included) and the session's API token, so it is created readable by
    its owner only (mode 0600 from its first byte: a file of its own, renamed over the old one)."""
    lines = ["# Written by `actionrunner dev` for this session. In another shell:",
             "#   set -a; . .local/dev.env; set +a",
             f"PATH={shlex.quote(str(Path(sys.executable).parent.resolve()))}:\"$PATH\""]
    values = dict(aws_env)
    values.update(sorted((k, v) for k, v in env.items() if k.startswith(SETTINGS_PREFIX) and v))
    if api_url:
        values["ACTIONRUNNER_DEV_API_URL"] = api_url
    if api_token:
        values["ACTIONRUNNER_DEV_API_TOKEN"] = api_token
    lines += [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    _write_private(path, "\n".join(lines) + "\n")
    return path


def _write_private(path: Path, text: str) -> None:
    """``text`` into ``path``, never readable by others, not even while it is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        part.unlink()
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise


def missing_credentials() -> str | None:
    """The sentence to say when boto3 finds no AWS credentials in this process, else None."""
    import boto3

    if boto3.Session().get_credentials() is not None:
        return None
    return ("no AWS credentials: for the local stack of ./scripts/dev, run "
            f"`set -a; . {ENV_FILE}; set +a` in this shell first (for AWS, set AWS_PROFILE or "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")


def _started(pid: int) -> float | None:
    """When process ``pid`` started (psutil), or None if there is none."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None


@dataclass(frozen=True)
class Recorded:
    """One process of a stack: its name (``dev`` is the supervisor), PID, start time, port."""

    name: str
    pid: int
    started: float
    port: int | None = None

    def alive(self) -> bool:
        """Still this process (a PID reused by another process is not)."""
        now = _started(self.pid)
        return now is not None and abs(now - self.started) < 0.05


class PidRecord:
    """``.local/dev.pids``: the processes of the running stack (see the module docstring)."""

    def __init__(self, path: Path = PID_FILE) -> None:
        self.path = path

    def write(self, processes: Iterable[tuple[str, int, int | None]]) -> None:
        """Record ``(name, pid, port)`` of each process (the supervisor first)."""
        entries = [{"name": name, "pid": pid, "port": port, "started": _started(pid)}
                   for name, pid, port in processes]
        _write_private(self.path, json.dumps([e for e in entries if e["started"] is not None]))

    def read(self) -> list[Recorded]:
        """The recorded processes that still run."""
        try:
            entries = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return []
        found = [Recorded(e["name"], int(e["pid"]), float(e["started"]), e.get("port"))
                 for e in entries if isinstance(e, dict)]
        return [r for r in found if r.alive()]

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def stop(self, timeout: float = 30.0, say: Callable[[str], None] = print) -> list[Recorded]:
        """End the recorded stack: SIGTERM to its supervisor (which stops the rest as Ctrl-C
        does); what still runs after ``timeout`` (or all, if the supervisor is gone) gets SIGTERM
        to its process group, then SIGKILL 10 s later. Returns what was running."""
        running = self.read()
        supervisor = [r for r in running if r.name == "dev"]
        for record in supervisor:
            say(f"stopping the stack of dev pid {record.pid}")
            os.kill(record.pid, signal.SIGTERM)
            _wait_gone(supervisor, timeout)
        rest = [r for r in running if r.alive()]
        for record in rest:  # each child leads a process group of its own (its pool with it)
            say(f"stopping {record.name} (pid {record.pid})")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGTERM)
        for record in _wait_gone(rest, 10.0):
            say(f"killing {record.name} (pid {record.pid})")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGKILL)
        self.remove()
        return running


def _wait_gone(records: list[Recorded], timeout: float) -> list[Recorded]:
    """Wait up to ``timeout`` s for ``records`` to end; those still running."""
    deadline = time.monotonic() + timeout
    while (left := [r for r in records if r.alive()]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def port_holders(port: int) -> list[tuple[int, str]]:
    """``(pid, command line)`` of the processes this user can see listening on ``port``."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in proc.net_connections(kind="tcp")):
                found.append((proc.pid, " ".join(proc.info["cmdline"] or [])[:120]))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def describe(records: list[Recorded]) -> str:
    """``moto pid 12 (port 5055), worker pid 14, ...``"""
    return ", ".join(f"{r.name} pid {r.pid}" + (f" (port {r.port})" if r.port else "")
                     for r in records)



@dataclass
class Child:
    """One process of the stack."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)  #: its own, over the stack's
    started: float = field(default_factory=time.monotonic)
    quick_exits: int = 0  #: exits in a row within ``Supervisor.settle_seconds`` of a start
    given_up: bool = False


class Supervisor:
    """Start the stack's processes and restart one that exits (see the module docstring)."""

    def __init__(self, env: Mapping[str, str], say: Callable[[str], None], *,
                 settle_seconds: float = 10.0, max_quick_exits: int = 3) -> None:
        self.env, self.say = dict(env), say
        self.settle_seconds, self.max_quick_exits = settle_seconds, max_quick_exits
        self.children: list[Child] = []

    def start(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Child:
        """Start ``argv`` as ``name``, with ``env`` added to the stack's environment (what only
        this process may see, e.g. Flower's password: never on a command line)."""
        child = Child(name, argv, self._spawn(argv, env or {}), dict(env or {}))
        self.children.append(child)
        return child

    def _spawn(self, argv: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, env={**self.env, **env}, start_new_session=True)

    def check(self) -> bool:
        """Restart children that exited; False once none is left running."""
        for child in self.children:
            code = child.proc.poll()
            if code is None or child.given_up:
                continue
            quick = time.monotonic() - child.started < self.settle_seconds
            child.quick_exits = child.quick_exits + 1 if quick else 0
            if child.quick_exits >= self.max_quick_exits:
                child.given_up = True
                self.say(f"{child.name} exited with code {code} {child.quick_exits} times right "
                         "after starting: left down (see its lines above); the rest of the stack "
                         "keeps running")
                continue
            self.say(f"{child.name} (pid {child.proc.pid}) exited with code {code}; restarting it")
            child.proc, child.started = self._spawn(child.argv, child.env), time.monotonic()
            self.say(f"{child.name} restarted: pid {child.proc.pid}")
        return any(not c.given_up for c in self.children)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every child (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        from .local import stop_processes

        stop_processes([child.proc for child in self.children], timeout=timeout)
