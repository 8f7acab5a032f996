"""The image viewer: Enter on a Gallery item opens it full-screen with its recipe; keys step
through the set, reuse the prompt, queue a re-make or variations, and give the file's path."""

from __future__ import annotations

import json

from PIL import Image
from support import wait_for
from textual.widgets import DataTable, Input

from lorabooth.core.generate.request import Asked, build_request
from lorabooth.core.store import Store
from lorabooth.core.workspace import Workspace
from lorabooth.tui.app import LoraboothApp
from lorabooth.tui.panes.gallery import GalleryPane
from lorabooth.tui.settings import UISettings
from lorabooth.tui.viewer import ViewerScreen
from lorabooth.tui.widgets.halfcell import HalfcellImage


def seed_outputs(ws: Workspace) -> list[dict]:
    """Two generated images (with their recipes) and one training sample in the store."""
    store = Store(ws.db_path)
    config = ws.config()
    folder = ws.outputs / "images"
    folder.mkdir(parents=True, exist_ok=True)
    recipes = []
    for n, colour in enumerate(((200, 30, 30), (30, 30, 200))):
        asked = Asked(f"zorb number {n}", seed=40 + n, step_cache=0.1 if n else None)
        recipe = build_request(ws, config, asked, training=False).recipe
        data = json.loads(recipe.to_json())
        path = folder / f"image-{n}.png"
        Image.new("RGB", (64, 64), colour).save(path)
        store.add_output(None, path, "image", data)
        recipes.append(data)
    sample = ws.outputs / "samples" / "step-000100" / "prompt-00.png"
    sample.parent.mkdir(parents=True)
    Image.new("RGB", (64, 64), (30, 200, 30)).save(sample)
    store.add_output(None, sample, "sample", {"step": 100, "prompt": "a photo of zorb",
                                               "seed": 7})
    return recipes


async def open_viewer(pilot) -> ViewerScreen:
    app = pilot.app
    await pilot.press("4")
    await wait_for(pilot, lambda: app.query(GalleryPane)
                   and app.query_one(GalleryPane).items)
    await wait_for(pilot, lambda: isinstance(app.focused, DataTable))
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, ViewerScreen))
    await pilot.pause(0.2)
    return app.screen


async def test_enter_opens_the_image_large_with_its_recipe_and_keys_step_through(
        demo_workspace):
    ws = demo_workspace()
    seed_outputs(ws)
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(80, 24)) as pilot:
        viewer = await open_viewer(pilot)
        # Newest first: the sample, then image 1, then image 0.
        title = str(viewer.query_one("#viewer-title").render())
        assert title.startswith("1/3 · sample")
        image = viewer.query_one(HalfcellImage)
        assert image.size.height >= 15  # most of the 24 rows, not a thumbnail
        await pilot.press("n")
        assert str(viewer.query_one("#viewer-title").render()).startswith("2/3 · image")
        recipe = str(viewer.query_one("#viewer-recipe").render())
        assert "prompt: zorb number 1" in recipe and "seed: 41" in recipe
        assert "step_cache: 0.1" in recipe
        await pilot.press("n")  # image 0 computed every step: nothing to say about a cache
        recipe = str(viewer.query_one("#viewer-recipe").render())
        assert "prompt: zorb number 0" in recipe and "step_cache" not in recipe
        await pilot.press("p")
        await pilot.press("o")
        assert any("image-1.png" in n.message for n in app._notifications)
        await pilot.press("p", "p")  # wraps around
        assert str(viewer.query_one("#viewer-title").render()).startswith("3/3")
        await pilot.press("escape")
        assert not isinstance(app.screen, ViewerScreen)


async def test_remake_and_variations_queue_jobs_from_the_recorded_recipe(demo_workspace,
                                                                         engines):
    ws = demo_workspace()
    engines.append(ws)  # a queued job starts the engine; it must not outlive the test
    recipes = seed_outputs(ws)
    store = Store(ws.db_path)
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(100, 30)) as pilot:
        viewer = await open_viewer(pilot)
        await pilot.press("n", "m", "v")  # image 1: make it again, then 4 variations
        app.writer.wait_idle()
        await wait_for(pilot, lambda: len(store.jobs()) == 2)
        remade, varied = store.jobs()
        assert remade.params["recipe"] == recipes[1]  # the same image, same seed
        assert varied.params["count"] == 4 and varied.params["recipe"]["seed"] == 42
        assert varied.params["recipe"]["prompt"] == recipes[1]["prompt"]
        await pilot.press("n", "n")  # the sample: its prompt and seed were recorded
        await pilot.press("m")
        await wait_for(pilot, lambda: len(store.jobs()) == 3)
        sample_job = store.jobs()[-1]
        assert sample_job.params["recipe"]["seed"] == 7
        assert "zorb" in sample_job.params["recipe"]["prompt"]
        # y: the prompt goes to the Queue's box, ready to edit.
        await pilot.press("y")
        await wait_for(pilot, lambda: not isinstance(app.screen, ViewerScreen))
        await wait_for(pilot, lambda: app.query("#prompt")
                       and app.query_one("#prompt", Input).value == "a photo of zorb")
        assert viewer is not app.screen


