"""The GPU benchmark: the full-size FLUX.1-dev architecture (from the configs lorabooth ships) with
random weights, through lorabooth's own Trainer and Generator, on the local GPU, in one call.

Phases, each with wall time and peak GPU memory (allocated, GiB), the numbers the memory planner
is checked against:
- build: the pipeline built on the GPU in bf16 (the weights of each component);
- encode: T5-XXL + CLIP on one prompt at 512 tokens; VAE encode and decode at each resolution;
- train-R: lorabooth's Trainer at R px (cached latents and text, a LoRA on the attention,
  gradient checkpointing, bf16 autocast, AdamW), against a bare step on the same LoRA'd
  transformer and batch (forward, backward, clip, AdamW, nothing else), in the same run;
  train-R-nockpt without checkpointing, train-R-compile compiled, train-R-auto as
  lorabooth's defaults choose (e.g. train-1024-nockpt-compile);
- capped-R-GB[-auto]: R px on a simulated GB card, lorabooth's plans choosing (it takes the
  pipeline over: run it last);
- generate-R: the Generator with the LoRA file that training wrote, loaded through diffusers;
- compile-R[-fp8][-cudagraphs][-cudnn]: the same render with the blocks compiled (`-fp8`:
  generate.compile = "blocks-fp8"; `-fp8-cudagraphs`: "blocks-fp8-cudagraphs"; `-cudagraphs`
  and `-cudnn`: bf16 CUDA graphs and cuDNN's attention, experiments); compile time is reported
  apart from the steady speed;
- cache-R: the first-block step cache's full and reused steps.

Every phase is tried on its own: one that fails records its error and the next one runs.

    python -m bench.gpu [--out DIR] [--budget SECONDS]
    python -m bench.gpu --dry-run --out DIR     # the same code on the CPU with the demo model
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from bench._common import RESULTS, FullSteps
from lorabooth.core.models.resolve import ModelSource

PROMPT = "photo of zorb, a teal plush toy on a wooden table, soft window light"


class Bench:
    """The rows so far, written to `out` after every phase (a killed run keeps its rows)."""

    def __init__(self, out: Path, budget: float, device: torch.device):
        self.out = out
        self.budget = budget
        self.device = device
        self.start = time.monotonic()
        self.rows: list[dict] = []
        self.facts = facts(device)

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def phase(self, name: str, fn: Callable[[], dict], need_s: float = 0.0) -> dict | None:
        if self.left() < need_s:
            self.record({"phase": name, "skipped": f"under {need_s:.0f} s of budget left"})
            return None
        print(f"[{time.monotonic() - self.start:6.1f} s] {name} ...", flush=True)
        reset_peak(self.device)
        began = time.perf_counter()
        try:
            row = {"phase": name, **fn()}
        except Exception as exc:
            traceback.print_exc()
            row = {"phase": name, "error": f"{type(exc).__name__}: {exc}"[:2000]}
        row["wall_s"] = round(time.perf_counter() - began, 2)
        self.record(row)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return row

    def record(self, row: dict) -> None:
        self.rows.append(row)
        print("    " + json.dumps(row), flush=True)
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"benchmark": "gpu", **self.facts, "rows": self.rows}
        tmp = self.out / "gpu.json.tmp"
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, self.out / "gpu.json")


def facts(device: torch.device) -> dict:
    import importlib.metadata

    names = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors",
             "tokenizers", "huggingface-hub")
    out = {"python": platform.python_version(), "device": str(device),
           **{name: importlib.metadata.version(name) for name in names}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                   capability=".".join(map(str, torch.cuda.get_device_capability(device))))
    return out


# -- memory and time ----------------------------------------------------------------------------

def gib(n: float) -> float:
    return round(n / 2**30, 2)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> float | None:
    return gib(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def allocated(device: torch.device) -> float | None:
    return gib(torch.cuda.memory_allocated(device)) if device.type == "cuda" else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[[], object]) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def module_gib(module: torch.nn.Module) -> float:
    return gib(sum(p.numel() * p.element_size() for p in module.parameters()))


# -- the model ----------------------------------------------------------------------------------

def random_pipeline(folder: Path, device: torch.device, dtype: torch.dtype,
                    distilled: bool = False):
    """The pipeline a shipped config folder describes, with random weights made straight on
    `device` in `dtype` (never a float32 copy: 12B parameters would need 48 GB), and the demos'
    trained-in-code tokenizers at the real lengths (the real ones are not shipped)."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    from lorabooth.core.models.shipped import build_component, read_config

    kind = json.loads((folder / "model_index.json").read_text())["_class_name"]
    parts = {}
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            for name in ("transformer", "text_encoder_2", "text_encoder", "vae"):
                if not (folder / name).is_dir():
                    continue  # FLUX.2 has one text encoder
                torch.manual_seed(0)
                module = build_component(folder, name).to(device, dtype)
                parts[name] = module.eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(previous)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(read_config(folder, "scheduler"))
    if kind == "Flux2KleinPipeline":
        from lorabooth.core.models.demo_klein import demo_qwen_tokenizer

        tokenizer = demo_qwen_tokenizer()
        tokenizer.model_max_length = 512
        pipe = diffusers.Flux2KleinPipeline(scheduler=scheduler, tokenizer=tokenizer,
                                            is_distilled=distilled, **parts)
    else:
        from lorabooth.core.models.demo import demo_tokenizer

        clip_tok, t5_tok = demo_tokenizer("clip"), demo_tokenizer("t5")
        clip_tok.model_max_length = read_config(folder, "text_encoder")["max_position_embeddings"]
        t5_tok.model_max_length = 512
        pipe = diffusers.FluxPipeline(scheduler=scheduler, tokenizer=clip_tok,
                                      tokenizer_2=t5_tok, **parts)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def owner_holding(pipe, source: ModelSource):
    """A model owner with `pipe` resident, as the engine's is after a load."""
    from lorabooth.core.models.owner import ModelOwner

    owner = ModelOwner()
    owner.pipe, owner.source, owner.quantize = pipe, source, None
    return owner


