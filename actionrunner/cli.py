"""The ``actionrunner`` command line.

    actionrunner dev            # the whole stack on the embedded local AWS, Ctrl-C stops it
    actionrunner local-aws      # only the emulator
    actionrunner provision      # create or check the queues (idempotent, reports drift)
    actionrunner submit NAME --json '{"k": "v"}'
    actionrunner bench backlog  # send and drain 10,000 actions, print the timings
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from . import constants as C
from .errors import ActionRunnerError

cli = typer.Typer(
    help="ActionRunner: Celery-style actions over Amazon SQS FIFO.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

SqsOption = Annotated[
    str, typer.Option("--sqs", help="SQS server of the local stack: fauxqs (fast) or moto.")
]


def _settings() -> Any:
    from .settings import get_settings

    get_settings.cache_clear()
    return get_settings()


class _Stop:
    """Waits for SIGINT/SIGTERM (or for ``poll`` to return True)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.event.set())

    def wait(self, poll: Any = None, every: float = 0.5) -> None:
        while not self.event.wait(every):
            if poll is not None and poll():
                return


def _print_changes(changes: list[Any], applied: bool) -> None:
    table = Table(title="queues" + (" (applied)" if applied else " (check only)"))
    for column in ("queue", "change", "attribute", "current", "desired"):
        table.add_column(column, overflow="fold")
    for change in changes:
        table.add_row(change.queue, change.kind, change.attribute or "", change.current or "",
                      change.desired or "")
    console.print(table)


@cli.command()
def provision(
    check: Annotated[bool, typer.Option("--check", help="Change nothing; exit 1 on drift.")] = False,
) -> None:
    """Create the FIFO queue, its FIFO DLQ and the redrive policies, or check them for drift."""
    from . import provision as prov

    settings = _settings()
    changes = prov.plan(settings) if check else prov.apply(settings)
    drift = [c for c in changes if c.kind != "unsupported"]
    if drift:
        _print_changes(drift, applied=not check)
    for note in (c for c in prov.plan(settings) if c.kind == "unsupported"):
        console.print(f"note: {note}", markup=False)
    where = settings.sqs_endpoint_url or f"AWS {settings.region}"
    if check and drift:
        console.print(f"[red]{len(drift)} difference(s) from the settings at {where}[/]; "
                      "run `actionrunner provision` to apply them")
        raise typer.Exit(1)
    console.print(f"[green]queues {settings.queue_name} and {settings.dlq_name} are as the settings "
                  f"say at {where}[/]" + (f" ({len(drift)} change(s) applied)" if drift and not check else ""))


@cli.command("local-aws")
def local_aws(
    sqs: SqsOption = "fauxqs",
    moto_port: int = C.LOCAL_MOTO_PORT,
    sqs_port: int = C.LOCAL_SQS_PORT,
) -> None:
    """Run the embedded AWS emulator on 127.0.0.1 until Ctrl-C."""
    from .local import LocalAWS

    stop = _Stop()
    with LocalAWS(sqs=sqs, moto_port=moto_port, sqs_port=sqs_port,  # type: ignore[arg-type]
                  log_dir=Path(".local/logs")) as aws:
        for server in aws.servers:
            console.print(f"[green]{server.name}[/] on {server.url} (pid {server.process.pid})")  # type: ignore[union-attr]
        console.print("point a shell at it:")
        for key, value in aws.env().items():
            print(f"export {key}={value}")
        stop.wait()
    console.print("emulator stopped")


