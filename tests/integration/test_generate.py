"""Generation and the prompt queue, on the demo model with a LoRA trained here."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import copy_sample_photos, make_demo_workspace, run_cli, wait_until

from lorabooth.core.engine import running_pid
from lorabooth.core.generate.recipe import LoraRef, Recipe, expand_matrix, read_recipe, slug
from lorabooth.core.generate.request import Request, request_to_params
from lorabooth.core.store import Store
from lorabooth.core.train.checkpoint import all_checkpoints
from lorabooth.core.train.trainer import Trainer
from lorabooth.core.workspace import Workspace

SMALL = ["--width", "64", "--height", "64", "--steps", "3"]




@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_model) -> Workspace:
    """A workspace with a LoRA trained for a few steps."""
    root = tmp_path_factory.mktemp("trained")
    ws = make_demo_workspace(root / "ws", copy_sample_photos(root / "photos"),
                             train_validate=True)  # its checkpoints' sheet labels say it
    Trainer(ws, device="cpu").run(steps=30)
    return ws


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def generate(ws: Workspace, *args: str) -> list[Path]:
    result = run_cli("generate", str(ws.root), *args, "--json")
    assert result.returncode == 0, result.stderr
    return [Path(p) for p in json.loads(result.stdout)]


def test_png_recipe_remakes_the_same_pixels(trained: Workspace):
    (first,) = generate(trained, "portrait of zorb", "--seed", "11", *SMALL)
    recipe = read_recipe(first)
    assert recipe.prompt == "portrait of zorb" and recipe.seed == 11
    assert recipe.loras[0].name == "workspace" and len(recipe.loras[0].sha256) == 64
    assert json.loads(first.with_suffix(".json").read_text())["seed"] == 11
    (again,) = generate(trained, "--from-image", str(first))
    assert again != first  # nothing is overwritten
    assert np.array_equal(pixels(first), pixels(again))


def test_lora_scale_zero_is_the_base_model(trained: Workspace):
    (base,) = generate(trained, "zorb in a park", "--no-lora", *SMALL)
    (zero,) = generate(trained, "zorb in a park", "--lora", "workspace:0", *SMALL)
    (one,) = generate(trained, "zorb in a park", "--lora", "workspace:1", *SMALL)
    assert np.array_equal(pixels(base), pixels(zero))
    assert not np.array_equal(pixels(base), pixels(one))


def test_a_lora_that_does_not_fit_is_refused_in_words_and_the_warm_pipeline_stays_as_it_was(
        trained: Workspace, tmp_path: Path):
    """A warm engine keeps rendering after a bad LoRA file: each is refused with a reason a
    person can act on, nothing of it stays in the model, and the next image is unchanged."""
    import torch
    from safetensors.torch import load_file, save_file

    from lorabooth.core.generate.generator import plan_for
    from lorabooth.core.generate.recipe import RecipeError
    from lorabooth.core.generate.request import complete_recipe
    from lorabooth.core.models.owner import ModelOwner
    from lorabooth.core.models.resolve import resolve_model

    good = load_file(trained.lora_path)
    forged = {
        "other-model": ({k: torch.zeros(v.shape[0] + 3, v.shape[1]) for k, v in good.items()},
                        "does not fit .* other sizes than this model's"),
        "diverged": ({k: torch.full_like(v, float("nan")) for k, v in good.items()},
                     "not numbers"),
        "half": ({k: v for k, v in good.items() if "lora_A" in k},
                 "incomplete or in a layout"),
        "elsewhere": ({"transformer.nowhere.lora_A.weight": torch.zeros(4, 8),
                       "transformer.nowhere.lora_B.weight": torch.zeros(8, 4)},
                      "none of its layers is in this model"),
        "too-strong": ({k: torch.full_like(v, 1e30) for k, v in good.items()},
                       "came out as NaN .* try a smaller scale"),
    }
    recipe = complete_recipe(trained, Recipe("zorb in a park", width=64, height=64, steps=2,
                                             loras=(LoraRef("workspace"),)))
    source = resolve_model(recipe.model)
    generator = ModelOwner().generator(source, plan_for(trained, source, [recipe]))
    before = np.asarray(generator.render(recipe))
    for name, (tensors, words) in forged.items():
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, path)
        bad = complete_recipe(trained, replace(recipe, loras=(LoraRef(str(path)),)))
        with pytest.raises(RecipeError, match=words):
            generator.render(bad)
    loaded = set(generator.pipe.transformer.peft_config)
    assert loaded == set(generator.adapters.values()) and len(loaded) == 2  # good, too-strong
    assert np.array_equal(np.asarray(generator.render(recipe)), before)


def test_checkpoint_loras_stack_and_sweep_with_a_contact_sheet(trained: Workspace):
    paths = generate(trained, "zorb {waving|sleeping}", "--lora", "step-25:0.5",
                     "--lora", "workspace:0.5", "--scales", "0,1", *SMALL)
    assert len(paths) == 4  # 2 prompts x 2 scales
    recipes = [read_recipe(p) for p in paths]
    assert [r.prompt for r in recipes] == ["zorb waving"] * 2 + ["zorb sleeping"] * 2
    assert [r.loras[0].scale for r in recipes] == [0.0, 1.0, 0.0, 1.0]
    assert all(r.loras[1].scale == 0.5 for r in recipes)
    sheets = list((trained.outputs / "images" / "sheets").glob("*.png"))
    assert sheets


def test_checkpoints_are_compared_side_by_side_in_one_labelled_row_each(trained: Workspace):
    """--checkpoints: the same prompt and seed with each checkpoint of the newest run, each
    image's recipe naming its checkpoint's file, and a sheet with a row per checkpoint (as the
    training samples' sheet has a row per step)."""
    from lorabooth.core.generate.images import LABEL_WIDTH, row_labels
    from lorabooth.core.train.checkpoint import recorded_validation, step_label

    checkpoints = all_checkpoints(trained.checkpoints)
    assert len(checkpoints) >= 2
    paths = generate(trained, "zorb on a boat", "--checkpoints", "--seed", "3", *SMALL)
    recipes = [read_recipe(p) for p in paths]
    assert [[(lora.name, lora.scale) for lora in r.loras] for r in recipes] == [
        [(c.label, 1.0)] for c in checkpoints]
    assert {r.seed for r in recipes} == {3} and {r.prompt for r in recipes} == {"zorb on a boat"}
    assert len({r.loras[0].sha256 for r in recipes}) == len(checkpoints)
    assert not np.array_equal(pixels(paths[0]), pixels(paths[-1]))
    (first,) = generate(trained, "zorb on a boat", "--seed", "3", "--lora",
                        f"{checkpoints[0].label}:1", *SMALL)
    assert np.array_equal(pixels(first), pixels(paths[0]))  # what --lora step-N makes
    sheet = trained.outputs / "images" / "sheets" / paths[0].name.replace("-00.png", "-sheet.png")
    with Image.open(sheet) as img:
        assert img.size == (LABEL_WIDTH + 256, 256 * len(checkpoints))
    # Each row says its checkpoint's validation loss under its name.
    assert row_labels(recipes) == [
        f"{step_label(c.path.name)}\nval {recorded_validation(c.path):.4f}" for c in checkpoints]
    result = run_cli("generate", str(trained.root), "zorb", "--checkpoints", "run-999")
    assert result.returncode == 2 and "no checkpoints in run-999" in result.stderr


def test_img2img_and_inpaint(trained: Workspace, tmp_path: Path):
    source = tmp_path / "source.png"
    Image.open(trained.root.parent / "photos" / "01_studio.jpg").resize((64, 64)).save(source)
    mask = tmp_path / "mask.png"
    mask_img = Image.new("L", (64, 64), 0)
    mask_img.paste(255, (16, 16, 48, 48))
    mask_img.save(mask)
    (varied,) = generate(trained, "zorb wearing a crown", "--init-image", str(source),
                         "--strength", "0.6", *SMALL)
    (painted,) = generate(trained, "zorb wearing a crown", "--init-image", str(source),
                          "--mask", str(mask), "--strength", "0.9", *SMALL)
    assert read_recipe(varied).init_image == str(source)
    assert read_recipe(painted).mask == str(mask)
    assert pixels(varied).shape == pixels(painted).shape == (64, 64, 3)


def test_the_step_cache_skips_work_keeps_the_picture_and_leaves_nothing_behind(
        trained: Workspace, tmp_path: Path):
    """First-block cache: a render with it runs the later blocks at fewer steps than it
    denoises, draws nearly the same picture, and leaves the transformer as it was (the same
    transformer trains between renders): the next uncached render is the very same pixels."""
    from lorabooth.core.generate.request import complete_recipe
    from lorabooth.core.models.owner import ModelOwner
    from lorabooth.core.models.resolve import resolve_model

    gen = ModelOwner().generator(resolve_model("demo"))
    transformer = gen.pipe.transformer
    computed = [0]  # the last block's attention runs only at the steps computed in full
    transformer.single_transformer_blocks[-1].attn.register_forward_hook(
        lambda *_: computed.__setitem__(0, computed[0] + 1))

    def render(cache: float, **more) -> tuple[np.ndarray, int]:
        computed[0] = 0
        recipe = complete_recipe(trained, Recipe(**{
            "prompt": "photo of zorb", "seed": 3, "width": 128, "height": 128, "steps": 20,
            "step_cache": cache, "loras": (LoraRef("workspace", 1.0),), **more}))
        return np.asarray(gen.render(recipe)).astype(np.float64), computed[0]

    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10(255**2 / max(((a - b) ** 2).mean(), 1e-12)))

    every, every_computed = render(0.0)
    cached, cached_computed = render(0.1)
    other_seed, _ = render(0.0, seed=4)
    assert every_computed == 20
    assert 2 <= cached_computed <= 16, cached_computed
    # The same picture (far nearer it than another seed's is), not a copy of it.
    assert psnr(cached, every) > max(25, psnr(other_seed, every) + 10)
    assert psnr(cached, every) < 60
    assert not transformer.is_cache_enabled
    again, _ = render(0.0)
    assert np.array_equal(again, every)
    # FLUX.1's img2img pipeline has no cache context of its own: it gets one.
    source = tmp_path / "source.png"
    Image.fromarray(every.astype(np.uint8)).save(source)
    _, img2img_every = render(0.0, init_image=str(source), strength=0.9)
    _, img2img_cached = render(0.2, init_image=str(source), strength=0.9)
    assert img2img_every == 18  # 0.9 of 20 steps denoised, each computed in full
    assert 2 <= img2img_cached < img2img_every, img2img_cached
    assert not transformer.is_cache_enabled