# -- the data -----------------------------------------------------------------------------------

def draw_photos(folder: Path, size: int, count: int = 4) -> None:
    """Square photos at least as large as the largest bucket: a gradient and a teal blob."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        ramp = np.linspace(0, 255, size, dtype=np.float32)
        base = np.stack([np.add.outer(ramp, ramp) / 2] * 3, axis=-1) * rng.uniform(0.4, 1, 3)
        image = Image.fromarray(base.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        x, y = rng.integers(size // 8, size // 2, 2)
        draw.ellipse((x, y, x + size // 3, y + size // 2), fill=(40, 170, 160))
        image.save(folder / f"{index:02d}.jpg", quality=92)
        (folder / f"{index:02d}.txt").write_text(f"photo of zorb, picture {index}\n")


def workspace(root: Path, model: str, resolution: int, steps: int, compile: str = "off",
              checkpointing: str = "on", preserve_class: str = ""):
    from lorabooth.core.config import set_config_values
    from lorabooth.core.workspace import Workspace, init_workspace

    ws_root = root / f"ws-{resolution}"
    if not (ws_root / "lorabooth.toml").exists():
        init_workspace(ws_root, root / "photos", model=model, trigger="zorb")
    set_config_values(ws_root, {
        "train.resolution": [resolution], "train.steps": steps, "train.rank": 16,
        "train.optimizer": "adamw", "train.memory": "bf16", "train.checkpoint_every": 100000,
        "train.compile": compile, "train.checkpointing": checkpointing,
        "train.preserve_class": preserve_class, "sample.every": 0})
    return Workspace.at(ws_root)


# -- phases -------------------------------------------------------------------------------------

def build_phase(state: dict, model: str, folder: Path | None, device: torch.device) -> dict:
    if folder is None:  # the dry run: a demo model, loaded as a user's would be
        from lorabooth.core.models.load import load_pipeline
        from lorabooth.core.models.resolve import resolve_model

        source = resolve_model(model)
        pipe = load_pipeline(source, torch.float32, device)
    else:
        source = ModelSource(model, folder)
        pipe = random_pipeline(folder, device, torch.bfloat16, source.model.distilled)
    state.update(pipe=pipe, source=source, owner=owner_holding(pipe, source))
    return {"model": source.model.name, "allocated_gib": allocated(device),
            **{f"{name}_gib": module_gib(getattr(pipe, name))
               for name in ("transformer", "text_encoder_2", "text_encoder", "vae")
               if getattr(pipe, name, None) is not None}}


def encode_phase(state: dict, resolutions: list[int], device: torch.device) -> dict:
    pipe, source = state["pipe"], state["source"]
    row: dict = {}
    base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0

    def extra() -> float | None:
        return gib(torch.cuda.max_memory_allocated(device) - base) if device.type == "cuda" \
            else None

    with torch.no_grad():
        row["text_s"] = round(timed(device, lambda: pipe.encode_prompt(
            PROMPT, PROMPT, device=device, max_sequence_length=source.max_sequence_length)), 3)
        row["text_extra_gib"] = extra()
        vae = pipe.vae
        for r in resolutions:
            reset_peak(device)
            pixels = torch.rand(1, 3, r, r, device=device, dtype=vae.dtype) * 2 - 1
            holder: dict = {}
            row[f"vae_encode_{r}_s"] = round(timed(device, lambda p=pixels, h=holder: h.update(
                z=vae.encode(p).latent_dist.mode())), 3)
            row[f"vae_encode_{r}_extra_gib"] = extra()
            reset_peak(device)
            row[f"vae_decode_{r}_s"] = round(timed(device, lambda h=holder: vae.decode(h["z"])),
                                             3)
            row[f"vae_decode_{r}_extra_gib"] = extra()
    return row


def train_phase(state: dict, root: Path, resolution: int, warmup: int, timed_steps: int,
                device: torch.device, variant: str = "") -> dict:
    """`variant`: "" (eager, checkpointed, against the bare step), "between" (a prompt rendered
    between two steps, as the engine does with a queued prompt), or words joined by "-":
    "compile" (regional compilation of the blocks, as train.compile = "blocks"), "cudagraphs"
    (the blocks replayed as CUDA graphs, train.compile = "blocks-cudagraphs"), "nockpt" (no
    gradient checkpointing), "auto" (lorabooth's defaults: what a user gets), "sync" (each
    step's numbers read as it ends, with the unfused AdamW, as before core/train/pending.py:
    the baseline for the step queued ahead), "preserve" (train.preserve_class: each step also
    runs the base model and a second pass with the LoRA; against the plain train-R row)."""
    from lorabooth.core.train.trainer import Trainer

    source, owner = state["source"], state["owner"]
    steps = warmup + timed_steps
    words = set(variant.split("-"))
    if "auto" in words:
        compile_mode, ckpt = "auto", "auto"
    else:
        compile_mode = "blocks" if "compile" in words else "off"
        compile_mode = "blocks-cudagraphs" if "cudagraphs" in words else compile_mode
        ckpt = "off" if "nockpt" in words else "on"
    ws = workspace(root, source.spec, resolution, steps, compile_mode, ckpt,
                   "person" if "preserve" in words else "")
    seconds: list[float] = []
    logs: list[str] = []
    extra: dict = {}

    def on_step(metrics) -> None:
        seconds.append(metrics.seconds)
        if metrics.step == 1:  # the training peak, not the encoders' or the first step's
            reset_peak(device)
        if "between" in words and metrics.step == warmup:
            extra.update(render_between_steps(trainer, resolution, device))

    trainer = Trainer(ws, source=source, device=device, on_step=on_step, log=logs.append,
                      owner=owner)
    prepare_s = timed(device, trainer.prepare)
    prepared_gib = allocated(device)
    if "sync" in words:
        from lorabooth.core.train.optim import make_optimizer

        trainer.optimizer = make_optimizer("adamw", trainer.params,
                                           trainer.config.train.learning_rate)
    extra["queued_ahead"] = trainer.guarded
    try:
        result = trainer.run(steps=steps)
        train_peak = peak(device)
        ours = statistics.median(seconds[warmup:])
        extra.update(gpu_busy(trainer, device, ours))
        if variant == "":
            bare = median_of(trainer_bare_step(trainer), warmup, timed_steps, device)
            extra.update(bare_step_s=round(bare, 4), ratio=round(ours / bare, 3))
        losses = result.losses
    finally:
        trainer.release()
    state["lora"] = ws.lora_path
    return {"prepare_s": round(prepare_s, 2), "after_prepare_gib": prepared_gib,
            "first_step_s": round(seconds[0], 3), "step_s": round(ours, 4),
            "images_per_s": round(1 / ours, 3), **flops(trainer, resolution, ours), **extra,
            "train_peak_gib": train_peak, "planned_gib": round(trainer.plan.peak_gib, 2),
            "checkpointing": trainer.plan.gradient_checkpointing,
            "preserving": trainer.preserving, "loss_first": round(losses[0], 4),
            "loss_last": round(losses[-1], 4), "dtype": str(trainer.dtype), "log": logs[:3]}


def gpu_busy(trainer, device: torch.device, step_s: float, steps: int = 3) -> dict:
    """The GPU's kernel time per step (torch.profiler's CUDA activity over a few more steps)
    and its share of the timed step `step_s`: near 1 the card is the limit; well below it the
    host is (Python, launches, syncs). The profiler slows the host, so the profiled steps' own
    wall time is not the divisor. The H100 took 0.21 s for a 512 px step that an H200 took in
    0.13, with the same 1024 px step on both: this row said which (run 13: host-bound)."""
    if device.type != "cuda":
        return {}
    from torch.profiler import ProfilerActivity, profile

    trainer.train_step()
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            trainer.train_step()
        torch.cuda.synchronize(device)
    kernel_s = sum(event.self_device_time_total for event in prof.key_averages()) / 1e6 / steps
    return {"gpu_kernel_s": round(kernel_s, 4), "gpu_busy_share": round(kernel_s / step_s, 3),
            **host_syncs(trainer, steps)}


def host_syncs(trainer, steps: int) -> dict:
    """The operations that made the host wait for the card inside a step (torch's sync debug
    mode warns at each), per step, and where they were called: a step queued ahead of the
    one being read (core/train/pending.py) should have none."""
    import warnings

    sites: dict[str, int] = {}
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(steps):
                trainer.train_step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    for warning in caught:
        if "synchroniz" in str(warning.message):
            site = f"{Path(warning.filename).name}:{warning.lineno}"
            sites[site] = sites.get(site, 0) + 1
    return {"host_syncs_per_step": round(sum(sites.values()) / steps, 2),
            "host_sync_sites": dict(sorted(sites.items(), key=lambda kv: -kv[1])[:8])}


# The FLOP model (ANCHORS.md's): a token passes only the weights of its own stream, not all of
# the transformer's: the double blocks hold separate image and text weights, and the AdaLN
# modulation and the time embedding run once per sample. FLUX.1-dev has 11.9 B parameters but
# an image token passes 6.46 B. A forward is 2 x (those weights x their tokens) plus attention's
# 4 T^2 D per block; a LoRA step on a frozen base is ~3.3 forwards with gradient checkpointing
# (forward, recomputed forward, backward to the activations with attention's heavier backward)
# and ~2.3 without. (Runs 1-12 counted every parameter for every token, 6 N T and 4 N T, which
# overstated the MFU about 1.7x.) Peak: H100/H200 SXM dense bf16, 989 TFLOP/s.
PEAK_BF16_TFLOPS = 989.0
PER_SAMPLE = ("norm", "modulation", "time_text_embed", "time_guidance_embed")
TEXT_STREAM = ("add_", "ff_context", "context_embedder")


def token_weights(transformer: torch.nn.Module) -> tuple[int, int]:
    """Weights an image token and a text token each pass through, from the Linear layers' names
    (FLUX.1's and FLUX.2's transformers alike)."""
    image = text = 0
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear) or any(w in name for w in PER_SAMPLE):
            continue
        n = module.weight.numel()
        if name.startswith("single_transformer_blocks"):
            image, text = image + n, text + n
        elif any(w in name for w in TEXT_STREAM):
            text += n
        else:
            image += n
    return image, text


def forward_flops(transformer: torch.nn.Module, image_tokens: int, text_tokens: int) -> float:
    config = transformer.config
    width = config.num_attention_heads * config.attention_head_dim
    blocks = config.num_layers + config.num_single_layers
    image, text = token_weights(transformer)
    tokens = image_tokens + text_tokens
    return 2 * (image * image_tokens + text * text_tokens) + 4 * tokens**2 * width * blocks


def flops(trainer, resolution: int, step_s: float) -> dict:
    from lorabooth.core.memory import image_tokens

    if trainer.device.type != "cuda":
        return {}
    forwards = 3.3 if trainer.plan.gradient_checkpointing else 2.3
    if trainer.preserving:  # the base model's forward, then the class's own forward and back
        forwards = 2 * forwards + 1
    step = forwards * forward_flops(trainer.owner.pipe.transformer, image_tokens(resolution),
                                    trainer.source.max_sequence_length)
    tflops = step / step_s / 1e12
    return {"tflops_per_s": round(tflops, 1), "mfu": round(tflops / PEAK_BF16_TFLOPS, 3),
            "flop_model": f"{forwards} forwards, per-stream weights"}


def render_between_steps(trainer, resolution: int, device: torch.device,
                         prompt: str = PROMPT) -> dict:
    """What the engine does for a prompt queued while training: the live LoRA, eval mode,
    no gradients, the RNGs as they were, on the trainer's own pipeline."""
    from lorabooth.core.engine.generate_job import lora_scale
    from lorabooth.core.generate.recipe import Recipe

    transformer = trainer.pipe.transformer
    transformer.eval()
    try:
        with torch.random.fork_rng(devices=[]), lora_scale(transformer, 1.0):
            generator = trainer.owner.training_generator(trainer)
            recipe = Recipe(prompt, seed=2, width=resolution, height=resolution, steps=8,
                            guidance=3.5, model=trainer.config.model)
            holder: dict = {}
            seconds = timed(device, lambda: holder.update(image=generator.render(recipe)))
    finally:
        transformer.train()
    return {"between_render_8_steps_s": round(seconds, 2),
            "between_image_std": round(float(np.asarray(holder["image"]).std()), 2)}


