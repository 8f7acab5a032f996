"""The planner's inputs for a real model and a real card: parameter counts read from a model's
configs on the meta device (no weights needed), the memory this process may use, and the
plans for a workspace's training and generation."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from ..memory import MemoryPlanError, ModelSize, Plan, plan_generation, plan_training
from ..system_memory import host_phases, system_memory
from .shipped import build_component, component_params

if TYPE_CHECKING:
    import torch

    from ..config import Config


def model_size(folder: Path, rank: int = 16, targets: str = "attention") -> ModelSize:
    counts = component_params(folder)
    config = json.loads((folder / "transformer" / "config.json").read_text(encoding="utf-8"))
    width = int(config.get("num_attention_heads", 24)) * int(config.get("attention_head_dim", 128))
    if "text_encoder_2" in counts:  # FLUX.1: T5-XXL and CLIP-L
        large, small, family = counts["text_encoder_2"], counts["text_encoder"], "flux1"
    else:  # FLUX.2: one large text encoder (Qwen3)
        large, small, family = counts["text_encoder"], 0, "flux2"
    blocks = int(config.get("num_layers", 19)) + int(config.get("num_single_layers", 38))
    return ModelSize(transformer=counts["transformer"], text_encoder_2=large,
                     text_encoder=small, vae=counts["vae"], width=width,
                     lora_params=_lora_params(folder, rank, targets), family=family,
                     blocks=blocks)


@cache
def _lora_params(folder: Path, rank: int, targets: str) -> float:
    import torch

    from ..memory import lora_parameters
    from ..train.lora import target_modules

    with torch.device("meta"):
        transformer = build_component(folder, "transformer")
    return lora_parameters(transformer, target_modules(transformer, targets), rank)


# Memory other processes hold beyond which the plan says so: above this process's own CUDA
# context and loaded kernels (0.5-1 GiB, counted in use but not in what torch reserved).
CROWDED_GIB = 2.0


def card_memory(device: torch.device) -> tuple[float, str]:
    """From one query of the card: the GiB this process may use (free memory plus what it
    holds already: a model resident here is reused or freed before the next load, so it must
    not count against the plan), and words for memory that other processes hold, or "" when
    they hold little (without them a plan that picks NF4 or offload on a big card reads as a
    mistake)."""
    import torch

    free, total = torch.cuda.mem_get_info(device)
    reserved = torch.cuda.memory_reserved(device)
    others = (total - free - reserved) / 2**30
    note = "" if others < CROWDED_GIB else (
        f"other processes hold {others:.1f} of this card's {total / 2**30:.0f} GiB "
        "(nvidia-smi names them; a lorabooth engine keeps its model loaded between jobs: "
        "`lorabooth engine WORKSPACE stop` frees it)")
    return (free + reserved) / 2**30, note


def _memory_here(available: float | None, device: torch.device) -> tuple[float | None, str]:
    """`available` as given (a named card), else this machine's card as `card_memory` says."""
    if available is None and device.type == "cuda":
        return card_memory(device)
    return available, ""


def _with_note(make: Callable[[], Plan], note: str) -> Plan:
    """The plan `make()` returns, or the MemoryPlanError it raises, with `note` added."""
    try:
        plan = make()
    except MemoryPlanError as exc:
        if not note:
            raise
        raise MemoryPlanError(f"{exc}; {note}") from None
    return dataclasses.replace(plan, reason=f"{plan.reason}; {note}") if note else plan


def have_bitsandbytes() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def bf16_supported(device: torch.device) -> bool:
    """Whether the device multiplies bf16 natively (not emulated)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return cpu_has_bf16()


def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16 among the CPU's flags (Linux; elsewhere: not known, so no)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[-1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def training_plan(config: Config, folder: Path, text_tokens: int, device: torch.device,
                  available: float | None = None, bnb: bool | None = None,
                  bf16: bool | None = None, host: float | None = None) -> Plan:
    """`available`, `bnb`, `bf16` and `host` (system RAM) default to this machine's;
    `lorabooth plan` names a card and a machine."""
    t = config.train
    available, note = _memory_here(available, device)
    size = model_size(folder, t.rank, t.targets)
    plan = _with_note(lambda: plan_training(
        t.memory, size, max(t.resolution),
        device=device.type, available_gib=available, batch=t.batch_size,
        text_tokens=text_tokens, sample_resolution=min(t.resolution),
        have_bitsandbytes=have_bitsandbytes() if bnb is None else bnb,
        bf16_supported=bf16_supported(device) if bf16 is None else bf16,
        checkpointing=t.checkpointing), note)
    return _with_host(plan, size, device, folder, host, t.batch_size, text_tokens)


def generation_plan(config: Config, folder: Path, resolution: int, text_tokens: int,
                    device: torch.device, available: float | None = None,
                    bnb: bool | None = None, bf16: bool | None = None,
                    host: float | None = None) -> Plan:
    available, note = _memory_here(available, device)
    size = model_size(folder)
    plan = _with_note(lambda: plan_generation(
        config.generate.memory, size, resolution, device=device.type,
        available_gib=available, text_tokens=text_tokens,
        have_bitsandbytes=have_bitsandbytes() if bnb is None else bnb,
        bf16_supported=bf16_supported(device) if bf16 is None else bf16), note)
    return _with_host(plan, size, device, folder, host, 1, text_tokens)


# -- system RAM -----------------------------------------------------------------------------

def _with_host(plan: Plan, size: ModelSize, device: torch.device, folder: Path,
               host: float | None, batch: int, text_tokens: int) -> Plan:
    phases = host_phases(size, plan, device.type != "cuda", files_precision(folder), batch,
                         text_tokens)
    return dataclasses.replace(plan, host=phases,
                               host_available_gib=system_memory() if host is None else host)


def files_precision(folder: Path) -> str:
    """The precision the transformer's weights are stored in ("bf16" for every Flux repo; the
    shipped configs have no weights, and a file that cannot be read is taken to be so)."""
    from safetensors import safe_open

    names = {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}
    for path in sorted((folder / "transformer").glob("*.safetensors"))[:1]:
        if not path.is_file():  # a FIFO would block the open
            return "bf16"
        try:
            with safe_open(str(path), framework="pt") as handle:
                first = next(iter(handle.keys()), None)
                if first is not None:
                    return names.get(handle.get_slice(first).get_dtype(), "bf16")
        except Exception:  # safetensors raises its own error types for a forged file
            return "bf16"
    return "bf16"
