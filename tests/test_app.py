from __future__ import annotations

from pathlib import Path

from textual.widgets import DataTable, Static, TabbedContent

from lorabooth.core.workspace import init_workspace
from lorabooth.tui.app import LoraboothApp


async def test_dataset_and_train_panes_show_the_workspace(tmp_path: Path, photos: Path):
    (photos / "[red]odd \x1b name.jpg").write_bytes((photos / "01_studio.jpg").read_bytes())
    ws = init_workspace(tmp_path / "ws", photos, model="demo", trigger="zorb")
    app = LoraboothApp(ws.root)
    async with app.run_test(size=(100, 30)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        table = app.query_one("#photos", DataTable)
        assert table.row_count == 17
        names = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        assert "01_studio.jpg" in names
        assert "[red]odd ␛ name.jpg" in names  # shown as typed, escape made visible
        await pilot.press("t")
        assert app.query_one("#panes", TabbedContent).active == "train"
        text = str(app.query_one("#train-config", Static).render())
        assert "trigger     zorb" in text and "photos      17" in text
