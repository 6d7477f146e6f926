"""``actionrunner dev``: the whole stack on the embedded local AWS, supervised until Ctrl-C.

The emulator (:class:`actionrunner.local.LocalAWS`) and the queues, table and bucket first; then
the worker, beat, the admin API (with a token made for the session), Flower (with a password
made for the session) and the stream processor of table ``items`` (``ACTIONRUNNER_DEV_STREAM_TABLE``;
empty: none), each a child process. A child that exits is restarted (one that keeps
exiting right after it starts is left down, said so, and the rest keeps running:
:class:`actionrunner.devsession.Supervisor`); on SIGINT, SIGTERM or SIGHUP (the terminal closed)
all are stopped together (:func:`actionrunner.local.stop_processes`). Other shells source
``.local/dev.env`` (:func:`actionrunner.devsession.write_env_file`).

Every process is recorded by PID in ``.local/dev.pids`` while the stack runs
(:class:`actionrunner.devsession.PidRecord`): a second start whose ports are taken names the
processes that hold them, and ``actionrunner dev --stop`` ends a stack left running (its
supervisor killed with SIGKILL, say).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import constants as C
from . import provision
from .devsession import ENV_FILE, PidRecord, Supervisor, describe, port_holders, write_env_file
from .errors import ConfigurationError
from .local import LocalAWS, Stop, port_is_free, stop_processes
from .settings import Settings, get_settings

#: Logs of the emulator, and beat's schedule (in its parent folder).
LOGS = Path(".local/logs")


@dataclass
class DevStack:
    """What ``actionrunner dev`` runs (see its options)."""

    concurrency: int = 2
    sqs: str = "fauxqs"
    beat: bool = True
    moto_port: int = C.LOCAL_MOTO_PORT
    sqs_port: int = C.LOCAL_SQS_PORT
    api_port: int = 8000
    flower_port: int = 5555
    console: Console = field(default_factory=lambda: Console(stderr=True))
    #: Environment of one child only, over the stack's (set by :meth:`commands`).
    child_env: dict[str, dict[str, str]] = field(default_factory=dict)
    record: PidRecord = field(default_factory=PidRecord)

    def run(self) -> None:
        """Run until Ctrl-C, SIGTERM or SIGHUP (or until every child is down), then stop
        everything."""
        stop = Stop()
        self.check_free()
        with LocalAWS(sqs=self.sqs, moto_port=self.moto_port, sqs_port=self.sqs_port,  # type: ignore[arg-type]
                      log_dir=LOGS) as aws:
            self._record(aws, [])
            env = {**os.environ, **aws.env()}
            if self.sqs == "moto":
                env.setdefault("ACTIONRUNNER_WAIT_TIME_SECONDS", "1")  # moto's long poll spins a CPU
            os.environ.update(env)
            get_settings.cache_clear()
            settings = get_settings()
            provision.apply(settings)
            provision.apply_table(settings)
            provision.apply_bucket(settings)
            commands, notes = self.commands(settings, env)
            supervisor = Supervisor(env, lambda text: self.console.print(
                text, style="yellow", markup=False, soft_wrap=True))
            try:
                for name, argv in commands.items():
                    supervisor.start(name, argv, self.child_env.get(name))
                    self._record(aws, supervisor.children)
                children = [(c.name, c.proc) for c in supervisor.children]
                api_url = f"http://127.0.0.1:{self.api_port}" if self.api_port else None
                write_env_file(ENV_FILE, aws.env(), env, api_url=api_url,
                               api_token=notes.get("token"))
                self._print(aws, settings, children, notes)
                while not stop.event.is_set():
                    stop.wait(poll=lambda: any(c.proc.poll() is not None
                                               for c in supervisor.children if not c.given_up))
                    if not stop.event.is_set() and not supervisor.check():
                        self.console.print("[red]every process of the stack is down; stopping[/]")
                        break
                    self._record(aws, supervisor.children)  # a restarted child has a new PID
            finally:
                stop_processes([c.proc for c in supervisor.children], timeout=20)
        self.record.remove()
        with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
            self.console.print("stack stopped")

    def _ports(self) -> dict[str, int]:
        ports = {"moto": self.moto_port, "fauxqs": self.sqs_port if self.sqs == "fauxqs" else 0,
                 "api": self.api_port, "flower": self.flower_port}
        return {name: port for name, port in ports.items() if port}

    def _record(self, aws: LocalAWS, children: list[Any]) -> None:
        ports = self._ports()
        self.record.write([("dev", os.getpid(), None),
                           *((s.name, s.process.pid, s.port) for s in aws.servers if s.process),
                           *((c.name, c.proc.pid, ports.get(c.name)) for c in children)])

    def check_free(self) -> None:
        """A :class:`ConfigurationError` naming the processes in the way: a stack of this
        checkout still running (from ``.local/dev.pids``), or whatever holds a port."""
        previous = self.record.read()
        if previous:
            raise ConfigurationError(
                f"a stack started here is still running ({describe(previous)}); stop it with "
                "`actionrunner dev --stop` (or `kill` the dev pid)")
        taken = {name: port for name, port in self._ports().items()
                 if not port_is_free(C.LOCAL_HOST, port)}
        if taken:
            held = "; ".join(
                f"port {port} ({name}) is held by "
                + (", ".join(f"pid {pid} ({cmd})" for pid, cmd in port_holders(port))
                   or "a process this user cannot see")
                for name, port in taken.items())
            raise ConfigurationError(f"{held}; stop it, or choose other ports (--moto-port, "
                                     "--sqs-port, --api-port, --flower-port)")

    def stop_previous(self) -> None:
        """``actionrunner dev --stop``: end the stack recorded in ``.local/dev.pids``."""
        stopped = self.record.stop(say=lambda text: self.console.print(text, markup=False))
        if stopped:
            self.console.print(f"stopped: {describe(stopped)}", markup=False)
            return
        held = {port: port_holders(port) for port in self._ports().values()}
        held = {port: pids for port, pids in held.items() if pids}
        self.console.print("no stack of this checkout is running (no live process in "
                           f"{self.record.path})" + "".join(
                               f"; port {port} is held by " + ", ".join(
                                   f"pid {pid} ({cmd})" for pid, cmd in pids)
                               for port, pids in held.items()), markup=False)

    def commands(self, settings: Settings,
                 env: dict[str, str]) -> tuple[dict[str, list[str]], dict[str, str]]:
        """The children's command lines, and what to tell about each (URLs, credentials). Adds the
        session's API token to ``env``."""
        celery = [sys.executable, "-m", "celery", "-A", "actionrunner"]
        commands = {"worker": [*celery, "worker", "-c", str(self.concurrency), "--loglevel",
                               settings.log_level]}
        notes: dict[str, str] = {}
        if stream_table := os.environ.get("ACTIONRUNNER_DEV_STREAM_TABLE", "items"):
            # the stream side (docs/pacing.md): `items`' changes to SNS, watermark "items"
            commands["streams"] = [sys.executable, "-m", "actionrunner.streams", "--table",
                                   stream_table, "--topic", f"{stream_table}-changes.fifo",
                                   "--dlq", f"{stream_table}-stream-dlq", "--create",
                                   "--idle-wait", "0.5"]
            notes["streams"] = (f"table {stream_table} → SNS {stream_table}-changes.fifo, "
                                f"watermark {stream_table}, ")
        if self.beat:
            commands["beat"] = [*celery, "beat", "--schedule", str(LOGS.parent / "celerybeat-schedule")]
        if self.api_port:
            from .api.auth import new_token

            token, entry = new_token("dev", ["submit", "admin"])
            env["ACTIONRUNNER_API_TOKENS"] = json.dumps(
                [*(t.model_dump() for t in settings.api_tokens), entry.model_dump()])
            commands["api"] = [sys.executable, "-m", "actionrunner.cli", "api", "--port",
                               str(self.api_port)]
            notes["api"] = f"http://127.0.0.1:{self.api_port}/docs, "
            notes["token"] = token
        if self.flower_port:
            if importlib.util.find_spec("flower") is None:
                self.console.print("[yellow]Flower is not installed (pip install -e \".[flower]\"); "
                                   "running without it[/]")
            else:
                password = secrets.token_urlsafe(12)
                # Flower reads FLOWER_<OPTION>: the password stays off the command line (which
                # every user of the machine can read in ps)
                self.child_env["flower"] = {"FLOWER_BASIC_AUTH": f"admin:{password}"}
                commands["flower"] = [*celery, "flower", "--address=127.0.0.1",
                                      f"--port={self.flower_port}"]
                notes["flower"] = (f"http://127.0.0.1:{self.flower_port}/ (user admin, password "
                                   f"{password}), ")
        return commands, notes

    def _print(self, aws: LocalAWS, settings: Settings,
               children: list[tuple[str, subprocess.Popen[bytes]]], notes: dict[str, str]) -> None:
        table = Table(title="ActionRunner dev stack (Ctrl-C stops everything)")
        table.add_column("part")
        table.add_column("where")
        for server in aws.servers:
            table.add_row(server.name, f"{server.url}  (pid {server.pid}, log {server.log_path})")
        table.add_row("queue", f"{settings.queue_name} → DLQ {settings.dlq_name} "
                               f"(maxReceiveCount {settings.max_receive_count})")
        for name, proc in children:
            table.add_row(name, f"{notes.get(name, '')}pid {proc.pid}, JSON logs below")
        self.console.print(table)
        pids = [(s.name, s.process.pid) for s in aws.servers if s.process]
        pids += [(name, proc.pid) for name, proc in children]
        self.console.print("processes: " + ", ".join(f"{n} pid={p}" for n, p in pids),
                           soft_wrap=True, markup=False)
        self.console.print(
            f"send an action from another shell (in {Path.cwd()}):\n"
            f"  set -a; . {ENV_FILE}; set +a      # endpoints, ACTIONRUNNER_IMPORTS, .venv/bin on "
            "PATH, the API token\n"
            "  actionrunner submit tasks.demo.hello --json '{\"name\": \"you\"}'\n"
            "  python -c 'from tasks.demo import hello; hello.delay(name=\"you\")'",
            markup=False, soft_wrap=True)
        if token := notes.get("token"):
            self.console.print(
                f"admin API token (submit, admin) for this session: {token}\n"
                f"  curl -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' "
                f"-d '{{\"name\": \"you\"}}' http://127.0.0.1:{self.api_port}/v1/actions/tasks.demo.hello",
                markup=False, soft_wrap=True)
