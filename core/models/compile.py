"""torch.compile for the Flux transformer, chosen once and said in one line like the memory
plan, with its compiled code cached on disk.

Regional compilation (diffusers' `compile_repeated_blocks`: each of the 57 blocks compiled
once, as one graph reused by all) rather than the whole model: on an H200 it took a 512 px
LoRA step from 0.55 s to 0.256 s after a 27.6 s first step (1024 px without checkpointing:
0.58 s to 0.43 s after 36 s). On a 2-core CPU the mid-size bench's step compiled is 0.81x (the
blocks, ~50 s to compile cold) or 0.86x (the whole model, ~85 s) of diffusers' reference script
in fp32 (bench/results/train.json). `apply`'s `auto` is the blocks on CUDA and nothing on a
CPU; training's and generation's `auto` are decided by measurement (autocompile.py).

At 512 px on an H100 a compiled step is host-bound: 0.114 s of kernels in a 0.193 s step, the
host launching each block's kernels forward and back. "blocks-cudagraphs" replays each block as
a CUDA graph (inductor's reduce-overhead), one launch a block: 0.154 s with the same kernels and
losses (bench/results/gpu.json, run 13); 0.114 s on an H200 once a step is queued before the
last is read (run 25, the card busy 96% of it). It was measured without gradient
checkpointing, whose backward replays every block's forward, so it is offered only there, and
only when asked. For generation the graphs gain bf16 nothing at 1024 px (0.139 s a step either
way: the card is the limit, run 30); with fp8 weights, whose step is shorter,
"blocks-fp8-cudagraphs" rendered a 28-step 1024 px image in 2.97 s on an H200 (run 29; 3.42 s
with the older fp8 path and no graphs, run 12: fp8 without graphs on this path is unmeasured
on an H200; on an H100 it was 3.98 s).

Inductor's caches (FX graphs, autograd graphs, kernels) live under lorabooth's user cache, so
a second run or a restarted engine compiles from disk.

Shapes are kept static: each bucket (and each render size) compiles its own graph once, up to
STATIC_SHAPES sizes; the sizes after share one graph with a symbolic size. Left to dynamo's
automatic dynamic shapes, the second size seen recompiles the blocks with a symbolic sequence
length, and those kernels are slower: on an H200 a 512 px step took 0.241 s after the blocks
had met 1024 px first, 0.143 s with a static graph for each (bench/results/gpu.json, runs 4 and
9). Scalars (a LoRA scale) still become dynamic after their first change, so moving a scale
compiles once, not once per value.
"""

from __future__ import annotations

import functools
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


WHAT = {"blocks": "repeated blocks", "full": "the whole transformer",
        "blocks-fp8": "repeated blocks with fp8 matmuls",
        "blocks-cudagraphs": "repeated blocks replayed as CUDA graphs",
        "blocks-fp8-cudagraphs": "repeated blocks with fp8 matmuls, replayed as CUDA graphs"}

# Graphs kept per compiled function: a few buckets x (training, rendering) x (a LoRA scale
# fixed or dynamic); past dynamo's default of 8 it would run the rest eager.
RECOMPILE_LIMIT = 64
# Input sizes compiled as static graphs of their own, per kind of block; later ones share one
# graph with a symbolic size. Typical runs have a few buckets and a render size. On a CPU the
# static graphs were the slower ones (the mid-size bench at 256 px, caches warm: 0.321 s a step
# with a static graph per bucket, 0.293 s with one symbolic graph after the first size), so
# there only the first size is static.
STATIC_SHAPES = 6
STATIC_SHAPES_CPU = 1

# Inductor's C++ (CPU) code computes tanh with Sleef's accurate tanh, about three times the
# time of its exp: the GELU-tanh of every Flux block, forward and backward, was 11% of the
# mid-size bench's compiled step on the 2-core CPU. torch's own option computes it as
# 2/(1+exp(-2x))-1 (its default before torch 2.7, kept off since for atan2's sake near 0, which
# GELU does not meet): that step 0.93x in alternating runs. Triton's (CUDA) code ignores it.
INDUCTOR_OPTIONS = {"cpp.use_decompose_tanh": True}


