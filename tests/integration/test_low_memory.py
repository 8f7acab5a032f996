"""The low-memory paths a plan can choose, run on the CPU with the demo model: the transformer
stored in fp8 (trains, and renders with the LoRA at full precision), and the models placed as
the plan says."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from lorabooth.core.generate.recipe import LoraRef, Recipe
from lorabooth.core.memory import Plan
from lorabooth.core.train.trainer import Trainer


def fp8_plan(encoders_on_gpu: bool = True) -> Plan:
    return Plan("train", 256, "float32", "fp8", encoders_on_gpu, False, None,
                reason="fp8 storage, for the test")


def test_a_transformer_stored_in_fp8_trains_a_full_precision_lora(demo_workspace, monkeypatch):
    monkeypatch.setattr(Trainer, "plan_memory", lambda self: fp8_plan())
    ws = demo_workspace(train_checkpoint_every=1000)
    losses: list[float] = []
    trainer = Trainer(ws, device="cpu", on_step=lambda m: losses.append(m.loss))
    trainer.run(steps=20)
    transformer = trainer.pipe.transformer
    stored = {p.dtype for n, p in transformer.named_parameters() if "lora" not in n}
    assert torch.float8_e4m3fn in stored  # the base weights take half the bf16 memory
    assert {p.dtype for p in trainer.params} == {torch.float32}
    assert all(torch.isfinite(torch.tensor(losses)))
    saved = load_file(ws.lora_path)
    assert any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)  # it learned

    trainer.release()
    generator = trainer.owner.generator(trainer.source)
    sha = hashlib.sha256(ws.lora_path.read_bytes()).hexdigest()
    recipe = Recipe("photo of zorb", width=64, height=64, steps=2,
                    loras=(LoraRef("workspace", 1.0, str(ws.lora_path), sha),))
    image = generator.render(recipe)
    assert image.size == (64, 64)
    # peft gives a new adapter its layer's dtype: over fp8 storage the LoRA must be put back
    # in full precision, with the file's exact values.
    name = generator.adapters[sha]
    params = dict(transformer.named_parameters())
    key = next(k for k in saved if "lora_B" in k and k.startswith("transformer."))
    loaded = params[key.removeprefix("transformer.").replace("lora_B.weight",
                                                             f"lora_B.{name}.weight")]
    assert loaded.dtype == torch.float32
    torch.testing.assert_close(loaded, saved[key].float())


@pytest.mark.parametrize("placement, t5_on_device, transformer_on_device", [
    ("all", True, True), ("caching", True, False), ("lean", False, False),
    ("stream", False, True)])
def test_placement_leaves_waiting_models_on_the_cpu(demo_model, placement, t5_on_device,
                                                    transformer_on_device):
    """Which models a placement moves to the device and which it leaves waiting on the CPU
    (a CPU-only machine cannot tell two devices apart, so the moves are recorded)."""
    from lorabooth.core.models.load import place

    moved: list[str] = []

    class Recorder(torch.nn.Module):
        def __init__(self, name: str):
            super().__init__()
            self.name = name

        def to(self, *args, **kwargs):
            moved.append(self.name)
            return self

    class Pipe:
        pass

    pipe = Pipe()
    for name in ("vae", "text_encoder", "text_encoder_2", "transformer"):
        setattr(pipe, name, Recorder(name))
    assert place(pipe, torch.device("cpu"), placement) is False
    assert ("text_encoder_2" in moved) is t5_on_device
    assert ("transformer" in moved) is transformer_on_device
    assert {"vae", "text_encoder"} <= set(moved)


def test_a_streamed_t5_encodes_and_renders_as_the_resident_one_then_lets_go(demo_model):
    """T5 kept in CPU memory and run a layer at a time through diffusers' offloading hooks
    (on a card they copy each layer over on a side stream; here, without one, they copy it in
    place): the same embeddings and the same image through a pipeline call as the plain
    model, and placed whole again, no hook is left to move its weights back after a forward."""
    from lorabooth.core.models.family import Flux1
    from lorabooth.core.models.load import load_pipeline, place
    from lorabooth.core.models.resolve import resolve_model
    from lorabooth.core.models.stream import attach, streamed

    pipe = load_pipeline(resolve_model("demo"), device="cpu")
    t5 = pipe.text_encoder_2

    def hooked() -> list[str]:
        return [name for name, m in t5.named_modules()
                if getattr(m, "_diffusers_hook", None) is not None and m._diffusers_hook.hooks]

    def image() -> np.ndarray:
        return np.asarray(pipe(prompt="zorb on the moon", width=64, height=64,
                               num_inference_steps=2, max_sequence_length=32,
                               generator=torch.Generator().manual_seed(0)).images[0])

    plain_text, plain_image = Flux1.text(pipe, "zorb on the moon", 32), image()
    attach(t5, torch.device("cpu"), use_stream=False)
    assert streamed(t5) and len(hooked()) > 10  # every Linear and the embedding
    for a, b in zip(Flux1.text(pipe, "zorb on the moon", 32), plain_text, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert np.array_equal(image(), plain_image)
    place(pipe, torch.device("cpu"), "all")
    assert not streamed(t5) and hooked() == []
    for a, b in zip(Flux1.text(pipe, "zorb on the moon", 32), plain_text, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_when_pinning_t5s_copy_fails_it_streams_pinning_layer_by_layer(demo_model,
                                                                       monkeypatch):
    """Pinning ~9.5 GB of host memory can fail on a box short of it: the hooks the failed
    attempt left come off, and T5 streams with each layer pinned as it is copied (diffusers'
    low_cpu_mem_usage) instead of the training failing at the park. The failure is made
    where diffusers pins (a CPU has no copy stream to pin for), halfway through T5's layers."""
    from diffusers import hooks

    from lorabooth.core.models.load import load_pipeline
    from lorabooth.core.models.resolve import resolve_model
    from lorabooth.core.models.stream import stream_from_cpu, streamed

    t5 = load_pipeline(resolve_model("demo"), device="cpu").text_encoder_2
    real = hooks.apply_group_offloading
    calls: list[bool] = []

    def apply(module, *, low_cpu_mem_usage, use_stream, onload_device, **kwargs):
        calls.append(low_cpu_mem_usage)
        # what the CPU can run (no stream, onload here), with the card's choices recorded
        real(module, onload_device=torch.device("cpu"), use_stream=False,
             low_cpu_mem_usage=low_cpu_mem_usage, **kwargs)
        if not low_cpu_mem_usage:
            raise RuntimeError("CUDA error: out of memory (pin_memory)")

    monkeypatch.setattr(hooks, "apply_group_offloading", apply)
    stream_from_cpu(t5, torch.device("cuda"))
    assert calls == [False, True]
    assert streamed(t5)
    # every layer under the second attempt's hooks (the first's would be kept, silently)
    layers = [m._diffusers_hook.get_hook("group_offloading") for m in t5.modules()
              if getattr(m, "_diffusers_hook", None) is not None]
    layers = [hook for hook in layers if hook is not None]
    assert len(layers) > 10 and all(hook.group.low_cpu_mem_usage for hook in layers)
    ids = torch.ones(1, 8, dtype=torch.long)
    assert torch.isfinite(t5(ids).last_hidden_state).all()


