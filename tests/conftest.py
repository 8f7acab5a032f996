from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_PHOTOS = REPO / "sample_photos"


@pytest.fixture(scope="session", autouse=True)
def lorabooth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep the demo model (and anything else cached) out of the user's home during tests;
    built once per session and shared by every test and subprocess."""
    cache = Path(os.environ.get("LORABOOTH_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["LORABOOTH_CACHE"] = str(cache)
    # The UI's per-user settings (theme, keys) must not come from or go to the real home.
    os.environ["LORABOOTH_CONFIG_DIR"] = str(tmp_path_factory.mktemp("config"))
    return cache


@pytest.fixture(scope="session")
def demo_model(lorabooth_cache: Path) -> Path:
    from lorabooth.core.models.demo import ensure_demo_model

    return ensure_demo_model()


@pytest.fixture(scope="session")
def demo_pipe(demo_model: Path):
    from lorabooth.core.models.load import load_pipeline
    from lorabooth.core.models.resolve import resolve_model

    return load_pipeline(resolve_model("demo"), device="cpu")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A copy of the sample photos that a test may change."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for source in SAMPLE_PHOTOS.iterdir():
        if source.suffix in (".jpg", ".txt"):
            shutil.copy2(source, folder / source.name)
    return folder


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


@pytest.fixture
def engines():
    """Workspaces whose engine a test started: each is killed afterwards, whatever happens."""
    from lorabooth.core.engine import running_pid

    started: list = []
    yield started
    for ws in started:
        pid = running_pid(ws)
        if pid and pid > 0:
            os.kill(pid, signal.SIGKILL)