def test_the_step_cache_is_asked_on_the_command_line_or_in_the_config(trained: Workspace):
    from lorabooth.core.config import set_config_value

    (asked,) = generate(trained, "zorb at the beach", "--step-cache", "0.1", *SMALL)
    assert read_recipe(asked).step_cache == 0.1
    set_config_value(trained.root, "generate.step_cache", 0.08)
    try:
        (default,) = generate(trained, "zorb at the beach", *SMALL)
        assert read_recipe(default).step_cache == 0.08
    finally:
        set_config_value(trained.root, "generate.step_cache", 0.0)
    result = run_cli("generate", str(trained.root), "zorb", "--step-cache", "3")
    assert result.returncode == 2 and "--step-cache" in result.stderr


def test_bad_requests_read_well(trained: Workspace):
    result = run_cli("generate", str(trained.root), "zorb", "--width", "100")
    assert result.returncode == 2
    assert "width 100 must be a multiple of 16" in result.stderr
    result = run_cli("generate", str(trained.root), "zorb", "--lora", "nope.safetensors")
    assert result.returncode == 2 and "LoRA nope.safetensors not found" in result.stderr
    result = run_cli("generate", str(trained.root), "zorb", "--preset", "nope")
    assert result.returncode == 2 and "presets: portrait, poster, product" in result.stderr


