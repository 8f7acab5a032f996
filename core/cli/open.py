"""Opening the UI: the only place the command line imports `lorabooth.tui`, and only when the
UI is asked for."""

from __future__ import annotations

from pathlib import Path


def open_ui(root: Path) -> int:
    from lorabooth.tui.app import run_app

    return run_app(root)
