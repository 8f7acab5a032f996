from __future__ import annotations

import os
from pathlib import Path

import pytest
from textual.widgets import DataTable

from lorabooth.core.workspace import init_workspace
from lorabooth.tui.app import LoraboothApp
from lorabooth.tui.settings import UISettings


async def test_file_names_are_shown_as_typed(tmp_path: Path, photos: Path):
    (photos / "[red]odd \x1b name.jpg").write_bytes((photos / "01_studio.jpg").read_bytes())
    ws = init_workspace(tmp_path / "ws", photos, model="demo", trigger="zorb")
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one("#photos", DataTable)
        for _ in range(50):
            await pilot.pause(0.1)
            if table.row_count == 17:
                break
        names = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert "01_studio.jpg" in names
        assert "[red]odd ␛ name.jpg" in names  # markup not parsed, escape made visible


def test_long_photo_names_fit_the_list_in_cells_keeping_the_extension():
    """The Dataset list cuts a long name in the middle to its column's width in terminal
    cells: a CJK name (two cells a character) must not push the reason off the screen."""
    from rich.cells import cell_len

    from lorabooth.tui.panes.dataset import NAME_WIDTH
    from lorabooth.tui.widgets.text import fit_middle

    for name in ("zz_upload_from_a_phone_camera_roll.jpg",
                 "写真_家族_旅行_二〇二四年_夏休み_海辺.jpg",
                 "IMG_20240512_143022_HDR_portrait_mode.heic"):
        short = fit_middle(name, NAME_WIDTH)
        assert NAME_WIDTH - 1 <= cell_len(short) <= NAME_WIDTH, short
        assert short.endswith(name[-6:]) and short.startswith(name[:4]) and "…" in short
    assert fit_middle("01_studio.jpg", NAME_WIDTH) == "01_studio.jpg"


def test_a_reason_naming_a_cjk_photo_fits_its_column_in_cells():
    """The "why" column's headline ("exact duplicate of 写真....jpg") is cut in cells too: cut
    by characters, a CJK name ran ten cells past the column."""
    from rich.cells import cell_len

    from lorabooth.tui.panes.dataset import WHY_WIDTH, headline

    why = headline("exact duplicate of 写真_家族_旅行_二〇二四年_夏休み_海辺.jpg")
    assert why.startswith("exact duplicate of 写") and why.endswith("…")
    assert WHY_WIDTH - 1 <= cell_len(why) <= WHY_WIDTH
    assert headline("too small: 100x80, under 512 on its short side") == "too small"


@pytest.mark.parametrize("kind", ["fifo", "broken", "binary", "nested"])
def test_a_settings_file_that_cannot_be_read_gives_the_defaults_and_says_why(
        tmp_path: Path, monkeypatch, kind: str):
    """A FIFO in its place would block the UI's start forever, if it were opened."""
    monkeypatch.setenv("LORABOOTH_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("LORABOOTH_IMAGES", raising=False)
    path = tmp_path / "ui.toml"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.write_bytes({"broken": b'theme = "nord', "binary": b"\xff\xfe theme",
                          "nested": b"x = " + b"[" * 5000 + b"]" * 5000}[kind])
    loaded = UISettings.load()
    assert (loaded.theme, loaded.images) == ("lorabooth-dark", "auto")
    (problem,) = loaded.problems
    assert problem.startswith(f"{path}: ") and problem.endswith("; using defaults")
    if kind == "fifo":
        assert "FIFO" in problem
        loaded.save_theme("nord")  # refused too, never opened: the choice lasts the session
        assert loaded.theme == "nord" and path.is_fifo()


def test_lorabooth_images_is_obeyed_with_or_without_a_settings_file(tmp_path: Path,
                                                                    monkeypatch):
    """LORABOOTH_IMAGES=halfcell skips textual-image's terminal probe (0.2 s locally, more over
    SSH). It was read only beside a ui.toml, so a fresh user who set it still paid the probe."""
    monkeypatch.setenv("LORABOOTH_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("LORABOOTH_IMAGES", "halfcell")
    assert UISettings.load().images == "halfcell"  # no ui.toml at all
    (tmp_path / "ui.toml").write_text('images = "kitty"\ntheme = "nord"\n')
    loaded = UISettings.load()
    assert (loaded.images, loaded.theme) == ("halfcell", "nord")
    monkeypatch.setenv("LORABOOTH_IMAGES", "jpeg")
    loaded = UISettings.load()
    assert loaded.images == "auto"
    assert loaded.problems == ["LORABOOTH_IMAGES = 'jpeg' is not one of auto, kitty, sixel, "
                               "halfcell, unicode"]
    monkeypatch.delenv("LORABOOTH_IMAGES")
    assert UISettings.load().images == "kitty"