def test_renders_between_steps_over_fp8_storage_run_in_the_trainers_precision(
        demo_workspace, monkeypatch):
    """A 24 GB card trains in bf16 over fp8 storage: the samples and a prompt queued while it
    trains render through the float32 LoRA as the training step runs it, in the trainer's
    autocast (outside it, a layer whose peft input cast is off multiplies bf16 by float32)."""
    plan = Plan("train", 256, "bfloat16", "fp8", True, False, None, reason="fp8, for the test")
    monkeypatch.setattr(Trainer, "plan_memory", lambda self: plan)
    ws = demo_workspace(train_checkpoint_every=1000, sample_every=2, sample_steps=2)
    renders: list = []
    seen: set = set()
    trainer = None

    def on_step(metrics) -> None:
        if metrics.step == 1:
            lora_a = next(m for n, m in trainer.pipe.transformer.named_modules()
                          if n.endswith("lora_A.lorabooth"))
            hook = lora_a.register_forward_hook(lambda m, args, out: seen.add(out.dtype))
            generator = trainer.owner.training_generator(trainer)
            renders.append(generator.render(Recipe("zorb on a beach", width=64, height=64,
                                                   steps=2)))
            hook.remove()

    trainer = Trainer(ws, device="cpu", on_step=on_step)
    result = trainer.run(steps=2)
    assert trainer.dtype == torch.bfloat16
    assert torch.float8_e4m3fn in {p.dtype for p in trainer.pipe.transformer.parameters()}
    assert {p.dtype for p in trainer.params} == {torch.float32}
    assert seen == {torch.bfloat16}  # the LoRA ran in autocast, as in the training step
    assert renders[0].size == (64, 64) and np.asarray(renders[0]).std() > 0
    samples = sorted((ws.outputs / "samples" / "run-001" / "step-000002").glob("prompt-*.png"))
    assert samples and all(Image.open(p).size == (256, 256) for p in samples)
    assert all(np.isfinite(result.losses))
    trainer.release()