async def test_s_starts_the_next_images_from_the_one_shown(demo_workspace, engines):
    """`s` in the viewer or the Gallery: the image goes to the Queue's start-image box and its
    prompt to the prompt box; Enter queues an image-to-image render of it."""
    ws = demo_workspace()
    engines.append(ws)  # a queued job starts the engine; it must not outlive the test
    seed_outputs(ws)
    store = Store(ws.db_path)
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(120, 30)) as pilot:
        await open_viewer(pilot)  # the newest first: the sample
        await pilot.press("s")
        await wait_for(pilot, lambda: not isinstance(app.screen, ViewerScreen))
        start = app.query_one("#start", Input)
        sample = ws.outputs / "samples" / "step-000100" / "prompt-00.png"
        await wait_for(pilot, lambda: start.value == str(sample))
        assert app.query_one("#prompt", Input).value == "a photo of zorb"
        await pilot.press("escape", "4")  # leave the prompt box, then the Gallery
        await wait_for(pilot, lambda: isinstance(app.focused, DataTable))
        await pilot.press("j", "s")  # the Gallery's second row: an image
        image = ws.outputs / "images" / "image-1.png"
        await wait_for(pilot, lambda: start.value == str(image))
        assert app.query_one("#prompt", Input).value == "zorb number 1"
        await pilot.press("enter")
        await wait_for(pilot, lambda: store.jobs())
        recipe = store.jobs()[0].params["recipe"]
        assert (recipe["init_image"], recipe["prompt"]) == (str(image), "zorb number 1")


async def test_keys_typed_right_after_y_never_run_commands_and_typing_extends_the_prompt(
        demo_workspace):
    """`y` then keys at once (a fast typist, a paste, a slow link delivering keys together):
    the keys reached the Gallery's list, whose `s` replaced the prompt with the list's own
    image, because the Queue's box took the focus only after a round of messages. Textual has
    already routed keys typed ahead to the old focus, so they may be dropped, but they run
    nothing. Then typing extends the prompt: the box no longer selects all of it on focus
    (the first key replaced the whole prompt)."""
    from textual import events

    ws = demo_workspace()
    recipes = seed_outputs(ws)
    store = Store(ws.db_path)
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(100, 30)) as pilot:
        await open_viewer(pilot)
        await pilot.press("n")  # image 1: "zorb number 1"
        for key in ("y", "m", "v", "s"):
            app.post_message(events.Key(key, key))
        await wait_for(pilot, lambda: not isinstance(app.screen, ViewerScreen))
        await pilot.pause(0.3)
        box = app.query_one("#prompt", Input)
        assert box.value.startswith(recipes[1]["prompt"]) and app.focused is box
        assert not app.query_one("#start", Input).value and store.jobs() == []
        box.value = recipes[1]["prompt"]
        await pilot.press("space", "i", "n")
        assert box.value == recipes[1]["prompt"] + " in"
        # The same from the Gallery's list, whose first row (the sample) `s` would start from.
        await pilot.press("escape")
        await pilot.press("4")
        await wait_for(pilot, lambda: isinstance(app.focused, DataTable)
                       and app.query_one(GalleryPane) in app.focused.ancestors)
        app.query_one(GalleryPane).query_one(DataTable).move_cursor(row=1)
        await pilot.pause(0.1)
        for key in ("y", "s", "x"):
            app.post_message(events.Key(key, key))
        await pilot.pause(0.3)
        assert app.focused is box and box.value.startswith(recipes[1]["prompt"]), box.value
        assert not app.query_one("#start", Input).value and store.jobs() == []