def _static(value, mark: bool):
    """`value` with every tensor's strides the usual ones and, if `mark`, its sizes marked
    static: FLUX.1's single blocks hand each other views into the joint text+image tensor (the
    batch dimension's stride is the joint length) while the first receives a fresh tensor, and
    dynamo guards a view's base too, so each size would compile twice. A view is copied (about
    1% of a 1024 px step)."""
    import torch

    if isinstance(value, torch.Tensor):
        if value._base is not None or value.stride() != _packed_strides(value.shape):
            value = value.clone(memory_format=torch.contiguous_format)
        if mark:
            for dim in range(value.dim()):
                torch._dynamo.mark_static(value, dim)
        return value
    if isinstance(value, (tuple, list)):
        return type(value)(_static(item, mark) for item in value)
    return value


def _packed_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def _shapes(value) -> tuple:
    import torch

    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list)):
        return tuple(_shapes(item) for item in value)
    return ()


def _call_static(compiled, seen: set, *args, **kwargs):
    # Runs outside the compiled region, so the marks reach dynamo as it guards the inputs.
    # Past STATIC_SHAPES sizes the marks stop: dynamo then compiles one graph with a symbolic
    # size for every size after (a compile per bucket would cost more than it saves).
    shapes = _shapes((args, tuple(kwargs.values())))
    on_cpu = all(arg.device.type == "cpu" for arg in args if hasattr(arg, "device"))
    mark = shapes in seen or len(seen) < (STATIC_SHAPES_CPU if on_cpu else STATIC_SHAPES)
    if mark:
        seen.add(shapes)
    return compiled(*_static(args, mark), **{key: _static(v, mark) for key, v in kwargs.items()})


def _compile_static(module: torch.nn.Module, seen: set, **options) -> None:
    """`module.compile(**options)`, with the tensor inputs' shapes kept static for the first
    STATIC_SHAPES sizes `seen` by modules of its kind."""
    import torch

    compiled = torch.compile(module._call_impl, **options)
    module._compiled_call_impl = functools.partial(_call_static, compiled, seen)