def capped_phase(state: dict, root: Path, resolution: int, card_gb: float, warmup: int,
                 count: int, gen_steps: int, device: torch.device, bench=None,
                 auto: bool = False, memory: str = "auto") -> dict:
    """A smaller card, simulated: the process capped to `card_gb` GB, lorabooth's own plans
    (training, then generation) choosing with that much available, a prompt never seen before
    rendered between two steps, then a render with the LoRA as the generation plan says. The
    "loading" hands over the random pipeline (moved to the CPU first) as the plan places it;
    for NF4 (`memory`, for training and generation) its transformer goes through a folder on
    disk and lorabooth's own NF4 loader (bitsandbytes quantises as diffusers loads)."""
    import lorabooth.core.models.owner as owner_module
    import lorabooth.core.models.sizes as sizes
    from lorabooth.core.config import set_config_values
    from lorabooth.core.generate.generator import plan_for
    from lorabooth.core.memory import card_gib
    from lorabooth.core.models.compile import uncompile
    from lorabooth.core.models.load import place
    from lorabooth.core.models.owner import ModelOwner
    from lorabooth.core.models.stream import stop_streaming
    from lorabooth.core.train.trainer import Trainer

    pipe, source = state.pop("pipe"), state["source"]
    state.pop("owner").drop()
    # A fresh load has none of an earlier phase's compiled blocks or LoRA adapters (fp8
    # storage over a peft layer turns its input cast off).
    uncompile(pipe.transformer)
    if getattr(pipe.transformer, "peft_config", None):
        pipe.unload_lora_weights()
    stop_streaming(pipe.text_encoder_2)  # an earlier capped run's generation streamed it
    pipe.to("cpu")
    gc.collect()
    cap = card_gib(card_gb)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        total = torch.cuda.get_device_properties(device).total_memory / 2**30
        torch.cuda.set_per_process_memory_fraction(cap / total, torch.cuda.current_device())
    loads: list[str] = []
    real_memory, real_load = sizes.card_memory, owner_module.load_pipeline

    def load(src, dtype=None, dev=None, quantize=None, placement="all"):
        loads.append(f"{dtype} {quantize} {placement}")
        # fp8: as load_pipeline, cast where the transformer is placed (a layer at a time)
        if quantize == "nf4" and not getattr(pipe.transformer, "is_quantized", False):
            extra["nf4_load_s"] = nf4_transformer(pipe, root / "nf4", dtype, source)
        pipe.lorabooth_offload = place(pipe, torch.device(dev or device), placement, quantize)
        return pipe

    def capped_memory(dev):  # every plan reads the card here: capping it caps them all
        available, crowded = real_memory(dev)
        return min(available, cap), crowded

    sizes.card_memory = capped_memory
    owner_module.load_pipeline = load
    owner = ModelOwner()
    logs: list[str] = []
    seconds: list[float] = []
    extra: dict = {}
    try:
        ws = workspace(root, source.spec, resolution, warmup + count)
        defaults = {"train.memory": memory, "generate.memory": memory}
        if auto:  # what a user gets: compile and checkpointing as lorabooth chooses too
            defaults.update({"train.compile": "auto", "train.checkpointing": "auto"})
        set_config_values(ws.root, defaults)
        trainer = None

        def on_step(metrics) -> None:
            seconds.append(metrics.seconds)
            if metrics.step == 1:
                extra.update(after_first_step=where_things_are(trainer, device))
                reset_peak(device)
            if metrics.step == warmup:
                # T5 where the plan left it (streamed from CPU memory when parked): a new
                # prompt's encoding alone, then a render of another new one
                extra["between_encode_s"] = round(timed(device, lambda: trainer.pipe_text(
                    "a second prompt no cache has seen, zorb")), 2)
                extra.update(render_between_steps(trainer, 512, device,
                                                  "a prompt no cache has seen, zorb"))

        trainer = Trainer(ws, source=source, device=device, on_step=on_step, log=logs.append,
                          owner=owner)
        trainer.prepare()
        extra.update(after_prepare=where_things_are(trainer, device), loads=list(loads))
        bench.record({"phase": "capped-diagnostic", **extra})
        trainer.run(steps=warmup + count)
        train_peak = peak(device)
        plan = trainer.plan
        trainer.release()
        state["lora"] = ws.lora_path
        recipe = generator_recipe(state, resolution, gen_steps)
        gen_plan = plan_for(ws, source, [recipe])
        generator = owner.generator(source, gen_plan)
        timed(device, lambda: generator.render(generator_recipe(state, resolution, 2)))
        reset_peak(device)
        image_s = timed(device, lambda: generator.render(recipe))
        return {"card_gb": card_gb, "cap_gib": cap, "train_plan": plan.reason,
                "train_planned_gib": round(plan.peak_gib, 2), "train_peak_gib": train_peak,
                "step_s": round(statistics.median(seconds[warmup:]), 4), **extra,
                "generate_plan": gen_plan.reason,
                "generate_planned_gib": round(gen_plan.peak_gib, 2),
                "generate_peak_gib": peak(device), "image_s": round(image_s, 2),
                "loads": loads, "log": logs[:2]}
    finally:
        sizes.card_memory, owner_module.load_pipeline = real_memory, real_load
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, torch.cuda.current_device())


