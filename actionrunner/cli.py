"""The ``actionrunner`` command line.

    actionrunner dev            # the whole stack on the embedded local AWS, Ctrl-C stops it
    actionrunner local-aws      # only the emulator
    actionrunner provision      # create or check the queues (idempotent, reports drift)
    actionrunner submit NAME --json '{"k": "v"}'
    actionrunner concurrency set NAME 5   # an action's fleet-wide cap, live
    actionrunner bench backlog  # send and drain 10,000 actions, print the timings
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from . import constants as C
from .errors import ActionRunnerError, InvalidSettings

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
    changes += prov.plan_table(settings) if check else prov.apply_table(settings)
    if not check:
        changes += prov.apply_bucket(settings)
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
    console.print(f"[green]queues {settings.queue_name} and {settings.dlq_name}, and table "
                  f"{settings.state_table}, are as the settings say at {where}[/]"
                  + (f" ({len(drift)} change(s) applied)" if drift and not check else ""))


@cli.command("local-aws")
def local_aws(
    sqs: SqsOption = "fauxqs",
    moto_port: int = C.LOCAL_MOTO_PORT,
    sqs_port: int = C.LOCAL_SQS_PORT,
) -> None:
    """Run the embedded AWS emulator on 127.0.0.1 until Ctrl-C."""
    from .local import LocalAWS, Stop

    stop = Stop()
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
    api_port: Annotated[int, typer.Option(help="Admin API port (0: no API).")] = 8000,
    flower_port: Annotated[int, typer.Option(help="Flower port (0: no Flower).")] = 5555,
    stop: Annotated[bool, typer.Option(
        "--stop", help="End the stack of this checkout left running (.local/dev.pids).")] = False,
) -> None:
    """The whole stack on the embedded local AWS: emulator, queues, worker, beat, admin API and
    Flower. Ctrl-C, SIGTERM or closing the terminal stops all of it."""
    from .devstack import DevStack

    stack = DevStack(concurrency=concurrency, sqs=sqs, beat=beat, moto_port=moto_port,
                     sqs_port=sqs_port, api_port=api_port, flower_port=flower_port, console=console)
    stack.stop_previous() if stop else stack.run()


@cli.command()
def submit(
    name: Annotated[str, typer.Argument(help="Action name, e.g. tasks.demo.hello")],
    inputs: Annotated[str, typer.Option("--json", help="The inputs as a JSON object.")] = "{}",
    group: Annotated[str | None, typer.Option(help="MessageGroupId override.")] = None,
) -> None:
    """Send one action and print its id."""
    from .app import app
    from .startup import import_action_modules

    import_action_modules(app)
    task = app.tasks.get(name)
    from .action import is_action

    if not is_action(task):
        known = sorted(n for n, t in app.tasks.items() if is_action(t))
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


QueueOption = Annotated[str | None, typer.Option(
    "--queue", "-q", help="One queue (or its DLQ) by name, e.g. bulk.fifo; default: every queue "
                          "(ACTIONRUNNER_QUEUE_NAME and the lanes of ACTIONRUNNER_LANES).")]


@cli.command()
def status(queue: QueueOption = None) -> None:
    """Depth, in flight, oldest age of each queue and its DLQ; exits 1 when a DLQ holds messages."""
    from .dlq import queue_stats

    settings = _settings()
    stats = queue_stats(settings, queue=queue)
    table = Table(title=f"ActionRunner queues at {settings.sqs_endpoint_url or 'AWS ' + settings.region}")
    for column in ("queue", "name", "visible", "in flight", "oldest (s)"):
        table.add_column(column, justify="right" if column not in ("queue", "name") else "left")
    for s in stats:
        oldest = "-" if s["oldest_age_s"] is None else f"{s['oldest_age_s']:,.0f}"
        table.add_row(s["role"], s["name"], f"{s['visible']:,}", f"{s['in_flight']:,}", oldest)
    Console().print(table)
    dead = [s for s in stats if s["role"] == "dlq" and s["visible"] + s["in_flight"]]
    for s in dead:
        console.print(f"{s['visible'] + s['in_flight']} message(s) in the DLQ {s['name']} (of "
                      f"{s['queue']}): `actionrunner dlq list --queue {s['queue']}` shows them",
                      style="red", markup=False)
    if dead:
        raise typer.Exit(1)


@cli.command()
def api(
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = C.LOCAL_HOST,
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
) -> None:
    """Serve the admin HTTP API (uvicorn); OpenAPI docs at /docs."""
    import uvicorn

    from .api import create_app
    from .app import app
    from .startup import API, start

    settings = start(API, app, _settings()).settings  # every process's start-up (startup.py)
    if not settings.api_tokens:
        console.print("note: no ACTIONRUNNER_API_TOKENS: every request will get 401; make one with "
                      "`actionrunner api-token`", markup=False)
    uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)


@cli.command("api-token")
def api_token(
    name: Annotated[str, typer.Option(help="A name for the token (shown in logs and 403s).")] = "default",
    scopes: Annotated[str, typer.Option(help="Comma separated: submit, admin.")] = "submit",
) -> None:
    """Make a bearer token: prints the token (keep it secret) and the hashed entry to configure."""
    from .api.auth import new_token
    from .settings import is_scope

    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    bad = [s for s in wanted if not is_scope(s)]
    if bad:
        raise ActionRunnerError(f"unknown scope(s) {bad}; use submit and/or admin")
    token, entry = new_token(name, [s for s in wanted if is_scope(s)])
    console.print("token (give it to the client; it is not stored anywhere):", markup=False)
    print(token)
    console.print("add to ACTIONRUNNER_API_TOKENS (a JSON list):", markup=False)
    print(json.dumps([entry.model_dump()]))


dlq_cli = typer.Typer(help="The dead-letter queues (one per queue): list, show, redrive, purge.",
                      no_args_is_help=True)
cli.add_typer(dlq_cli, name="dlq")


@dlq_cli.command("list")
def dlq_list(limit: int = 100, queue: QueueOption = None) -> None:
    """List messages in the DLQs (of every queue, or of --queue) with their recorded failure and
    the queue each came from (where redrive returns it)."""
    from .dlq import dead_letter_queues, list_all

    letters = list_all(dead_letter_queues(_settings(), queue=queue), limit)
    table = Table(title=f"DLQ: {len(letters)} message(s)")
    for column in ("queue", "message", "group", "action", "run", "error", "attempts", "redrives"):
        table.add_column(column, overflow="fold")
    for d in letters:
        error = (f"{d.failure.get('error_type', '')}: {d.failure.get('error', '')}" if d.failure
                 else "(no failure recorded by a worker)")
        if d.sender_attributes:
            error += f" [sender-set, not the worker's: {', '.join(sorted(d.sender_attributes))}]"
        table.add_row(d.queue, d.message_id, d.group, d.action or "?", d.run_id or "?",
                      error, d.failure.get("attempts", ""), str(d.redrives))
    Console().print(table)


@dlq_cli.command("show")
def dlq_show(
    ident: Annotated[str, typer.Argument(
        metavar="ID", help="A run id (the task id `.delay()` returned, the API's run_id) or an "
                           "SQS message id, as `actionrunner dlq list` shows them.")],
    queue: QueueOption = None,
) -> None:
    """Show DLQ messages of one run or one message id (failure, source queue, envelope headers)
    as JSON."""
    from .dlq import dead_letter_queues, list_all

    dlqs = dead_letter_queues(_settings(), queue=queue)
    found = [letter for letter in list_all(dlqs, 1000) if ident in (letter.message_id, letter.run_id)]
    if not found:
        names = ", ".join(d.name for d in dlqs)
        raise ActionRunnerError(f"no message of run or message id {ident!r} in {names} (looked "
                                "at up to 1,000)")
    for letter in found:
        print(letter.summary().model_dump_json(indent=2))


@dlq_cli.command("redrive")
def dlq_redrive(
    group: Annotated[str | None, typer.Option(help="Only this MessageGroupId.")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
    force: Annotated[bool, typer.Option(help="Also those redriven ACTIONRUNNER_MAX_REDRIVES "
                                             "times already.")] = False,
    queue: QueueOption = None,
) -> None:
    """Move what the DLQs hold now back to the queue each came from (in order within each group,
    each message once), then end."""
    from rich.progress import Progress

    from .dlq import dead_letter_queues, redrive_all

    dlqs = dead_letter_queues(_settings(), queue=queue)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("redriving", total=limit or sum(d.depth() for d in dlqs) or None)
        result = redrive_all(dlqs, group=group, action=action, limit=limit, force=force,
                             progress=lambda n: progress.advance(task, n))
    where = ", ".join(f"{n} to {q}" for q, n in sorted(result["by_queue"].items()))
    console.print(f"moved {result['moved']}" + (f" ({where})" if where else "")
                  + f", left {result['skipped']}", markup=False)
    if result["newer"]:
        console.print(f"{result['newer']} dead letter(s) arrived while it ran (failed again?): "
                      "left for the next redrive", markup=False)
    for entry in result["left"]:
        console.print(f"left {entry['message_id']} (group {entry['group']}): {entry['reason']}",
                      markup=False)
    if result["unknown_source"]:
        console.print(f"{result['unknown_source']} message(s) left: they came from a queue that is "
                      "not in the settings (a lane no longer in ACTIONRUNNER_LANES?)", markup=False)


@dlq_cli.command("purge")
def dlq_purge(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    queue: Annotated[str | None, typer.Option(
        "--queue", "-q", help="The queue whose DLQ to purge (or the DLQ's name); default: "
                              "ACTIONRUNNER_QUEUE_NAME's. One DLQ per purge.")] = None,
) -> None:
    """Delete every message in one DLQ (the default queue's, or that of --queue)."""
    from .dlq import DeadLetterQueue

    settings = _settings()
    dlq = DeadLetterQueue(settings, queue=queue)
    if not yes and not typer.confirm(f"delete every message in {dlq.name}?"):
        raise typer.Exit(1)
    from botocore.exceptions import ClientError
    from rich.progress import Progress

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("purging", total=dlq.depth() or None)
        try:
            count = dlq.purge(progress=lambda n: progress.advance(task, n), wait=60)
        except ClientError as exc:
            if "PurgeQueueInProgress" not in exc.response["Error"]["Code"]:
                raise
            raise ActionRunnerError(f"{dlq.name} was purged less than 60 s ago (SQS allows "
                                    "one purge a minute); try again later") from None
    console.print(f"purged {count} message(s) from {dlq.name}", markup=False)


concurrency_cli = typer.Typer(
    help="Fleet-wide caps of actions (@action(max_concurrency=N)): show, set live, reset.",
    no_args_is_help=True)
cli.add_typer(concurrency_cli, name="concurrency")


def _capped(name: str | None) -> tuple[Any, Any, list[Any]]:
    """(settings, state-table client, the capped actions named: ``name`` or every one)."""
    from .action import is_action
    from .app import app
    from .startup import import_action_modules
    from .state.concurrency import capped_action

    settings = _settings()
    import_action_modules(app)
    registry = {n: t for n, t in app.tasks.items() if is_action(t)}
    tasks = ([capped_action(registry, name)] if name is not None else
             [t for _, t in sorted(registry.items()) if t.max_concurrency is not None])
    return settings, settings.client("dynamodb"), tasks


def _print_caps(settings: Any, client: Any, tasks: list[Any]) -> None:
    from .state.concurrency import status

    table = Table(title="max_concurrency (fleet-wide)")
    for column in ("action", "declared", "live", "in force", "running", "expired leases"):
        table.add_column(column, justify="left" if column == "action" else "right")
    for task in tasks:
        s = status(settings.state_table, client, task)
        table.add_row(s["action"], str(s["declared"]), "-" if s["live"] is None else str(s["live"]),
                      str(s["in_force"]), str(s["running"]), str(s["expired"]))
    Console().print(table)


@concurrency_cli.command("show")
def concurrency_show(
    name: Annotated[str | None, typer.Argument(help="One action (default: every capped one).")] = None,
) -> None:
    """Each capped action's declared and live cap, the one in force, and the runs holding it."""
    settings, client, tasks = _capped(name)
    if not tasks:
        console.print("no action declares max_concurrency", markup=False)
        return
    _print_caps(settings, client, tasks)


@concurrency_cli.command("set")
def concurrency_set(
    name: Annotated[str, typer.Argument(help="The action, e.g. tasks.demo.hello")],
    limit: Annotated[str, typer.Argument(metavar="N", help="Runs at once across the fleet (1-1000).")],
) -> None:
    """Set an action's cap live, for every worker and Lambda invocation (it overrides the declared
    one; runs that hold a lease finish)."""
    from .state.concurrency import check_limit, set_live

    value: Any = int(limit) if limit.strip().lstrip("-").isdigit() else limit
    check_limit(f"max_concurrency of {name!r}", value)  # before anything is looked up
    settings, client, [task] = _capped(name)
    set_live(settings.state_table, client, task.name, value)
    _print_caps(settings, client, [task])


@concurrency_cli.command("reset")
def concurrency_reset(
    name: Annotated[str, typer.Argument(help="The action, e.g. tasks.demo.hello")],
) -> None:
    """Remove an action's live cap: its declared max_concurrency applies again."""
    from .state.concurrency import reset_live

    settings, client, [task] = _capped(name)
    reset_live(settings.state_table, client, task.name)
    _print_caps(settings, client, [task])


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Benchmark: backlog, chaos, idempotency... (bench/NAME.py).")],
) -> None:
    """Run a benchmark script from bench/ (of a checkout of the repository) and print its figures."""
    import subprocess

    checkout = next((root for root in (Path.cwd(), Path(__file__).resolve().parent.parent)
                     if (root / "bench" / "__init__.py").is_file()), None)
    if checkout is None:
        raise ActionRunnerError("`actionrunner bench` runs the scripts in bench/ of a checkout of the "
                                "repository (they are not installed with the package): run it "
                                "from the checkout")
    if not (checkout / "bench" / f"{name}.py").is_file():
        raise ActionRunnerError(f"no benchmark named {name!r} ({checkout / 'bench' / name}.py)")
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", *ctx.args], cwd=checkout, check=False)
    raise typer.Exit(done.returncode)


