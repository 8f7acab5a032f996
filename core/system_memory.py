"""Planning system RAM: what a lorabooth process needs in CPU memory, phase by phase, besides
its own code (Python, torch and the CUDA libraries: memory.HOST_BASE_GIB).

What counts is memory the kernel cannot drop. safetensors maps a model's files, and weights
loaded in the files' own precision stay the page cache's until they move to the GPU: the kernel
drops those pages under pressure and reads them again, so loading FLUX.1-dev in bf16 does not
need 33 GiB free. Measured here with `load_pipeline` on a 0.91 GiB bf16 pipeline (a 0.53 GiB
transformer, a 0.38 GiB T5), as anonymous memory added:
- bf16 from bf16 files: +0.02 GiB;
- fp8 storage cast on the CPU: +0.28 GiB, the float8 copy of the transformer (0.26; FLUX.1-dev's
  11.1 GiB), which is why the transformer is cast as it moves to the GPU instead, a layer at a
  time (load.store_in_fp8), and only a transformer under model offload keeps a float8 copy;
- float32 or float16: +1.84 or +1.03 GiB, every weight converted.
After loading, what is held in CPU memory: the large text encoder pinned there to stream to the
GPU (a page-locked copy, which also cannot be swapped), the transformer waiting while the
captions encode (where it was converted), every model under diffusers' model CPU offload
(each returns to the CPU after it runs), and on a CPU, everything, activations included.

The users of other trainers meet this as a process killed without a word while loading or
quantising (fluxgym #417, #247); a plan that says so first, and a refusal before loading that
names what would fit, is the answer here.
"""

from __future__ import annotations

from .memory import (
    GIB,
    LORA_STATE_BYTES,
    ModelSize,
    Phase,
    Plan,
    render_activations,
    train_activations,
)

SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def host_phases(size: ModelSize, plan: Plan, on_cpu: bool, files: str = "bf16", batch: int = 1,
                text_tokens: int = 512) -> list[Phase]:
    """The CPU memory each phase of `plan` adds (on a GPU machine, or `on_cpu`), the weights
    stored in `files` precision."""
    if on_cpu:
        return _cpu_phases(size, plan, files, batch, text_tokens)
    half = SHORT[plan.dtype]
    big = size.text_encoder_name
    nf4 = plan.quantize == "nf4"  # bitsandbytes quantises it straight onto the GPU
    converted = 0.0 if half == files else (
        size.encoders_gib(half) + size.gib("vae", half)
        + (0.0 if nf4 else size.gib("transformer", half)))
    # The transformer as it waits on the CPU: the files' pages until it is placed (an fp8
    # one is cast as it moves to the GPU: load.store_in_fp8), its own copy once converted.
    waiting = 0.0 if nf4 or half == files else size.gib("transformer", half)
    pinned = size.gib("text_encoder_2", half)
    loading = Phase("loading", converted,
                    _words((f"weights converted from {files} to {half}", converted)))
    if plan.job == "generate":
        if plan.placement == "offload":
            stored = (size.encoders_gib(half) + size.gib("vae", half)
                      + size.gib("transformer", plan.quantize or half))
            return [loading, Phase("generation", stored, "every model, between its turns")]
        held = pinned if plan.placement == "stream" else 0.0
        return [loading, Phase("generation", held, _words((f"{big} pinned", held)))]
    transformer_waits = not plan.encoders_on_gpu and not nf4
    caching_pinned = 0.0 if plan.text_on_gpu else pinned
    waits = waiting if transformer_waits else 0.0
    training_pinned = 0.0 if plan.encoders_on_gpu else pinned
    # After caching, T5 leaves the GPU (pinned in CPU memory) before the transformer comes
    # over: for a moment both are in CPU memory.
    parked = pinned if transformer_waits else 0.0
    return [
        loading,
        Phase("caching", caching_pinned + waits,
              _words((f"{big} pinned", caching_pinned), ("transformer waiting", waits))),
        Phase("parking", parked + waits,
              _words((f"{big} pinned", parked), ("transformer waiting", waits))),
        Phase("training", training_pinned, _words((f"{big} pinned", training_pinned))),
    ]


def _cpu_phases(size: ModelSize, plan: Plan, files: str, batch: int,
                text_tokens: int) -> list[Phase]:
    """On a CPU every weight is resident and every activation is kept (no checkpointing);
    float32 doubles bf16's bytes, for the activations as for the weights."""
    precision = SHORT[plan.dtype]
    weights = (size.gib("transformer", precision) + size.encoders_gib(precision)
               + size.gib("vae", precision))
    converted = 0.0 if precision == files else weights
    loading = Phase("loading", converted, _words((f"weights converted from {files} to "
                                                  f"{precision}", converted)))
    widen = 2.0 if precision == "fp32" else 1.0
    if plan.job == "generate":
        return [loading, Phase("generation", weights + widen * render_activations(
            size, plan.resolution, text_tokens), "every model, one render")]
    lora = size.lora_params * LORA_STATE_BYTES / GIB
    activations = widen * train_activations(size, plan.resolution, batch, text_tokens,
                                            checkpointing=False)
    return [loading, Phase("training", weights + lora + activations,
                           "every model, the LoRA, every activation")]


def _words(*parts: tuple[str, float]) -> str:
    held = [(name, gib) for name, gib in parts if gib >= 0.05]
    if len(held) == 1:
        return held[0][0]
    return ", ".join(f"{name} {gib:.1f}" for name, gib in held) or \
        "nothing beyond the page cache"


def system_memory() -> float | None:
    """GiB of system RAM a new allocation can have here: the kernel's estimate of what is
    available without swapping (page cache it may drop included), and free swap; None where
    /proc/meminfo is not there to say (not Linux)."""
    fields = meminfo()
    if "MemAvailable" not in fields:
        return None
    return fields["MemAvailable"] + fields.get("SwapFree", 0.0)


def meminfo() -> dict[str, float]:
    """/proc/meminfo's memory and swap figures, in GiB; empty where it cannot be read."""
    fields = {}
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name in ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree"):
                    fields[name] = int(rest.split()[0]) * 1024 / 2**30  # kB
    except (OSError, ValueError, IndexError):
        return {}
    return fields
