"""ActionRunner used from a project of one's own (docs/library.md), as a user would: a fresh
virtualenv outside the checkout with the wheel built from it, the project's own module (one
``@shared_task``, one ``@action``), its own celeryconfig and logging, the worker started from the
project's directory against the local stack (moto, or fauxqs in the second pass)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

JOBS = '''
import logging

from celery import shared_task

from actionrunner import action

log = logging.getLogger(__name__)


@shared_task(ignore_result=False)
def add(a, b):
    log.info("adding %s and %s", a, b)
    return a + b


@action(group="greet:{name}", ignore_result=False)
def greet(name: str) -> str:
    return f"hello {name}"
'''

CELERYCONFIG = '''
from actionrunner.celery_config import celery_config
from actionrunner.settings import get_settings

globals().update(celery_config(get_settings()))

imports = ["myapp.jobs"]
task_routes = {"myapp.jobs.add": {"MessageGroupId": "sums"}}
logging_config = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"mine": {"format": "MYAPP %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "mine",
                         "stream": "ext://sys.stdout"}},
    "root": {"handlers": ["out"], "level": "WARNING"},
    "loggers": {"myapp": {"level": "INFO"}, "celery": {"level": "INFO"},
                "actionrunner.lifecycle": {"level": "INFO"}},
}
'''

SEND = '''
import logging
import sys

logging.basicConfig(level=logging.INFO, format="SENDER %(levelname)s %(name)s: %(message)s",
                    stream=sys.stdout)

import actionrunner
from myapp.jobs import add, greet

print("ACTIONRUNNER", actionrunner.__file__)
summed, greeted = add.delay(2, 3), greet.delay(name="ada")
print("RESULTS", summed.get(timeout=90), greeted.get(timeout=90))
'''


def _venv_with_the_wheel(tmp: Path) -> Path:
    """A virtualenv in ``tmp`` whose ``actionrunner`` is the wheel built from the checkout: the
    dependencies come from the test's own environment through a ``.pth`` line (a path on
    ``sys.path`` after the venv's own site-packages, whose ``.pth`` files — the checkout's
    editable install — are not run), ``actionrunner`` itself only from the wheel."""
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp / "dist"), str(ROOT)], capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = (tmp / "dist").glob("actionrunner-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "_project_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index",
                                "--ignore-installed", "-q", str(wheel)],
                               capture_output=True, text=True, timeout=300, env=_env())
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert Path(purelib, "actionrunner", "__init__.py").exists()
    return python


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "ACTIONRUNNER_IMPORTS", "VIRTUAL_ENV")}
    return {**env, **extra}


def _project(tmp: Path) -> Path:
    project = tmp / "project"
    (project / "myapp").mkdir(parents=True)
    (project / "myapp" / "__init__.py").write_text("")
    (project / "myapp" / "jobs.py").write_text(textwrap.dedent(JOBS))
    (project / "celeryconfig.py").write_text(textwrap.dedent(CELERYCONFIG))
    (project / "send.py").write_text(textwrap.dedent(SEND))
    return project


def _wait_for(log: Path, proc: subprocess.Popen[Any], text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace")
        if text in content:
            return content
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited ({proc.returncode}):\n{content[-3000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in the worker's log:\n{log.read_text()[-3000:]}")


def test_a_project_of_its_own_runs_a_shared_task_and_an_action_from_the_wheel(
    aws: Any, queue_url: str, tmp_path: Path
) -> None:
    # Given a virtualenv with the wheel, and a project directory of the user's
    python = _venv_with_the_wheel(tmp_path)
    project = _project(tmp_path)
    # When its worker starts from that directory (its celeryconfig, its logging)...
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        worker = subprocess.Popen(
            [str(python), "-m", "celery", "-A", "actionrunner", "worker", "-c", "2",
             "--without-mingle", "--without-gossip", "-l", "INFO"],
            cwd=project, stdout=log, stderr=subprocess.STDOUT, env=_env())
    try:
        _wait_for(log_path, worker, " ready.")
        # ...and its own script sends one plain task and one action
        sent = subprocess.run([str(python), "send.py"], cwd=project, env=_env(),
                              capture_output=True, text=True, timeout=150)
        assert sent.returncode == 0, sent.stdout[-2000:] + sent.stderr[-3000:]
        # Then both ran, and AsyncResult.get() returned both results
        out = sent.stdout.splitlines()
        assert "RESULTS 5 hello ada" in out, out
        [where] = [line.split(" ", 1)[1] for line in out if line.startswith("ACTIONRUNNER ")]
        assert Path(where).is_relative_to(tmp_path / "venv"), where  # the wheel's, not the checkout's
        # the sender's own logging heard nothing of ours (it did not ask), nothing on stderr
        assert not [line for line in out if line.startswith("SENDER ")
                    and "actionrunner" in line.split(":")[0]], out
        assert sent.stderr == "", sent.stderr[-3000:]
        # the worker's lines are in the project's format: its module's, Celery's, ours as text
        text = _wait_for(log_path, worker, "succeeded action=myapp.jobs.greet")
        lines = text.splitlines()
        assert "MYAPP INFO myapp.jobs: adding 2 and 3" in lines, lines
        ours = [line for line in lines if line.startswith("MYAPP INFO actionrunner.lifecycle: ")]
        assert any("succeeded action=myapp.jobs.add" in line and "group=sums" in line
                   for line in ours), ours
        assert any("succeeded action=myapp.jobs.greet" in line and "group=greet:ada" in line
                   for line in ours), ours
        assert not [line for line in lines if "{'" in line or "_aws" in line], lines
        # (and none in ActionRunner's own JSON format: the project's configuration is the one)
        assert not [line for line in lines if line.startswith("{")], lines
    finally:
        worker.terminate()
        worker.wait(30)


def test_an_action_module_that_cannot_be_imported_stops_the_worker_with_one_sentence(
    aws: Any, tmp_path: Path
) -> None:
    project = _project(tmp_path)
    # Given no celeryconfig (settings only) and a module name that does not exist
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "actionrunner", "worker", "--without-mingle",
         "--without-gossip"], cwd=project, capture_output=True, text=True, timeout=120,
        env=_env(ACTIONRUNNER_CELERY_CONFIG_MODULE="no_celeryconfig_here",
                 ACTIONRUNNER_IMPORTS="myapp.jobs,myapp.nope"))
    # Then the worker stops at start, saying which module and what to check (no traceback)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith(
        "actionrunner: cannot import action module 'myapp.nope' (from ACTIONRUNNER_IMPORTS or "
        "Celery's imports/include): No module named 'myapp.nope'"), done.stderr[-3000:]
