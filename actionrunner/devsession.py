"""What ``actionrunner dev`` hands to other shells, and how it keeps its processes up.

* :func:`write_env_file` writes ``.local/dev.env``: one file to ``source`` in a fresh shell
  (``set -a; . .local/dev.env; set +a``) that points boto3 at the local stack, sets
  ``ACTIONRUNNER_IMPORTS`` as the stack has it, puts the virtualenv's ``bin`` first on ``PATH``
  (``actionrunner``, ``celery``, ``python``), and holds the session's API token and URL.
* :class:`Supervisor` restarts a process of the stack that exits while the stack runs (e.g. a
  worker stopped with ``celery control shutdown``); one that keeps exiting right after its start
  is left down, said so, and the rest stays up.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The file ``actionrunner dev`` writes for other shells (relative to the working directory).
ENV_FILE = Path(".local/dev.env")
#: Settings a second shell needs as the stack has them (when set).
SHARED_SETTINGS = ("ACTIONRUNNER_IMPORTS", "ACTIONRUNNER_WAIT_TIME_SECONDS",
                   "ACTIONRUNNER_QUEUE_NAME", "ACTIONRUNNER_DLQ_NAME", "ACTIONRUNNER_STATE_TABLE",
                   "ACTIONRUNNER_RUN_STATUS", "ACTIONRUNNER_PAYLOAD_BUCKET")


def write_env_file(path: Path, aws_env: Mapping[str, str], env: Mapping[str, str], *,
                   api_url: str | None = None, api_token: str | None = None) -> Path:
    """Write the file a fresh shell sources to use the running stack; returns its path."""
    lines = ["# Written by `actionrunner dev` for this session. In another shell:",
             "#   set -a; . .local/dev.env; set +a",
             f"PATH={shlex.quote(str(Path(sys.executable).parent.resolve()))}:\"$PATH\""]
    values = dict(aws_env)
    for name in SHARED_SETTINGS:
        if env.get(name):
            values[name] = env[name]
    if api_url:
        values["ACTIONRUNNER_DEV_API_URL"] = api_url
    if api_token:
        values["ACTIONRUNNER_DEV_API_TOKEN"] = api_token
    lines += [f"{name}={shlex.quote(value)}" for name, value in values.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)  # it holds the session's token
    return path


@dataclass
class Child:
    """One process of the stack."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes]
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

    def start(self, name: str, argv: list[str]) -> Child:
        child = Child(name, argv, self._spawn(argv))
        self.children.append(child)
        return child

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, env=self.env, start_new_session=True)

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
            child.proc, child.started = self._spawn(child.argv), time.monotonic()
            self.say(f"{child.name} restarted: pid {child.proc.pid}")
        return any(not c.given_up for c in self.children)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop every child (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        from .local import stop_processes

        stop_processes([child.proc for child in self.children], timeout=timeout)
