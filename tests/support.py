"""Helpers every test folder imports (`from support import ...`): the CLI as a user runs it,
one way to wait for something, and demo workspaces."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SAMPLE_PHOTOS = REPO / "sample_photos"
SECTIONS = ("train", "sample", "generate")

# Small and fast on a CPU: what most tests want unless they say otherwise. No samples and no
# validation loss: at a checkpoint every 25 steps, measuring alone added a quarter to a
# training test's time; the tests of those features turn them on.
DEMO_SETTINGS: dict[str, Any] = {
    "train.resolution": [256], "train.learning_rate": 1e-3, "train.checkpoint_every": 25,
    "sample.every": 0, "train.validate": False, "generate.width": 64, "generate.height": 64,
    "generate.steps": 3,
}


def setting_key(name: str) -> str:
    """`train_checkpoint_every` -> `train.checkpoint_every`; `trigger` stays `trigger`."""
    for section in SECTIONS:
        if name.startswith(section + "_"):
            return f"{section}.{name[len(section) + 1:]}"
    return name


def copy_sample_photos(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for source in SAMPLE_PHOTOS.iterdir():
        if source.suffix in (".jpg", ".txt"):
            shutil.copy2(source, folder / source.name)
    return folder


def make_demo_workspace(root: Path, photos: Path, **settings: Any):
    """A workspace on the demo model and `photos`, with DEMO_SETTINGS and `settings`
    (keyword names as `setting_key` reads them)."""
    from lorabooth.core.config import set_config_values
    from lorabooth.core.workspace import init_workspace

    ws = init_workspace(root, photos, model="demo", trigger="zorb")
    values = {**DEMO_SETTINGS, **{setting_key(k): v for k, v in settings.items()}}
    set_config_values(ws.root, values)
    return ws


def run_cli(*args: str, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    """The real `lorabooth` command in a subprocess, as a user would run it."""
    return subprocess.run(
        [sys.executable, "-m", "lorabooth.core.cli", *args],
        capture_output=True, text=True, cwd=cwd, timeout=timeout,
        env={**os.environ, "COLUMNS": "120"},
    )


def wait_until(condition, timeout: float = 60.0, every: float = 0.05):
    """Poll `condition` until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout} s")


async def wait_for(pilot, condition, timeout: float = 60.0) -> None:
    """`wait_until` for a Pilot test: the app keeps running while we wait."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"not within {timeout} s")


@contextlib.contextmanager
def frozen_engine(ws, monkeypatch, stale: float = 2.0) -> Iterator[int]:
    """An engine started for `ws`, then stopped with SIGSTOP and counted frozen after `stale`
    seconds without a heartbeat: its pid. Let go (SIGCONT) afterwards, if it still lives, so
    a failed assertion leaves no stopped process behind."""
    from lorabooth.core.engine import client, running_pid

    assert run_cli("engine", str(ws.root), "start").returncode == 0
    pid = running_pid(ws)
    monkeypatch.setattr(client, "STALE_HEARTBEAT", stale)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
