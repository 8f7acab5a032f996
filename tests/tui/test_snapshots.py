"""Snapshots of every pane at 80x24 and 160x48 in the dark and light themes, from a fixed
workspace: fixed photos, metrics, jobs and outputs, no engine, no cursor blink."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from support import REPO

from lorabooth.core.generate.recipe import Recipe
from lorabooth.core.generate.request import Request, request_to_params
from lorabooth.core.store import Store
from lorabooth.core.workspace import init_workspace
from lorabooth.tui.app import LoraboothApp
from lorabooth.tui.settings import UISettings

SAMPLES = REPO / "sample_photos"


def fixed_workspace(root: Path) -> Path:
    photos = root / "photos"
    shutil.copytree(SAMPLES, photos, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    # A file that is not a photo, with a long name: the list says why beside it at 80 columns.
    (photos / "zz_upload_from_a_phone_camera_roll.jpg").write_bytes(b"not a jpeg")
    ws = init_workspace(root / "studio", photos, model="demo", trigger="zorb")
    store = Store(ws.db_path)
    # A run stopped at step 180 and resumed from its step-150 checkpoint: one curve, the
    # resume marked.
    # Validation losses at the base model and each checkpoint; the best is step 200's.
    measured = {0: 1.1, 50: 0.9, 100: 0.8, 150: 0.75, 200: 0.72, 250: 0.74, 300: 0.78}
    for first, last, state in ((1, 180, "cancelled"), (151, 300, "done")):
        train = store.add_job("train", {"steps": 300, "run": "run-001"}, total=300)
        for step in range(first, last + 1):
            loss = 0.6 + 0.5 * math.exp(-step / 80) + 0.05 * math.sin(step * 1.7)
            store.add_metric(train, step, loss=loss, lr=1e-4 * min(1, step / 50),
                             grad_norm=1.0, seconds=0.5, images_per_s=2.0, memory_gb=None)
        for step, value in measured.items():
            if first <= step <= last or (step == 0 and first == 1):
                store.add_validation(train, step, value)
        store.update_job(train, state=state, step=last)
    for step in (100, 200, 300):
        folder = ws.checkpoints / "run-001" / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"")
        (folder / "meta.json").write_text(json.dumps({"step": step, "loss": 0.6 + 1 / step,
                                                      "validation": measured[step]}))
    ws.loras.mkdir(parents=True, exist_ok=True)  # step 200 was promoted: marked with a star
    (ws.loras / "promoted.json").write_text(json.dumps({"run": "run-001", "step": 200,
                                                        "sha256": "0" * 64}))
    images = ws.outputs / "images"
    images.mkdir(parents=True)
    for i, (prompt, state) in enumerate([("zorb on the moon", "done"),
                                         ("[bold]zorb[/bold] in a cafe", "done"),
                                         ("zorb as a knight", "failed"),
                                         ("zorb, poster", "queued")]):
        job = store.add_job("generate", request_to_params(Request(Recipe(prompt, seed=i))),
                            total=1)
        if state == "done":
            path = images / f"image-{i}.jpg"
            shutil.copy(SAMPLES / f"0{i + 1}_{['studio', 'beach_scarf'][i]}.jpg", path)
            store.add_output(job, path, "image", json.loads(Recipe(prompt, seed=i).to_json()))
            store.update_job(job, state="done", step=1, result={"images": [str(path)]})
        elif state == "failed":
            store.update_job(job, state="failed", error="width 100 must be a multiple of 16")
    return ws.root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return fixed_workspace(tmp_path_factory.mktemp("snap"))


def app_for(root: Path, theme: str) -> LoraboothApp:
    return LoraboothApp(root, start_engine=False, poll=False,
                        settings=UISettings(theme=theme, images="halfcell"))


async def settle(pilot) -> None:
    # Store reads, the photo scan and image mounts each take a worker or a refresh or two.
    for _ in range(5):
        await pilot.app.workers.wait_for_complete()
        await pilot.wait_for_scheduled_animations()
        await pilot.pause(0.2)
    for widget in pilot.app.query("Input, TextArea"):
        widget.cursor_blink = False


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
@pytest.mark.parametrize("theme", ["lorabooth-dark", "lorabooth-light"])
@pytest.mark.parametrize("pane", ["1", "2", "3", "4"], ids=["dataset", "train", "queue",
                                                          "gallery"])
def test_pane_snapshot(snap_compare, workspace: Path, pane: str, theme: str, size):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press(pane)
        await settle(pilot)

    assert snap_compare(app_for(workspace, theme), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
@pytest.mark.parametrize("screen", ["viewer", "help"])
def test_screen_snapshot(snap_compare, workspace: Path, screen: str, size):
    """The screens over the panes: an image full-screen with its recipe (Enter in the
    Gallery) and the help (?). (The palette's hits arrive from several providers in no fixed
    order: tests/tui/test_palette.py checks it instead.)"""
    async def run_before(pilot) -> None:
        await settle(pilot)
        if screen == "viewer":
            await pilot.press("4")
            await settle(pilot)
            await pilot.press("enter")
        else:
            await pilot.press("question_mark")
        await settle(pilot)

    assert snap_compare(app_for(workspace, "lorabooth-dark"), terminal_size=size,
                        run_before=run_before)