deploy_cli = typer.Typer(help="Infrastructure as code (deploy/).", no_args_is_help=True)
cli.add_typer(deploy_cli, name="deploy")


@deploy_cli.command("template")
def deploy_template(
    out: Annotated[Path | None, typer.Option(help="Folder (default: the repository's deploy/).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Write nothing; exit 1 if stale.")] = False,
    from_env: Annotated[bool, typer.Option(
        "--from-env", help="Parameter defaults from this environment's settings, not the "
                           "settings' own defaults (what is committed).")] = False,
    lanes: Annotated[str | None, typer.Option(
        "--lanes", help="Comma separated lanes (as ACTIONRUNNER_LANES), each rendered with its "
                        "own queue, DLQ, redrive policy, alarms, permissions (and Lambda "
                        "mapping); default: the settings' (none, unless --from-env).")] = None,
) -> None:
    """Render the CloudFormation templates from the code (provision's attributes, the settings)."""
    from . import deploy
    from .settings import Settings

    folder = out or deploy.DEPLOY_DIR
    settings = _settings() if from_env else deploy.default_settings()
    if lanes is not None:  # validated as the setting is (FIFO names, distinct queues)
        checked = Settings.model_validate({"queue_name": settings.queue_name,
                                           "dlq_name": settings.dlq_name, "lanes": lanes})
        settings = settings.model_copy(update={"lanes": checked.lanes})
    if check:
        stale = deploy.stale(folder, settings)
        for name in stale:
            console.print(f"{folder / name} differs from `actionrunner deploy template`", markup=False)
        raise typer.Exit(1 if stale else 0)
    folder.mkdir(parents=True, exist_ok=True)
    changed = deploy.write(folder, settings)
    console.print(f"{len(changed)} of {len(deploy.TEMPLATES)} template(s) written in {folder}",
                  markup=False)


def main() -> None:
    """Entry point: errors that name the problem, not tracebacks."""
    try:
        cli()
    except ValidationError as exc:
        console.print(f"actionrunner: {InvalidSettings.of(exc)}", style="red", markup=False)
        sys.exit(2)
    except ActionRunnerError as exc:
        console.print(f"actionrunner: {exc}", style="red", markup=False)
        sys.exit(2)
    except Exception as exc:
        if not _no_credentials(exc):
            raise
        from .devsession import missing_credentials

        console.print(f"actionrunner: {missing_credentials() or exc}", style="red", markup=False)
        sys.exit(2)


def _no_credentials(exc: BaseException | None) -> bool:
    """``exc`` is (or was caused by) botocore's NoCredentialsError (kombu wraps it)."""
    from botocore.exceptions import NoCredentialsError

    while exc is not None:
        if isinstance(exc, NoCredentialsError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


if __name__ == "__main__":
    main()