async def test_images_of_one_long_prompt_are_told_apart_in_a_narrow_gallery(demo_workspace):
    """At 80 columns the list's file column has ~20 cells: names cut at their end read the
    same for every image of one long prompt. Their middle gives way, so the seed, job and
    number stay; a wider window shows them whole, with no sideways scrolling."""
    ws = demo_workspace()
    store, config = Store(ws.db_path), ws.config()
    folder = ws.outputs / "images"
    folder.mkdir(parents=True, exist_ok=True)
    prompt = "zorb riding a bicycle along the beach at sunset"
    stems = []
    for seed in (1, 2):
        recipe = build_request(ws, config, Asked(prompt, seed=seed), training=False).recipe
        stems.append(f"zorb-riding-a-bicycle-along-the-beach-at-sunset-s{seed}-j7-00")
        path = folder / f"{stems[-1]}.png"
        Image.new("RGB", (64, 64)).save(path)
        store.add_output(None, path, "image", json.loads(recipe.to_json()))
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await wait_for(pilot, lambda: app.query(GalleryPane)
                       and len(app.query_one(GalleryPane).items) == 2)
        table = app.query_one(GalleryPane).query_one(DataTable)

        def shown() -> list[str]:
            return [str(table.get_row_at(row)[1]) for row in range(table.row_count)]

        await wait_for(pilot, lambda: "…" in shown()[0])
        assert [name[-8:] for name in shown()] == ["s2-j7-00", "s1-j7-00"]  # newest first
        assert table.virtual_size.width <= table.size.width  # nothing off to the side
        await pilot.resize_terminal(200, 30)
        await wait_for(pilot, lambda: shown() == stems[::-1])
        assert table.virtual_size.width <= table.size.width


async def test_gallery_names_of_samples_keep_their_step_at_80_columns(demo_workspace):
    """Samples of steps 750, 1000, 2000 and 3000 read "step-0…000/prompt-00" alike at 80
    columns (the step folder's zero padding filled the name's middle, which is cut); the
    list names each by its step."""
    ws = demo_workspace()
    store = Store(ws.db_path)
    for step in (750, 1000, 2000, 3000):
        sample = ws.outputs / "samples" / f"step-{step:06d}" / "prompt-00.png"
        sample.parent.mkdir(parents=True)
        Image.new("RGB", (64, 64), (30, 200, 30)).save(sample)
        store.add_output(None, sample, "sample", {"step": step, "prompt": "zorb", "seed": 7})
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await wait_for(pilot, lambda: app.query(GalleryPane)
                       and len(app.query_one(GalleryPane).items) == 4)
        await pilot.pause(0.3)
        table = app.query_one("#outputs", DataTable)
        names = [str(table.get_row_at(row)[1]) for row in range(table.row_count)]
        for step in (750, 1000, 2000, 3000):
            assert any(f"step-{step}/" in name for name in names), names


async def test_y_brings_an_images_loras_into_the_queue_and_a_samples_leaves_them(
        demo_workspace):
    """An image made with a checkpoint and a second LoRA: `y` in the viewer puts its prompt in
    the Queue and its LoRAs in the LoRAs box, as that box takes them, so the next prompt is
    made the same way. A training sample's LoRA was the run's at its step: the box is left."""
    from lorabooth.core.generate.recipe import LoraRef

    ws = demo_workspace()
    store = Store(ws.db_path)
    path = ws.outputs / "images" / "styled.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (200, 30, 30)).save(path)
    asked = Asked("zorb styled", seed=3, loras=(LoraRef("step-750", 0.8),
                                                LoraRef("style.safetensors", 0.5)))
    recipe = json.loads(build_request(ws, ws.config(), asked, training=False).recipe.to_json())
    store.add_output(None, path, "image", recipe)
    app = LoraboothApp(ws.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(100, 30)) as pilot:
        await open_viewer(pilot)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.query_one("#prompt", Input).value == "zorb styled")
        box = app.query_one("#loras", Input)
        assert box.value == "step-750:0.8 style.safetensors:0.5"
        box.value = "0.3"
        sample = ws.outputs / "samples" / "step-000100" / "prompt-00.png"
        sample.parent.mkdir(parents=True)
        Image.new("RGB", (64, 64), (30, 200, 30)).save(sample)
        store.add_output(None, sample, "sample", {"step": 100, "prompt": "a photo of zorb",
                                                   "loras": [{"name": "workspace",
                                                              "scale": 1.0}]})
        await pilot.press("escape", "4")
        gallery = app.query_one(GalleryPane)
        await wait_for(pilot, lambda: len(gallery.items) == 2)
        table = gallery.query_one(DataTable)
        table.focus()
        row = next(i for i, item in enumerate(gallery.items) if item.kind == "sample")
        table.move_cursor(row=row)
        await pilot.pause(0.1)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.query_one("#prompt", Input).value == "a photo of zorb")
        assert box.value == "0.3"