def compiled_regions(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules "blocks" compiles: diffusers' `_repeated_blocks` (as compile_repeated_blocks
    finds them)."""
    names = getattr(transformer, "_repeated_blocks", None) or ()
    regions = [m for m in transformer.modules() if type(m).__name__ in names]
    if not regions:
        raise ValueError(f"{type(transformer).__name__} names no repeated blocks to compile")
    return regions


def compile_in_place(transformer: torch.nn.Module, mode: str) -> bool:
    """Compile the transformer in place as `mode` says: each repeated block (one graph reused
    by all) or the whole model as one graph (the longest compile; on the 2-core CPU a step no
    faster than the blocks').
    False when it is compiled already (a resident model keeps its compiled code between
    jobs)."""
    if getattr(transformer, "_lorabooth_compiled", False):
        return False
    import torch._dynamo

    use_disk_cache()
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                               RECOMPILE_LIMIT)
    # torch.compile takes a mode or options, not both; CUDA graphs are for CUDA only.
    graphs = mode.endswith("-cudagraphs")
    options: dict = ({"mode": "reduce-overhead"} if graphs  # graph trees
                     else {"options": INDUCTOR_OPTIONS})
    if mode == "full":
        _compile_static(transformer, set(), **options)
    else:
        # fullgraph=False: peft's LoRA layers and gradient checkpointing stay graph-breakable.
        options["fullgraph"] = False
        seen: dict[str, set] = {}
        for block in compiled_regions(transformer):
            _compile_static(block, seen.setdefault(type(block).__name__, set()), **options)
    if graphs:
        transformer._lorabooth_graph_steps = transformer.register_forward_pre_hook(
            _render_step, with_kwargs=True)
    transformer._lorabooth_compiled = True
    transformer._lorabooth_compile_mode = mode
    return True


def with_cudagraphs(transformer: torch.nn.Module) -> bool:
    """Whether the transformer's blocks were compiled to replay as CUDA graphs."""
    return (getattr(transformer, "_lorabooth_compile_mode", None) or "").endswith("-cudagraphs")


def begin_step(transformer: torch.nn.Module) -> None:
    """Tell CUDA graph trees a new training step begins, so the graphs replay on their fast
    path rather than checking for the last step's outputs still in use. Once per optimizer
    step, not per forward: with gradient accumulation the first micro-batch's gradients live
    on into the second's."""
    if with_cudagraphs(transformer):
        import torch

        torch.compiler.cudagraph_mark_step_begin()


def _render_step(transformer: torch.nn.Module, args, kwargs) -> None:
    """Each call of the transformer without gradients (a render: samples, queued prompts)
    begins a new step for CUDA graph trees. Its blocks share one compiled function, so
    otherwise, with no backward pending, each block's call starts a new generation and frees
    the outputs of the block before it, which are this block's inputs: "accessing tensor
    output of CUDAGraphs that has been overwritten" (bench/results/gpu.json, run 28)."""
    import torch

    if not torch.is_grad_enabled():
        torch.compiler.cudagraph_mark_step_begin()


def without_cudagraphs(device: torch.device, checkpointing: bool) -> str | None:
    """Why the blocks are compiled without CUDA graphs here, or None. A CPU has none; with
    gradient checkpointing the backward pass replays each block's forward, which the graphs
    were not measured with (bench/results/gpu.json, run 13, measured them without it)."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA card, not {device.type}"
    if checkpointing:
        return "not with gradient checkpointing (train.checkpointing = off allows them)"
    return None


def uncompile(transformer: torch.nn.Module) -> None:
    """Back to eager: every compiled region (or the whole model) runs its plain forward."""
    for module in transformer.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None
    steps = getattr(transformer, "_lorabooth_graph_steps", None)
    if steps is not None:
        steps.remove()
        transformer._lorabooth_graph_steps = None
    transformer._lorabooth_compiled = False
    transformer._lorabooth_compile_mode = None


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


def apply(transformer: torch.nn.Module, mode: str, device: torch.device,
          checkpointing: bool = False) -> str:
    """Compile as `mode` asks on `device` (`checkpointing`: whether training recomputes the
    blocks in its backward pass); the one line that says what was done."""
    chosen = choose(mode, device)
    why_not = not_compilable(transformer) if chosen != "off" else None
    if why_not:
        return f"compile: off ({why_not})"
    if chosen == "off":
        why = "" if mode == "off" else f" (auto: no gain worth the compile time on {device.type})"
        return f"compile: off{why}"
    note = ""
    if chosen.startswith("blocks-fp8") and not getattr(transformer, "_lorabooth_compiled", False):
        from . import fp8

        problem = fp8.unavailable(device) or fp8.not_on_card(transformer)
        if problem:
            chosen, note = chosen.replace("-fp8", ""), f"; {problem}, so bf16 matmuls"
        else:
            note = f"; {fp8.use_fp8_matmuls(transformer)} linear layers with fp8 weights"
    if chosen.endswith("-cudagraphs") and (why_not := without_cudagraphs(device, checkpointing)):
        chosen = chosen.removesuffix("-cudagraphs")
        note += f"; {why_not}, so without CUDA graphs"
    if checkpointing and with_cudagraphs(transformer):
        uncompile(transformer)  # an earlier job's graphs: not replayed under checkpointing
    if compile_in_place(transformer, chosen):
        return (f"compile: {WHAT[chosen]}{note} (the first steps compile; cached in "
                f"{os.environ['TORCHINDUCTOR_CACHE_DIR']})")
    # What an earlier job compiled, which may not be what this one asked for.
    done = WHAT[getattr(transformer, "_lorabooth_compile_mode", None) or chosen]
    return f"compile: {done} (compiled already)"
