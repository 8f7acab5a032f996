"""torch.compile for the Flux transformer, chosen once and said in one line like the memory
plan, with its compiled code cached on disk.

Regional compilation (diffusers' `compile_repeated_blocks`: each of the 57 blocks compiled
once, as one graph reused by all) rather than the whole model: on an H200 it took a 512 px
LoRA step from 0.55 s to 0.256 s after a 27.6 s first step (1024 px without checkpointing:
0.58 s to 0.43 s after 36 s), and on a 2-core CPU the whole
model compiled in 72 s for 0.57x, the blocks in 32 s for 0.92x. `auto` is therefore the
blocks on CUDA and nothing on a CPU.

Inductor's caches (FX graphs, autograd graphs, kernels) live under lorabooth's user cache, so
a second run or a restarted engine compiles from disk; dynamic shapes are left to dynamo's
automatic detection: the first bucket compiles static, the second marks the sequence length
dynamic, and later buckets reuse that graph.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def choose(mode: str, device: torch.device) -> str:
    """The compile mode to use: `auto` decides by the kind of device."""
    if mode == "auto":
        return "blocks" if device.type == "cuda" else "off"
    return mode


def use_disk_cache() -> str:
    """Point inductor's caches at lorabooth's user cache (unless the user chose a place) and
    turn on the caches that make a second process's compile a cache read."""
    import torch._inductor.config as inductor
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from .resolve import cache_root

    # Inductor writes its default (a per-user folder under /tmp, emptied at reboot) into the
    # environment the first time it looks; a value other than that is the user's choice.
    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if folder is None or os.path.abspath(folder) == os.path.abspath(default_cache_dir()):
        folder = os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(cache_root() / "inductor")

    inductor.fx_graph_cache = True
    if hasattr(inductor, "autograd_cache"):
        inductor.autograd_cache = True
    return folder


WHAT = {"blocks": "repeated blocks", "full": "the whole transformer"}


def compile_in_place(transformer: torch.nn.Module, mode: str) -> bool:
    """Compile the transformer in place as `mode` says: each repeated block (one graph reused
    by all) or the whole model as one graph (the fastest steady step, the longest compile).
    False when it is compiled already (a resident model keeps its compiled code between
    jobs)."""
    if getattr(transformer, "_lorabooth_compiled", False):
        return False
    use_disk_cache()
    if mode == "full":
        transformer.compile()
    else:
        # fullgraph=False: peft's LoRA layers and gradient checkpointing stay graph-breakable.
        transformer.compile_repeated_blocks(fullgraph=False)
    transformer._lorabooth_compiled = True
    return True


def not_compilable(transformer: torch.nn.Module) -> str | None:
    """Why the transformer must run eager, or None. fp8 storage is diffusers' layerwise
    casting: hooks swap each weight to the compute dtype around its forward, which compiled
    code does not follow (a matmul of fp32 and fp8, or a checkpoint recompute that sees fp8)."""
    from .load import stored_in_fp8

    if stored_in_fp8(transformer):
        return "its weights are stored in fp8 by hooks that torch.compile does not follow"
    if getattr(transformer, "is_quantized", False):
        return "NF4 weights (bitsandbytes) are not compiled"
    return None


def apply(transformer: torch.nn.Module, mode: str, device: torch.device) -> str:
    """Compile as `mode` asks on `device`; the one line that says what was done."""
    chosen = choose(mode, device)
    why_not = not_compilable(transformer) if chosen != "off" else None
    if why_not:
        return f"compile: off ({why_not})"
    if chosen == "off":
        why = "" if mode == "off" else f" (auto: no gain worth the compile time on {device.type})"
        return f"compile: off{why}"
    if compile_in_place(transformer, chosen):
        return (f"compile: {WHAT[chosen]} (the first steps compile; cached in "
                f"{os.environ['TORCHINDUCTOR_CACHE_DIR']})")
    return f"compile: {WHAT[chosen]} (compiled already)"
