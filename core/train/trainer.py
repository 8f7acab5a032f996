"""Flux LoRA training: the loop that turns a photo set into a LoRA.

Shaped like diffusers' `train_dreambooth_lora_flux.py`: cache latents and text embeddings,
freeze the base, train a peft LoRA on the transformer with the rectified-flow loss. What it adds
is what a person at a terminal needs: a callback per step with the live numbers, checkpoints
that resume to the same loss curve, a stop that checkpoints first, and samples as it goes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import version
from ..config import Config
from ..dataset.captions import class_caption
from ..errors import describe_os_error
from ..fsutil import atomic_write_bytes, json_number
from ..memory import Plan
from ..models.autocompile import AutoCompile, record_key
from ..models.compile import apply as compile_transformer
from ..models.compile import begin_step
from ..models.family import family_of
from ..models.load import (
    big_text_encoder,
    default_device,
    default_dtype,
    place_transformer,
    use_safe_attention,
)
from ..models.owner import ModelOwner
from ..models.registry import require_supported, require_trainable
from ..models.resolve import ModelSource, resolve_model
from ..models.sizes import training_plan
from ..models.stream import stream_from_cpu
from ..system_memory import require_system_memory, system_ram_words
from ..workspace import LORA_FILE, Workspace
from . import TrainingError, flow
from .checkpoint import (
    MEASURED_KEY,
    CheckpointInfo,
    CheckpointUnreadable,
    comfyui_copy,
    forget_promotion,
    list_checkpoints,
    lowest_validation,
    promoted,
    prune,
    read_state,
    recorded_measures,
    recorded_total,
    step_dir_name,
    validations_of,
    write_checkpoint,
)
from .claim import TrainingClaim
from .data import BatchOrder, Example, collect_examples, dataset_fingerprint
from .distributed import Team
from .ema import Ema
from .encode import Encoder, EncodeStats
from .lora import (
    CLIP_TARGETS,
    adapters_off,
    add_lora,
    lora_file_bytes,
    skip_input_casts,
    target_modules,
)
from .optim import lr_lambda, make_optimizer
from .pending import PendingStep, guards_on_device, step_guarded, upload
from .samples import render_samples, sample_prompts
from .state import choose_run, restore, state_of
from .validation import SIGMAS, describe, fixed_noise, kept_of, split_examples


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
class Draw:
    """One batch as a step draws it: every pass of the step (training, preservation) sees the
    same noisy latents at the same noise levels."""

    subjects: list[str]  # the examples' captions
    captions: list[str]  # what this step trains them with (a dropped caption is empty)
    noisy: torch.Tensor
    sigmas: torch.Tensor
    target: torch.Tensor  # the true velocity
    guidance: torch.Tensor | None


@dataclass
class TrainResult:
    step: int
    lora_path: Path
    losses: list[float] = field(default_factory=list)
    stopped: bool = False
    encode: EncodeStats = field(default_factory=EncodeStats)
    run: str = ""


def checkpointing(preserve_rng: bool) -> Callable:
    """Each block recomputed in the backward pass, as diffusers does, but with the RNG state
    saved around a block only when something in it draws random numbers (LoRA dropout): Flux's
    blocks draw none, and saving and restoring every device's RNG per block is pure overhead."""
    from torch.utils.checkpoint import checkpoint

    def run(module, *args):
        return checkpoint(module.__call__, *args, use_reentrant=False,
                          preserve_rng_state=preserve_rng)
    return run


