"""ActionRunner as a library: the wheel holds only the package, and a host process keeps its own
logging and structlog configuration when it imports ActionRunner and calls ``.delay()``."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT


def test_the_wheel_holds_only_the_actionrunner_package(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    [wheel] = tmp_path.glob("actionrunner-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert tops == {"actionrunner", wheel.name.split("-py")[0] + ".dist-info"}, sorted(tops)
    assert "actionrunner/fauxqs_serve.mjs" in names and "actionrunner/py.typed" in names
    assert not [n for n in names if n.endswith(("celeryconfig.py", "/tasks/__init__.py"))]


HOST = textwrap.dedent('''
    import logging, sys
    import structlog

    # the host's own logging: a format of its own on the root logger, and its structlog config
    logging.basicConfig(level=logging.INFO, format="HOST|%(levelname)s|%(name)s|%(message)s",
                        stream=sys.stdout)
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    before = structlog.get_config()
    handlers = list(logging.getLogger().handlers)

    import config  # the host's own module named like the repository's
    assert config.HOST_CONFIG is True
    from actionrunner import action

    @action(name="host.ping")
    def ping(n: int) -> int:
        return n

    result = ping.delay(n=1)  # quiet: the host has not asked for our INFO lines
    logging.getLogger("actionrunner.lifecycle").setLevel(logging.INFO)  # now it has
    ping.delay(n=1)

    assert structlog.get_config() == before, "structlog configuration changed"
    assert logging.getLogger().handlers == handlers, "root handlers changed"
    structlog.get_logger("host").info("host-structlog-line", n=2)
    logging.getLogger("host.std").info("host-stdlib-line")
    print("SENT", result.id)
''')


@pytest.mark.integration
def test_a_host_process_keeps_its_logging_and_structlog_config_after_delay(
    aws: Any, tmp_path: Path
) -> None:
    (tmp_path / "config.py").write_text("HOST_CONFIG = True\n")
    (tmp_path / "host.py").write_text(HOST)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "host.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout.splitlines()
    # the host's next lines, in its own formats
    assert "event='host-structlog-line' n=2" in out, out
    assert "HOST|INFO|host.std|host-stdlib-line" in out, out
    # our lines went through the host's handlers (its format), nothing of ours on stderr: only
    # once the host set the level of actionrunner.lifecycle, as text (no dict repr, no EMF blob)
    ours = [line for line in out if "|actionrunner" in line]
    assert len(ours) == 1, out
    assert ours[0].startswith("HOST|INFO|actionrunner.lifecycle|sent action=host.ping id="), ours
    assert "{" not in ours[0] and "_aws" not in ours[0] and "Actions" not in ours[0], ours
    assert done.stderr == "", done.stderr[-3000:]