def test_hostile_prompts_are_kept_as_typed_and_make_safe_names(trained: Workspace):
    prompt = 'say "hi"\n[bold]zorb[/bold] ../../etc/passwd \x1b[2J\x1b]0;pwn\x07 ünï'
    (path,) = generate(trained, prompt, *SMALL)
    assert path.parent == trained.outputs / "images"
    assert path.name.startswith("say-hi-bold-zorb-bold-etc-passwd")
    assert all(c.isalnum() or c in "-." for c in path.name)
    assert read_recipe(path).prompt == prompt
    assert slug("\x1b[2J") == "2j" and slug("../..") == "image"


def test_prompt_matrix_expands():
    assert expand_matrix("a {red|blue} hat, {day|night}") == [
        "a red hat, day", "a red hat, night", "a blue hat, day", "a blue hat, night"]
    request = Request(Recipe("x", seed=4, loras=(LoraRef("w", 1.0),)), count=2,
                      scales=(0.2, 0.8))
    assert [(r.seed, r.loras[0].scale) for r in request.expand()] == [
        (4, 0.2), (5, 0.2), (4, 0.8), (5, 0.8)]


def test_queue_runs_in_order_obeys_cancel_and_move_and_survives_restart(trained: Workspace,
                                                                        engines):
    engines.append(trained)
    store = Store(trained.db_path)
    store.set_setting("queue_paused", "1")  # fill the queue before the engine takes any
    ids = []
    for i in range(10):
        result = run_cli("queue", str(trained.root), "add", f"zorb number {i}", "--json",
                         *SMALL)
        assert result.returncode == 0, result.stderr
        ids.append(json.loads(result.stdout)["id"])
    compared = run_cli("queue", str(trained.root), "add", "zorb compared", "--checkpoints",
                       "--json", *SMALL)
    assert compared.returncode == 0, compared.stderr
    compare_id = json.loads(compared.stdout)["id"]
    assert run_cli("queue", str(trained.root), "cancel", str(ids[2])).returncode == 0
    assert run_cli("queue", str(trained.root), "move", str(ids[9]), "1").returncode == 0
    store.set_setting("queue_paused", "0")
    wait_until(lambda: store.job(ids[3]).state == "done", timeout=90)
    os.kill(running_pid(trained), signal.SIGKILL)  # a crash mid-queue
    wait_until(lambda: running_pid(trained) is None, timeout=10)
    assert run_cli("engine", str(trained.root), "start").returncode == 0
    wait_until(lambda: all(store.job(i).state in ("done", "cancelled") for i in ids),
               timeout=90)
    jobs = {j.id: j for j in store.jobs()}
    assert jobs[ids[2]].state == "cancelled"
    finished = sorted((i for i in ids if jobs[i].state == "done"),
                      key=lambda i: jobs[i].finished)
    assert finished == [ids[9], ids[0], ids[1], *ids[3:9]]
    # (The module's workspace also holds images that other tests made without the engine.)
    prompts = [o.recipe["prompt"] for o in store.outputs() if o.kind == "image" and o.job in ids]
    assert sorted(set(prompts)) == sorted(f"zorb number {i}" for i in range(10) if i != 2)
    # The engine renders a checkpoint comparison queued from the command line, too.
    wait_until(lambda: store.job(compare_id).state == "done", timeout=90)
    swept = [o.recipe["loras"][0]["name"] for o in store.outputs() if o.job == compare_id]
    assert swept == [c.label for c in all_checkpoints(trained.checkpoints)]


