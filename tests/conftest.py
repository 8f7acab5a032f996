from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from support import copy_sample_photos, make_demo_workspace

SLOW_FOLDERS = ("integration",)
SLOW_MODULES = ("test_tui.py", "test_e2e_tmux.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under integration/ (and the studio against a real engine) is `slow`."""
    for item in items:
        path = Path(str(item.fspath))
        if path.parent.name in SLOW_FOLDERS or path.name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def lorabooth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Keep the demo model (and anything else cached) out of the user's home during tests;
    built once per session and shared by every test and subprocess."""
    cache = Path(os.environ.get("LORABOOTH_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    os.environ["LORABOOTH_CACHE"] = str(cache)
    # The UI's per-user settings (theme, keys) must not come from or go to the real home.
    os.environ["LORABOOTH_CONFIG_DIR"] = str(tmp_path_factory.mktemp("config"))
    return cache


@pytest.fixture(scope="session", autouse=True)
def no_engine_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory):
    """An engine a test started and left running (it would train and idle on after CI) is
    killed when the session ends, and the session fails, naming it."""
    yield
    base = str(tmp_path_factory.getbasetemp()).encode()

    def engines_left() -> dict[int, str]:
        found = {}
        for proc in Path("/proc").glob("[0-9]*"):
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if (b"lorabooth.core.engine" in argv and any(base in arg for arg in argv)
                        and state != "Z"):
                    found[int(proc.name)] = b" ".join(argv).decode(errors="replace")
        return found

    # An engine told to stop gives its lock back before its process has quite ended: the
    # last test of a run may have stopped one a moment ago.
    deadline = time.monotonic() + 10
    while engines_left() and time.monotonic() < deadline:
        time.sleep(0.2)
    left = engines_left()
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"engines left running by tests: {list(left.values())}"


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
    return copy_sample_photos(tmp_path / "photos")


@pytest.fixture
def demo_workspace(tmp_path: Path, photos: Path, demo_model: Path):
    """`demo_workspace(name="ws", **settings)`: a workspace on the demo model and this test's
    photos; settings as keywords, `train_steps=300` meaning `train.steps = 300`. An engine
    that a key or a command started in one of them is killed afterwards (one left over from a
    UI test trained its 3,000 steps and idled on, past the end of CI)."""
    made: list = []

    def make(name: str = "ws", **settings):
        made.append(make_demo_workspace(tmp_path / name, photos, **settings))
        return made[-1]
    yield make
    kill_engines(made)


def kill_engines(workspaces: list) -> None:
    from lorabooth.core.engine import running_pid

    for ws in workspaces:
        pid = running_pid(ws)
        if pid and pid > 0:
            with contextlib.suppress(ProcessLookupError):  # it may exit on its own meanwhile
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def engines():
    """Workspaces whose engine a test started: each is killed afterwards, whatever happens."""

    started: list = []
    yield started
    kill_engines(started)
