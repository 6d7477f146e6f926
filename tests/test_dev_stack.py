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
