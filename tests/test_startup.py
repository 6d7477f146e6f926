"""One start-up for every kind of process (actionrunner/startup.py): the same checks, in the same
order, each failing with one sentence; what differs per kind is its ``Kind``.

Each kind starts in a process of its own (a start-up sets the process's logging, runtime and
lifecycle observers), against the local AWS of the fixtures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from actionrunner.startup import API, BEAT, LAMBDA, WORKER

ROOT = Path(__file__).resolve().parent.parent

#: Runs in the child: every failing case, then the start-up that works; prints what it saw.
SCRIPT = r"""
import json, os, sys
from actionrunner import events, runs
from actionrunner.app import create_app
from actionrunner.settings import get_settings
from actionrunner import startup

kind = getattr(startup, sys.argv[1])
good = dict(os.environ)
cases = {
    "invalid-settings": {"ACTIONRUNNER_VISIBILITY_TIMEOUT": "soon"},
    "no-credentials": {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None,
                       "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"},
    "bad-module": {"ACTIONRUNNER_IMPORTS": "tests.no_such_actions"},
    "missing-queue": {"ACTIONRUNNER_QUEUE_NAME": "startup-missing.fifo",
                      "ACTIONRUNNER_DLQ_NAME": "startup-missing-dlq.fifo"},
    "missing-table": {"ACTIONRUNNER_STATE_TABLE": "startup-missing-table"},
}
seen = {}
for name, env in cases.items():
    os.environ.clear(); os.environ.update(good)
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    sys.modules.pop("celeryconfig", None)  # it reads the settings when imported
    try:
        app = create_app()
    except Exception as exc:  # the settings are read when the app is made, too
        app = None
    try:
        startup.start(kind, app)
    except startup.ConfigurationError as exc:
        seen[name] = [type(exc).__name__, str(exc)]
    else:
        seen[name] = ["started", ""]
os.environ.clear(); os.environ.update(good)
get_settings.cache_clear()
sys.modules.pop("celeryconfig", None)
rt = startup.start(kind, create_app())
from actionrunner import runtime
seen["runtime-installed"] = runtime.current() is rt
seen["observes-runs"] = runs._record in events._observers
print(json.dumps(seen))
"""


def _start(kind: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-c", SCRIPT, kind], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    seen: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return seen


@pytest.mark.integration
@pytest.mark.parametrize("kind", [WORKER, BEAT, LAMBDA, API], ids=lambda k: k.name)
def test_every_kind_of_process_runs_the_same_checks(aws: object, kind: Any) -> None:
    # Given a process of this kind, When it starts with each thing wrong in turn
    seen = _start(kind.name.upper())
    # Then each start-up stops with the sentence naming the problem
    assert seen["invalid-settings"][0] == "InvalidSettings"
    assert "visibility_timeout" in seen["invalid-settings"][1]
    assert seen["no-credentials"][0] == "ConfigurationError"
    assert "no AWS credentials" in seen["no-credentials"][1]
    assert seen["bad-module"][0] == "ConfigurationError"
    assert "cannot import action module 'tests.no_such_actions'" in seen["bad-module"][1]
    if kind.needs_aws:
        assert seen["missing-queue"][0] == "QueueMissing"
        assert "startup-missing" in seen["missing-queue"][1]
        assert seen["missing-table"][0] == "TableMissing"
        assert "startup-missing-table" in seen["missing-table"][1]
    else:  # the admin API serves without them (503 for what needs them)
        assert seen["missing-queue"][0] == seen["missing-table"][0] == "started"
    # and with nothing wrong it installs its runtime, and run status where actions run
    assert seen["runtime-installed"] is True
    assert seen["observes-runs"] is kind.runs_actions
