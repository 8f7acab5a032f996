"""The focus rules a keyboard user relies on: a pane's list has focus when it opens, `esc`
leaves every input for its pane's list, text typed into an input is text (never a command),
and a settings save that fails writes nothing and marks the fields at fault."""

from __future__ import annotations

from support import wait_for
from textual import events
from textual.widgets import DataTable, Input, TextArea

from lorabooth.core.store import Store
from lorabooth.core.workspace import Workspace
from lorabooth.tui.app import LoraboothApp
from lorabooth.tui.panes.queue import QueuePane
from lorabooth.tui.panes.train import TrainPane
from lorabooth.tui.settings import UISettings


def app_for(ws: Workspace) -> LoraboothApp:
    return LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))


async def open_pane(pilot, key: str, pane: type):
    await pilot.press(key)
    await wait_for(pilot, lambda: pilot.app.query(pane))
    found = pilot.app.query_one(pane)
    await wait_for(pilot, lambda: isinstance(pilot.app.focused, DataTable)
                   and found in pilot.app.focused.ancestors)
    return found


async def test_esc_leaves_every_input_for_its_pane_list(demo_workspace):
    ws = demo_workspace()
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        # Dataset: the caption editor.
        await wait_for(pilot, lambda: app.query_one("#photos", DataTable).row_count == 16)
        assert app.focused is app.query_one("#photos")  # the list has focus at launch
        await pilot.press("e")
        assert isinstance(app.focused, TextArea)
        await pilot.press("escape")
        assert app.focused is app.query_one("#photos")
        # Train: every settings field.
        train = await open_pane(pilot, "2", TrainPane)
        for field in train.query(Input):
            field.focus()
            await pilot.pause()
            await pilot.press("escape")
            assert app.focused is train.query_one("#checkpoints"), field.id
        # Queue: the prompt and the LoRAs box.
        queue = await open_pane(pilot, "3", QueuePane)
        for field in ("#prompt", "#loras"):
            queue.query_one(field).focus()
            await pilot.pause()
            await pilot.press("escape")
            assert app.focused is queue.query_one("#jobs"), field
        assert queue.query_one("#loras").border_title == "LoRAs"  # it says what it is


async def test_keys_typed_into_an_input_are_text_not_commands(demo_workspace):
    ws = demo_workspace()
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        train = await open_pane(pilot, "2", TrainPane)
        await pilot.press("e")  # into the steps field
        steps = train.query_one("#field-steps", Input)
        assert app.focused is steps
        steps.value = ""
        await pilot.press("4", "0", "0", "1", "s", "x", "p", "q", "space")
        assert steps.value == "4001sxpq "
        assert app.query_one("#panes").active == "train" and app.is_running
        await pilot.pause(0.3)
        assert Store(ws.db_path).jobs() == []  # `s` started nothing
        await pilot.press("escape", "1")  # out of the field, the digit switches pane again
        assert app.query_one("#panes").active == "dataset"


async def test_a_failed_settings_save_writes_nothing_and_marks_the_fields(demo_workspace):
    ws = demo_workspace()
    config_file = ws.root / "lorabooth.toml"
    before = config_file.read_bytes()
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        train = await open_pane(pilot, "2", TrainPane)
        train.query_one("#field-rank", Input).value = "140"
        train.query_one("#field-lr", Input).value = "x"
        train.query_one("#field-steps", Input).value = "many"
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        app.writer.wait_idle()
        assert config_file.read_bytes() == before  # not even the valid rank
        marked = {f.id for f in train.query(Input) if f.has_class("-invalid")}
        assert marked == {"field-lr", "field-steps"}
        assert any("lr: 'x'" in n.message and "steps: 'many'" in n.message
                   for n in app._notifications)
        # Fixed, the same save goes through and the marks go away.
        train.query_one("#field-lr", Input).value = "2e-4"
        train.query_one("#field-steps", Input).value = "300"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: config_file.read_bytes() != before)
        assert not any(f.has_class("-invalid") for f in train.query(Input))
        # The fields read back what the file now holds.
        await wait_for(pilot, lambda: train.query_one("#field-lr", Input).value == "0.0002")
        text = config_file.read_text()
        assert "rank = 140" in text and "steps = 300" in text


async def test_g_and_G_jump_to_the_first_and_last_job(demo_workspace):
    from lorabooth.core.generate.request import Asked, build_request, request_to_params

    ws = demo_workspace()
    store = Store(ws.db_path)
    config = ws.config()
    for n in range(5):
        store.add_job("generate", request_to_params(build_request(
            ws, config, Asked(f"prompt {n}"), training=False)), total=1)
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        queue = await open_pane(pilot, "3", QueuePane)
        await wait_for(pilot, lambda: len(queue.jobs) == 5)
        table = queue.query_one("#jobs", DataTable)
        await pilot.press("G")
        assert table.cursor_row == 4
        await pilot.press("g")
        assert table.cursor_row == 0



