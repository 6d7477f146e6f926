"""Sources of work besides .delay(): celery beat (two at once), and actions that continue themselves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from actionrunner.beat import slot_of
from tests.actions import chunked
from tests.conftest import ROOT, Worker, json_lines

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_two_beats_fire_each_slot_once(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path, tmp_path: Path
) -> None:
    # Given two beat processes with the same 2-second schedule (a deploy overlap)
    bucket = f"beat-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "ACTIONRUNNER_CELERY_CONFIG_MODULE": "tests.beat_config", "BEAT_BUCKET": bucket}
    worker = start_worker()
    beats, logs = [], []
    for i in range(2):
        log = tmp_path / f"beat{i}.log"
        logs.append(log)
        with open(log, "wb") as out:
            beats.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "actionrunner", "beat", "-l", "INFO",
                 "--schedule", str(tmp_path / f"schedule{i}")],
                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT))
    try:
        time.sleep(11)
    finally:
        for beat in beats:
            beat.send_signal(signal.SIGTERM)
            beat.wait(20)
    # Then both fired, but each schedule slot produced one message and one run
    sent = [e for log in logs for e in json_lines(log) if e.get("event") == "sent"]
    slots = {e["dedup_id"] for e in sent}
    assert len(sent) >= 6 and len(slots) >= 3
    assert len(sent) > len(slots)  # the same slot was fired by both beats
    worker.wait_for(lambda: len((record_dir / f"{bucket}.txt").read_text().splitlines()) >= len(slots)
                    if (record_dir / f"{bucket}.txt").exists() else False, timeout=30, what="runs")
    time.sleep(2)
    assert len((record_dir / f"{bucket}.txt").read_text().splitlines()) == len(slots)


def test_slots_are_the_same_in_every_beat() -> None:
    import datetime as dt

    from celery.schedules import crontab, schedule

    at = dt.datetime(2026, 11, 27, 10, 7, 59, tzinfo=dt.UTC)
    assert slot_of(crontab(minute="*/5"), at) == at.replace(minute=5, second=0)
    assert slot_of(crontab(minute="*/5"), at + dt.timedelta(seconds=2)) == at.replace(minute=5, second=0)
    assert slot_of(schedule(dt.timedelta(seconds=30)), at) == at.replace(second=30)


def test_a_cursor_chain_completes_a_multi_chunk_job_in_order(
    start_worker: Callable[..., Worker], queue_url: str, record_dir: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    chunked.delay(run=run, total=10, chunk=3)
    worker = start_worker(concurrency=4)
    path = record_dir / f"{run}.jsonl"
    worker.wait_for(lambda: path.exists() and len(path.read_text().splitlines()) >= 4, timeout=60,
                    what="the chain")
    time.sleep(1)
    steps = [json.loads(line) for line in path.read_text().splitlines()]
    assert [s["seq"] for s in steps] == [0, 3, 6, 9]
    assert all(a["end"] <= b["start"] for a, b in zip(steps, steps[1:], strict=False))
    groups = {e["group"] for e in worker.lifecycle("succeeded") if e["action"] == "tests.actions.chunked"}
    assert groups == {f"chunks:{run}"}