def nf4_transformer(pipe, folder: Path, dtype, source) -> float:
    """Replace the pipeline's transformer by the same weights loaded as NF4, the way
    `load_pipeline` loads them; the seconds the load took (the save not counted)."""
    from types import SimpleNamespace

    from lorabooth.core.models.load import _load_nf4_transformer

    pipe.transformer.save_pretrained(folder / "transformer")
    start = time.perf_counter()
    quantized = _load_nf4_transformer(SimpleNamespace(path=folder), dtype, type(pipe))
    seconds = time.perf_counter() - start
    shutil.rmtree(folder, ignore_errors=True)
    pipe.transformer = quantized
    pipe.register_modules(transformer=quantized)
    gc.collect()
    return round(seconds, 1)


def where_things_are(trainer, device: torch.device) -> dict:
    from lorabooth.core.models.stream import streamed

    pipe = trainer.pipe
    return {"allocated_gib": allocated(device), "peak_gib": peak(device),
            "plan": trainer.plan.reason,
            "t5": str(pipe.text_encoder_2.device), "clip": str(pipe.text_encoder.device),
            "t5_streamed": streamed(pipe.text_encoder_2),
            "transformer": str(pipe.transformer.device),
            "transformer_dtypes": sorted({str(p.dtype) for p in
                                          pipe.transformer.parameters()})}


