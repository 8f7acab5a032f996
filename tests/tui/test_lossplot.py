"""The Train pane's plot tells the truth: while the model loads it says so (not "start
training"), and a stopped and resumed run is one curve with the resume marked."""

from __future__ import annotations

from support import wait_for

from lorabooth.core.store import Store
from lorabooth.tui.app import LoraboothApp
from lorabooth.tui.panes.train import TrainPane
from lorabooth.tui.settings import UISettings
from lorabooth.tui.widgets.lossplot import LossPlot


def plot_text(plot: LossPlot) -> str:
    return "\n".join(line.text for line in plot.draw())


async def test_the_plot_says_what_the_engine_is_doing_before_the_first_step(demo_workspace):
    ws = demo_workspace()
    store = Store(ws.db_path)
    job = store.add_job("train", {"steps": 100, "run": "run-001"}, total=100)
    store.update_job(job, state="running")
    store.event("loading the model demo", job=job)
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.query(TrainPane))
        plot = app.query_one(LossPlot)
        await wait_for(pilot, lambda: "loading the model" in plot_text(plot))
        assert plot_text(plot) == f"job {job}: loading the model demo"
        for step in range(1, 11):
            store.add_metric(job, step, loss=1.0 / step, lr=1e-4, grad_norm=1.0, seconds=0.5,
                             images_per_s=2.0, memory_gb=None)
        await wait_for(pilot, lambda: plot.steps == list(range(1, 11)))
        assert "loading" not in plot_text(plot) and "smoothed" in plot_text(plot)


async def test_a_resumed_run_is_one_curve_with_the_resume_marked(demo_workspace):
    ws = demo_workspace()
    store = Store(ws.db_path)
    other = store.add_job("train", {"steps": 5, "run": "run-000"}, total=5)  # another run
    store.add_metric(other, 1, loss=9.0, lr=1e-4, grad_norm=1.0, seconds=0.5,
                     images_per_s=2.0, memory_gb=None)
    store.update_job(other, state="done", step=1)
    # Stopped at 60, resumed from the step-40 checkpoint: steps 41-60 are trained again.
    for first, last, state in ((1, 60, "cancelled"), (41, 100, "done")):
        job = store.add_job("train", {"steps": 100, "run": "run-001"}, total=100)
        for step in range(first, last + 1):
            store.add_metric(job, step, loss=1.0 / step + (0.5 if state == "cancelled" else 0),
                             lr=1e-4, grad_norm=1.0, seconds=0.5, images_per_s=2.0,
                             memory_gb=None)
        store.update_job(job, state=state, step=last)
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.query(TrainPane))
        pane = app.query_one(TrainPane)
        await wait_for(pilot, lambda: pane.steps == list(range(1, 101)))
        assert pane.starts == [1, 41]
        # Steps 41-60 are the resumed job's, not the stopped one's; run-000 is not joined.
        assert pane.losses[40:] == [1.0 / s for s in range(41, 101)]
        assert 9.0 not in pane.losses
        text = plot_text(app.query_one(LossPlot))
        assert "▲" in text and "resumed" in text
