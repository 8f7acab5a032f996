"""The terminal studio driven by Pilot against a real engine on a demo workspace."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
from pathlib import Path

import pytest
from support import wait_for
from textual.widgets import DataTable, Input, Static, TextArea

from lorabooth.core.engine import running_pid
from lorabooth.core.store import Store
from lorabooth.core.workspace import Workspace
from lorabooth.tui.app import LoraboothApp
from lorabooth.tui.panes.dataset import DatasetPane
from lorabooth.tui.panes.queue import QueuePane
from lorabooth.tui.panes.train import TrainPane
from lorabooth.tui.settings import UISettings
from lorabooth.tui.widgets.lossplot import LossPlot
from lorabooth.tui.widgets.preview import Preview


@pytest.fixture
def studio(demo_workspace):
    ws = demo_workspace(train_steps=3000, train_checkpoint_every=100, generate_steps=2)
    yield ws
    pid = running_pid(ws)
    if pid and pid > 0:
        os.kill(pid, signal.SIGKILL)


def studio_app(ws: Workspace, engine: bool = True) -> LoraboothApp:
    return LoraboothApp(ws.root, start_engine=engine, settings=UISettings(images="halfcell"))


async def photo_list(pilot, rows: int) -> DataTable:
    """The Dataset pane's photo list, opened, once it lists `rows` files."""
    await pilot.press("1")
    table = pilot.app.query_one("#photos", DataTable)
    await wait_for(pilot, lambda: table.row_count == rows)
    return table


async def test_caption_edit_survives_a_rescan_and_lands_in_the_sidecar(studio: Workspace,
                                                                        photos: Path):
    app = studio_app(studio, engine=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await photo_list(pilot, 16)
        await pilot.press("j", "e")
        caption = app.query_one("#caption", TextArea)
        assert not caption.read_only
        caption.load_text("zorb surfing a big wave")
        # A re-scan while typing (the watcher reports a change) keeps what was typed.
        app.query_one(DatasetPane).rescan()
        await app.workers.wait_for_complete()
        await pilot.pause(0.2)
        assert caption.text == "zorb surfing a big wave" and not caption.read_only
        await pilot.press("ctrl+s")
        sidecar = photos / "02_beach_scarf.txt"
        await wait_for(pilot, lambda: sidecar.read_text() == "zorb surfing a big wave\n")
        await wait_for(pilot, lambda: caption.read_only)  # saved: back to the list


async def test_a_caption_changed_on_disk_while_typed_is_not_overwritten_unasked(
        studio: Workspace, photos: Path):
    """Another window (or an editor, or a sync) rewrites the sidecar while its caption is
    typed here: ctrl+s says so and keeps both texts; a second ctrl+s saves over it, as an
    editor asks before it overwrites a file changed on disk."""
    app = studio_app(studio, engine=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await photo_list(pilot, 16)
        await pilot.press("j", "e")
        caption = app.query_one("#caption", TextArea)
        caption.load_text("zorb surfing a big wave")
        sidecar = photos / "02_beach_scarf.txt"
        sidecar.write_text("zorb on the beach, edited in vim\n")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any("changed on disk" in n.message
                                          for n in app._notifications))
        assert sidecar.read_text() == "zorb on the beach, edited in vim\n"
        assert caption.text == "zorb surfing a big wave" and not caption.read_only
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: sidecar.read_text() == "zorb surfing a big wave\n")
        await wait_for(pilot, lambda: caption.read_only)


