"""Promoting a checkpoint from the Train pane: P on a row makes it the workspace's LoRA and the
list marks it (★), so nobody has to remember which one it was."""

from __future__ import annotations

from support import wait_for
from textual.widgets import DataTable

from lorabooth.core.train.trainer import Trainer
from lorabooth.core.workspace import LORA_FILE, Workspace
from lorabooth.tui.app import LoraboothApp
from lorabooth.tui.panes.train import TrainPane
from lorabooth.tui.settings import UISettings


def two_checkpoints(demo_workspace) -> tuple[Workspace, LoraboothApp]:
    """A run with checkpoints at steps 5 and 10, and the app on its workspace."""
    ws = demo_workspace(train_checkpoint_every=5, train_validate=True)
    Trainer(ws, device="cpu").run(steps=10)
    return ws, LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))


async def checkpoint_list(pilot) -> DataTable:
    """The Train pane's checkpoints, opened, once both are listed."""
    await pilot.press("2")
    await wait_for(pilot, lambda: pilot.app.query(TrainPane))
    table = pilot.app.query_one("#checkpoints", DataTable)
    await wait_for(pilot, lambda: table.row_count == 2)
    return table


async def test_p_promotes_the_selected_checkpoint_and_marks_it(demo_workspace):
    ws, app = two_checkpoints(demo_workspace)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await checkpoint_list(pilot)
        marks = lambda: [str(table.get_row_at(i)[0]) for i in range(table.row_count)]  # noqa: E731
        assert marks() == [" ", " "]  # the finished run's LoRA is no checkpoint's promotion
        table.focus()
        table.move_cursor(row=1)  # newest first: row 1 is step 5
        await pilot.press("P")
        app.writer.wait_idle()
        await wait_for(pilot, lambda: marks() == [" ", "★"])
        step5 = ws.checkpoints / "run-001" / "step-000005" / LORA_FILE
        assert ws.lora_path.read_bytes() == step5.read_bytes()


async def test_c_compares_the_runs_checkpoints_on_a_typed_prompt(demo_workspace):
    """c on a checkpoint opens the Queue with that run's checkpoints in the LoRAs box; the
    prompt typed there queues one job that renders it with each of them."""
    from textual.widgets import Input

    from lorabooth.core.generate.request import request_from_params
    from lorabooth.core.store import Store
    from lorabooth.tui.panes.queue import QueuePane

    ws, app = two_checkpoints(demo_workspace)
    async with app.run_test(size=(100, 30)) as pilot:
        table = await checkpoint_list(pilot)
        table.focus()
        await pilot.press("c")
        await wait_for(pilot, lambda: app.query(QueuePane)
                       and app.query_one("#loras", Input).value == "run-001/checkpoints")
        assert app.focused is app.query_one("#prompt")
        await pilot.press(*"zorb in the snow", "enter")
        app.writer.wait_idle()
        store = Store(ws.db_path)
        await wait_for(pilot, lambda: store.jobs())
        (job,) = store.jobs()
        request = request_from_params(job.params)
        assert [lora.name for lora in request.sweep] == ["run-001/step-000005",
                                                         "run-001/step-000010"]
        assert job.total == 2
        rows = app.query_one("#jobs", DataTable)
        await wait_for(pilot, lambda: rows.row_count == 1 and "2 checkpoints · zorb in the snow"
                       in str(rows.get_row_at(0)[-1]))


async def test_b_selects_the_best_checkpoint_by_validation_loss_and_p_promotes_it(
        demo_workspace):
    from lorabooth.core.train.checkpoint import all_checkpoints, promoted, recorded_validation

    ws, app = two_checkpoints(demo_workspace)
    kept = all_checkpoints(ws.checkpoints)
    best = min(kept, key=lambda info: recorded_validation(info.path))
    async with app.run_test(size=(100, 30)) as pilot:
        table = await checkpoint_list(pilot)
        table.move_cursor(row=1 - table.get_row_index(best.label))  # on the other one
        await pilot.press("b")
        label = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        assert label == best.label and app.focused is table
        assert str(table.get_row_at(table.cursor_row)[3]) == f"{recorded_validation(best.path):.4f}"
        await pilot.press("P")
        app.writer.wait_idle()
        await wait_for(pilot, lambda: (chosen := promoted(ws)) is not None
                       and chosen.label == best.label)
