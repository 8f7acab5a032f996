"""Choosing precision and quantisation from the GPU's free memory and the resolution.

Fixed VRAM presets waste big cards and crash small ones (fluxgym #267, #488); `memory = "auto"`
estimates what a run needs and picks the lightest setting that loses nothing, and says why.
The estimates are deliberately rough and on the safe side: weights, plus activations under
gradient checkpointing growing with the tokens of the largest bucket, plus a margin.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import TrainingError

FLUX_PARAMS = 11.9e9
TEXT_TOKENS = 512
MARGIN_GB = 2.0


class MemoryPlanError(TrainingError):
    """The chosen or needed mode cannot run here; the message says what to change."""


@dataclass(frozen=True)
class MemoryPlan:
    dtype: str  # bfloat16 | float16 | float32
    quantize: str | None  # None or "nf4"
    gradient_checkpointing: bool
    reason: str


def image_tokens(resolution: int) -> int:
    return (resolution // 16) ** 2


def estimate_gb(params: float, resolution: int, quantize: str | None) -> float:
    """Peak GPU memory of a LoRA step, batch 1, with gradient checkpointing."""
    weights = params * (0.56 if quantize == "nf4" else 2.0) / 1e9
    tokens = image_tokens(resolution) + TEXT_TOKENS
    # ~1.3 GB per thousand tokens for the full model's checkpointed activations and the
    # attention at the recomputed block; it scales with the model's width.
    activations = 1.3 * tokens / 1000 * (params / FLUX_PARAMS) ** 0.5
    return weights + activations + MARGIN_GB


def plan_memory(mode: str, device: str, free_gb: float | None, params: float, resolution: int,
                have_bitsandbytes: bool, bf16_supported: bool = True) -> MemoryPlan:
    if device != "cuda":
        if mode == "nf4":
            raise MemoryPlanError("memory = \"nf4\" needs a CUDA GPU (bitsandbytes runs there)")
        return MemoryPlan("float32", None, False, "CPU: float32, no quantisation")
    half = "bfloat16" if bf16_supported else "float16"
    need_full = estimate_gb(params, resolution, None)
    need_nf4 = estimate_gb(params, resolution, "nf4")
    if mode == "fp32":
        return MemoryPlan("float32", None, True, "float32 as configured")
    if mode == "bf16":
        return MemoryPlan(half, None, True, f"{half} as configured (needs ~{need_full:.0f} GB)")
    if mode == "nf4":
        if not have_bitsandbytes:
            raise MemoryPlanError("memory = \"nf4\" needs bitsandbytes: "
                               "pip install 'lorabooth[lowvram]'")
        return MemoryPlan(half, "nf4", True, f"NF4 base as configured (~{need_nf4:.0f} GB)")
    free = free_gb if free_gb is not None else 0.0
    if need_full <= free:
        return MemoryPlan(half, None, True,
                          f"{half} base: needs ~{need_full:.0f} GB at {resolution} px, "
                          f"{free:.0f} GB free")
    if need_nf4 <= free and have_bitsandbytes:
        return MemoryPlan(half, "nf4", True,
                          f"NF4 base: {half} needs ~{need_full:.0f} GB at {resolution} px but "
                          f"only {free:.0f} GB is free; NF4 needs ~{need_nf4:.0f} GB")
    if need_nf4 <= free:
        raise MemoryPlanError(
            f"{half} needs ~{need_full:.0f} GB at {resolution} px and {free:.0f} GB is free: "
            "install the lowvram extra for an NF4 base (pip install 'lorabooth[lowvram]') or "
            "lower train.resolution")
    raise MemoryPlanError(
        f"even an NF4 base needs ~{need_nf4:.0f} GB at {resolution} px and {free:.0f} GB is "
        "free: lower train.resolution, or free the GPU from other programs")