async def test_a_klein_workspace_queues_an_edit_with_reference_images(demo_workspace, engines):
    """The Queue pane of a FLUX.2 [klein] workspace shows a references box (hidden on FLUX.1);
    a photo's bare name there is found among the photos and recorded in the queued recipe."""
    flux1 = app_for(demo_workspace("one"))
    async with flux1.run_test(size=(100, 30)) as pilot:
        queue = await open_pane(pilot, "3", QueuePane)
        assert not queue.query_one("#refs").display
    ws = demo_workspace("klein", model="demo-klein")
    engines.append(ws)  # the queued job starts the engine; it must not outlive the test
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        queue = await open_pane(pilot, "3", QueuePane)
        refs = queue.query_one("#refs", Input)
        assert refs.display and refs.border_title == "references"
        refs.focus()
        await pilot.press(*"01_studio.jpg")
        await pilot.press("escape")  # leaves for the list, as every input does
        assert app.focused is queue.query_one("#jobs")
        await pilot.press("i", *"zorb in a jacket", "enter")
        store = Store(ws.db_path)
        await wait_for(pilot, lambda: store.jobs())
        recipe = store.jobs()[0].params["recipe"]
        photos = ws.config(check_photos=False).photos_dir(ws.root)
        assert recipe["prompt"] == "zorb in a jacket"
        assert recipe["refs"] == [str(photos / "01_studio.jpg")]


async def test_the_queue_starts_from_an_image_typed_with_its_strength(demo_workspace, engines):
    """The start-image box: a photo's name and a strength queue an image-to-image render; a
    missing file is said in the notice and nothing is queued."""
    ws = demo_workspace()
    engines.append(ws)  # the queued job starts the engine; it must not outlive the test
    app = app_for(ws)
    store = Store(ws.db_path)
    async with app.run_test(size=(120, 30)) as pilot:
        queue = await open_pane(pilot, "3", QueuePane)
        start = queue.query_one("#start", Input)
        assert start.display and start.border_title == "start image"
        start.focus()
        await pilot.press(*"nope.jpg")
        await pilot.press("escape", "i", *"zorb at sea", "enter")
        await pilot.pause(0.2)
        assert not store.jobs()
        assert queue.query_one("#prompt", Input).value == "zorb at sea"  # kept to fix
        start.focus()
        await pilot.press(*(["backspace"] * len("nope.jpg")), *"01_studio.jpg 0.6")
        await pilot.press("escape", "i", "enter")
        await wait_for(pilot, lambda: store.jobs())
        recipe = store.jobs()[0].params["recipe"]
        photos = ws.config(check_photos=False).photos_dir(ws.root)
        assert recipe["prompt"] == "zorb at sea"
        assert (recipe["init_image"], recipe["strength"]) == (str(photos / "01_studio.jpg"), 0.6)


async def test_a_mask_box_appears_with_a_start_image_and_queues_an_inpaint(demo_workspace,
                                                                           engines, tmp_path):
    """Inpainting from the keyboard: the mask box shows once a start image is typed (it means
    nothing without one), a mask that is not there is said and nothing is queued, and the
    queued recipe carries both files."""
    from PIL import Image

    ws = demo_workspace()
    engines.append(ws)
    mask = ws.root / "hole.png"
    Image.new("L", (64, 64), 255).save(mask)
    app = app_for(ws)
    store = Store(ws.db_path)
    async with app.run_test(size=(120, 30)) as pilot:
        queue = await open_pane(pilot, "3", QueuePane)
        start, hole = queue.query_one("#start", Input), queue.query_one("#mask", Input)
        assert not hole.display
        start.focus()
        await pilot.press(*"01_studio.jpg")
        await wait_for(pilot, lambda: hole.display)
        hole.focus()
        await pilot.press(*"gone.png", "escape", "i", *"zorb, repainted", "enter")
        await wait_for(pilot, lambda: any("gone.png" in n.message for n in app._notifications))
        assert not store.jobs()
        hole.focus()
        await pilot.press(*(["backspace"] * len("gone.png")), *"hole.png")
        await pilot.press("escape", "i", "enter")
        await wait_for(pilot, lambda: store.jobs())
        recipe = store.jobs()[0].params["recipe"]
        assert recipe["mask"] == str(mask) and recipe["init_image"].endswith("01_studio.jpg")
        start.focus()  # the start image cleared: the mask box goes, and is not used
        await pilot.press(*(["backspace"] * len("01_studio.jpg")))
        await wait_for(pilot, lambda: not hole.display)


async def test_keys_typed_while_a_pane_opens_never_reach_the_pane_left(demo_workspace):
    """`2` then `s` typed at once from the Dataset: the photo list left behind kept the focus
    until the Train pane's list took it after a refresh, so `s` ran the Dataset's "Start
    from" (the Queue opened with a photo in it) instead of Train's "Start"."""
    ws = demo_workspace()
    app = app_for(ws)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.query_one("#photos", DataTable).row_count == 16)
        # Both keys in the queue at once, as a fast typist's (or a slow link's) arrive.
        app.post_message(events.Key("2", "2"))
        app.post_message(events.Key("s", "s"))
        await wait_for(pilot, lambda: app.query(TrainPane))
        await pilot.pause(0.3)
        assert app.query_one("#panes").active == "train"
        assert not app.query(QueuePane) or not app.query_one("#start", Input).value
        # The `s` was Train's: a training run is queued.
        await wait_for(pilot, lambda: [j.kind for j in Store(ws.db_path).jobs()] == ["train"])
