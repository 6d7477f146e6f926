"""The container's health check: ``python -m actionrunner.healthcheck [--role ROLE]``.

Used by ``deploy/Dockerfile`` (HEALTHCHECK) and the ECS task definitions. It tells what the
container runs from PID 1's command line (``deploy/entrypoint.sh`` execs the process), then:

* ``api``: ``GET /healthz`` on the local port answers 200;
* ``flower``: ``GET /<prefix>/healthcheck`` answers 200 (or 401: it is behind basic auth);
* ``worker``, ``beat``: the process is alive, neither a zombie nor stopped. Celery on SQS has no
  remote control to ping; a hung worker's messages go back to the queue after its visibility
  timeout, as a crashed one's do.

Exit status 0: healthy; 1: not (the reason on stderr). No AWS request is made: a health check
runs every 30 s on every task, and requests are the bill.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

#: Roles in the order they are looked for in the command line.
ROLES = ("flower", "api", "beat", "worker")


def role_of(cmdline: Sequence[str]) -> str | None:
    """``celery -A actionrunner worker -c 4`` → ``worker``; ``actionrunner api ...`` → ``api``."""
    words = {os.path.basename(word) for word in cmdline}
    return next((role for role in ROLES if role in words), None)


def read_cmdline(pid: int = 1) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def process_state(pid: int = 1) -> str:
    """The state letter of ``/proc/<pid>/stat`` (R, S, D, Z, T...)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


def http_status(url: str, timeout: float = 5.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (local URL)
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def check(role: str, state: Callable[[], str] = process_state,
          status: Callable[[str], int] = http_status) -> str | None:
    """``None`` if healthy, else what is wrong."""
    try:
        if role == "api":
            code = status(f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/healthz")
            return None if code == 200 else f"/healthz answered {code}"
        if role == "flower":
            prefix = os.environ.get("FLOWER_URL_PREFIX", "flower").strip("/")
            path = f"/{prefix}/healthcheck" if prefix else "/healthcheck"
            code = status(f"http://127.0.0.1:{os.environ.get('PORT', '5555')}{path}")
            return None if code in (200, 401) else f"{path} answered {code}"
        letter = state()
        return None if letter not in ("Z", "T", "t", "X") else f"process state {letter}"
    except OSError as exc:
        return f"{role}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actionrunner.healthcheck")
    parser.add_argument("--role", choices=ROLES, help="default: from PID 1's command line")
    args = parser.parse_args(argv)
    role = args.role or role_of(read_cmdline())
    if role is None:
        print("healthcheck: cannot tell what this container runs (use --role)", file=sys.stderr)
        return 1
    problem = check(role)
    if problem:
        print(f"healthcheck: {role} unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