async def test_a_skipped_photo_says_why_in_the_list_at_80_columns(studio: Workspace,
                                                                 photos: Path):
    """At 80 columns the list beside the preview keeps each skipped file's reason in view (it
    was a fourth column, scrolled off to the right): a long name is cut in the middle."""
    (photos / "zz_upload_from_a_phone_camera_roll.jpg").write_bytes(b"not a jpeg")
    app = studio_app(studio, engine=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await photo_list(pilot, 17)
        await pilot.press("G")
        await pilot.pause(0.2)
        svg = app.export_screenshot()
        shown = html.unescape(re.sub(r"<[^>]+>", "", svg)).replace("\xa0", " ")
        assert "zz_upload…ne_camera_roll.jpg  not an image" in shown, shown[-3000:]


async def test_s_on_a_photo_starts_the_next_images_from_it(studio: Workspace, photos: Path):
    """The photo goes to the Queue's start-image box and its caption (the trigger in it) to the
    prompt box; a file that is no picture is refused in words."""
    (photos / "zz_broken.jpg").write_bytes(b"not a jpeg")
    app = studio_app(studio, engine=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await photo_list(pilot, 17)
        await pilot.press("j", "s")
        start = app.query_one("#start", Input)
        await wait_for(pilot, lambda: start.value == str(photos / "02_beach_scarf.jpg"))
        prompt = app.query_one("#prompt", Input).value
        assert prompt.startswith("photo of zorb") and "scarf" in prompt
        await pilot.press("escape", "1")
        await wait_for(pilot, lambda: isinstance(app.focused, DataTable))
        await pilot.press("G", "s")
        await wait_for(pilot, lambda: any("zz_broken.jpg is not a picture" in n.message
                                          for n in app._notifications))
        assert start.value == str(photos / "02_beach_scarf.jpg")


async def test_a_dropped_photo_appears_through_the_engine(studio: Workspace, photos: Path):
    app = studio_app(studio)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: running_pid(studio))  # the UI started the engine
        table = app.query_one("#photos", DataTable)
        await wait_for(pilot, lambda: table.row_count == 16)
        shutil.copy(photos / "01_studio.jpg", photos / "dropped in.jpg")
        await wait_for(pilot, lambda: table.row_count == 17, timeout=15)


async def open_pane(pilot, key: str, pane: type):
    """Press the pane's key and wait until it has mounted (the panes mount lazily)."""
    await pilot.press(key)
    await wait_for(pilot, lambda: pilot.app.query(pane))
    return pilot.app.query_one(pane)


async def test_train_starts_pauses_resumes_and_stops(studio: Workspace):
    app = studio_app(studio)
    store = Store(studio.db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_pane(pilot, "2", TrainPane)
        await pilot.press("s")
        await wait_for(pilot, lambda: len(pane.losses) >= 20)
        assert "step" in str(app.query_one("#train-stats").render())
        assert app.query_one(LossPlot).losses
        await pilot.press("p")
        await wait_for(pilot, lambda: store.jobs()[0].state == "paused")
        stats = app.query_one("#train-stats")
        await wait_for(pilot, lambda: "paused" in str(stats.render()))
        assert "ETA" not in str(stats.render())  # a paused job is not going to finish
        await pilot.press("p")
        await wait_for(pilot, lambda: store.jobs()[0].state == "running")
        await pilot.press("x")
        await wait_for(pilot, lambda: store.jobs()[0].state == "cancelled", timeout=30)
        await pilot.press("q")
    assert running_pid(studio)  # quitting the UI leaves the engine running


async def test_queued_prompts_render_between_training_steps(studio: Workspace):
    app = studio_app(studio)
    store = Store(studio.db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_pane(pilot, "2", TrainPane)
        await pilot.press("s")
        await wait_for(pilot, lambda: store.jobs() and store.jobs()[0].step > 5)
        await open_pane(pilot, "3", QueuePane)
        await pilot.press("i")
        prompt = app.query_one("#prompt", Input)
        assert prompt.has_focus
        for text in ("zorb on the moon", "[bold]zorb[/bold] in a cafe", "zorb, poster"):
            prompt.value = text
            await pilot.press("enter")
        generated = lambda: [j for j in store.jobs() if j.kind == "generate"]  # noqa: E731
        await wait_for(pilot, lambda: len(generated()) == 3
                       and all(j.state == "done" for j in generated()), timeout=90)
        jobs_table = app.query_one("#jobs", DataTable)
        await wait_for(pilot, lambda: jobs_table.row_count == 4)  # the training job too
        prompts = [str(jobs_table.get_row_at(i)[3]) for i in range(4)]
        assert prompts[0].startswith("training 3000 steps")
        assert "[bold]zorb[/bold] in a cafe" in prompts  # shown as typed
        await pilot.press("escape", "j")  # leave the prompt box, then move in the queue
        assert jobs_table.has_focus
        preview = app.query_one("#job-preview", Preview)
        await wait_for(pilot, lambda: preview.path is not None and preview.path.is_file())
        assert all(j.result["training_step"] > 0 for j in generated())
        # Each rendered with the workspace LoRA as it was at that step (the request rule).
        assert all(j.params["recipe"]["loras"][0]["name"] == "workspace" for j in generated())


async def test_help_lists_every_binding_with_its_id(studio: Workspace):
    app = LoraboothApp(studio.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        table = app.screen.query_one("#help-table", DataTable)
        rows = {str(table.get_row_at(i)[3]): [str(c) for c in table.get_row_at(i)]
                for i in range(table.row_count)}
        assert {"app.quit", "train.start", "queue.cancel", "dataset.edit", "gallery.use"} <= set(
            rows)
        assert rows["app.help"][:2] == ["app", "?"]  # the key as typed, not "question_mark"
        assert rows["queue.cancel"][0] == "queue"  # grouped by pane
        headers = [str(c.label) for c in table.columns.values()]
        assert headers[-1] == "id (remap in ui.toml [keys])"  # not eaten as markup


async def test_keys_can_be_remapped_from_settings(studio: Workspace):
    settings = UISettings(images="halfcell", keys={"app.train": "f2"})
    app = LoraboothApp(studio.root, start_engine=False, settings=settings)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f2")
        await pilot.pause()
        assert app.query_one("#panes").active == "train"


async def test_theme_choice_is_remembered(studio: Workspace):
    app = LoraboothApp(studio.root, start_engine=False, poll=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("ctrl+t")
        await pilot.pause()
        chosen = app.theme
        # It says which theme is on now.
        assert any("theme: lorabooth-light" in n.message for n in app._notifications)
    assert UISettings.load().theme == chosen == "lorabooth-light"


async def test_moving_a_job_moves_the_cursor_with_it(studio: Workspace):
    """K twice takes the last of three queued jobs to the top: the cursor follows the job, so
    a job can travel more than one place (it stayed on the row before)."""
    from lorabooth.core.generate.request import Asked, build_request, request_to_params

    store = Store(studio.db_path)
    config = studio.config()
    ids = [store.add_job("generate", request_to_params(build_request(
        studio, config, Asked(f"prompt {n}"), training=False)), total=1) for n in range(3)]
    app = studio_app(studio, engine=False)
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await open_pane(pilot, "3", QueuePane)
        await wait_for(pilot, lambda: len(pane.jobs) == 3)
        table = pane.query_one("#jobs", DataTable)
        table.focus()
        table.move_cursor(row=2)
        await pilot.pause()
        for place in (1, 0):
            await pilot.press("K")
            await wait_for(pilot, lambda place=place: [j.id for j in pane.jobs].index(ids[2])
                           == place)
            assert pane.selected().id == ids[2]
        order = [j.id for j in store.jobs() if j.kind == "generate"]
        assert order.index(ids[2]) == 0


async def test_a_filter_with_no_match_says_so_not_that_the_folder_is_empty(studio: Workspace):
    app = studio_app(studio, engine=False)
    async with app.run_test(size=(100, 30)) as pilot:
        pane = await open_pane(pilot, "1", DatasetPane)
        await wait_for(pilot, lambda: pane.scan is not None and pane.rows)
        await pilot.press("f", "f")  # all -> ok -> warn: the sample photos are all ok
        await wait_for(pilot, lambda: pane.filter == "warn")
        preview = pane.query_one("#photo-preview", Preview)
        await wait_for(pilot, lambda: "no warn photos" in str(
            preview.query_one(Static).render()))


async def test_errors_are_toasted_once_not_at_every_opening(studio: Workspace):
    """Failures from before the app opened are said in one toast, and not again when it is
    opened again; a new failure is said on its own."""
    store = Store(studio.db_path)
    for n in range(3):
        store.event(f"job {n + 1} failed: the disk is full", level="error")
    store.event("engine started")

    def errors(app) -> list[str]:
        return [n.message for n in app._notifications if n.severity == "error"]

    app = studio_app(studio, engine=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: errors(app))
        assert errors(app) == ["3 errors; the latest: job 3 failed: the disk is full"]
        store.event("job 4 failed: [red]not markup[/]", level="error")
        await wait_for(pilot, lambda: len(errors(app)) == 2)
        assert errors(app)[-1] == "job 4 failed: [red]not markup[/]"
    again = studio_app(studio, engine=False)
    async with again.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: again.last_delta is not None)
        await pilot.pause(0.5)
        assert errors(again) == []


async def test_a_training_in_a_terminal_is_shown_in_the_train_pane(studio: Workspace):
    import subprocess
    import sys

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from lorabooth.core.train.claim import TrainingClaim\n"
        "from lorabooth.core.workspace import Workspace\n"
        "with TrainingClaim(Workspace.at(Path(sys.argv[1]))):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"), str(studio.root)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        app = studio_app(studio, engine=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("2")
            stats = app.query_one("#train-stats", Static)
            await wait_for(pilot, lambda: "outside the engine" in str(stats.render()))
            assert f"(pid {holder.pid}," in str(stats.render())
            holder.kill()
            holder.wait()
            await wait_for(pilot, lambda: "outside the engine" not in str(stats.render()))
    finally:
        holder.kill()
        holder.wait()


async def test_a_terminals_training_shows_its_curve_and_obeys_pause_and_stop(
        studio: Workspace):
    """`lorabooth train` in one terminal, the UI in another: the UI draws its loss curve live,
    `p` pauses it and `x` stops it with a checkpoint, and `s` would carry the run on."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "lorabooth.core.cli", "train",
                             str(studio.root)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        app = studio_app(studio, engine=False)
        async with app.run_test(size=(120, 40)) as pilot:
            pane = await open_pane(pilot, "2", TrainPane)
            stats = app.query_one("#train-stats", Static)
            await wait_for(pilot, lambda: "job 1 running in a terminal" in str(stats.render()),
                           timeout=90)
            await wait_for(pilot, lambda: len(pane.steps) >= 20)
            assert pane.steps[:3] == [1, 2, 3]
            await pilot.press("p")
            await wait_for(pilot, lambda: "job 1 paused in a terminal" in str(stats.render()))
            await pilot.press("x")
            await wait_for(pilot, lambda: proc.poll() is not None)
            await wait_for(pilot, lambda: "s carries it on to step 3000" in
                           str(stats.render()))
            assert "job 1 cancelled in a terminal" in str(stats.render())
            # With no engine running, the job is not one an engine left behind.
            said = [str(n.message) for n in app._notifications]
            assert not any("ended without a word" in m for m in said), said
        out = proc.stdout.read()
        assert proc.returncode == 0, out
        assert "paused from the UI" in out and "stopped at step" in out
    finally:
        proc.kill()
        proc.wait()


async def test_start_on_a_stopped_run_carries_it_on_to_its_own_count(studio: Workspace,
                                                                      monkeypatch):
    """A run started for 300 steps (the settings say 3000), stopped at 120: the pane says `s`
    carries it on, and `s` queues its resume to step 300, not a 3000-step one."""
    monkeypatch.setenv("LORABOOTH_NO_ENGINE", "1")  # the job is what is looked at
    store = Store(studio.db_path)
    stopped = store.add_job("train", {"resume": False, "run": "run-001", "steps": 300},
                            total=300)
    store.add_metric(stopped, 120, loss=0.3, lr=1e-4, seconds=0.1)
    store.update_job(stopped, state="cancelled", step=120)
    app = studio_app(studio, engine=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_pane(pilot, "2", TrainPane)
        stats = app.query_one("#train-stats", Static)
        await wait_for(pilot, lambda: "s carries it on to step 300" in str(stats.render()))
        assert "step 120/300" in str(stats.render())
        assert pane.query_one("#field-steps", Input).value == "3000"
        await pilot.press("s")
        await wait_for(pilot, lambda: len(store.jobs()) == 2)
        again = store.jobs()[-1]
        assert again.params == {"resume": True, "run": "run-001", "steps": 300}
        assert again.total == 300


async def test_a_job_its_engine_left_behind_reads_interrupted_and_is_told_once(
        studio: Workspace, monkeypatch):
    """An engine killed mid-run (kill -9, the out-of-memory killer) leaves its job marked
    running: the status bar must not say it runs, and a toast says what happened, once."""
    monkeypatch.setenv("LORABOOTH_NO_ENGINE", "1")
    store = Store(studio.db_path)
    job = store.add_job("train", {"run": "run-001", "steps": 300}, total=300)
    store.update_job(job, state="running", step=57)

    def told(app) -> list[str]:
        return [n.message for n in app._notifications if "without a word" in n.message]

    app = studio_app(studio, engine=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: told(app))
        bar = str(app.query_one("StatusBar").content)
        assert "job 1 train 57/300 interrupted" in bar and "engine stopped" in bar
        assert "running" not in bar
        await pilot.pause(1.0)  # several polls later: said once
        assert len(told(app)) == 1
        assert "Engine: restart" in told(app)[0] and "last checkpoint" in told(app)[0]


async def test_the_loras_box_takes_names_scales_and_none(studio: Workspace, monkeypatch):
    """The Queue pane's LoRAs box: `none` queues without a LoRA, `NAME:SCALE` names a file in
    .lorabooth/loras (a second LoRA, a checkpoint), and a name or scale typed wrong is said at
    once and queues nothing."""
    import torch
    from safetensors.torch import save_file

    monkeypatch.setenv("LORABOOTH_NO_ENGINE", "1")
    studio.loras.mkdir(parents=True, exist_ok=True)
    save_file({"transformer.x.lora_A.weight": torch.zeros(4, 8)},
              str(studio.loras / "style.safetensors"))
    store = Store(studio.db_path)
    app = studio_app(studio, engine=False)

    def errors() -> list[str]:
        return [n.message for n in app._notifications if n.severity == "error"]

    async with app.run_test(size=(120, 40)) as pilot:
        queue = await open_pane(pilot, "3", QueuePane)
        box, prompt = queue.query_one("#loras", Input), queue.query_one("#prompt", Input)
        for typed, said in (("step-75O", "a checkpoint is named step-N"),
                            ("missing.safetensors:0.5", "LoRA missing.safetensors not found"),
                            ("style.safetensors:9", "must be a number from -4 to 4"),
                            ("250", "the checkpoint of step 250 is step-250")):
            box.value, prompt.value = typed, "zorb on the moon"
            prompt.focus()
            await pilot.press("enter")
            await wait_for(pilot, lambda said=said: errors() and said in errors()[-1])
        assert store.jobs() == []
        for typed in ("none", "style.safetensors:0.5"):
            box.value, prompt.value = typed, "zorb on the moon"
            prompt.focus()
            await pilot.press("enter")
        await wait_for(pilot, lambda: len(store.jobs()) == 2)
        none, styled = (j.params["recipe"]["loras"] for j in store.jobs())
        assert none == []
        assert [(lora["name"], lora["scale"]) for lora in styled] == [("style.safetensors", 0.5)]


@pytest.mark.parametrize("wait", [0, 0.02, 0.05, 0.1])
async def test_quitting_while_the_panes_still_mount_is_no_error(studio: Workspace, wait: float):
    """`q` pressed the instant the app opens: the lazily mounted panes find their children
    already gone, and that must close quietly rather than end in a traceback."""
    app = studio_app(studio, engine=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(wait)
    assert app.return_code in (0, None)


async def test_training_figures_wrap_between_figures_at_80_columns(studio: Workspace):
    """At 80 columns the figures do not fit one line; none is cut in two ("ETA" at the end of
    one line and "1h23m" at the start of the next), and each still shows."""
    store = Store(studio.db_path)
    job = store.add_job("train", {"resume": False}, total=100_000)
    store.update_job(job, state="running", step=1234)
    for step in range(34, 1235, 50):
        store.add_metric(job, step, loss=0.3, lr=1e-4, seconds=0.512, memory_gb=21.37)
    app = studio_app(studio, engine=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_pane(pilot, "2", TrainPane)
        stats = app.query_one("#train-stats", Static)
        await wait_for(pilot, lambda: "GiB" in str(stats.render()))
        await pilot.pause(0.2)
        lines = str(stats.render()).splitlines()
        assert len(lines) > 1
        figures = [figure for line in lines for figure in line.split(" · ")]
        assert figures[:2] == [f"job {job} running", "step 1234/100000"]
        assert "0.512 s/step" in figures and "GPU 21.4 GiB" in figures
        assert any(re.fullmatch(r"ETA \d+h\d\dm", figure) for figure in figures), figures
        assert all(len(line) <= stats.content_size.width for line in lines)


async def test_the_train_pane_says_when_the_class_is_preserved(studio: Workspace):
    """train.preserve_class is set in the file; the pane says so, as text (the class is the
    user's words, never markup)."""
    from lorabooth.core.config import set_config_value

    app = studio_app(studio, engine=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_pane(pilot, "2", TrainPane)
        note = app.query_one("#train-config-note", Static)
        assert "preserves" not in str(note.render())
        set_config_value(studio.root, "train.preserve_class", "[bold]person[/bold]")
        app.query_one(TrainPane).load_settings()
        await pilot.pause()
        assert "optimizer adamw · preserves '[bold]person[/bold]'" in str(note.render())


async def test_a_long_history_lists_the_newest_and_a_running_job_changes_only_its_row(
        studio: Workspace, monkeypatch):
    """Months of prompts: the Queue lists every unfinished job, every training and the newest
    finished ones, and says how many more there are; the Gallery lists the newest outputs and
    says of how many. A running job's progress changes its own row, the cursor stays put."""
    from PIL import Image

    from lorabooth.tui.panes import gallery

    monkeypatch.setattr("lorabooth.tui.store_io.FINISHED_IN_VIEW", 5)
    monkeypatch.setattr(gallery, "LISTED", 4)
    store = Store(studio.db_path)
    trained = store.add_job("train", {"steps": 10}, total=10)
    store.update_job(trained, state="done", step=10)
    for n in range(8):
        done = store.add_job("generate", {"prompt": f"old {n}"}, total=1)
        store.update_job(done, state="done", step=1)
        image = studio.outputs / "images" / f"old-{n}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16), (n * 30, 0, 0)).save(image)
        store.add_output(done, image, "image", {"prompt": f"old {n}", "seed": 0})
    running = store.add_job("generate", {"prompt": "now"}, total=28)
    store.update_job(running, state="running", step=1)
    app = studio_app(studio, engine=False)
    async with app.run_test(size=(120, 30)) as pilot:
        pane = await open_pane(pilot, "3", QueuePane)
        await wait_for(pilot, lambda: len(pane.jobs) == 7)  # 5 newest finished, train, running
        assert trained in [j.id for j in pane.jobs]
        assert "3 older finished jobs not listed" in str(
            pane.query_one("#queue-state").render())
        table = pane.query_one("#jobs", DataTable)
        table.focus()
        table.move_cursor(row=[j.id for j in pane.jobs].index(running))
        await pilot.pause()
        store.update_job(running, step=9)
        row = table.cursor_row
        await wait_for(pilot, lambda: str(table.get_row_at(row)[2]) == "9/28")
        assert pane.selected().id == running and table.row_count == 7

        gallery_pane = await open_pane(pilot, "4", gallery.GalleryPane)
        outputs = gallery_pane.query_one("#outputs", DataTable)
        await wait_for(pilot, lambda: outputs.row_count == 4)
        assert [str(c.label) for c in outputs.columns.values()] == ["kind",
                                                                    "file · newest 4 of 8"]
        assert "old-7" in str(outputs.get_row_at(0)[1])  # newest first