@cli.command()
def dev(
    concurrency: Annotated[int, typer.Option("-c", "--concurrency", help="Worker processes.")] = 2,
    sqs: SqsOption = "fauxqs",
    beat: Annotated[bool, typer.Option(help="Also run celery beat.")] = True,
    moto_port: int = C.LOCAL_MOTO_PORT,
    sqs_port: int = C.LOCAL_SQS_PORT,
) -> None:
    """The whole stack on the embedded local AWS: emulator, queues, worker and beat."""
    from . import provision as prov
    from .local import LocalAWS

    logs = Path(".local/logs")
    stop = _Stop()
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    with LocalAWS(sqs=sqs, moto_port=moto_port, sqs_port=sqs_port,  # type: ignore[arg-type]
                  log_dir=logs) as aws:
        env = {**os.environ, **aws.env()}
        if sqs == "moto":
            env.setdefault("ACTIONRUNNER_WAIT_TIME_SECONDS", "1")  # moto's long poll spins a CPU
        os.environ.update(env)
        settings = _settings()
        prov.apply(settings)
        commands = {"worker": ["worker", "-c", str(concurrency), "--loglevel", settings.log_level]}
        if beat:
            commands["beat"] = ["beat", "--schedule", str(logs.parent / "celerybeat-schedule")]
        try:
            for name, args in commands.items():
                proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "actionrunner", *args],
                                        env=env, start_new_session=True)
                children.append((name, proc))
            table = Table(title="ActionRunner dev stack (Ctrl-C stops everything)")
            table.add_column("part")
            table.add_column("where")
            for server in aws.servers:
                table.add_row(server.name, f"{server.url}  (pid {server.process.pid}, log {server.log_path})")  # type: ignore[union-attr]
            table.add_row("queue", f"{settings.queue_name} → DLQ {settings.dlq_name} "
                                   f"(maxReceiveCount {settings.max_receive_count})")
            for name, proc in children:
                table.add_row(name, f"pid {proc.pid}, JSON logs below")
            console.print(table)
            pids = [(s.name, s.process.pid) for s in aws.servers if s.process]
            pids += [(name, proc.pid) for name, proc in children]
            console.print("processes: " + ", ".join(f"{n} pid={p}" for n, p in pids),
                          soft_wrap=True, markup=False)
            default_ports = (moto_port, sqs_port) == (C.LOCAL_MOTO_PORT, C.LOCAL_SQS_PORT)
            point = ("  set -a; . config/local.env; set +a" if default_ports and sqs == "fauxqs" else
                     "\n".join(f"  export {k}={v}" for k, v in aws.env().items()))
            console.print("send an action from another shell:\n" + point + "\n"
                          "  actionrunner submit tasks.demo.hello --json '{\"name\": \"you\"}'\n"
                          "  # or: python -c 'from tasks.demo import hello; hello.delay(name=\"you\")'",
                          markup=False)
            stop.wait(poll=lambda: any(p.poll() is not None for _, p in children))
            for name, proc in children:
                if proc.poll() is not None:
                    console.print(f"[red]{name} exited with code {proc.returncode}[/]")
        finally:
            for _, proc in children:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            for _, proc in children:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    console.print("stack stopped")


@cli.command()
def submit(
    name: Annotated[str, typer.Argument(help="Action name, e.g. tasks.demo.hello")],
    inputs: Annotated[str, typer.Option("--json", help="The inputs as a JSON object.")] = "{}",
    group: Annotated[str | None, typer.Option(help="MessageGroupId override.")] = None,
) -> None:
    """Send one action and print its id."""
    from .app import app, import_action_modules

    import_action_modules(app)
    task = app.tasks.get(name)
    from .action import Action

    if not isinstance(task, Action):
        known = sorted(n for n, t in app.tasks.items() if isinstance(t, Action))
        raise ActionRunnerError(f"no action named {name!r}; known actions: {', '.join(known)}")
    try:
        kwargs = json.loads(inputs)
    except ValueError as exc:
        raise ActionRunnerError(f"--json is not valid JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise ActionRunnerError("--json must be a JSON object of the action's inputs")
    options = {"MessageGroupId": group} if group else {}
    result = task.apply_async(kwargs=kwargs, **options)
    print(result.id)


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Benchmark: backlog.")],
) -> None:
    """Run a benchmark script from bench/ and print its figures."""
    try:
        module = import_module(f"bench.{name}")
    except ModuleNotFoundError as exc:
        raise ActionRunnerError(f"no benchmark named {name!r} (bench/{name}.py)") from exc
    raise typer.Exit(module.main(list(ctx.args)) or 0)


def main() -> None:
    """Entry point: errors that name the problem, not tracebacks."""
    try:
        cli()
    except ValidationError as exc:
        details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
                            for e in exc.errors(include_url=False))
        console.print(f"actionrunner: invalid settings: {details}", style="red", markup=False)
        sys.exit(2)
    except ActionRunnerError as exc:
        console.print(f"actionrunner: {exc}", style="red", markup=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
