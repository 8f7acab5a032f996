"""The Train pane's plot tells the truth: while the model loads it says so (not "start
training"), and a stopped and resumed run is one curve with the resume marked."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator

import pytest
from support import wait_for
from textual.app import App
from textual.pilot import Pilot

from lorabooth.core.store import Store
from lorabooth.tui.app import LoraboothApp
from lorabooth.tui.panes.train import TrainPane
from lorabooth.tui.settings import UISettings
from lorabooth.tui.widgets.lossplot import LossPlot


@contextlib.asynccontextmanager
async def train_pane(ws) -> AsyncIterator[tuple[LoraboothApp, Pilot]]:
    """The app on `ws`, its Train pane shown."""
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("2")
        await wait_for(pilot, lambda: app.query(TrainPane))
        yield app, pilot


def plot_text(plot: LossPlot) -> str:
    return "\n".join(line.text for line in plot.draw())


async def test_the_plot_says_what_the_engine_is_doing_before_the_first_step(demo_workspace):
    ws = demo_workspace()
    store = Store(ws.db_path)
    job = store.add_job("train", {"steps": 100, "run": "run-001"}, total=100)
    store.update_job(job, state="running")
    store.event("loading the model demo", job=job)
    async with train_pane(ws) as (app, pilot):
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
    async with train_pane(ws) as (app, pilot):
        pane = app.query_one(TrainPane)
        await wait_for(pilot, lambda: pane.steps == list(range(1, 101)))
        assert pane.starts == [1, 41]
        # Steps 41-60 are the resumed job's, not the stopped one's; run-000 is not joined.
        assert pane.losses[40:] == [1.0 / s for s in range(41, 101)]
        assert 9.0 not in pane.losses
        text = plot_text(app.query_one(LossPlot))
        assert "▲" in text and "resumed" in text


async def test_validation_losses_show_on_the_curve_and_name_the_best_step(demo_workspace):
    """Each checkpoint's validation loss is a ● on the curve, the best is named above it, and a
    resume replaces what the stopped job measured after the checkpoint it resumed from."""
    ws = demo_workspace()
    store = Store(ws.db_path)
    # Stopped at 60 (its step-60 measure taken, its checkpoint never written), resumed from
    # the step-40 checkpoint.
    for first, last, state, measured in (
            (1, 60, "cancelled", {0: 0.8, 20: 0.5, 40: 0.4, 60: 0.9}),
            (41, 100, "done", {60: 0.35, 80: 0.3, 100: 0.45})):
        job = store.add_job("train", {"steps": 100, "run": "run-001"}, total=100)
        for step in range(first, last + 1):
            store.add_metric(job, step, loss=1.0 / step, lr=1e-4, grad_norm=1.0, seconds=0.5,
                             images_per_s=2.0, memory_gb=None)
        for step, loss in measured.items():
            store.add_validation(job, step, loss)
        store.update_job(job, state=state, step=last)
    async with train_pane(ws) as (app, pilot):
        pane = app.query_one(TrainPane)
        await wait_for(pilot, lambda: len(pane.validation) == 6)
        assert pane.validation == [(0, 0.8), (20, 0.5), (40, 0.4), (60, 0.35), (80, 0.3),
                                   (100, 0.45)]
        text = plot_text(app.query_one(LossPlot))
        assert text.count("●") == 7  # six measures and the legend's
        assert "● val" in text
        stats = str(app.query_one("#train-stats").render())
        assert "best val 0.3000 at step 80" in stats


async def test_forged_validation_losses_are_shown_in_a_column_width(demo_workspace):
    ws = demo_workspace()
    store = Store(ws.db_path)
    job = store.add_job("train", {"steps": 30, "run": "run-001"}, total=30)
    for step in range(1, 31):
        store.add_metric(job, step, loss=0.5, lr=1e-4, grad_norm=1.0, seconds=0.5,
                         images_per_s=2.0, memory_gb=None)
    for step, value in ((0, 1e308), (10, -1e308), (20, math.nan), (30, 0.25)):
        store.add_validation(job, step, value)  # NaN is stored as no value
    store.update_job(job, state="done", step=30)
    async with train_pane(ws) as (app, pilot):
        pane = app.query_one(TrainPane)
        await wait_for(pilot, lambda: len(pane.validation) == 3)
        stats = str(app.query_one("#train-stats").render())
        assert "best val -1e+308 at step 10" in stats
        assert "●" in plot_text(app.query_one(LossPlot))


HOSTILE = {
    "nan and inf": [math.nan, math.inf, 1.0, -math.inf, 0.5],
    "huge": [1e308, 1e-300, 5.0, 1e308],
    "both ends of float": [1e308, -1e308, 3.0],
    "negative": [-5.0, -1.0, 0.0, 2.0],
    "flat": [0.3] * 50,
    "one point": [0.7],
    "all nan": [math.nan] * 5,
}


@pytest.mark.parametrize("losses", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_the_plot_draws_any_loss_a_run_can_report(losses):
    """A diverged run (NaN, inf, 1e308) or a strange one must not take the Train pane down:
    every case draws its legend in both scales, in bounded time (a tick range once tried to
    list 400 million ticks)."""
    class One(App):
        def compose(self):
            yield LossPlot()

    app = One()
    async with app.run_test(size=(60, 16)) as pilot:
        plot = app.query_one(LossPlot)
        for log in (False, True):
            plot.log_scale = log
            plot.show_lr = True
            plot.set_data(list(range(1, len(losses) + 1)), losses, 0,
                          lrs=[1e-4] * len(losses), starts=[1])
            await pilot.pause()
            lines = plot.draw()
            assert len(lines) == 16 and "smoothed" in lines[-2].text
