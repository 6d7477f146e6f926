"""Screenshot Flower's Tasks page (and its workers dashboard) with ActionRunner's actions listed.

Starts a private stack on 127.0.0.1 (the embedded local AWS on free ports, queues provisioned, one
worker, Flower behind basic auth), sends a few ``tasks.demo.hello`` actions and one
``tasks.demo.fail``, waits until Flower's API shows every one of them in a final state, then lets
headless Chromium (driven by Playwright) photograph ``/tasks`` and ``/``. Every process it starts
is stopped by PID when it ends, whatever happens.

Not part of the test suite: it is slow and needs a browser. Setup, once::

    apt-get install -y chromium
    .venv/bin/pip install -e ".[screenshot]"

Run::

    .venv/bin/python scripts/flower_screenshot.py [--out docs/flower-tasks.png]

Logs (emulator, worker, Flower) go to bench/out/.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actionrunner.errors import ConfigurationError  # noqa: E402
from actionrunner.local import free_port, stop_process  # noqa: E402
from bench.harness import OUT, local_stack, quiet_sender, worker  # noqa: E402

HOST = "127.0.0.1"
FINAL = {"SUCCESS", "FAILURE"}
VIEWPORT = {"width": 1400, "height": 800}


class ScreenshotError(RuntimeError):
    """A missing prerequisite or a stack that did not come up: printed without a traceback."""


def find_browser() -> tuple[Any, str]:
    """Playwright's sync API and Debian's chromium, or an error that says how to install them."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise ScreenshotError(
            'the playwright package is missing: run `.venv/bin/pip install -e ".[screenshot]"`'
        ) from None
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise ScreenshotError(
            "no chromium on PATH: run `apt-get install -y chromium` (Debian's build; "
            "`playwright install` is not needed)"
        )
    return sync_playwright, chromium


class Flower:
    """``celery -A actionrunner flower`` on loopback behind basic auth; stopped by PID."""

    def __init__(self, port: int, password: str) -> None:
        self.port, self.user, self.password = port, "admin", password
        self.url = f"http://{HOST}:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        token = base64.b64encode(f"{self.user}:{password}".encode()).decode()
        self._auth = {"Authorization": f"Basic {token}"}

    def start(self) -> None:
        try:
            import flower  # noqa: F401
        except ImportError:
            raise ScreenshotError(
                'Flower is not installed: run `.venv/bin/pip install -e ".[flower,screenshot]"`'
            ) from None
        with open(OUT / "flower-screenshot.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "actionrunner", "flower", f"--address={HOST}",
                 f"--port={self.port}", f"--basic-auth={self.user}:{self.password}"],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ),
            )

    def get(self, path: str, *, as_json: bool = True) -> Any:
        """GET ``path`` (as JSON, or the body's bytes); None while Flower does not answer."""
        request = urllib.request.Request(self.url + path, headers=self._auth)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                body = response.read()
            return json.loads(body) if as_json else body
        except (OSError, ValueError):
            return None

    def stop(self, timeout: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, timeout)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             proc: subprocess.Popen[bytes] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise ScreenshotError(f"{what}: the process exited with code {proc.returncode}; see {OUT}/")
        time.sleep(0.5)
    raise ScreenshotError(f"timed out after {timeout:.0f} s waiting for {what}; logs in {OUT}/")


def send_actions(count: int, run: str) -> list[str]:
    """``count`` greetings (unique names: the same name would be the same dedup id) and one failure."""
    from tasks.demo import fail, hello

    ids = [hello.delay(name=f"user{i}-{run}", times=1 + i % 2).id for i in range(count)]
    ids.append(fail.delay(reason=f"screenshot run {run}").id)
    return ids


def photograph(flower: Flower, tasks_png: Path, workers_png: Path | None, chromium: str,
               sync_playwright: Any) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(
                viewport=VIEWPORT,
                http_credentials={"username": flower.user, "password": flower.password},
            )
            page = context.new_page()
            # DataTables fills the table over AJAX: wait for the rows, not just the page
            page.goto(f"{flower.url}/tasks", wait_until="networkidle")
            page.wait_for_selector("table#tasks-table tbody tr:has-text('tasks.demo.hello')", timeout=30_000)
            page.wait_for_selector("table#tasks-table tbody tr:has-text('FAILURE')", timeout=30_000)
            tasks_png.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(tasks_png), full_page=True)
            print(f"wrote {tasks_png}")
            if workers_png is not None:
                page.goto(f"{flower.url}/", wait_until="networkidle")
                page.wait_for_selector("table#workers-table tbody tr:has-text('@')", timeout=30_000)
                workers_png.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(workers_png), full_page=True)
                print(f"wrote {workers_png}")
        finally:
            browser.close()


def run(args: argparse.Namespace) -> None:
    sync_playwright, chromium = find_browser()  # fail before starting anything
    quiet_sender()  # no JSON log line per action sent
    run_id = uuid.uuid4().hex[:8]
    env = {"ACTIONRUNNER_WAIT_TIME_SECONDS": "1", "ACTIONRUNNER_POLLING_INTERVAL": "0.1"}
    print("starting the local AWS, a worker and Flower on 127.0.0.1 ...")
    with local_stack(sqs=args.sqs, **env), \
            worker("actionrunner", 2, "flower-screenshot-worker", "-n", f"shot-{run_id}@%h") as proc:
        flower = Flower(free_port(), secrets.token_urlsafe(12))
        try:
            flower.start()
            wait_for(lambda: flower.get("/healthcheck", as_json=False), 60, "Flower to answer", flower.proc)
            # tasks sent before Flower listens for events would never show up: wait for the worker
            def worker_listed() -> bool:
                return any(name.startswith(f"shot-{run_id}@") for name in flower.get("/api/workers") or {})

            wait_for(worker_listed, 90, "Flower to list the worker", proc)
            sent = send_actions(args.count, run_id)
            print(f"sent {len(sent)} actions; waiting for their final states in Flower ...")

            def all_final() -> bool:
                listed = flower.get("/api/tasks") or {}
                return all(listed.get(task_id, {}).get("state") in FINAL for task_id in sent)

            wait_for(all_final, 120, "every action to reach SUCCESS/FAILURE in Flower", proc)
            workers_png = None if args.no_workers else args.workers_out
            photograph(flower, args.out, workers_png, chromium, sync_playwright)
        finally:
            flower.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/flower_screenshot.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "flower-tasks.png",
                        help="the Tasks page's PNG (default: docs/flower-tasks.png)")
    parser.add_argument("--workers-out", type=Path, default=ROOT / "docs" / "flower-workers.png",
                        help="the workers dashboard's PNG (default: docs/flower-workers.png)")
    parser.add_argument("--no-workers", action="store_true", help="skip the workers dashboard")
    parser.add_argument("--count", type=int, default=8, help="tasks.demo.hello actions to send (default 8)")
    parser.add_argument("--sqs", choices=("fauxqs", "moto"), default="fauxqs",
                        help="the local SQS server (default fauxqs)")
    args = parser.parse_args(argv)
    try:
        run(args)
    except (ScreenshotError, ConfigurationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
