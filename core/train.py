"""Flux LoRA training: the loop that turns a photo set into a LoRA.

Shaped like diffusers' `train_dreambooth_lora_flux.py`: cache latents and text embeddings,
freeze the base, train a peft LoRA on the transformer with the rectified-flow loss. What it adds
is what a person at a terminal needs: a callback per step with the live numbers, checkpoints
that resume to the same loss curve, a stop that checkpoints first, and samples as it goes.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__, flow
from .checkpoint import (
    CheckpointInfo,
    comfyui_copy,
    latest_checkpoint,
    prune,
    read_state,
    write_checkpoint,
)
from .config import Config
from .dataset import Bucket, ScanOptions, bucket_sizes, nearest_bucket, scan_folder
from .distributed import Team
from .encode import Encoder, EncodeStats
from .fsutil import atomic_write_bytes
from .lora import (
    CLIP_TARGETS,
    LORA_FILE,
    add_lora,
    lora_file_bytes,
    lora_state_dict,
    set_lora_weights,
    target_modules,
)
from .memory import MemoryError_, MemoryPlan, plan_memory
from .models import (
    ModelSource,
    default_device,
    default_dtype,
    load_pipeline,
    resolve_model,
    transformer_params,
)
from .workspace import Workspace


class TrainingError(Exception):
    """A problem the user can fix (no usable photos, a missing optimizer package)."""


@dataclass
class StepMetrics:
    step: int  # steps done, 1-based
    total: int
    loss: float
    lr: float
    grad_norm: float
    seconds: float  # wall time of this step
    images_per_s: float
    gpu_memory_gb: float | None


@dataclass
class TrainResult:
    step: int
    lora_path: Path
    losses: list[float] = field(default_factory=list)
    stopped: bool = False
    encode: EncodeStats = field(default_factory=EncodeStats)


@dataclass(frozen=True)
class Example:
    photo: Path
    sha256: str
    caption: str
    bucket: Bucket


# ---------------------------------------------------------------------------------------------
# data


def collect_examples(ws: Workspace, config: Config) -> list[Example]:
    """Usable photos with their caption and bucket, for every training resolution."""
    folder = config.photos_dir(ws.root)
    if not folder.is_dir():
        raise TrainingError(f"the photos folder {folder} does not exist")
    options = ScanOptions(resolution=min(config.train.resolution), trigger=config.trigger)
    scan = scan_folder(folder, options, ws.cache)
    usable = scan.usable()
    if not usable:
        raise TrainingError(f"no usable photos in {folder}: run `lorabooth check {folder}`")
    examples = []
    for resolution in config.train.resolution:
        buckets = bucket_sizes(resolution)
        for record in usable:
            bucket = nearest_bucket(record.width, record.height, buckets)
            examples.append(Example(folder / record.path, record.measurement.sha256,
                                    record.caption or config.trigger, bucket))
    return examples


def dataset_fingerprint(examples: list[Example]) -> str:
    text = "\n".join(f"{e.sha256} {e.bucket} {e.caption}" for e in examples)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def epoch_batches(examples: list[Example], batch_size: int, seed: int,
                  epoch: int) -> list[list[int]]:
    """The batches of one epoch, each from a single bucket, in a seeded order.

    A pure function of (seed, epoch): a resumed run sees exactly the batches it would have.
    """
    rng = np.random.default_rng([seed, epoch])
    by_bucket: dict[Bucket, list[int]] = {}
    for index, example in enumerate(examples):
        by_bucket.setdefault(example.bucket, []).append(index)
    batches = []
    for bucket in sorted(by_bucket):
        members = list(rng.permutation(by_bucket[bucket]))
        batches += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    order = rng.permutation(len(batches))
    return [[int(i) for i in batches[j]] for j in order]


class BatchOrder:
    """Batch number -> example indices, across epochs."""

    def __init__(self, examples: list[Example], batch_size: int, seed: int):
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self._epoch, self._batches = -1, []
        self.per_epoch = len(epoch_batches(examples, batch_size, seed, 0))

    def __getitem__(self, number: int) -> list[int]:
        epoch, position = divmod(number, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, epoch_batches(
                self.examples, self.batch_size, self.seed, epoch)
        return self._batches[position]


# ---------------------------------------------------------------------------------------------
# optimiser and schedule


def make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float):
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=1e-4, eps=1e-8)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, relative_step=False, scale_parameter=False,
                         warmup_init=False)
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise TrainingError("optimizer adamw8bit needs bitsandbytes: "
                                "pip install 'lorabooth[lowvram]'") from None
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=1e-4)
    if name == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise TrainingError("optimizer prodigy needs prodigyopt: pip install prodigyopt") \
                from None
        return Prodigy(params, lr=lr, weight_decay=1e-4, safeguard_warmup=True)
    raise TrainingError(f"unknown optimizer {name!r}")


def lr_lambda(warmup: int, total: int, schedule: str) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0
    return factor


# ---------------------------------------------------------------------------------------------
# samples on disk


def save_png(image, path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def write_contact_sheet(samples: Path, cell: int = 192) -> Path | None:
    """One image of every sample so far: a row per step, a column per prompt. Faces peak
    early and then overfit; the sheet shows where."""
    from PIL import Image, ImageDraw

    steps = sorted(p for p in samples.glob("step-*") if p.is_dir())
    grid = [sorted(step.glob("prompt-*.png")) for step in steps]
    columns = max((len(row) for row in grid), default=0)
    if not columns:
        return None
    label = 96
    sheet = Image.new("RGB", (label + columns * cell, len(grid) * cell), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, (step, row) in enumerate(zip(steps, grid, strict=True)):
        draw.text((8, r * cell + cell // 2), step.name.replace("step-", "step "),
                  fill=(220, 220, 220))
        for c, path in enumerate(row):
            with Image.open(path) as img:
                sheet.paste(img.convert("RGB").resize((cell, cell)), (label + c * cell, r * cell))
    return save_png(sheet, samples / "contact_sheet.png")


# ---------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    def __init__(self, ws: Workspace, config: Config | None = None,
                 source: ModelSource | None = None, device: str | torch.device | None = None,
                 on_step: Callable[[StepMetrics], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 log: Callable[[str], None] | None = None,
                 on_sample: Callable[[int, list[Path]], None] | None = None,
                 pipe=None):
        """`pipe`: a pipeline of the same model already in memory (the engine's warm one),
        used instead of loading a second copy when its precision fits the memory plan."""
        self.ws = ws
        self.config = config or ws.config()
        self.source = source or resolve_model(self.config.model)
        self.team = Team()
        self.device = self.team.device(torch.device(device) if device is not None
                                       else default_device())
        self.dtype = default_dtype(self.device)
        self.on_step = on_step or (lambda m: None)
        self.should_stop = should_stop or (lambda: False)
        self.log = log or (lambda text: None)
        self.on_sample = on_sample or (lambda step, paths: None)
        self.warm_pipe = pipe
        self.loaded_model = False  # whether prepare() loaded weights from disk
        self.pipe = None
        self.examples: list[Example] = []
        self.encoder: Encoder | None = None

    # -- setup --------------------------------------------------------------------------

    def plan_memory(self) -> MemoryPlan:
        t = self.config.train
        free = None
        bf16 = True
        if self.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.device)[0] / 2**30
            bf16 = torch.cuda.is_bf16_supported()
        try:
            import bitsandbytes  # noqa: F401
            have_bnb = True
        except ImportError:
            have_bnb = False
        try:
            return plan_memory(t.memory, self.device.type, free,
                               transformer_params(self.source), max(t.resolution), have_bnb,
                               bf16)
        except MemoryError_ as exc:
            raise TrainingError(str(exc)) from None

    def prepare(self) -> None:
        """Load the model, encode the data set into the cache, attach a fresh LoRA."""
        t = self.config.train
        self.examples = collect_examples(self.ws, self.config)
        plan = self.plan_memory()
        self.dtype = getattr(torch, plan.dtype)
        self.log(f"{len(self.examples)} training examples on {self.device}; {plan.reason}")
        warm = self.warm_pipe
        if warm is not None and plan.quantize is None and warm.transformer.dtype == self.dtype:
            warm.unload_lora_weights()  # adapters a generation job loaded
            self.pipe = warm
        else:
            self.pipe = load_pipeline(self.source, self.dtype, self.device, plan.quantize)
            self.loaded_model = True
        self.encoder = Encoder(self.pipe, self.ws.cache, self.source.max_sequence_length)
        self._encode_all()
        self._park_encoders()
        transformer = self.pipe.transformer
        self.components = {"transformer": transformer}
        if t.text_encoder_lora:
            self.components["text_encoder"] = self.pipe.text_encoder
        self.adapters = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(t.seed)  # the LoRA's initial weights are part of the run
            for name, module in self.components.items():
                targets = target_modules(transformer, t.targets) if name == "transformer" \
                    else CLIP_TARGETS
                self.adapters[name] = add_lora(module, t.rank, t.alpha, targets, t.dropout)
        torch.manual_seed(t.seed + 1)  # LoRA dropout draws from the global generator
        if t.text_encoder_lora:
            self.pipe.text_encoder.train()
            self.clip_ids = {c: self._clip_ids(c) for c in self.texts}
        if plan.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        transformer.train()
        self.model = self.team.wrap(transformer)  # DDP under `accelerate launch`
        self.params = [p for module in self.components.values()
                       for p in module.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(t.optimizer, self.params, t.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(t.warmup_steps, t.steps, t.lr_schedule))
        self.ema = [p.detach().float().clone() for p in self.params] if t.ema_decay else None
        self.order = BatchOrder(self.examples, t.batch_size, t.seed)
        # Each process draws its own noise; a single process draws exactly as before.
        self.generator = torch.Generator().manual_seed(t.seed + self.team.rank)
        self.step = 0
        self.total = t.steps

    def _encode_all(self) -> None:
        self.latents = [self.encoder.latent(e.photo, e.sha256, e.bucket) for e in self.examples]
        captions = sorted({e.caption for e in self.examples} | {""})
        self.texts = {c: self.encoder.text(c) for c in captions}
        self.sample_prompts = [p.replace("{trigger}", self.config.trigger)
                               for p in self.config.sample.prompts]
        self.sample_texts = [self.encoder.text(p) for p in self.sample_prompts]

    def _clip_ids(self, caption: str) -> torch.Tensor:
        tok = self.pipe.tokenizer
        return tok(caption, padding="max_length", max_length=tok.model_max_length,
                   truncation=True, return_tensors="pt").input_ids[0]

    def _park_encoders(self) -> None:
        """The text encoders are not needed once everything is cached: free their memory."""
        if self.device.type == "cuda":
            if not self.config.train.text_encoder_lora:  # else CLIP trains on the GPU
                self.pipe.text_encoder.to("cpu")
            self.pipe.text_encoder_2.to("cpu")
            torch.cuda.empty_cache()

    # -- one step -----------------------------------------------------------------------

    def _batch(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.config.train
        x0 = torch.stack([self.latents[i] for i in indices])
        captions = [self.examples[i].caption for i in indices]
        drop = torch.rand(len(indices), generator=self.generator) < t.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        embeds = torch.stack([self.texts[c][0] for c in captions])
        if self.config.train.text_encoder_lora:
            # The CLIP LoRA changes the pooled embedding: computed live, with gradients.
            ids = torch.stack([self.clip_ids[c] for c in captions]).to(self.device)
            pooled = self.pipe.text_encoder(ids, output_hidden_states=False).pooler_output
        else:
            pooled = torch.stack([self.texts[c][1] for c in captions])
        return x0, embeds, pooled

    def loss_on(self, indices: list[int]) -> torch.Tensor:
        t = self.config.train
        x0, embeds, pooled = self._batch(indices)
        b, _, h, w = x0.shape
        tokens = (h // 2) * (w // 2)
        sigmas = flow.sample_sigmas(t.timestep_sampling, b, self.generator, tokens)
        noise = torch.randn(x0.shape, generator=self.generator)
        dev, dt = self.device, self.dtype
        x0, noise = x0.to(dev), noise.to(dev)
        noisy = flow.noisy_latents(x0, noise, sigmas.to(dev))
        transformer = self.pipe.transformer
        guidance = (torch.full((b,), t.guidance, device=dev, dtype=torch.float32)
                    if transformer.config.guidance_embeds else None)
        with torch.autocast(dev.type, dtype=dt, enabled=dt != torch.float32):
            pred = self.model(
                hidden_states=flow.pack(noisy).to(dt),
                timestep=sigmas.to(dev, dt),
                guidance=guidance,
                pooled_projections=pooled.to(dev, dt),
                encoder_hidden_states=embeds.to(dev, dt),
                txt_ids=flow.text_ids(embeds.shape[1], dev, dt),
                img_ids=flow.image_ids(h, w, dev, dt),
                return_dict=False,
            )[0]
        pred = flow.unpack(pred.float(), h, w)
        return torch.nn.functional.mse_loss(pred, flow.velocity_target(x0, noise))

    def train_step(self) -> StepMetrics:
        t = self.config.train
        start = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        total_loss, images = 0.0, 0
        for micro in range(t.grad_accum):
            # Several processes take interleaved batches; one takes them all, in order.
            number = (self.step * t.grad_accum + micro) * self.team.world + self.team.rank
            indices = self.order[number]
            loss = self.loss_on(indices) / t.grad_accum
            loss.backward()
            total_loss += float(loss.detach())
            images += len(indices)
        limit = t.max_grad_norm if t.max_grad_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, limit))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            with torch.no_grad():
                for average, param in zip(self.ema, self.params, strict=True):
                    average.lerp_(param.detach().float(), 1 - t.ema_decay)
        self.step += 1
        total_loss = self.team.mean(total_loss)
        images *= self.team.world
        seconds = time.perf_counter() - start
        memory = (torch.cuda.max_memory_allocated(self.device) / 2**30
                  if self.device.type == "cuda" else None)
        return StepMetrics(self.step, self.total, total_loss, lr, grad_norm, seconds,
                           images / seconds, memory)

    # -- checkpoints --------------------------------------------------------------------

    def _info(self) -> dict[str, object]:
        t = self.config.train
        return {"base_model": self.config.model, "trigger": self.config.trigger,
                "rank": t.rank, "alpha": t.alpha, "steps": self.step,
                "resolution": ",".join(map(str, t.resolution)),
                "dataset": dataset_fingerprint(self.examples), "version": __version__}

    def lora_bytes(self) -> bytes:
        """The LoRA file's bytes; with EMA on, of the averaged weights."""
        if self.ema is None:
            return lora_file_bytes(self.components, self.adapters, self._info(), self.dtype)
        live = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for param, average in zip(self.params, self.ema, strict=True):
                param.copy_(average)
            try:
                return lora_file_bytes(self.components, self.adapters, self._info(),
                                       self.dtype)
            finally:
                for param, saved in zip(self.params, live, strict=True):
                    param.copy_(saved)

    def save_checkpoint(self, loss: float | None = None) -> CheckpointInfo | None:
        if not self.team.main:  # the weights are the same everywhere; one process writes
            self.team.wait()
            return None
        state = {
            "step": self.step,
            "lora": lora_state_dict(self.components),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "fingerprint": dataset_fingerprint(self.examples),
            "ema": self.ema,
        }
        info = write_checkpoint(self.ws.checkpoints, self.step, state,
                                {LORA_FILE: self.lora_bytes()},
                                {"step": self.step, "loss": loss, "time": time.time()})
        prune(self.ws.checkpoints, self.config.train.keep_checkpoints)
        self.team.wait()
        return info

    def resume_from(self, info: CheckpointInfo) -> None:
        state = read_state(info)
        if state["fingerprint"] != dataset_fingerprint(self.examples):
            self.log("the photos or captions changed since this checkpoint; resuming anyway")
        set_lora_weights(self.components, state["lora"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        if self.team.rank:  # the checkpoint holds the first process's draws; others re-seed
            self.generator.manual_seed(self.config.train.seed + self.team.rank
                                       + 1_000_003 * state["step"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema = [average.clone() for average in state["ema"]]
        self.step = state["step"]
        self.log(f"resumed from {info.path.name}")

    def release(self):
        """Hand the pipeline back for generation: the training adapter removed, the base
        frozen and in eval mode, the text encoders back beside it."""
        if self.pipe is None:
            return None
        from .lora import ADAPTER, remove_lora

        transformer = self.pipe.transformer
        if ADAPTER in getattr(transformer, "peft_config", {}):
            transformer.delete_adapters(ADAPTER)
        clip = self.pipe.text_encoder
        if "text_encoder" in getattr(self, "components", {}):
            remove_lora(clip)
        clip.eval()
        if getattr(transformer, "is_gradient_checkpointing", False):
            transformer.disable_gradient_checkpointing()
        transformer.requires_grad_(False)
        transformer.eval()
        self.pipe.text_encoder.to(self.device)
        self.pipe.text_encoder_2.to(self.device)
        return self.pipe

    # -- samples ------------------------------------------------------------------------

    def render_samples(self) -> list[Path]:
        """The sample prompts at this step, from fixed seeds, without touching the training
        state: eval mode, no grad, and the RNGs as they were."""
        s = self.config.sample
        if not self.sample_texts:
            return []
        size = min(self.config.train.resolution)
        folder = self.ws.outputs / "samples" / f"step-{self.step:06d}"
        transformer = self.pipe.transformer
        clip_trains = self.config.train.text_encoder_lora
        transformer.eval()
        self.pipe.text_encoder.eval()
        paths = []
        try:
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                for index, (embeds, pooled) in enumerate(self.sample_texts):
                    if clip_trains:  # the cached pooled embedding predates the CLIP LoRA
                        ids = self._clip_ids(self.sample_prompts[index])[None].to(self.device)
                        pooled = self.pipe.text_encoder(ids).pooler_output[0]
                    image = self.pipe(
                        prompt_embeds=embeds[None].to(self.device, self.dtype),
                        pooled_prompt_embeds=pooled[None].to(self.device, self.dtype),
                        height=size, width=size, num_inference_steps=s.steps,
                        generator=torch.Generator(self.device).manual_seed(s.seed + index),
                    ).images[0]
                    paths.append(save_png(image, folder / f"prompt-{index:02d}.png"))
        finally:
            transformer.train()
            if clip_trains:
                self.pipe.text_encoder.train()
        write_contact_sheet(self.ws.outputs / "samples")
        return paths

    # -- the run ------------------------------------------------------------------------

    def run(self, steps: int | None = None, resume: bool = False) -> TrainResult:
        """Train up to `steps` (default: the config's) steps in all, checkpointing as it goes."""
        if self.pipe is None:
            self.prepare()
        total = self.total = steps or self.config.train.steps
        if resume and (info := latest_checkpoint(self.ws.checkpoints)) is not None:
            self.resume_from(info)
        result = TrainResult(self.step, self.ws.loras / LORA_FILE, encode=self.encoder.stats)
        every = self.config.train.checkpoint_every
        loss = None
        while self.step < total:
            metrics = self.train_step()
            loss = metrics.loss
            result.losses.append(metrics.loss)
            if self.team.main:
                self.on_step(metrics)
            if self.step % every == 0 or self.step == total:
                self.save_checkpoint(loss)
            sample_every = self.config.sample.every
            if sample_every and self.team.main and (self.step % sample_every == 0
                                                    or self.step == total):
                self.on_sample(self.step, self.render_samples())
            if self.team.any(self.should_stop()) and self.step < total:
                if self.step % every:
                    self.save_checkpoint(loss)
                result.stopped = True
                break
        result.step = self.step
        if not result.stopped and self.team.main:
            atomic_write_bytes(result.lora_path, self.lora_bytes())
            comfyui_copy(result.lora_path)
        return result

