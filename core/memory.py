"""Planning GPU memory for the whole pipeline, for training and for generation.

Every module resident in each phase is counted, in GiB, against the GiB this process may use:
- caching: T5-XXL, CLIP and the VAE encode the photos and captions; the transformer waits on
  the CPU (not an NF4 one: bitsandbytes places it on the GPU as it loads);
- training: the transformer (bf16, fp8 storage or NF4), the VAE, the LoRA with its gradients
  and AdamW state, the activations of the batch (every one of them where they fit, which
  spares the checkpointing recompute; else under gradient checkpointing), and the text
  encoders if they fit beside it (then a prompt queued between steps encodes on the GPU);
- sampling between steps: training's weights, no training activations, one render's;
- generation: every module resident if it fits, else T5 streamed from CPU memory a layer at a
  time (models/stream.py) with every other module resident, else diffusers' model CPU offload
  (each model on the GPU only while it runs), at bf16 first, then fp8 storage, then NF4.
Wherever T5 is not resident on a GPU it streams so: a prompt, or the captions, still encode on
the GPU.

The activation figures were measured on an H200 with the full-size FLUX.1-dev in bf16
(`bench/results/gpu.json`): training at batch 1 with checkpointing peaked 1.0 GiB above its
weights at 512 px and 2.5 GiB at 1024 px (LoRA state included); a 1024 px VAE decode 2.4 GiB,
a VAE encode 1.5 GiB, T5 at 512 tokens 0.26 GiB. They scale with the tokens (or pixels) and with
the transformer's width, and training without checkpointing with its depth as well, by a figure
measured for each family (FLUX.2 [klein] 4B's on the same card); the constants below round them
up.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .errors import LoraboothError

GIB = 2**30
# Bytes per stored parameter. NF4: 4 bits plus bitsandbytes' absmax blocks and the layers kept
# in bf16 (norms, embeddings), as measured on diffusers' NF4 Flux (6.7 GB for 11.9B).
BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "nf4": 0.56}
TRAIN_GIB_PER_KTOKEN = 0.5  # measured 0.39 (1536 tokens) and 0.46 (4608), width 3072
# Without gradient checkpointing every block keeps its activations for the backward pass, so
# they scale with the depth too, and a block's share depends on its family's design. FLUX.1-dev
# (57 blocks) measured 5.4 (4608 tokens, eager) and 4.4 (1536, compiled); FLUX.2 [klein] 4B
# (25 blocks of a wider MLP) 3.35 (4608 tokens, eager); both at width 3072.
TRAIN_NOCKPT_GIB_PER_KTOKEN = {"flux1": (5.6, 57), "flux2": (3.6, 25)}  # (GiB, at blocks)
# NF4 training keeps more per token: 0.90 GiB per 1000 tokens checkpointed at 1024 px (H200,
# FLUX.1-dev capped to 16 GB) against bf16's 0.49. peft's k-bit preparation leaves the norms in
# float32, and a bf16 input with a float32 weight takes the unfused RMSNorm, which saves
# float32 intermediates (torch warns of it in that run's log).
NF4_ACTIVATIONS_FACTOR = 1.85
DENOISE_GIB_PER_KTOKEN = 0.25
DECODE_GIB_PER_MPIXEL = 2.3
ENCODE_GIB_PER_MPIXEL = 1.5
T5_ACTIVATIONS_GIB = 0.3
# T5 streamed from CPU memory (models/stream.py): the layers in flight, the one running and the
# next one copied beside it; the largest, a 4096 x 10240 feed-forward, is 80 MiB in bf16.
STREAM_GIB = 0.25
LORA_STATE_BYTES = 16  # per trainable parameter: fp32 weight, gradient, two AdamW moments
MARGIN_GIB = 1.0  # allocator fragmentation and the odd temporary
CUDA_CONTEXT_GIB = 0.5  # what the driver takes before the first tensor, on a named card
REFERENCE_WIDTH = 3072  # FLUX.1's hidden size, where the per-token figures were measured
# System RAM (system_memory.py): a lorabooth process before its first weight. 0.44 GiB measured
# on a CPU with torch, diffusers, transformers and peft imported; CUDA's libraries add ~1 GiB.
HOST_BASE_GIB = 1.5


class MemoryPlanError(LoraboothError):
    """Nothing fits, or a mode cannot run here: the message says what would."""


@dataclass(frozen=True)
class ModelSize:
    """Parameters per component, and the transformer's hidden width. `text_encoder_2` is the
    large text encoder (FLUX.1's T5-XXL, FLUX.2's Qwen3), `text_encoder` the small one
    (FLUX.1's CLIP-L; none in FLUX.2)."""
    transformer: float
    text_encoder_2: float
    text_encoder: float
    vae: float
    width: int = REFERENCE_WIDTH
    lora_params: float = 0.0  # trainable LoRA parameters at the configured rank and targets
    family: str = "flux1"  # "flux1" | "flux2": the design of its blocks
    blocks: int = 57  # double-stream plus single-stream transformer blocks

    def gib(self, component: str, precision: str) -> float:
        return getattr(self, component) * BYTES[precision] / GIB

    @property
    def text_encoder_name(self) -> str:
        return {"flux1": "T5", "flux2": "Qwen3"}[self.family]

    def encoders_gib(self, precision: str) -> float:
        return self.gib("text_encoder_2", precision) + self.gib("text_encoder", precision)


@dataclass(frozen=True)
class Phase:
    name: str
    gib: float
    resident: str  # what is on the GPU, in words


@dataclass(frozen=True)
class Plan:
    """What lorabooth does for one job: the transformer's precision, where the text encoders
    live, offload, and the peak of each phase; `reason` is the one line the user is told."""
    job: str  # "train" | "generate"
    resolution: int
    dtype: str  # bfloat16 | float16 | float32: compute precision
    quantize: str | None  # None | "fp8" | "nf4": how the transformer's weights are stored
    encoders_on_gpu: bool  # the text encoders resident on the GPU (train: beside the transformer)
    offload: bool  # generate: diffusers' model CPU offload
    available_gib: float | None
    phases: list[Phase] = field(default_factory=list)
    reason: str = ""
    text_on_gpu: bool = True  # train: T5 encodes the captions on the GPU (else on the CPU)
    checkpointing: bool = True  # train: recompute activations in the backward pass
    text_encoder: str = "T5"  # the large text encoder's name, for the words: T5, Qwen3
    # System RAM: what each phase adds to the process's own (system_memory.py), and what the
    # machine has for it (available memory and free swap); empty and None until planned.
    host: list[Phase] = field(default_factory=list)
    host_available_gib: float | None = None

    @property
    def placement(self) -> str:
        """How generation places the models: load.place's "all", "stream" (T5 streams from
        CPU memory, the rest resident) or "offload"."""
        return "offload" if self.offload else "all" if self.encoders_on_gpu else "stream"

    @property
    def peak_gib(self) -> float:
        return max((p.gib for p in self.phases), default=0.0)

    @property
    def host_peak_gib(self) -> float:
        """System RAM the process needs at its peak: its own base and its largest phase."""
        return HOST_BASE_GIB + max((p.gib for p in self.host), default=0.0)

    @property
    def host_fits(self) -> bool:
        return self.host_available_gib is None or self.host_peak_gib <= self.host_available_gib

    @property
    def gradient_checkpointing(self) -> bool:
        return self.job == "train" and self.dtype != "float32" and self.checkpointing

    def to_dict(self) -> dict:
        data = asdict(self)
        data["peak_gib"] = round(self.peak_gib, 2)
        data["host_peak_gib"] = round(self.host_peak_gib, 2)
        data["placement"] = self.placement
        for phase in data["phases"] + data["host"]:
            phase["gib"] = round(phase["gib"], 2)
        return data


def image_tokens(width: int, height: int | None = None) -> int:
    """Packed image tokens: one per 16x16 pixels (8x VAE, then 2x2 patches)."""
    return (width // 16) * ((height or width) // 16)


def _scale(size: ModelSize) -> float:
    return size.width / REFERENCE_WIDTH


def train_activations(size: ModelSize, resolution: int, batch: int, text_tokens: int,
                      checkpointing: bool = True, quantize: str | None = None) -> float:
    """Checkpointed, the saved block inputs and one block's recompute, measured alike on both
    families; without, every block's activations: by the family's figure and the depth."""
    if checkpointing:
        per_ktoken = TRAIN_GIB_PER_KTOKEN
    else:
        measured, at_blocks = TRAIN_NOCKPT_GIB_PER_KTOKEN[size.family]
        per_ktoken = measured * size.blocks / at_blocks
    if quantize == "nf4":
        per_ktoken *= NF4_ACTIVATIONS_FACTOR
    return per_ktoken * (image_tokens(resolution) + text_tokens) / 1000 * batch * _scale(size)


def render_activations(size: ModelSize, resolution: int, text_tokens: int) -> float:
    """One image: the larger of a denoising step (no gradients) and the VAE decode."""
    denoise = DENOISE_GIB_PER_KTOKEN * (image_tokens(resolution) + text_tokens) / 1000
    decode = DECODE_GIB_PER_MPIXEL * resolution * resolution / 1e6
    return max(denoise * _scale(size), decode)


# -- training -------------------------------------------------------------------------------

def cpu_plan(job: str, mode: str, resolution: int, bf16_native: bool) -> Plan:
    """float32 unless bf16 is asked for. On a CPU with bf16 dot products (AMX, AVX512-BF16) a
    model of some size trains in bf16 weights faster than in float32 (bench.train's mid-size
    model at 256 px: 0.236 against 0.328 s a step eager, 0.189 against 0.277 with its blocks
    compiled), but the tiny demo is slower (the casts cost more than
    its matmuls save), so `auto` stays float32 and bf16 is the user's choice, trained as on a
    GPU: frozen weights bf16, the LoRA in float32. No checkpointing: a CPU has the memory."""
    if mode in ("nf4", "fp8"):
        raise MemoryPlanError(f'memory = "{mode}" needs a CUDA GPU')
    if mode != "bf16":
        what = "float32, no quantisation" if job == "train" else "float32"
        return Plan(job, resolution, "float32", None, True, False, None, reason=f"CPU: {what}")
    how = ("this CPU multiplies bf16 natively" if bf16_native else
           "this CPU has no bf16 dot products (AMX or AVX512-BF16): emulated, likely slower "
           'than memory = "fp32"')
    return Plan(job, resolution, "bfloat16", None, True, False, None, checkpointing=False,
                reason=f"CPU: bf16 weights as configured ({how})")


def train_phases(size: ModelSize, quantize: str | None, half: str, resolution: int, batch: int,
                 text_tokens: int, encoders_on_gpu: bool, sample_resolution: int,
                 text_on_gpu: bool = True, checkpointing: bool = True) -> list[Phase]:
    stored = quantize or half
    transformer = size.gib("transformer", stored)
    encoders = size.encoders_gib(half)
    clip = size.gib("text_encoder", half)
    vae = size.gib("vae", half)
    lora = size.lora_params * LORA_STATE_BYTES / GIB
    vae_encode = ENCODE_GIB_PER_MPIXEL * resolution * resolution / 1e6
    if text_on_gpu:
        caching = encoders + vae + max(T5_ACTIVATIONS_GIB, vae_encode)
        cached_by = "text encoders, VAE"
    else:  # T5 streams from CPU memory to encode the captions (once: they are cached)
        caching = clip + vae + max(STREAM_GIB + T5_ACTIVATIONS_GIB, vae_encode)
        cached_by = f"CLIP, VAE, {size.text_encoder_name} a layer at a time"
    # bitsandbytes puts an NF4 transformer on the GPU as it loads, so it cannot wait on the CPU
    # while the encoders run (a 16 GB card ran out of memory at caching with T5 beside it).
    transformer_waits = not encoders_on_gpu and quantize != "nf4"
    if not transformer_waits:
        caching += transformer
    weights = transformer + vae + lora + (encoders if encoders_on_gpu else clip)
    where = "transformer, VAE, LoRA" + (", text encoders" if encoders_on_gpu else ", CLIP")
    return [
        Phase("caching", caching + MARGIN_GIB,
              cached_by + ("" if transformer_waits else ", transformer")),
        Phase("training", weights + train_activations(size, resolution, batch, text_tokens,
                                                      checkpointing, quantize)
              + MARGIN_GIB, where + (", activations" if checkpointing else
                                     ", every activation (no checkpointing)")),
        Phase("sampling", weights + render_activations(size, sample_resolution, text_tokens)
              + MARGIN_GIB, where + ", one render"),
    ]


def plan_training(mode: str, size: ModelSize, resolution: int, *, device: str,
                  available_gib: float | None, batch: int = 1, text_tokens: int = 512,
                  sample_resolution: int | None = None, have_bitsandbytes: bool = False,
                  bf16_supported: bool = True, checkpointing: str = "auto") -> Plan:
    """The lightest way to train at `resolution` that loses nothing, or the mode asked for.
    `available_gib` is what this process may use: free memory plus what it holds already
    (a resident model is reused or freed before loading, never counted twice).
    `checkpointing`: "auto" trains without gradient checkpointing (a third less arithmetic
    per step) only where bf16 weights, every model resident and every activation fit; "on"
    and "off" as asked."""
    sample_resolution = sample_resolution or resolution
    if device != "cuda":
        return cpu_plan("train", mode, resolution, bf16_supported)
    half = "bfloat16" if bf16_supported else "float16"
    short = "bf16" if bf16_supported else "fp16"
    if mode == "fp32":
        return _fixed_train("float32", None, size, resolution, batch, text_tokens,
                            sample_resolution, available_gib, "fp32", "float32 as configured")
    if mode == "nf4" and not have_bitsandbytes:
        raise MemoryPlanError('memory = "nf4" needs bitsandbytes: '
                              "pip install 'lorabooth[lowvram]'")
    options = {"bf16": [None], "fp8": ["fp8"], "nf4": ["nf4"]}.get(
        mode, [None, "fp8"] + (["nf4"] if have_bitsandbytes else []))
    tried = []
    shapes = [(True, True), (False, True), (False, False)]
    candidates = [(q, enc, text, checkpointing != "off") for q in options for enc, text in shapes]
    if checkpointing == "auto":
        candidates.insert(0, (options[0], True, True, False))
    for quantize, encoders, text_on_gpu, ckpt in candidates:
        phases = train_phases(size, quantize, short, resolution, batch, text_tokens, encoders,
                              sample_resolution, text_on_gpu, ckpt)
        plan = Plan("train", resolution, half, quantize, encoders, False, available_gib, phases,
                    text_on_gpu=text_on_gpu, checkpointing=ckpt,
                    text_encoder=size.text_encoder_name)
        tried.append(plan)
        if available_gib is None or plan.peak_gib <= available_gib:
            return _with_reason(plan, mode, tried)
    if mode != "auto":  # the user chose: run it as asked, and say it may not fit
        plan = tried[-1]
        return _with_reason(plan, mode, tried)
    smallest = tried[-1]
    hint = ("" if have_bitsandbytes else
            "; an NF4 base would need less: pip install 'lorabooth[lowvram]'")
    if checkpointing == "off":
        hint = ('; train.checkpointing = "off" keeps every activation of a step: "auto" '
                "checkpoints where they do not fit")
    raise MemoryPlanError(
        f"training at {resolution} px needs ~{smallest.peak_gib:.1f} GiB even with "
        f"{_stored(smallest)} weights and the text encoders on the CPU, and "
        f"{available_gib:.1f} GiB is available{hint}; or lower train.resolution or "
        "train.batch_size, or free the GPU from other programs")


def _fixed_train(dtype, quantize, size, resolution, batch, text_tokens, sample_resolution,
                 available, precision, reason) -> Plan:
    phases = train_phases(size, quantize, precision, resolution, batch, text_tokens, False,
                          sample_resolution)
    return Plan("train", resolution, dtype, quantize, False, False, available, phases,
                reason=f"{reason} (~{max(p.gib for p in phases):.1f} GiB)",
                text_encoder=size.text_encoder_name)


def _stored(plan: Plan) -> str:
    short = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[plan.dtype]
    return {"fp8": "fp8-stored", "nf4": "NF4"}.get(plan.quantize or "", short)


def _with_reason(plan: Plan, mode: str, tried: list[Plan]) -> Plan:
    big = plan.text_encoder
    where = ("text encoders stay on the GPU" if plan.encoders_on_gpu else
             f"{big} waits in CPU memory after caching and streams to the GPU a layer at a "
             "time for a prompt queued while training")
    if not plan.text_on_gpu:
        where = (f"{big} stays in CPU memory and streams to the GPU a layer at a time (the "
                 "captions encode once: they are cached)")
    if plan.job == "generate":
        where = {"all": "every model on the GPU",
                 "stream": f"{big} streams from CPU memory a layer at a time, every other "
                           "model on the GPU",
                 "offload": "model CPU offload: each model on the GPU only while it runs"}[
            plan.placement]
    if plan.job == "train" and not plan.checkpointing:
        where += "; no gradient checkpointing (every activation fits)"
    need = f"~{plan.peak_gib:.1f} GiB at {plan.resolution} px"
    free = "" if plan.available_gib is None else f" of {plan.available_gib:.1f} GiB"
    if mode != "auto":
        fits = plan.available_gib is None or plan.peak_gib <= plan.available_gib
        warning = "" if fits else " - more than is available, it may run out of memory"
        return _replace_reason(plan, f"{_stored(plan)} as configured; {where}; needs "
                                     f"{need}{free}{warning}")
    first = tried[0]
    why = "" if plan is first else (
        f" ({_stored(first)} with every model resident would need ~{first.peak_gib:.1f} GiB)")
    return _replace_reason(plan, f"{_stored(plan)} weights; {where}; needs {need}{free}{why}")


def _replace_reason(plan: Plan, reason: str) -> Plan:
    return replace(plan, reason=reason)


# -- generation -----------------------------------------------------------------------------

def generate_phases(size: ModelSize, quantize: str | None, half: str, resolution: int,
                    text_tokens: int, placement: str) -> list[Phase]:
    transformer = size.gib("transformer", quantize or half)
    encoders = size.encoders_gib(half)
    vae = size.gib("vae", half)
    render = render_activations(size, resolution, text_tokens)
    if placement == "all":
        return [Phase("generation", transformer + encoders + vae + render + MARGIN_GIB,
                      "every model, one render")]
    if placement == "stream":
        resident = transformer + size.gib("text_encoder", half) + vae
        return [
            Phase("text encoding", resident + STREAM_GIB + T5_ACTIVATIONS_GIB + MARGIN_GIB,
                  f"transformer, CLIP, VAE, {size.text_encoder_name} a layer at a time"),
            Phase("generation", resident + render + MARGIN_GIB,
                  "transformer, CLIP, VAE, one render"),
        ]
    return [
        Phase("text encoding", encoders + T5_ACTIVATIONS_GIB + MARGIN_GIB, "text encoders"),
        Phase("denoising", transformer + render + MARGIN_GIB, "transformer, one render"),
        Phase("decoding", vae + DECODE_GIB_PER_MPIXEL * resolution ** 2 / 1e6 + MARGIN_GIB,
              "VAE"),
    ]


def plan_generation(mode: str, size: ModelSize, resolution: int, *, device: str,
                    available_gib: float | None, text_tokens: int = 512,
                    have_bitsandbytes: bool = False, bf16_supported: bool = True) -> Plan:
    """bf16 with every model resident when it fits; else T5 streamed and the rest resident;
    else model CPU offload; then fp8 storage, then NF4: quality first, then speed (a streamed
    T5 costs each new prompt one pass of its weights over PCIe; model offload moves the
    transformer too, for every image)."""
    if device != "cuda":
        return cpu_plan("generate", mode, resolution, bf16_supported)
    half = "bfloat16" if bf16_supported else "float16"
    short = "bf16" if bf16_supported else "fp16"
    if mode == "nf4" and not have_bitsandbytes:
        raise MemoryPlanError('memory = "nf4" needs bitsandbytes: '
                              "pip install 'lorabooth[lowvram]'")
    if mode == "fp32":
        options = [("fp32", None)]
    else:
        options = {"bf16": [None], "fp8": ["fp8"], "nf4": ["nf4"]}.get(
            mode, [None, "fp8"] + (["nf4"] if have_bitsandbytes else []))
        options = [(short, q) for q in options]
    tried = []
    for precision, quantize in options:
        for placement in ("all", "stream", "offload"):
            phases = generate_phases(size, quantize, precision, resolution, text_tokens,
                                     placement)
            dtype = "float32" if precision == "fp32" else half
            plan = Plan("generate", resolution, dtype, quantize, placement == "all",
                        placement == "offload", available_gib, phases,
                        text_encoder=size.text_encoder_name)
            tried.append(plan)
            if available_gib is None or plan.peak_gib <= available_gib:
                return _with_reason(plan, mode, tried)
    if mode != "auto":
        return _with_reason(tried[-1], mode, tried)
    hint = "" if have_bitsandbytes else "; NF4 would need less: pip install 'lorabooth[lowvram]'"
    raise MemoryPlanError(
        f"generating at {resolution} px needs ~{tried[-1].peak_gib:.1f} GiB even with "
        f"{_stored(tried[-1])} weights and model offload, and {available_gib:.1f} GiB is "
        f"available{hint}; or lower generate.width and generate.height")


# -- sizes ----------------------------------------------------------------------------------

def lora_parameters(transformer, targets: list[str], rank: int) -> float:
    """Trainable parameters of a LoRA of `rank` on the Linear layers peft would match."""
    import torch

    total = 0
    for name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and any(
                name == t or name.endswith("." + t) for t in targets):
            total += rank * (module.in_features + module.out_features)
    return float(total)


def card_gib(total_gb: float) -> float:
    """What a named card leaves for tensors: its memory less the CUDA context. Cards are sold
    in binary gigabytes (a "24 GB" card has 24 GiB)."""
    return max(0.0, total_gb - CUDA_CONTEXT_GIB)