def offload_phase(state: dict, resolution: int, steps: int, device: torch.device) -> dict:
    """Generation with diffusers' model CPU offload (each model on the GPU only while it
    runs): what a card too small for the bf16 pipeline would do. Last: it re-homes the pipe."""
    pipe = state["pipe"]
    pipe.enable_model_cpu_offload(device=device)
    gen = state["owner"].generator(state["source"])
    timed(device, lambda: gen.render(generator_recipe(state, resolution, 2)))
    reset_peak(device)
    seconds = timed(device, lambda: gen.render(generator_recipe(state, resolution, steps)))
    return {"image_s": round(seconds, 2), "step_s": round(seconds / steps, 4),
            "peak_gib": peak(device)}


def median_of(step: Callable[[], None], warmup: int, count: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    return statistics.median(timed(device, step) for _ in range(count))


def bare_step(transformer, x0: torch.Tensor, embeds: torch.Tensor, pooled: torch.Tensor,
              dtype: torch.dtype, family=None) -> Callable[[], None]:
    """A plain step on a LoRA'd transformer: forward in autocast, backward, clip, AdamW, as
    diffusers' example does, and nothing else (the family's packing and ids around the call)."""
    from lorabooth.core.models.family import Flux1
    from lorabooth.core.models.load import use_safe_attention

    family = family or Flux1
    dev = x0.device
    use_safe_attention(dev)  # as lorabooth's trainer: cuDNN attention's backward fails on Hopper
    embeds, pooled = embeds.to(dev, dtype), pooled.to(dev, dtype)
    guidance = torch.full((1,), 1.0, device=dev) if transformer.config.guidance_embeds else None
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        noise = torch.randn_like(x0)
        sigma = torch.rand(1, device=dev)
        noisy = (1 - sigma) * x0 + sigma * noise
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
            pred = family.predict(transformer, noisy, sigma, embeds, pooled, guidance, dtype)
        loss = torch.nn.functional.mse_loss(pred, noise - x0)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        loss.item()  # as every trainer logs its loss: one sync per step on both sides
    return step


def trainer_bare_step(trainer) -> Callable[[], None]:
    """The bare step on the trainer's own transformer and its first cached example."""
    x0 = trainer.latents[0][None].to(trainer.device)
    embeds, pooled = (t[None] for t in trainer.texts[trainer.examples[0].caption])
    return bare_step(trainer.pipe.transformer, x0, embeds, pooled, trainer.dtype,
                     trainer.family)


def bare_phase(state: dict, resolution: int, checkpointing: bool, warmup: int, count: int,
               device: torch.device) -> dict:
    """The bare step alone, with lorabooth's LoRA but not its Trainer: tells a fault of the
    trainer from one of the libraries or the card."""
    from lorabooth.core.train.lora import ADAPTER, add_lora, target_modules

    pipe = state["pipe"]
    transformer = pipe.transformer
    dtype = transformer.dtype
    config = transformer.config
    add_lora(transformer, 16, 16, target_modules(transformer, "attention"))
    if checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    try:
        x0 = torch.randn(1, 16, resolution // 8, resolution // 8, device=device)
        embeds = torch.randn(1, state["source"].max_sequence_length, config.joint_attention_dim)
        pooled = torch.randn(1, config.pooled_projection_dim)
        step = bare_step(transformer, x0, embeds, pooled, dtype)
        reset_peak(device)
        seconds = median_of(step, warmup, count, device)
        return {"step_s": round(seconds, 4), "peak_gib": peak(device),
                "checkpointing": checkpointing}
    finally:
        transformer.delete_adapters(ADAPTER)
        if checkpointing:
            transformer.disable_gradient_checkpointing()
        transformer.requires_grad_(False).eval()


def generator_recipe(state: dict, resolution: int, steps: int, scale: float = 1.0):
    from lorabooth.core.generate.recipe import LoraRef, Recipe

    loras = ()
    lora = state.get("lora")  # the LoRA training wrote; without one, the base alone
    if lora is not None:
        sha = hashlib.sha256(lora.read_bytes()).hexdigest()
        loras = (LoraRef("workspace", scale, str(lora), sha),)
    model = state["source"].model
    return Recipe(PROMPT, seed=1, width=resolution, height=resolution, steps=steps,
                  guidance=model.guidance, model=state["source"].spec, loras=loras)


def generate_phase(state: dict, resolution: int, steps: int, device: torch.device) -> dict:
    gen = state["owner"].generator(state["source"])
    warm = timed(device, lambda: gen.render(generator_recipe(state, resolution, 2)))
    reset_peak(device)
    holder: dict = {}
    seconds = timed(device, lambda: holder.update(
        image=gen.render(generator_recipe(state, resolution, steps))))
    image = np.asarray(holder["image"])
    state[f"eager-image-{resolution}"] = image.astype(np.float32)
    rescale = timed(device, lambda: gen.render(generator_recipe(state, resolution, 2, 0.5)))
    return {"lora": "lora" in state, "first_render_s": round(warm, 2), "image_s": round(seconds, 2),
            "step_s": round(seconds / steps, 4), "peak_gib": peak(device),
            "scale_change_2_steps_s": round(rescale, 2), "image_std": round(float(image.std()), 2),
            "image_size": list(holder["image"].size)}


def compile_phase(state: dict, resolution: int, steps: int, eager_step_s: float,
                  device: torch.device, mode: str = "blocks") -> dict:
    """`mode`: generate.compile's "blocks", "blocks-fp8" or "blocks-fp8-cudagraphs", or the
    experiments "blocks-cudagraphs" (bf16 blocks replayed as CUDA graphs, as train.compile =
    "blocks-cudagraphs" does; flux-fast gets part of its speed this way) and "-cudnn" (cuDNN's
    fused attention, forward only; lorabooth keeps it off: its backward faulted on an H200), in
    that order; a transformer a training phase compiled already stays as it was (the row says
    so)."""
    gen = state["owner"].generator(state["source"])
    transformer = gen.pipe.transformer
    from torch._dynamo.utils import counters

    from lorabooth.core.models.compile import apply

    mode, cudnn, _ = mode.partition("-cudnn")
    if cudnn:
        transformer.set_attention_backend("_native_cudnn")
    mode, graphs_too, _ = mode.partition("-cudagraphs")
    said = apply(transformer, mode + graphs_too, device)
    resident = allocated(device)
    first = timed(device, lambda: gen.render(generator_recipe(state, resolution, 2)))
    graphs = dict(counters["stats"])
    reset_peak(device)
    holder: dict = {}
    seconds = timed(device, lambda: holder.update(
        image=gen.render(generator_recipe(state, resolution, steps))))
    render_peak = peak(device)
    rescale = timed(device, lambda: gen.render(generator_recipe(state, resolution, 2, 0.5)))
    step_s = seconds / steps
    eager_image = state.get(f"eager-image-{resolution}")
    drift = None
    if eager_image is not None:  # the same recipe, eager bf16: how far the pixels moved
        drift = round(float(np.abs(np.asarray(holder["image"], dtype=np.float32)
                                   - eager_image).mean()), 2)
    return {"compile": said, "first_render_s": round(first, 2),
            "image_s": round(seconds, 2), "step_s": round(step_s, 4),
            "resident_gib": resident, "peak_gib": render_peak,
            "mean_pixel_change_vs_eager": drift,
            "eager_step_s": eager_step_s, "ratio_vs_eager": round(step_s / eager_step_s, 3),
            "scale_change_2_steps_s": round(rescale, 2), "dynamo_after_first": graphs,
            "dynamo_after_scale_change": dict(counters["stats"]),
            "graph_breaks": sum(counters["graph_break"].values())}


def cache_phase(state: dict, resolution: int, steps: int, device: torch.device) -> dict:
    """The first-block cache (generate.step_cache) on whatever the transformer is now (eager,
    or compiled by an earlier phase). Random weights decide nothing about which steps a real
    model skips, so the row gives what does not depend on them: the time of a step computed in
    full and of one reused (threshold 1: nearly all reused), from which any share projects."""
    from dataclasses import replace

    gen = state["owner"].generator(state["source"])
    computed = FullSteps()
    try:
        runs = {}
        for cache in (0.0, 1.0, 0.1):
            recipe = replace(generator_recipe(state, resolution, steps), step_cache=cache)
            gen.render(replace(recipe, steps=2))  # warm: a cached render compiles its graphs
            computed.count = 0
            runs[cache] = (timed(device, lambda r=recipe: gen.render(r)), computed.count)
    finally:
        computed.remove()
    (every_s, _), (most_s, most_n) = runs[0.0], runs[1.0]
    full = every_s / steps
    reused = (most_s - most_n * full) / max(steps - most_n, 1)
    return {"every_step_image_s": round(every_s, 2), "full_step_s": round(full, 4),
            "reused_step_s": round(reused, 4),
            "threshold_1_image_s": round(most_s, 2), "threshold_1_computed": most_n,
            "threshold_0.1_image_s": round(runs[0.1][0], 2),
            "threshold_0.1_computed": runs[0.1][1], "steps": steps,
            "half_computed_projected_s": round(steps / 2 * (full + reused), 2)}


# -- main ---------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="the demo model on the CPU at 64 px: checks the script, not a GPU")
    parser.add_argument("--out", type=Path, default=None,
                        help="where gpu.json goes (default bench/results; a dry run needs one)")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds; later phases are skipped rather than cut off")
    parser.add_argument("--model", default=None,
                        help="a registry name with shipped configs: flux-dev (default), "
                             "klein-4b-base, klein-9b-base; a dry run: demo or demo-klein")
    parser.add_argument("--phases", default="",
                        help="comma-separated phases after build (default: all), e.g. "
                             "train-512,bare-512,bare-512-nockpt,generate-1024,compile-1024")
    args = parser.parse_args(argv)
    if args.dry_run and args.out is None:
        parser.error("--dry-run needs --out (a dry run never replaces the committed results)")
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU here; --dry-run checks the script on the CPU")
    from lorabooth.core.models.registry import known
    from lorabooth.core.models.shipped import shipped_folder

    model = args.model or ("demo" if args.dry_run else "flux-dev")
    folder = None if args.dry_run else shipped_folder(model)
    if not args.dry_run and folder is None:
        parser.error(f"--model {model}: no shipped configs (flux-dev, klein-4b-base, ...)")
    resolutions = [64] if args.dry_run else [512, 1024]
    warmup, count = (1, 2) if args.dry_run else (2, 6)
    gen_steps = 2 if args.dry_run else 28
    if not args.dry_run and known(model) is not None and known(model).distilled:
        gen_steps = known(model).steps  # klein-4b, schnell: their few steps
    phases = [p for p in args.phases.split(",") if p] or default_phases(resolutions)
    root = Path(tempfile.mkdtemp(prefix="lorabooth-bench-gpu-"))
    if not args.dry_run:
        os.environ.setdefault("LORABOOTH_CACHE", str(root / "cache"))
    bench = Bench(args.out or RESULTS, args.budget, device)
    state: dict = {}
    try:
        draw_photos(root / "photos", max(resolutions) + 64)
        bench.phase("build", lambda: build_phase(state, model, folder, device))
        if "pipe" not in state:
            return
        for name in phases:
            run_phase(bench, name, state, root, resolutions, warmup, count, gen_steps, device)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nwritten to {bench.out / 'gpu.json'}")


def default_phases(resolutions: list[int]) -> list[str]:
    top = max(resolutions)
    return (["encode"] + [f"train-{r}" for r in resolutions]
            + [f"train-{top}-nockpt", f"train-{top}-nockpt-compile"]
            + [f"generate-{r}" for r in reversed(resolutions)] + [f"compile-{max(resolutions)}"]
            + [f"cache-{max(resolutions)}"]
            + [f"train-{min(resolutions)}-between", f"train-{min(resolutions)}-compile",
               f"offload-{max(resolutions)}", f"train-{min(resolutions)}-preserve"])


def run_phase(bench: Bench, name: str, state: dict, root: Path, resolutions: list[int],
              warmup: int, count: int, gen_steps: int, device: torch.device) -> None:
    kind, _, rest = name.partition("-")
    r = int(rest.split("-")[0]) if rest else 0
    if kind == "encode":
        bench.phase(name, lambda: encode_phase(state, resolutions, device))
    elif kind == "train":
        variant = rest.partition("-")[2]  # train-512, train-512-between, train-512-compile
        bench.phase(name, lambda: train_phase(state, root, r, warmup, count, device, variant),
                    30)
    elif kind == "capped":  # capped-1024-24[-auto|-nf4]: 1024 px on a simulated 24 GB card
        card = float(rest.split("-")[1]) if "-" in rest else 24.0
        memory = "nf4" if rest.endswith("-nf4") else "auto"
        bench.phase(name, lambda: capped_phase(state, root, r, card, warmup, count, gen_steps,
                                               device, bench, rest.endswith("-auto"), memory),
                    60)
    elif kind == "offload":
        bench.phase(name, lambda: offload_phase(state, r, gen_steps, device), 30)
    elif kind == "bare":
        bench.phase(name, lambda: bare_phase(state, r, not rest.endswith("nockpt"), warmup,
                                             count, device), 20)
    elif kind == "generate":
        row = bench.phase(name, lambda: generate_phase(state, r, gen_steps, device), 20)
        if row and "step_s" in row:
            state[f"eager-{r}"] = row["step_s"]
    elif kind == "cache":  # cache-1024: the first-block cache's full and reused steps
        bench.phase(name, lambda: cache_phase(state, r, gen_steps, device), 20)
    elif kind == "compile":
        eager = state.get(f"eager-{r}")
        if eager is None:
            bench.record({"phase": name, "skipped": f"no eager generate-{r} to compare with"})
        elif device.type == "cuda":
            # compile-1024 (blocks), compile-1024-fp8, compile-1024-fp8-cudagraphs[-cudnn]
            options = rest.partition("-")[2]
            mode = f"blocks-{options}" if options else "blocks"
            bench.phase(name, lambda: compile_phase(state, r, gen_steps, eager, device, mode),
                        150)
    else:
        bench.record({"phase": name, "skipped": "unknown phase"})


if __name__ == "__main__":
    main()
