"""`lorabooth demo` in a real terminal (tmux): start, switch panes, train, quit leaving the
engine running, and re-attach with a second `lorabooth`."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorabooth.core.engine import running_pid
from lorabooth.core.workspace import Workspace

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, socket: str):
        self.socket = socket

    def run(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                                text=True, timeout=20)
        return result.stdout

    def start(self, command: str) -> None:
        self.run("new-session", "-d", "-s", "lb", "-x", "120", "-y", "40", command)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "lb")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "lb", *keys)

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.screen())
            if match:
                return match
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} not on screen within {timeout} s:\n{self.screen()}")

    def alive(self) -> bool:
        return "lb" in self.run("list-sessions", "-F", "#{session_name}")

    def kill(self) -> None:
        """Close the terminal (its programs get SIGHUP) and wait until the server is gone,
        so that a new session does not land on a dying server."""
        self.run("kill-server")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(["tmux", "-L", self.socket, "list-sessions"],
                                   capture_output=True, timeout=10)
            if probe.returncode != 0:
                return
            time.sleep(0.1)


@pytest.fixture
def tmux(tmp_path: Path):
    t = Tmux(f"lorabooth-test-{os.getpid()}")
    yield t
    t.kill()


def lorabooth_command(*args: str) -> str:
    env = {k: os.environ[k] for k in ("LORABOOTH_CACHE", "LORABOOTH_CONFIG_DIR") if k in os.environ}
    env["LORABOOTH_IMAGES"] = "halfcell"
    env["TERM"] = "xterm-256color"
    exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    # Keep the pane open after the program ends so its last screen can be read.
    return (f"env {exports} {shlex.quote(sys.executable)} -m lorabooth.core.cli "
            f"{' '.join(shlex.quote(a) for a in args)}; echo EXITED $?; sleep 30")


def test_demo_in_a_real_terminal(tmux: Tmux, tmp_path: Path, demo_model):
    root = tmp_path / "demo"
    ws = Workspace.at(root)
    try:
        tmux.start(lorabooth_command("demo", str(root)))
        tmux.wait_for(r"1 Dataset", timeout=60)
        tmux.wait_for(r"16 photos: 16 ok")
        tmux.keys("2")
        tmux.wait_for(r"s Start(?! from)")  # Train's key in the footer, not the Dataset's
        tmux.keys("s")
        first = int(tmux.wait_for(r"step (\d+)/3000", timeout=60).group(1))
        later = first
        deadline = time.monotonic() + 30
        while later <= first and time.monotonic() < deadline:
            time.sleep(0.5)
            later = int(tmux.wait_for(r"step (\d+)/3000").group(1))
        assert later > first  # the step count moves while we watch
        tmux.keys("q")
        tmux.wait_for(r"EXITED 0", timeout=15)
        assert running_pid(ws)  # the engine carries on without the UI

        tmux.kill()
        tmux.start(lorabooth_command(str(root)))
        tmux.wait_for(r"engine (idle|running)", timeout=30)
        tmux.keys("2")
        tmux.wait_for(r"job 1 (running|done)", timeout=30)
        # The engine measures the base model, then each checkpoint (every 750 steps): a ● on
        # the curve, the best named above it and its value in the checkpoints' list.
        tmux.wait_for(r"● val ", timeout=30)
        best = tmux.wait_for(r"best val (\d\.\d{4}) at step 750", timeout=90).group(1)
        tmux.wait_for(rf"run-001/step-000750 +\d\.\d{{4}} +{best}")
        # The samples (the base's before step 1, then every 500 steps) open full-screen with
        # their recipe.
        deadline = time.monotonic() + 120
        while "· sample ·" not in tmux.screen() and time.monotonic() < deadline:
            tmux.keys("o")
            time.sleep(2)
        tmux.wait_for(r"(\d+)/\1 · sample · step-\d+/prompt-02.png", timeout=5)  # newest
        tmux.wait_for(r"prompt: .*zorb")
        tmux.keys("n")
        tmux.wait_for(r" 1/\d+ · sample · step-000000/prompt-00.png")  # wraps to the first
        tmux.keys("Escape")
        tmux.wait_for(r"s Start(?! from)")  # back on Train (the viewer's `s` is "Start from")
        tmux.keys("q")
        tmux.wait_for(r"EXITED 0", timeout=15)

        # The SSH link drops: the terminal goes away, the UI gets SIGHUP and exits at once.
        tmux.kill()
        tmux.start(lorabooth_command(str(root)))
        tmux.wait_for(r"engine (idle|running)", timeout=30)
        assert ui_processes(root)
        tmux.kill()
        deadline = time.monotonic() + 5
        while ui_processes(root) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not ui_processes(root)
        assert running_pid(ws)
    finally:
        pid = running_pid(ws)
        if pid and pid > 0:
            os.kill(pid, signal.SIGKILL)


def ui_processes(root: Path) -> list[str]:
    """Running `lorabooth ROOT` UI processes (not the engine)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\x00")
        except OSError:
            continue
        words = [w.decode(errors="replace") for w in cmd if w]
        if "lorabooth.core.cli" in words and words[-1] == str(root):
            found.append(proc.name)
    return found
