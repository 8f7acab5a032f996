"""The large text encoder kept in CPU memory but run on the GPU, one layer at a time.

T5-XXL is 8.9 GiB in bf16: on a 16-32 GB card it has no room beside the transformer, so it
waits on the CPU. Run there, a prompt queued while training (or each new prompt of a generation
job) took seconds to minutes, more where the CPU has no bf16 arithmetic. Streamed instead
(diffusers' group offloading at the level of single layers, with a CUDA stream that copies the
next layer from pinned memory while this one runs), every layer computes on the GPU and only
one or two are there at a time (the largest, a 4096 x 10240 feed-forward, is 80 MiB): a prompt
costs one pass of its weights over PCIe, ~9.5 GB at ~20 GB/s, and a few hundred MiB of GPU
memory. The weights stay in pinned CPU memory, one copy of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# diffusers' names for the hooks group offloading installs (hooks/group_offloading.py).
HOOKS = ("group_offloading", "lazy_prefetch_group_offloading", "layer_execution_tracker")


def stream_from_cpu(module: torch.nn.Module, device: torch.device) -> None:
    """Keep `module`'s weights in CPU memory and run each of its layers on `device` (where it
    is on the GPU now, its weights move out as the hooks go on). On a CPU there is nothing to
    stream: it simply stays or goes there."""
    if streamed(module):
        return
    if device.type != "cuda":
        module.to("cpu")
        return
    try:
        attach(module, device, use_stream=True)
    except RuntimeError:
        # Pinning the weights' copy failed (host memory short, or a limit on locked memory):
        # pin each layer as it is copied over instead, slower, with no second copy. The hooks
        # the failed attempt put on come off first.
        take_hooks_off(module)
        attach(module, device, use_stream=True, pin_as_needed=True)


def attach(module: torch.nn.Module, device: torch.device, use_stream: bool,
           pin_as_needed: bool = False) -> None:
    """The hooks themselves (`use_stream` needs CUDA; without it each layer is copied over
    when it runs and back after, which the tests use on a CPU)."""
    import torch
    from diffusers import hooks

    hooks.apply_group_offloading(module, onload_device=device,
                                 offload_device=torch.device("cpu"), offload_type="leaf_level",
                                 use_stream=use_stream, low_cpu_mem_usage=pin_as_needed)
    module.lorabooth_streamed = True


def streamed(module: torch.nn.Module) -> bool:
    return bool(getattr(module, "lorabooth_streamed", False))


def stop_streaming(module: torch.nn.Module) -> None:
    """Take the hooks off, leaving every weight in CPU memory, so the module can be placed
    whole again (a `.to(device)` under the hooks would be undone by the next forward)."""
    if not streamed(module):
        return
    take_hooks_off(module)
    module.lorabooth_streamed = False


def take_hooks_off(module: torch.nn.Module) -> None:
    from diffusers.hooks import HookRegistry

    registry = HookRegistry.check_if_exists_or_initialize(module)
    for name in HOOKS:
        registry.remove_hook(name, recurse=True)
    module.to("cpu")  # a no-op for weights already there; any left on the GPU come back
