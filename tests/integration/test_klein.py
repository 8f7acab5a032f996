"""FLUX.2 [klein] end to end on the tiny `demo-klein` model (the real Flux2Transformer2DModel,
AutoencoderKLFlux2, Qwen3 and Flux2KleinPipeline, tiny weights): a LoRA that learns the photos,
files diffusers' Flux2KleinPipeline loads, generation through lorabooth with and without it,
a prompt rendered between two steps, and a stopped run that resumes to the same weights."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lorabooth.core.generate.recipe import LoraRef, Recipe
from lorabooth.core.models.resolve import resolve_model
from lorabooth.core.train.trainer import Trainer


@pytest.fixture
def klein_workspace(demo_workspace):
    def make(name: str = "ws", **settings):
        settings = {"model": "demo-klein", "train_resolution": [128], **settings}
        return demo_workspace(name, **settings)
    return make


def fixed_noise_loss(trainer: Trainer) -> float:
    """The loss over every photo at the same noise and levels, before and after: the model
    predicting these photos better, not a lucky draw."""
    trainer.generator.manual_seed(1234)
    with torch.no_grad():
        losses = [float(trainer.loss_on([i])) for i in range(len(trainer.examples))
                  for _ in range(4)]
    return sum(losses) / len(losses)


def test_a_klein_lora_learns_the_photos(klein_workspace):
    ws = klein_workspace(train_checkpoint_every=1000)
    trainer = Trainer(ws, device="cpu")
    trainer.prepare()
    before = fixed_noise_loss(trainer)
    result = trainer.run(steps=300)
    after = fixed_noise_loss(trainer)
    assert after < 0.85 * before, (before, after)
    assert np.mean(result.losses[-30:]) < np.mean(result.losses[:30])
    assert trainer.family.name == "flux2"
    trainer.release()


def render(pipe, **extra) -> np.ndarray:
    image = pipe(prompt="zorb at the beach", height=64, width=64, num_inference_steps=3,
                 max_sequence_length=32, generator=torch.Generator().manual_seed(7),
                 **extra).images[0]
    return np.asarray(image).astype(np.int16)


def test_the_klein_lora_loads_in_a_fresh_flux2_klein_pipeline(klein_workspace):
    from diffusers import Flux2KleinPipeline

    ws = klein_workspace(train_rank=4, train_alpha=8.0, train_checkpoint_every=1000)
    path = Trainer(ws, device="cpu").run(steps=30).lora_path
    keys = list(load_file(path))
    assert keys and all(k.startswith("transformer.") for k in keys)
    assert any("single_transformer_blocks.0.attn.to_qkv_mlp_proj.lora_A" in k for k in keys)

    pipe = Flux2KleinPipeline.from_pretrained(resolve_model("demo-klein").path)
    pipe.set_progress_bar_config(disable=True)
    base = render(pipe)
    pipe.load_lora_weights(path, adapter_name="mine")
    config = pipe.transformer.peft_config["mine"]
    assert (config.r, config.lora_alpha) == (4, 8)
    with_lora = render(pipe)
    pipe.set_adapters(["mine"], [0.0])
    assert not np.array_equal(base, with_lora)
    assert np.array_equal(base, render(pipe))


def test_lorabooth_generates_with_klein_and_its_lora(klein_workspace, photos):
    ws = klein_workspace(train_checkpoint_every=1000)
    trainer = Trainer(ws, device="cpu")
    trainer.run(steps=30)
    trainer.release()
    generator = trainer.owner.generator(trainer.source)
    sha = hashlib.sha256(ws.lora_path.read_bytes()).hexdigest()

    def make(scale: float | None) -> np.ndarray:
        loras = () if scale is None else (LoraRef("workspace", scale, str(ws.lora_path), sha),)
        recipe = Recipe("zorb at the beach", seed=3, width=64, height=64, steps=3,
                        guidance=4.0, model="demo-klein", loras=loras)
        return np.asarray(generator.render(recipe)).astype(np.int16)

    base, full, zero = make(None), make(1.0), make(0.0)
    assert base.shape == (64, 64, 3) and base.std() > 0
    assert np.abs(full - base).mean() > 0.5  # the LoRA shows
    assert np.array_equal(zero, base)


def test_the_step_cache_is_refused_on_klein_in_words_and_its_default_skipped(klein_workspace):
    """diffusers' first-block cache breaks on FLUX.2's blocks: asked for, it is a clear error
    (never a TypeError from inside diffusers); set in the config, klein renders every step."""
    from lorabooth.core.config import set_config_value
    from lorabooth.core.generate.recipe import RecipeError
    from lorabooth.core.generate.request import Asked, build_request
    from lorabooth.core.models.owner import ModelOwner

    ws = klein_workspace()
    set_config_value(ws.root, "generate.step_cache", 0.1)
    config = ws.config()
    assert build_request(ws, config, Asked("zorb"), training=False).recipe.step_cache == 0.0
    with pytest.raises(RecipeError, match=r"FLUX\.1 models only"):
        build_request(ws, config, Asked("zorb", step_cache=0.2), training=False)
    generator = ModelOwner().generator(resolve_model("demo-klein"))
    with pytest.raises(RecipeError, match=r"FLUX\.1 models only"):  # a forged or remade recipe
        generator.render(Recipe("zorb", width=64, height=64, steps=3, step_cache=0.2))
    assert not generator.pipe.transformer.is_cache_enabled


def test_klein_img2img_starts_from_the_image(klein_workspace, photos, tmp_path):
    """klein has no img2img pipeline; a white-mask inpaint does it. At a low strength the start
    image shapes the picture (two start images give two pictures at the same seed); at full
    strength it is all noise and the start image hardly matters."""
    ws = klein_workspace()
    generator = Trainer(ws, device="cpu").owner.generator(resolve_model("demo-klein"))
    jpgs = sorted(photos.glob("*.jpg"))

    def make(strength: float, start: int) -> np.ndarray:
        recipe = Recipe("zorb", seed=1, width=64, height=64, steps=10, guidance=4.0,
                        init_image=str(jpgs[start]), strength=strength)
        image = np.asarray(generator.render(recipe)).astype(np.int16)
        assert image.shape == (64, 64, 3)  # the recipe's size, not the photo's
        return image

    low = np.abs(make(0.2, 0) - make(0.2, 5)).mean()
    full = np.abs(make(1.0, 0) - make(1.0, 5)).mean()
    assert low > 2 and low > 10 * full, (low, full)
    mask = tmp_path / "mask.png"
    right_half = np.where(np.arange(256) >= 128, 255, 0).astype(np.uint8)
    Image.fromarray(np.repeat(right_half[None], 256, axis=0)).save(mask)
    painted = generator.render(Recipe("zorb", seed=1, width=64, height=64, steps=4,
                                      guidance=4.0, init_image=str(jpgs[0]), mask=str(mask)))
    assert painted.size == (64, 64)

    def edit(*refs: int) -> np.ndarray:  # a start image and references, as klein edits
        recipe = Recipe("zorb", seed=1, width=64, height=64, steps=6, guidance=4.0,
                        init_image=str(jpgs[0]), strength=0.8,
                        refs=tuple(str(jpgs[r]) for r in refs))
        return np.asarray(generator.render(recipe)).astype(np.int16)

    start_only, with_refs, other_refs = edit(), edit(3), edit(9)
    # The tiny demo model heeds references weakly (0.7 against none, 0.1 between two), but
    # a dropped reference would leave exactly the same pixels.
    assert np.abs(with_refs - start_only).mean() > 0.3  # the references were not dropped
    assert np.abs(with_refs - other_refs).mean() > 0.03  # and which ones matters


def test_a_prompt_between_klein_steps_leaves_training_as_it_was(klein_workspace):
    straight = Trainer(klein_workspace("a", train_checkpoint_every=1000), device="cpu")
    plain = straight.run(steps=6)
    images = []
    trainer = None

    def between(metrics) -> None:
        if metrics.step == 3:
            generator = trainer.owner.training_generator(trainer)
            images.append(generator.render(Recipe("zorb in the snow", width=64, height=64,
                                                  steps=2, guidance=4.0)))

    trainer = Trainer(klein_workspace("b", train_checkpoint_every=1000), device="cpu",
                      on_step=between)
    interrupted = trainer.run(steps=6)
    assert images and images[0].size == (64, 64)
    assert interrupted.losses == plain.losses


def test_a_stopped_klein_run_resumes_to_the_same_weights(klein_workspace):
    full = Trainer(klein_workspace("a", train_checkpoint_every=10), device="cpu").run(steps=20)
    split = klein_workspace("b", train_checkpoint_every=10)
    seen = {"step": 0}
    Trainer(split, device="cpu", on_step=lambda m: seen.update(step=m.step),
            should_stop=lambda: seen["step"] >= 12).run(steps=20)
    resumed = Trainer(split, device="cpu").run(steps=20, resume=True)
    assert resumed.step == 20
    np.testing.assert_allclose(full.losses[12:], resumed.losses, rtol=1e-4, atol=1e-6)
    a, b = load_file(full.lora_path), load_file(resumed.lora_path)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_the_klein_demo_trains_and_generates_from_the_command_line(tmp_path):
    from tests.support import run_cli

    made = run_cli("demo", str(tmp_path / "kd"), "--family", "flux2", "--no-ui")
    assert made.returncode == 0, made.stderr
    assert 'model = "demo-klein"' in (tmp_path / "kd" / "lorabooth.toml").read_text()
    trained = run_cli("train", str(tmp_path / "kd"), "--steps", "20", timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "LoRA written to" in trained.stdout + trained.stderr
    made = run_cli("generate", str(tmp_path / "kd"), "photo of zorb", "--scales", "0,1",
                   timeout=300)
    assert made.returncode == 0, made.stderr
    paths = [line for line in made.stdout.splitlines() if line.endswith(".png")]
    assert len(paths) == 2
    a, b = (np.asarray(Image.open(p)) for p in paths)
    assert a.shape == (128, 128, 3) and not np.array_equal(a, b)  # scale 1 is not scale 0


def test_the_klein_comfyui_copy_is_in_bfl_names_and_makes_the_same_image(klein_workspace):
    """ComfyUI's FLUX.2 model has BFL's module names (fused q/k/v, `single_blocks.N.linear1`):
    the copy uses them, with the strength baked in, and diffusers reads it to the same image."""
    from diffusers import Flux2KleinPipeline

    ws = klein_workspace(train_rank=4, train_alpha=8.0, train_checkpoint_every=1000)
    original = Trainer(ws, device="cpu").run(steps=20).lora_path
    copy = ws.loras / "pytorch_lora_weights.comfyui.safetensors"
    tensors = load_file(copy)
    assert all(k.startswith("diffusion_model.") for k in tensors)
    assert not any(k.endswith(".alpha") for k in tensors)
    pipe = Flux2KleinPipeline.from_pretrained(resolve_model("demo-klein").path)
    pipe.set_progress_bar_config(disable=True)
    inner = pipe.transformer.inner_dim
    qkv_up = tensors["diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight"]
    assert qkv_up.shape == (3 * inner, 3 * 4)  # q, k and v fused: three times the rank
    linear1 = pipe.transformer.single_transformer_blocks[0].attn.to_qkv_mlp_proj
    assert tensors["diffusion_model.single_blocks.0.linear1.lora_B.weight"].shape == (
        linear1.out_features, 4)

    pipe.load_lora_weights(original, adapter_name="diffusers")
    from_original = render(pipe)
    pipe.delete_adapters(["diffusers"])
    pipe.load_lora_weights(copy, adapter_name="comfy")
    from_copy = render(pipe)
    pipe.delete_adapters(["comfy"])
    base = render(pipe)
    assert np.abs(from_original - base).mean() > 0.05  # the LoRA shows at all
    assert np.abs(from_copy - from_original).max() <= 1  # and the copy shows it the same


def test_klein_edits_with_reference_images_and_records_them(klein_workspace, photos, tmp_path):
    """`--ref IMG`: the references condition the image (klein's multi-reference editing), the
    recipe in the PNG names them, and a FLUX.1 workspace or a FIFO is refused in words."""
    from lorabooth.core.generate.recipe import read_recipe
    from tests.support import run_cli

    ws = klein_workspace()
    jpgs = sorted(photos.glob("*.jpg"))
    plain_run = run_cli("generate", str(ws.root), "zorb in a jacket", "--no-lora", timeout=300)
    edited = run_cli("generate", str(ws.root), "zorb in a jacket", "--no-lora",
                     "--ref", str(jpgs[0]), "--ref", str(jpgs[1]), timeout=300)
    assert plain_run.returncode == 0 and edited.returncode == 0, edited.stderr
    plain_png, edited_png = (next(line for line in run.stdout.splitlines()
                                  if line.endswith(".png"))
                             for run in (plain_run, edited))
    a, b = (np.asarray(Image.open(p)).astype(int) for p in (plain_png, edited_png))
    assert np.abs(a - b).mean() > 0.5  # the references changed the picture
    assert read_recipe(edited_png).refs == (str(jpgs[0]), str(jpgs[1]))
    assert read_recipe(plain_png).refs == ()

    fifo = tmp_path / "ref.jpg"
    os.mkfifo(fifo)
    refused = run_cli("generate", str(ws.root), "zorb", "--ref", str(fifo), timeout=120)
    assert refused.returncode != 0 and "not a regular file" in refused.stderr
    flux1 = run_cli("generate", str(klein_workspace("dev", model="demo").root), "zorb",
                    "--ref", str(jpgs[0]), timeout=120)
    assert flux1.returncode != 0 and "need FLUX.2 [klein]" in flux1.stderr


def test_generate_model_makes_images_with_another_model_and_refuses_a_foreign_lora(
        klein_workspace):
    """generate.model: train on one model, make images with another (klein: base for
    training, the distilled one for 4-step renders). A LoRA of the other family is refused in
    words instead of silently rendering the base."""
    from lorabooth.core.config import ConfigError, set_config_values
    from lorabooth.core.generate.recipe import read_recipe
    from tests.support import run_cli

    ws = klein_workspace(train_checkpoint_every=1000)
    Trainer(ws, device="cpu").run(steps=5)
    set_config_values(ws.root, {"generate.model": "demo"})  # a FLUX.1 model
    refused = run_cli("generate", str(ws.root), "zorb", timeout=300)
    assert refused.returncode != 0
    assert "trained on FLUX.2 [klein]" in refused.stderr and "cannot use it" in refused.stderr
    made = run_cli("generate", str(ws.root), "zorb", "--no-lora", timeout=300)
    assert made.returncode == 0, made.stderr
    png = next(line for line in made.stdout.splitlines() if line.endswith(".png"))
    assert read_recipe(png).model == "demo"
    with pytest.raises(ConfigError, match=r"generate\.model: unknown model"):
        set_config_values(ws.root, {"generate.model": "no-such-model"})


def test_the_engine_trains_klein_with_samples_and_renders_a_queued_edit(engines, klein_workspace,
                                                                        photos):
    """Through the detached engine, as the UI uses it: a klein training job writes samples
    and the LoRA, and a queued prompt with a reference image renders on the same loaded model."""
    from lorabooth.core.generate.recipe import Recipe, read_recipe
    from lorabooth.core.generate.request import Request, request_to_params
    from lorabooth.core.store import Store
    from tests.support import run_cli, wait_until

    ws = klein_workspace(sample_every=10, sample_steps=2)
    engines.append(ws)
    store = Store(ws.db_path)
    store.set_setting("queue_paused", "1")
    train = store.add_job("train", {"steps": 20})
    ref = str(sorted(photos.glob("*.jpg"))[0])
    edit = store.add_job("generate", request_to_params(Request(Recipe(
        "zorb in a jacket", width=64, height=64, steps=2, guidance=4.0, model="demo-klein",
        refs=(ref,)))))
    store.set_setting("queue_paused", "0")
    assert run_cli("engine", str(ws.root), "start").returncode == 0
    wait_until(lambda: all(store.job(j).state in ("done", "failed") for j in (train, edit)),
               timeout=120)
    assert [store.job(j).state for j in (train, edit)] == ["done", "done"], store.events()
    assert ws.lora_path.is_file()
    samples = sorted((ws.outputs / "samples").glob("run-*/step-*/prompt-*.png"))
    assert samples and all(Image.open(p).size == (128, 128) for p in samples)
    image = next(o for o in store.outputs(edit) if o.kind == "image")
    assert read_recipe(image.path).refs == (ref,)
    loads = [e.message for e in store.events() if e.message.startswith("model demo-klein")]
    assert len(loads) == 1, loads
