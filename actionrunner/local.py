"""The embedded local AWS: moto in server mode, plus a fast SQS server for deep queues.

moto serves every AWS API ActionRunner touches (SQS, DynamoDB, S3, SNS, CloudWatch,
CloudFormation) over real HTTP on 127.0.0.1. Its SQS scans the whole queue on every call, so a
deep backlog crawls; :class:`LocalAWS` can serve SQS from fauxqs (an SQS-compatible server on
Node.js) instead and keep moto for the rest. Both are stopped by PID when the block ends::

    with LocalAWS(sqs="fauxqs") as aws:
        os.environ.update(aws.env())
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from . import constants as C
from .errors import ConfigurationError

SqsServer = Literal["moto", "fauxqs"]

#: fauxqs release the local stack is tested with.
FAUXQS_VERSION = "1.9.2"
#: Where ``scripts/bootstrap`` installs fauxqs (``npm ci --prefix deploy/local``, from the lockfile).
FAUXQS_PREFIX = Path(
    os.environ.get("ACTIONRUNNER_FAUXQS_PREFIX")
    or Path(__file__).resolve().parents[1] / "deploy" / "local"
)


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    """Stop a process we started, by its PID: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    stop_processes([proc] if proc is not None else [], timeout)


def stop_processes(procs: list[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """Stop processes we started, by their PIDs, together: SIGTERM to each, then SIGKILL to those
    still running ``timeout`` seconds later."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in running:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Stop:
    """Waits for SIGINT, SIGTERM or SIGHUP (the terminal closed), or for ``poll`` to return
    True."""

    def __init__(self) -> None:
        self.event = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.event.set())

    def wait(self, poll: Callable[[], bool] | None = None, every: float = 0.5) -> None:
        while not self.event.wait(every):
            if poll is not None and poll():
                return


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) != 0


def free_port(host: str = C.LOCAL_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def fauxqs_command() -> list[str]:
    """The command that serves fauxqs on loopback, or an error that says how to install it."""
    node = shutil.which("node")
    installed = (FAUXQS_PREFIX / "node_modules" / "fauxqs" / "dist" / "app.js").exists()
    if not node or not installed:
        raise ConfigurationError(
            f"fauxqs (the fast local SQS server) is not installed under {FAUXQS_PREFIX}; run "
            f"`npm ci --prefix {FAUXQS_PREFIX}` (scripts/bootstrap "
            "does it; it needs Node.js 20+), or serve SQS from moto with --sqs moto"
        )
    return [node, str(Path(__file__).with_name("fauxqs_serve.mjs"))]


@dataclass
class Server:
    """One emulator process."""

    name: str
    argv: list[str]
    host: str
    port: int
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    ready_path: str = "/"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Its process's id (None before :meth:`start`, after :meth:`stop`)."""
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        if not port_is_free(self.host, self.port):
            raise ConfigurationError(
                f"{self.name}: {self.host}:{self.port} is already in use; stop what runs there "
                "or choose another port"
            )
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env}, start_new_session=True,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ConfigurationError(
                    f"{self.name} exited with code {self.process.returncode} while starting"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            try:
                urllib.request.urlopen(self.url + self.ready_path, timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # it answers HTTP: it is up
            except OSError:
                time.sleep(0.1)
        raise ConfigurationError(f"{self.name} did not answer at {self.url} within {timeout:.0f} s")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.process = self.process, None
        stop_process(proc, timeout)


class LocalAWS:
    """moto on ``moto_port`` (every service), and SQS from ``sqs`` ("fauxqs" or "moto")."""

    def __init__(
        self,
        *,
        sqs: SqsServer = "fauxqs",
        host: str = C.LOCAL_HOST,
        moto_port: int = C.LOCAL_MOTO_PORT,
        sqs_port: int = C.LOCAL_SQS_PORT,
        log_dir: Path | None = None,
        region: str = C.DEFAULT_REGION,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigurationError(f"the local emulator binds to loopback only, not {host!r}")
        self.sqs, self.host, self.region = sqs, host, region
        log = (lambda name: log_dir / f"{name}.log") if log_dir else (lambda name: None)
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)
        self.moto = Server(
            "moto", [sys.executable, "-m", "actionrunner.moto_serve", "-H", host, "-p", str(moto_port)],
            host, moto_port, log_path=log("moto"),
        )
        self.fast_sqs: Server | None = None
        if sqs == "fauxqs":
            self.fast_sqs = Server(
                "fauxqs", fauxqs_command(), host, sqs_port,
                env={"FAUXQS_DIR": str(FAUXQS_PREFIX), "FAUXQS_PORT": str(sqs_port),
                     "FAUXQS_REGION": region},
                log_path=log("fauxqs"), ready_path="/health",
            )

    @property
    def servers(self) -> list[Server]:
        return [self.moto] + ([self.fast_sqs] if self.fast_sqs else [])

    @property
    def sqs_url(self) -> str:
        return (self.fast_sqs or self.moto).url

    def env(self) -> dict[str, str]:
        """The environment that points boto3 (and ActionRunner) at this emulator."""
        return {
            "AWS_ENDPOINT_URL": self.moto.url,
            "AWS_ENDPOINT_URL_SQS": self.sqs_url,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": C.LOCAL_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": C.LOCAL_SECRET_KEY,
        }

    def start(self) -> LocalAWS:
        try:
            for server in self.servers:
                server.start()
            for server in self.servers:
                server.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()

    def __enter__(self) -> LocalAWS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
