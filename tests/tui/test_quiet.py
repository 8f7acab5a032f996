"""Over SSH every byte the UI writes is paid for: a screen where nothing changes must write
nothing. The app runs in a real pseudo-terminal and the bytes it writes are counted (a count,
not a timing: an idle screen that repaints nothing writes nothing on any machine)."""

from __future__ import annotations

import sys

import pytest

from bench.ptyterm import PtyProgram
from bench.tui import seed_finished_run
from lorabooth.core.workspace import init_workspace
from tests.support import copy_sample_photos

WINDOW_S = 3.0
# The goal is 0.3 KB/s; a cursor blink or a stray repaint of one line would already cross it.
IDLE_LIMIT = 300 * WINDOW_S


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_an_idle_screen_writes_nothing_on_any_pane(tmp_path, size):
    ws = init_workspace(tmp_path / "ws", copy_sample_photos(tmp_path / "photos"),
                        model="demo", trigger="zorb")
    seed_finished_run(ws.db_path)  # the Train pane with a finished run's loss curve
    env = {"LORABOOTH_NO_ENGINE": "1", "LORABOOTH_IMAGES": "halfcell",
           "LORABOOTH_CONFIG_DIR": str(tmp_path / "config"), "TERM": "xterm-256color"}
    written = {}
    with PtyProgram([sys.executable, "-m", "lorabooth.core.cli", str(ws.root)], env,
                    *size) as app:
        app.wait_for("photos:")
        for key, pane in zip("1234", ("dataset", "train", "queue", "gallery"), strict=True):
            app.send(key)
            app.settle(1.5)  # the pane draws, its store read lands
            written[pane] = app.count(WINDOW_S)
        assert app.total > 10_000  # it did draw: the count is of a live screen
    assert all(n <= IDLE_LIMIT for n in written.values()), written
