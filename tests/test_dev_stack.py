"""`actionrunner dev`: the whole stack in one command, an action from another shell, clean Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SQS_SERVER, _free_port

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_dev_runs_the_stack_and_stops_all_of_it_on_ctrl_c(tmp_path: Path) -> None:
    moto_port, sqs_port, api_port, flower_port = _free_port(), _free_port(), _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    log = tmp_path / "dev.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "actionrunner.cli", "dev", "-c", "2", "--sqs", SQS_SERVER,
             "--moto-port", str(moto_port), "--sqs-port", str(sqs_port), "--api-port", str(api_port),
             "--flower-port", str(flower_port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        def started() -> bool:
            text = log.read_text(errors="replace")
            return "celery@" in text and "ready." in text

        while not started():
            assert dev.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        text = log.read_text()
        assert f"http://127.0.0.1:{moto_port}" in text and "actions.fifo" in text
        # From a fresh shell (no inherited environment), the commands dev printed, as pasted
        printed = text[text.index("send an action from another shell"):]
        source = re.search(r"^  (set -a; \. \S+; set \+a)", printed, re.M).group(1)
        submit = re.search(r"^  (actionrunner submit .*)$", printed, re.M).group(1)
        curl = re.search(r"^  (curl .*)$", printed, re.M).group(1)
        name = uuid.uuid4().hex[:8]
        submit = submit.replace('"you"', f'"{name}"')

        def fresh_shell(command: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["env", "-i", f"HOME={os.environ.get('HOME', '/tmp')}",
                                   "PATH=/usr/bin:/bin", "bash", "--noprofile", "--norc", "-c",
                                   f"{source}; {command}"],
                                  cwd=ROOT, capture_output=True, text=True, timeout=60)

        sent = fresh_shell(submit)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        run_id = sent.stdout.strip().splitlines()[-1]
        while True:
            lines = [json.loads(line) for line in log.read_text(errors="replace").splitlines()
                     if line.startswith("{")]
            done = [line for line in lines if line.get("event") == "succeeded" and line.get("id") == run_id]
            if done:
                break
            assert time.monotonic() < deadline + 30, log.read_text()[-3000:]
            time.sleep(0.2)
        assert any(line.get("event") == "greeted" and line.get("name") == name for line in lines)
        pids = [int(p) for p in re.findall(r"pid=(\d+)", log.read_text())]
        # emulator (moto, and fauxqs), worker, beat, api, flower, the stream processor
        assert len(pids) == (7 if SQS_SERVER == "fauxqs" else 6), log.read_text()
        token = re.search(r"admin API token \(submit, admin\) for this session: (\S+)", text).group(1)
        import httpx

        while True:
            try:
                httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline + 30, "the API did not come up"
                time.sleep(0.2)
        accepted = httpx.post(f"http://127.0.0.1:{api_port}/v1/actions/tasks.demo.hello",
                              json={"name": "via-api"}, headers={"Authorization": f"Bearer {token}"},
                              timeout=30)
        assert accepted.status_code == 202, accepted.text
        # Flower, behind basic auth, sees the worker
        password = re.search(r"user admin, password (\S+)\)", " ".join(text.split())).group(1)
        while True:
            try:
                workers = httpx.get(f"http://127.0.0.1:{flower_port}/api/workers?refresh=1",
                                    auth=("admin", password), timeout=10).json()
                if any(name.startswith("celery@") for name in workers):
                    break
            except (httpx.TransportError, ValueError):
                pass
            assert time.monotonic() < deadline + 60, "Flower did not list the worker"
            time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{flower_port}/api/workers", timeout=10).status_code == 401
        # The printed curl, pasted in a fresh shell: 202
        posted = fresh_shell(curl + " -s -o /dev/null -w '%{http_code}'")
        assert posted.stdout.strip() == "202", posted.stdout + posted.stderr
        # A worker stopped with `celery control shutdown` is restarted; the rest stays up
        down = fresh_shell("celery -A actionrunner control shutdown")  # (a shutdown gets no reply)
        assert "Traceback" not in down.stderr and "command not found" not in down.stderr, down.stderr
        while "worker restarted: pid" not in log.read_text(errors="replace"):
            assert dev.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline + 120, log.read_text()[-3000:]
            time.sleep(0.3)
        pids += [int(p) for p in re.findall(r"worker restarted: pid (\d+)", log.read_text())]
        again = fresh_shell(submit)
        assert again.returncode == 0, again.stdout + again.stderr
        again_id = again.stdout.strip().splitlines()[-1]
        while not any(line.startswith("{") and again_id in line and '"succeeded"' in line
                      for line in log.read_text(errors="replace").splitlines()):
            assert time.monotonic() < deadline + 180, log.read_text()[-3000:]
            time.sleep(0.3)
    finally:
        dev.send_signal(signal.SIGINT)
        assert dev.wait(60) == 0, log.read_text()[-3000:]
    # Every process dev started is gone
    text = log.read_text()
    assert "stack stopped" in text
    assert [p for p in pids if _alive(p)] == []
    for port in (moto_port, sqs_port, api_port, flower_port):
        import socket

        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"


# -- signals, the PID record, dev.env, Flower's password, missing credentials ---------------------
def _start_dev(tmp_path: Path, name: str, extra_env: dict[str, str] | None = None,
               ) -> tuple[subprocess.Popen[bytes], Path, list[int]]:
    ports = [_free_port() for _ in range(4)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    log = tmp_path / f"{name}.log"
    with open(log, "wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "actionrunner.cli", "dev", "-c", "1", "--sqs", SQS_SERVER,
             "--moto-port", str(ports[0]), "--sqs-port", str(ports[1]), "--api-port", str(ports[2]),
             "--flower-port", str(ports[3])],
            cwd=ROOT, env={**env, **(extra_env or {})}, stdout=out, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 90
    while "ready." not in log.read_text(errors="replace"):
        assert dev.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return dev, log, ports


def _recorded() -> list[Any]:
    from actionrunner.devsession import PID_FILE, PidRecord

    return PidRecord(ROOT / PID_FILE).read()


def _all_gone(pids: list[int], timeout: float = 60) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := [p for p in pids if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_closing_the_terminal_stops_the_whole_stack_and_dev_env_has_every_setting(
        tmp_path: Path) -> None:
    from actionrunner.devsession import ENV_FILE

    # Given a stack started with a lane (and a Flower, whose password must not be in ps)
    dev, log, ports = _start_dev(tmp_path, "hup", {"ACTIONRUNNER_LANES": "tests-bulk.fifo",
                                                   "ACTIONRUNNER_IMPORTS": "tests.lanes"})
    try:
        recorded = _recorded()
        names = sorted(r.name for r in recorded)
        assert names == sorted(["dev", "moto", "worker", "beat", "api", "flower", "streams"]
                               + (["fauxqs"] if SQS_SERVER == "fauxqs" else [])), names
        pids = [r.pid for r in recorded]
        env_file = ROOT / ENV_FILE
        assert env_file.stat().st_mode & 0o777 == 0o600
        text = env_file.read_text()
        assert "ACTIONRUNNER_LANES=tests-bulk.fifo" in text and "ACTIONRUNNER_IMPORTS=tests.lanes" in text
        flower = next(r for r in recorded if r.name == "flower")
        cmdline = Path(f"/proc/{flower.pid}/cmdline").read_bytes().decode()
        assert "basic-auth" not in cmdline and "admin:" not in cmdline, cmdline
        # a second start from this checkout names the running one instead of failing on a port
        again = subprocess.run(
            [sys.executable, "-m", "actionrunner.cli", "dev", "--moto-port", str(ports[0])],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        said = " ".join(again.stderr.split())  # (rich wraps at 80 columns)
        assert again.returncode == 2, again.stdout + again.stderr
        assert "Traceback" not in said and "dev --stop" in said
        assert f"moto pid {next(r.pid for r in recorded if r.name == 'moto')}" in said
        # When the terminal closes (SIGHUP)
        dev.send_signal(signal.SIGHUP)
        assert dev.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if dev.poll() is None:
            dev.send_signal(signal.SIGINT)
            dev.wait(60)
    # Then every process it started is gone, as after Ctrl-C, and the record with them
    assert _all_gone(pids) == [], log.read_text()[-3000:]
    assert "stack stopped" in log.read_text() and _recorded() == []


def test_dev_stop_ends_a_stack_whose_supervisor_was_killed(tmp_path: Path) -> None:
    dev, log, ports = _start_dev(tmp_path, "kill")
    try:
        recorded = _recorded()
        dev.kill()  # SIGKILL: no chance to stop its children
        dev.wait(10)
        children = [r for r in recorded if r.name != "dev"]
        assert [r for r in children if not r.alive()] == []  # they are left running
        # a start on a port they hold says which process holds it
        taken = subprocess.run(
            [sys.executable, "-m", "actionrunner.cli", "dev", "--moto-port", str(ports[0])],
            cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert taken.returncode == 2 and "dev --stop" in " ".join(taken.stderr.split()), taken.stderr
        # When `actionrunner dev --stop` runs
        stopped = subprocess.run([sys.executable, "-m", "actionrunner.cli", "dev", "--stop"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        said = " ".join(stopped.stderr.split())
        assert "stopped:" in said and "worker pid" in said, said
    finally:
        subprocess.run([sys.executable, "-m", "actionrunner.cli", "dev", "--stop"], cwd=ROOT,
                       capture_output=True, timeout=120)
    # Then all of it is gone: the worker's pool too (each child's process group)
    assert _all_gone([r.pid for r in recorded]) == []
    import socket

    for port in ports:
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still served"
    assert _recorded() == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_each_stop_signal_sets_the_stop_event(sig: int) -> None:
    from actionrunner.local import Stop

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        stop = Stop()
        os.kill(os.getpid(), sig)
        assert stop.event.wait(5)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_dev_env_is_private_from_its_first_byte(tmp_path: Path, monkeypatch: Any) -> None:
    from actionrunner import devsession

    opened: list[tuple[str, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        opened.append((str(path), mode))
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(devsession.os, "open", spy)
    path = tmp_path / ".local" / "dev.env"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)  # an old file readable by others is replaced, not reused
    old_umask = os.umask(0)
    try:
        devsession.write_env_file(path, {"AWS_REGION": "us-east-1"},
                                  {"ACTIONRUNNER_LANES": "bulk.fifo", "ACTIONRUNNER_IMPORTS": "x.y",
                                   "HOME": "/root"}, api_token="secret")
    finally:
        os.umask(old_umask)
    assert opened and all(mode == 0o600 for _, mode in opened)
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert "ACTIONRUNNER_LANES=bulk.fifo" in text and "ACTIONRUNNER_DEV_API_TOKEN=secret" in text
    assert "HOME" not in text and [p.name for p in path.parent.iterdir()] == ["dev.env"]


NO_CREDENTIALS = {"HOME": "/nonexistent", "PATH": "/usr/bin:/bin",
                  "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/dev/null",
                  "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_REGION": "us-east-1"}


@pytest.mark.parametrize("argv", [
    ["-m", "actionrunner.cli", "submit", "tasks.demo.hello", "--json", '{"name": "x"}'],
    ["-m", "actionrunner.cli", "status"],
    ["-m", "celery", "-A", "actionrunner", "worker", "-c", "1"],
], ids=["submit", "status", "worker"])
def test_missing_credentials_are_one_sentence_that_says_to_source_dev_env(argv: list[str]) -> None:
    # a shell that did not source .local/dev.env (no credentials, no instance metadata lookup;
    # the endpoint a closed loopback port)
    env = {**NO_CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    said = (done.stdout + done.stderr).strip()
    assert done.returncode != 0
    assert "Traceback" not in said, said[-2000:]
    assert "no AWS credentials" in said and ". .local/dev.env" in said, said[-2000:]
    assert len([line for line in said.splitlines() if "credentials" in line]) == 1, said