class Trainer:
    def __init__(self, ws: Workspace, config: Config | None = None,
                 source: ModelSource | None = None, device: str | torch.device | None = None,
                 on_step: Callable[[StepMetrics], None] | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 log: Callable[[str], None] | None = None,
                 on_sample: Callable[[int, list[Path]], None] | None = None,
                 owner: ModelOwner | None = None,
                 on_validation: Callable[[int, float], None] | None = None,
                 on_run_start: Callable[[str, int, int], None] | None = None,
                 on_run_end: Callable[[TrainResult | None, BaseException | None], None]
                 | None = None):
        """`owner` holds the loaded pipeline (the engine's, shared with generation); without
        one the trainer has its own. `on_run_start(run, step, total)` is told, on the first
        process, which run trains from which step to which once a resume has loaded;
        `on_run_end(result, error)` how `run` ended, before the workspace's claim is let go."""
        self.ws = ws
        self.config = config or ws.config()
        self.source = source or resolve_model(self.config.model)
        require_supported(self.source.model)
        require_trainable(self.source.model, self.config.train.text_encoder_lora)
        self.family = family_of(self.source.model)
        self.team = Team()
        self.device = self.team.device(torch.device(device) if device is not None
                                       else default_device())
        self.dtype = default_dtype(self.device)
        use_safe_attention(self.device)
        self.on_step = on_step or (lambda m: None)
        self.should_stop = should_stop or (lambda: False)
        self.log = log or (lambda text: None)
        self.on_sample = on_sample or (lambda step, paths: None)
        self.on_validation = on_validation or (lambda step, loss: None)
        self.on_run_start = on_run_start or (lambda run, step, total: None)
        self.on_run_end = on_run_end or (lambda result, error: None)
        self.owner = owner or ModelOwner()
        self.loaded_model = False  # whether prepare() loaded weights from disk
        self.pipe = None
        self.autocompile = None
        self.examples: list[Example] = []
        self.encoder: Encoder | None = None
        self.step = 0
        self.run_dir: Path | None = None  # chosen when a run starts

    # -- setup --------------------------------------------------------------------------

    def plan_memory(self) -> Plan:
        """The whole pipeline's memory for this run (see core/memory.py); a model this process
        holds already counts as available, since it is reused or freed before loading."""
        return training_plan(self.config, self.source.path, self.source.max_sequence_length,
                             self.device)

    def prepare(self, resuming: Path | None = None) -> None:
        """Load the model, encode the data set into the cache, attach a fresh LoRA.
        `resuming`: the run this trainer goes on with, whose measured photos stay the same."""
        t = self.config.train
        held_out = t.validation_photos if t.validate else 0
        kept = kept_of(recorded_measures(resuming), resuming.name) if resuming else None
        self.split = split_examples(collect_examples(self.ws, self.config), held_out, t.seed,
                                    min(t.resolution), kept if t.validate else None)
        self.examples = self.split.train
        plan = self.plan = self.plan_memory()
        self.dtype = getattr(torch, plan.dtype)
        resident = self.owner.resident(self.source, self.dtype, plan.quantize)
        require_system_memory(plan, self.owner.host_gib(), loading=not resident,
                              processes=self.team.local_world)
        self.log(f"{len(self.examples)} training examples on {self.device}; {plan.reason}"
                 f"{system_ram_words(plan)}")
        if self.device.type == "cpu" and self.dtype == torch.bfloat16:
            from ..kernels.cpu_attention import install, needs_building

            if needs_building():
                self.log("compiling lorabooth's CPU attention backward (once on this machine)")
            self.log(install())
        if not resident:
            self.log(f"loading the model {self.source.spec}")  # the UI's state until step 1
        self.pipe, self.loaded_model = self.owner.borrow_for_training(
            self.source, self.dtype, self.device, plan.quantize,
            "all" if plan.encoders_on_gpu else "caching" if plan.text_on_gpu else "lean")
        if self.source.model.distilled:  # schnell: trainable, with a warning
            self.log("this base does not embed guidance (FLUX.1 [schnell]): training straight "
                     "on it undoes its few-step distillation; train on FLUX.1 [dev], or merge a "
                     "schnell training adapter (ai-toolkit's) into it first")
        self.encoder = Encoder(self.pipe, self.ws.cache, self.source.max_sequence_length,
                               self.family)
        self.log(f"encoding {len(self.examples)} photos and their captions (cached)")
        self._encode_all()
        if t.validate:
            self.log(f"validation loss: measured on {describe(self.split)} at each "
                     "checkpoint, and on the base model before the first step")
            if self.split.note:
                self.log(self.split.note)
        if self.preserving:
            example = next(iter(self.class_captions.values()))
            self.log(f"preserving the class: each step also trains the captions with "
                     f"{t.preserved!r} for the trigger word (as "
                     f"{example!r}) to give the base model's output")
        self._park_encoders()
        transformer = self.pipe.transformer
        self.components = {"transformer": transformer}
        if t.text_encoder_lora:
            self.components["text_encoder"] = self.pipe.text_encoder
        if plan.quantize == "nf4":
            # As diffusers' QLoRA example, before the LoRA is added (it freezes every weight
            # there is): small weights in float32 and inputs that require grad, so gradients
            # flow through the 4-bit base into the LoRA.
            from peft import prepare_model_for_kbit_training

            prepare_model_for_kbit_training(transformer, use_gradient_checkpointing=False)
        self.adapters = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(t.seed)  # the LoRA's initial weights are part of the run
            for name, module in self.components.items():
                targets = target_modules(transformer, t.targets) if name == "transformer" \
                    else CLIP_TARGETS
                self.adapters[name] = add_lora(module, t.rank, t.alpha, targets, t.dropout)
        torch.manual_seed(t.seed + 1)  # LoRA dropout draws from the global generator
        # Every call of the transformer while it trains runs in `precision()`.
        self.uncast = skip_input_casts(transformer) if self.dtype != torch.float32 else []
        if t.text_encoder_lora:
            self.pipe.text_encoder.train()
            self.clip_ids = {c: self.clip_ids_of(c) for c in self.texts}
        if plan.gradient_checkpointing:
            transformer.enable_gradient_checkpointing(checkpointing(t.dropout > 0))
        transformer.train()
        self.autocompile = None
        if t.compile == "auto":  # decided in run(), by measurement (see autocompile.py)
            key = record_key(self.device, self.source.spec, max(t.resolution), t.batch_size,
                             self.dtype)
            self.autocompile = AutoCompile(transformer, self.device, key, self.log,
                                           shared=self.team.world > 1,
                                           checkpointing=plan.gradient_checkpointing)
        else:
            self.log(compile_transformer(transformer, t.compile, self.device,
                                         checkpointing=plan.gradient_checkpointing))
        self.model = self.team.wrap(transformer)  # DDP under `accelerate launch`
        # The CLIP LoRA trains too: wrapped as well, so its gradients are averaged across
        # processes like the transformer's (rank 0's alone were saved before).
        self.clip = self.team.wrap(self.pipe.text_encoder) if t.text_encoder_lora else None
        self.params = [p for module in self.components.values()
                       for p in module.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(t.optimizer, self.params, t.learning_rate, self.log,
                                        fused=self.device.type == "cuda")
        self.ema = Ema(self.params, t.ema_decay) if t.ema_decay else None
        # float16 (GPUs without native bf16) needs loss scaling; elsewhere this is a no-op.
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.dtype == torch.float16)
        self.order = BatchOrder(self.examples, t.batch_size, t.seed)
        # Each process draws its own noise; a single process draws exactly as before.
        self.generator = torch.Generator().manual_seed(t.seed + self.team.rank)
        self.step = 0
        self.total = t.steps
        self._settled_at = 0.0  # when the last step's numbers were read

    def _encode_all(self) -> None:
        self.latents = [self.encoder.latent(e.photo, e.sha256, e.bucket) for e in self.examples]
        self.measured = ([(e, self.encoder.latent(e.photo, e.sha256, e.bucket))
                          for e in self.split.measured] if self.config.train.validate else [])
        captions = {e.caption for e in self.examples} | {e.caption for e, _ in self.measured}
        word = self.config.train.preserved
        self.class_captions = {c: class_caption(c, self.config.trigger, word)
                               for c in captions} if word else {}
        captions = sorted(captions | {""} | set(self.class_captions.values()))
        self.texts = {c: self.encoder.text(c) for c in captions}
        self._warn_long_captions(captions)
        self.sample_prompts = sample_prompts(self.config)
        self.sample_texts = [self.encoder.text(p) for p in self.sample_prompts]

    def prompt_embeds(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A prompt as the model being trained sees it: T5 from the cache (encoded where T5
        lives), the pooled CLIP embedding live when the CLIP LoRA trains."""
        if not self.config.train.text_encoder_lora:
            return self.encoder.text(prompt)
        clip = self.pipe.text_encoder
        with adapters_off(clip):  # the cache keeps the base's encoding
            embeds, _ = self.encoder.text(prompt)
        with torch.no_grad():
            ids = self.clip_ids_of(prompt)[None].to(clip.device)
            pooled = clip(ids, output_hidden_states=False).pooler_output[0].float().cpu()
        return embeds, pooled

    def pipe_text(self, prompt: str) -> dict:
        """A pipeline call's text inputs for `prompt` as the model being trained sees it (and
        the empty negative prompt where the model uses true CFG), from the cache."""
        embeds, pooled = self.prompt_embeds(prompt)
        negative = self.texts[""] if self.source.model.guidance_mode == "cfg" else None
        return self.family.pipe_text(embeds, pooled, negative, self.device, self.dtype)

    def clip_ids_of(self, caption: str) -> torch.Tensor:
        tok = self.pipe.tokenizer
        return tok(caption, padding="max_length", max_length=tok.model_max_length,
                   truncation=True, return_tensors="pt").input_ids[0]

    def _warn_long_captions(self, captions: list[str]) -> None:
        if self.source.is_demo:
            # The demo reads 32 tokens of a tiny tokenizer, by design (speed), and its own
            # sample captions run past that: a warning there would only puzzle a newcomer.
            return
        long = self.encoder.too_long(captions)
        if long:
            limit = self.source.max_sequence_length
            self.log(f"{len(long)} caption(s) are longer than the {limit} tokens the text "
                     f"encoder reads (the longest: {max(long.values())}): training never sees "
                     "their ends; shorten them, putting what matters first")

    def _park_encoders(self) -> None:
        """Once everything is cached, T5 waits in CPU memory if the plan has no room for it
        beside the transformer, streaming to the GPU a layer at a time for a prompt queued
        while training (stream.py); CLIP, 0.2 GiB, stays: it may train, and a queued prompt
        needs it. Then the transformer comes to the GPU."""
        if self.device.type == "cuda" and not self.plan.encoders_on_gpu:
            stream_from_cpu(getattr(self.pipe, big_text_encoder(self.pipe)), self.device)
            torch.cuda.empty_cache()
        if self.plan.quantize != "nf4":  # bitsandbytes placed it at load
            place_transformer(self.pipe.transformer, self.device, self.plan.quantize)

    # -- one step -----------------------------------------------------------------------

    def draw(self, indices: list[int]) -> Draw:
        """A batch with its captions (some dropped), noise levels and noise, on the device."""
        t = self.config.train
        x0 = torch.stack([self.latents[i] for i in indices])
        captions = [self.examples[i].caption for i in indices]
        drop = torch.rand(len(indices), generator=self.generator) < t.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        b, _, h, w = x0.shape
        sigmas = flow.sample_sigmas(t.timestep_sampling, b, self.generator,
                                    self.family.tokens(h, w), t.logit_mean, t.logit_std)
        noise = torch.randn(x0.shape, generator=self.generator)
        dev = self.device
        x0, noise, sigmas = (upload(v, dev) for v in (x0, noise, sigmas))
        guidance = (torch.full((b,), t.guidance, device=dev, dtype=torch.float32)
                    if self.pipe.transformer.config.guidance_embeds else None)
        return Draw([self.examples[i].caption for i in indices], captions,
                    flow.noisy_latents(x0, noise, sigmas), sigmas,
                    flow.velocity_target(x0, noise), guidance)

    def _text(self, captions: list[str], live_clip: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The captions' embeddings on the device: T5 from the cache; the pooled CLIP embedding
        computed live, with gradients, where the CLIP LoRA trains (`live_clip`), else cached
        (the base's)."""
        embeds = torch.stack([self.texts[c][0] for c in captions])
        if live_clip:
            ids = upload(torch.stack([self.clip_ids[c] for c in captions]), self.device)
            pooled = self.clip(ids, output_hidden_states=False).pooler_output
        else:
            pooled = upload(torch.stack([self.texts[c][1] for c in captions]), self.device)
        return upload(embeds, self.device), pooled

    def predict(self, model: torch.nn.Module, d: Draw, captions: list[str],
                live_clip: bool) -> torch.Tensor:
        embeds, pooled = self._text(captions, live_clip)
        with self.precision():
            return self.family.predict(model, d.noisy, d.sigmas, embeds, pooled, d.guidance,
                                       self.dtype)

    def flow_loss(self, d: Draw) -> torch.Tensor:
        """The rectified-flow loss: the model's velocity against the true one."""
        pred = self.predict(self.model, d, d.captions, self.config.train.text_encoder_lora)
        return torch.nn.functional.mse_loss(pred, d.target)

    def loss_on(self, indices: list[int]) -> torch.Tensor:
        return self.flow_loss(self.draw(indices))

    @property
    def preserving(self) -> bool:
        return bool(self.class_captions)

    def base_prediction(self, d: Draw) -> torch.Tensor:
        """What the base model (no LoRA) predicts for the batch's class captions. Made before
        the step's forward passes: with gradient checkpointing the backward pass runs each
        block again, and must find the LoRA on (ai-toolkit learned this the hard way)."""
        classes = [self.class_captions[c] for c in d.subjects]
        transformer = self.pipe.transformer
        with torch.no_grad(), adapters_off(transformer):
            prior = self.predict(transformer, d, classes, live_clip=False)
        begin_step(transformer)  # a render began a CUDA-graph step; the training one follows
        return prior

    def preservation_loss(self, d: Draw, prior: torch.Tensor) -> torch.Tensor:
        """How far the LoRA moves the class captions' prediction from the base model's."""
        classes = [self.class_captions[c] for c in d.subjects]
        pred = self.predict(self.model, d, classes, self.config.train.text_encoder_lora)
        return torch.nn.functional.mse_loss(pred, prior)

    @contextlib.contextmanager
    def evaluating(self) -> Iterator[None]:
        """The weights a checkpoint saves, run to look rather than to learn: eval mode (no
        dropout), no gradients, the RNGs left as they were, training's precision; then back to
        training. Samples and the validation loss are made so."""
        pipe = self.pipe
        pipe.transformer.eval()
        pipe.text_encoder.eval()
        try:
            with (torch.random.fork_rng(devices=[]), torch.no_grad(), self.saved_weights(),
                  self.precision()):
                yield
        finally:
            pipe.transformer.train()
            if self.config.train.text_encoder_lora:
                pipe.text_encoder.train()

    def validation_loss(self) -> float:
        """The loss at fixed noise levels with fixed noise on the measured photos
        (validation.py): comparable between checkpoints, as training's own loss is not."""
        t = self.config.train
        model = self.pipe.transformer
        guidance = (torch.full((1,), t.guidance, device=self.device, dtype=torch.float32)
                    if model.config.guidance_embeds else None)
        total = torch.zeros((), device=self.device)
        with self.evaluating():
            for example, latent in self.measured:
                embeds, pooled = self.prompt_embeds(example.caption)
                x0 = upload(latent[None], self.device)
                noise = upload(fixed_noise(example.sha256, t.seed, x0.shape), self.device)
                target = flow.velocity_target(x0, noise)
                for sigma in SIGMAS:
                    sigmas = torch.full((1,), sigma, device=self.device)
                    pred = self.family.predict(model, flow.noisy_latents(x0, noise, sigmas),
                                               sigmas, embeds[None], pooled[None], guidance,
                                               self.dtype)
                    total += torch.nn.functional.mse_loss(pred, target)
        return total.item() / (len(self.measured) * len(SIGMAS))

    def report_validation(self) -> float:
        loss = self.validation_loss()
        self.on_validation(self.step, loss)
        what = "the base model" if self.step == 0 else f"step {self.step}"
        self.log(f"validation loss {loss:.4f} at {what} ({describe(self.split)})")
        return loss

    def precision(self) -> contextlib.AbstractContextManager:
        """The precision the transformer runs in, for training steps and for every render
        between them (samples, queued prompts), so a sample shows the float32 LoRA over the
        half-precision base as the step computes it. Outside autocast a LoRA layer whose peft
        input cast is off (diffusers' layerwise casting turns it off for layers it finds
        adapted) would multiply bf16 by float32."""
        dt = self.dtype
        return torch.autocast(self.device.type, dtype=dt, enabled=dt != torch.float32)

    def train_step(self) -> StepMetrics:
        """One step, its numbers read at once."""
        return self.settle(self.launch_step())

    def launch_step(self) -> PendingStep:
        """Queue one step: forward, backward, clipping and the optimizer's update. With an
        optimizer that guards itself on the card (`self.guarded`), a non-finite loss or
        gradient skips the update there and is raised when the step settles; otherwise it is
        read here and raised before the update."""
        t = self.config.train
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        begin_step(self.pipe.transformer)
        losses, images = [], 0
        for micro in range(t.grad_accum):
            # Several processes take interleaved batches; one takes them all, in order.
            number = (self.step * t.grad_accum + micro) * self.team.world + self.team.rank
            indices = self.order[number]
            d = self.draw(indices)
            prior = self.base_prediction(d) if self.preserving else None
            loss = self.flow_loss(d) / t.grad_accum
            self.scaler.scale(loss).backward()
            losses.append(loss.detach().float())
            if prior is not None:
                # Its own backward pass, after the first: the step's peak memory stays one
                # pass's, as without preservation.
                kept = self.preservation_loss(d, prior) * (t.preserve_weight / t.grad_accum)
                self.scaler.scale(kept).backward()
            images += len(indices)
        self.scaler.unscale_(self.optimizer)
        limit = t.max_grad_norm if t.max_grad_norm > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, limit)
        numbers = torch.stack([sum(losses), grad_norm.float().to(losses[0].device)])
        pending = PendingStep.of(self.step + 1, self.scheduler.get_last_lr()[0],
                                 images * self.team.world, numbers, started)
        if self.guarded:
            step_guarded(self.optimizer, numbers)
        else:
            # Stop before the optimizer step writes NaN into the LoRA: the checkpoints on
            # disk stay good.
            self._refuse_non_finite(pending)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.params, self.step)
        self.step += 1
        return pending

    def _refuse_non_finite(self, pending: PendingStep) -> None:
        loss, grad_norm = pending.read()
        # With loss scaling an inf gradient is routine: the scaler skips that step.
        grads_bad = not math.isfinite(grad_norm) and not self.scaler.is_enabled()
        if not math.isfinite(loss) or grads_bad:
            raise TrainingError(
                f"the loss became {loss} (gradient norm {grad_norm}) at step "
                f"{pending.step}: training stopped and the last good checkpoint is kept; "
                "lower train.learning_rate, then resume")

    def settle(self, pending: PendingStep) -> StepMetrics:
        """A queued step's numbers, once its kernels are done (a non-finite one raises)."""
        self._refuse_non_finite(pending)
        loss, grad_norm = pending.read()
        loss = self.team.mean(loss)
        now = time.perf_counter()
        # A step queued while the one before ran took the time between their ends.
        seconds = now - max(pending.started, self._settled_at)
        self._settled_at = now
        memory = (torch.cuda.max_memory_allocated(self.device) / 2**30
                  if self.device.type == "cuda" else None)
        return StepMetrics(pending.step, self.total, loss, pending.lr, grad_norm, seconds,
                           pending.images / seconds, memory)

    @property
    def guarded(self) -> bool:
        """Whether steps are checked for NaN on the card (the optimizer skips a bad update
        there), so a step's numbers can be read after the next step is queued. Not with loss
        scaling (its scaler reads them), nor across processes (their mean is a collective)."""
        return (guards_on_device(self.optimizer) and not self.scaler.is_enabled()
                and self.team.world == 1)

    # -- checkpoints --------------------------------------------------------------------

    def _settled(self, pending: PendingStep, result: TrainResult) -> float:
        """Read a queued step's numbers and pass them on; its loss."""
        metrics = self.settle(pending)
        if self.autocompile is not None:
            self.autocompile.after_step(metrics.step, metrics.seconds)
        result.losses.append(metrics.loss)
        if self.team.main:
            self.on_step(metrics)
        return metrics.loss

    def _info(self) -> dict[str, object]:
        t = self.config.train
        return {"base_model": self.config.model, "trigger": self.config.trigger,
                "rank": t.rank, "alpha": t.alpha, "steps": self.step,
                "resolution": ",".join(map(str, t.resolution)),
                "dataset": dataset_fingerprint(self.examples), "version": version(),
                **({"preserve_class": t.preserved} if t.preserved else {})}

    def saved_weights(self) -> contextlib.AbstractContextManager:
        """The weights the LoRA file holds, in place while the block runs: the averaged ones
        with EMA on (samples show what gets saved), else the live ones."""
        return self.ema.swapped_in(self.params) if self.ema else contextlib.nullcontext()

    def lora_bytes(self) -> bytes:
        """The LoRA file's bytes; with EMA on, of the averaged weights."""
        with self.saved_weights():
            return lora_file_bytes(self.components, self.adapters, self._info(), self.dtype)

    def save_checkpoint(self, loss: float | None = None) -> CheckpointInfo | None:
        """This step's checkpoint, measured first when validation is on."""
        if not self.team.main:  # the weights are the same everywhere; one process writes
            self.team.wait()
            return None
        validation = self.report_validation() if self.config.train.validate else None
        info = write_checkpoint(self.run_dir, self.step, state_of(self),
                                {LORA_FILE: self.lora_bytes()},
                                {"step": self.step, "loss": loss, "time": time.time(),
                                 "total": self.total,
                                 "validation": json_number(validation),
                                 MEASURED_KEY: self.split.record() if validation is not None
                                 else None})
        chosen = promoted(self.ws)
        prune(self.run_dir, self.config.train.keep_checkpoints,
              protect=self.ws.checkpoints / chosen.label if chosen else None)
        self.team.wait()
        return info

    def resume_latest_good(self) -> None:
        """Resume from this run's newest checkpoint that loads; a damaged one is said and
        passed over for the one before it."""
        for info in reversed(list_checkpoints(self.run_dir)):
            try:
                restore(self, read_state(info))
            except CheckpointUnreadable as exc:
                self.log(f"{exc}; trying the checkpoint before it")
                continue
            self.log(f"resumed from {info.path.name} of {info.run}")
            return
        self.log(f"{self.run_dir.name} has no checkpoint to resume from: starting it afresh")

    def release(self) -> None:
        """Give the pipeline back to its owner, ready for generation."""
        if self.pipe is not None:
            self.owner.give_back(self._restore_for_generation)
            self.pipe = None

    def _restore_for_generation(self, pipe) -> None:
        """The training adapter removed, the base frozen and in eval mode, the text encoders
        back beside it."""
        from .lora import ADAPTER, remove_lora, restore_input_casts

        transformer = pipe.transformer
        restore_input_casts(getattr(self, "uncast", []))
        if ADAPTER in getattr(transformer, "peft_config", {}):
            transformer.delete_adapters(ADAPTER)
        clip = pipe.text_encoder
        if "text_encoder" in getattr(self, "components", {}):
            remove_lora(clip)
        clip.eval()
        if getattr(transformer, "is_gradient_checkpointing", False):
            transformer.disable_gradient_checkpointing()
        transformer.requires_grad_(False)
        transformer.eval()
        # The models stay where training had them: the next generation job places them as
        # its own memory plan says (T5 may not fit back beside the transformer).

    # -- the run ------------------------------------------------------------------------

    def schedule(self, total: int) -> None:
        """The learning-rate schedule for a run of `total` steps: built from this run's total
        (a continued run or --steps beyond the config included), before a resume loads its
        state."""
        t = self.config.train
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(t.warmup_steps, total, t.lr_schedule))

    def run(self, steps: int | None = None, resume: bool = False,
            run: str | None = None) -> TrainResult:
        """Train up to `steps` (default: the config's) steps in all, checkpointing as it goes.
        `resume` continues `run` (default: the latest run); otherwise a new run starts (in
        the folder `run` names, when the engine chose it beforehand). Refused at once, before
        any loading, while another training holds the workspace."""
        with TrainingClaim(self.ws) if self.team.main else contextlib.nullcontext():
            try:
                result = self._worded(steps, resume, run)
            except BaseException as exc:
                self.on_run_end(None, exc)
                raise
            # Told while the claim is held: whoever finds the claim free knows the run ended.
            self.on_run_end(result, None)
            return result

    def _worded(self, steps: int | None, resume: bool, run: str | None) -> TrainResult:
        try:
            return self._train(steps, resume, run)
        except OSError as exc:  # a full or read-only disk, most often
            stopped = self.where_it_stopped()
            if not stopped:
                raise
            raise TrainingError(f"{describe_os_error(exc)}. {stopped}") from exc

    def where_it_stopped(self) -> str:
        """The step a failed run reached and the checkpoint it resumes from; "" before it
        took a step."""
        if self.run_dir is None or not self.step:
            return ""
        run = self.run_dir.name
        saved = list_checkpoints(self.run_dir)
        if not saved:
            return f"Training stopped at step {self.step}; {run} had no checkpoint yet"
        return (f"Training stopped at step {self.step}; {run} resumes from its checkpoint of "
                f"step {saved[-1].step}: lorabooth train {self.ws.root} --resume --run {run}")

    def _train(self, steps: int | None, resume: bool, run: str | None) -> TrainResult:
        if resume:  # its measured photos are read before the data set is split
            self.run_dir = choose_run(self.ws.checkpoints, self.team, resume, run)
        if self.pipe is None:
            self.prepare(self.run_dir if resume else None)
        if not resume:  # a new run's folder is made once loading has worked
            self.run_dir = choose_run(self.ws.checkpoints, self.team, resume, run)
        if resume and steps is None:
            steps = recorded_total(self.run_dir)
        total = self.total = steps or self.config.train.steps
        self.schedule(total)
        if resume:
            self.resume_latest_good()
        if self.autocompile is not None:
            self.autocompile.start(self.step, total)
        if self.team.main:
            self.on_run_start(self.run_dir.name, self.step, total)
        result = TrainResult(self.step, self.ws.lora_path, encode=self.encoder.stats,
                             run=self.run_dir.name)
        every = self.config.train.checkpoint_every
        loss = None
        s = self.config.sample
        if self.step == 0 and self.team.main:
            if self.config.train.validate:  # where the curve of checkpoints starts from
                self.report_validation()
            if s.every and s.before_training:
                # As ai-toolkit does: the sheet's first row is the base, before any learning.
                self.on_sample(0, render_samples(self))
        pending: PendingStep | None = None
        while self.step < total:
            launched = self.launch_step()
            if pending is not None:
                loss = self._settled(pending, result)
            pending = launched
            checkpoint_due = self.step % every == 0 or self.step == total
            sample_every = self.config.sample.every
            sample_due = bool(sample_every) and self.team.main and (
                self.step % sample_every == 0 or self.step == total)
            # The next step is queued before this one's numbers are read, unless something
            # needs this step's weights or numbers now (auto-compile times each step).
            if (checkpoint_due or sample_due or not self.guarded
                    or (self.autocompile is not None and self.autocompile.measuring)):
                loss = self._settled(pending, result)
                pending = None
            # Asked after the step is reported, where it is not queued ahead (the engine
            # renders a queued prompt here: after a lagged step, the card runs it after it).
            stop = self.team.any(self.should_stop()) and self.step < total
            if stop and pending is not None:
                loss = self._settled(pending, result)
                pending = None
            if checkpoint_due:
                self.save_checkpoint(loss)
            if sample_due:
                self.on_sample(self.step, render_samples(self))
            if stop:
                if self.step % every:
                    self.save_checkpoint(loss)
                result.stopped = True
                break
        result.step = self.step
        if not result.stopped and self.team.main:
            chosen = promoted(self.ws)
            if chosen is None:
                atomic_write_bytes(result.lora_path, self.lora_bytes())
                comfyui_copy(result.lora_path)
                forget_promotion(self.ws)
            else:
                # A checkpoint the user promoted is never replaced without a word: both are
                # kept, the new one as this run's last checkpoint, one key (P) away.
                result.lora_path = self.run_dir / step_dir_name(self.step) / LORA_FILE
                self.log(f"the workspace's LoRA stays {chosen.label}, which you promoted; "
                         f"this run's is {self.run_dir.name}/{step_dir_name(self.step)} "
                         f"(promote it with P in the Train pane)")
            if advice := self.best_checkpoint_advice():
                self.log(advice)
        return result

    def best_checkpoint_advice(self) -> str:
        """Where the run's last checkpoint is not its best by validation loss: which is, and
        how to use it ("" otherwise)."""
        pairs = validations_of(list_checkpoints(self.run_dir))
        found = lowest_validation(pairs)
        (last, last_value) = pairs[-1] if pairs else (None, None)
        if found is None or found[0].step == last.step:
            return ""
        best, value = found
        then = f"; {last_value:.4f} at step {last.step}" if last_value is not None else ""
        return (f"the validation loss was lowest at step {best.step} ({value:.4f}{then}): try "
                f"that checkpoint with lorabooth generate {self.ws.root} PROMPT --lora "
                f"{best.label}, and promote it with P in the Train pane if it is better")