def test_fp8_storage_is_never_compiled_and_the_line_says_why(demo_model):
    """Compiled blocks do not follow the layerwise-casting hooks: on the CPU they multiplied
    float32 by fp8, and under checkpointing the recompute saw fp8 weights. A 24 GB card on
    compile = "auto" would have crashed at its first step."""
    from lorabooth.core.models.compile import apply
    from lorabooth.core.models.load import load_pipeline, store_in_fp8
    from lorabooth.core.models.resolve import resolve_model

    transformer = load_pipeline(resolve_model("demo"), torch.float32,
                                torch.device("cpu")).transformer
    store_in_fp8(transformer, torch.float32)
    for mode in ("auto", "blocks", "full"):
        line = apply(transformer, mode, torch.device("cuda"))
        assert line.startswith("compile: off (") and "fp8" in line
    assert not any(getattr(m, "_compiled_call_impl", None) for m in transformer.modules())


def test_an_fp8_transformer_waits_uncast_and_is_cast_a_layer_at_a_time_as_it_is_placed(
        demo_model, monkeypatch):
    """Cast on the CPU as it loaded, the float8 copy of FLUX.1-dev's transformer took 11 GiB of
    system RAM for as long as it waited there (and beside T5, pinned, while T5 was parked).
    Now it waits in the files' precision (the page cache's) and each layer moves to the
    device and is cast there in turn: the same weights and the same image as casting it
    whole."""
    from lorabooth.core.models import load
    from lorabooth.core.models.resolve import resolve_model

    source = resolve_model("demo")
    waiting = load.load_pipeline(source, torch.float32, "cpu", "fp8", "caching")
    assert not load.stored_in_fp8(waiting.transformer)
    whole = load.load_pipeline(source, torch.float32, "cpu", None, "all")
    load.store_in_fp8(whole.transformer, torch.float32)

    order: list[str] = []
    real = load.store_in_fp8

    def traced(transformer, compute_dtype, device=None):
        hook = torch.nn.Module.to
        names = {id(m): n for n, m in transformer.named_modules()}

        def to(module, *args, **kwargs):
            order.append(names.get(id(module), "?"))
            return hook(module, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(torch.nn.Module, "to", to)
            real(transformer, compute_dtype, device)

    monkeypatch.setattr(load, "store_in_fp8", traced)
    load.place_transformer(waiting.transformer, torch.device("cpu"), "fp8")
    # moved a layer at a time (then the whole, for what no layer holds), each cast as it went
    assert order[-1] == "" and len(order) > 50
    assert "transformer_blocks.0.attn.to_q" in order and "transformer_blocks" not in order

    def dtypes(transformer) -> dict[str, torch.dtype]:
        return {n: p.dtype for n, p in transformer.named_parameters()}

    assert dtypes(waiting.transformer) == dtypes(whole.transformer)
    assert torch.float8_e4m3fn in set(dtypes(whole.transformer).values())

    def image(pipe) -> np.ndarray:
        return np.asarray(pipe(prompt="zorb on the moon", width=64, height=64,
                               num_inference_steps=2, max_sequence_length=32,
                               generator=torch.Generator().manual_seed(0)).images[0])

    assert np.array_equal(image(waiting), image(whole))


RSS_PROBE = r"""
import gc, json, sys
from pathlib import Path
import torch
from lorabooth.core.models.load import load_pipeline, stored_in_fp8
from lorabooth.core.models.resolve import ModelSource

def anon():  # memory the system cannot drop: not the page cache's
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) / 2**20

source = ModelSource("big", Path(sys.argv[1]), is_demo=True)
grown = {}
warm = load_pipeline(source, torch.bfloat16, "cpu")  # the first load imports and caches
del warm
for name, dtype, quantize, placement in [("bf16", torch.bfloat16, None, "all"),
                                         ("fp8-waiting", torch.bfloat16, "fp8", "caching"),
                                         ("fp32", torch.float32, None, "all")]:
    gc.collect()
    before = anon()
    pipe = load_pipeline(source, dtype, "cpu", quantize, placement)
    assert not stored_in_fp8(pipe.transformer)
    grown[name] = anon() - before
    del pipe
print(json.dumps(grown))
"""


def test_system_ram_a_load_takes_is_what_the_plan_counts(tmp_path):
    """The system RAM plan rests on a measurement: weights loaded in their files' precision
    are the page cache's (safetensors maps the files), an fp8 transformer waits uncast, and
    converted weights are new memory. Measured in a fresh process with a 0.15 GiB bf16
    pipeline; the plan's loading phase for each must match what the process grew by."""
    import json
    import subprocess
    import sys

    from diffusers import FluxTransformer2DModel

    from lorabooth.core.memory import Plan
    from lorabooth.core.models.demo import build_demo_pipeline
    from lorabooth.core.models.sizes import files_precision, model_size
    from lorabooth.core.system_memory import host_phases

    pipe = build_demo_pipeline()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        pipe.transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=2, num_single_layers=4,
            attention_head_dim=128, num_attention_heads=6, joint_attention_dim=64,
            pooled_projection_dim=64, guidance_embeds=True, axes_dims_rope=(16, 56, 56))
    folder = tmp_path / "model"
    pipe.to(torch.bfloat16).save_pretrained(folder)
    size = model_size(folder)
    assert files_precision(folder) == "bf16" and 0.1 < size.gib("transformer", "bf16") < 0.3
    done = subprocess.run([sys.executable, "-c", RSS_PROBE, str(folder)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    grown = json.loads(done.stdout.strip().splitlines()[-1])

    def loading(dtype: str) -> float:
        plan = Plan("generate", 256, dtype, None, True, False, None)
        return next(p.gib for p in host_phases(size, plan, on_cpu=True, files="bf16")
                    if p.name == "loading")

    weights = size.gib("transformer", "fp32") + size.encoders_gib("fp32") + size.gib("vae",
                                                                                    "fp32")
    assert loading("bfloat16") == 0.0 and grown["bf16"] < 0.05
    assert grown["fp8-waiting"] < 0.05  # it casts as it is placed, not as it loads
    assert loading("float32") == pytest.approx(weights)
    assert grown["fp32"] == pytest.approx(weights, rel=0.15)