def test_prompt_during_training_runs_between_steps_and_leaves_the_loss_curve(
        engines, demo_workspace):
    quiet = demo_workspace("quiet", train_checkpoint_every=1000)
    expected = Trainer(quiet, device="cpu").run(steps=150).losses

    ws = demo_workspace("busy", train_checkpoint_every=1000)
    engines.append(ws)
    store = Store(ws.db_path)
    assert run_cli("train", str(ws.root), "--detach", "--steps", "150").returncode == 0
    wait_until(lambda: (store.job(1).step if store.job(1) else 0) >= 10)
    # With the step cache: its hooks on the training transformer are gone before the next step.
    request = Request(Recipe("zorb mid-training", seed=3, width=64, height=64, steps=6,
                             loras=(LoraRef("workspace", 1.0),), step_cache=0.5))
    gen = store.add_job("generate", request_to_params(request))
    wait_until(lambda: store.job(gen).state == "done", timeout=90)
    training = store.job(1)
    result = store.job(gen).result
    assert 10 <= result["training_step"] < 150
    assert training.state in ("running", "done")
    wait_until(lambda: store.job(1).state == "done", timeout=90)
    losses = [row.loss for row in store.metrics(1)]
    assert np.allclose(losses, expected, rtol=1e-5, atol=1e-7)
    image = Path(result["images"][0])
    assert read_recipe(image).training_step == result["training_step"]
    assert read_recipe(image).step_cache == 0.5


def test_schnell_gets_its_own_defaults():
    from lorabooth.core.models.registry import generation_defaults

    assert generation_defaults("black-forest-labs/FLUX.1-schnell", 28, 3.5) == (4, 0.0)
    assert generation_defaults("flux-schnell", 8, 3.5) == (8, 3.5)  # the user's choice stands
    assert generation_defaults("black-forest-labs/FLUX.1-dev", 28, 3.5) == (28, 3.5)


def test_gpu_line_without_and_with_a_gpu():
    from lorabooth.tui.gpu import gpu_line

    line = gpu_line()
    if not Path("/dev/nvidia0").exists():
        assert line is None  # the header falls back to the engine's device
    else:
        assert line is None or "GiB" in line


async def test_images_made_without_the_engine_are_in_the_gallery(trained: Workspace):
    """`lorabooth generate` with no engine running renders in its own process; the UI opened
    afterwards lists those images in the Gallery, newest first, as it lists the engine's."""
    from support import wait_for
    from textual.widgets import DataTable

    from lorabooth.tui.app import LoraboothApp
    from lorabooth.tui.panes.gallery import GalleryPane
    from lorabooth.tui.settings import UISettings

    made = generate(trained, "zorb at the gallery", "--count", "2", *SMALL)
    app = LoraboothApp(trained.root, start_engine=False, settings=UISettings(images="halfcell"))
    async with app.run_test(size=(160, 30)) as pilot:  # wide enough for whole names
        await pilot.press("4")
        await wait_for(pilot, lambda: app.query(GalleryPane)
                       and len(app.query_one(GalleryPane).items) >= 2)
        table = app.query_one("#outputs", DataTable)
        names = [str(table.get_row_at(i)[1]) for i in range(table.row_count)]
        assert names[:2] == [made[1].stem, made[0].stem]
