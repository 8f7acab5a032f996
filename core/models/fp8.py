"""fp8 matmuls for the transformer's large linear layers, through torchao's float8 training
(`convert_to_float8_training`, rowwise scales): activations and weights are cast to float8 as
each layer runs and multiplied on the card's fp8 tensor cores, twice the bf16 rate on Hopper
and Ada. The weights stay bf16 parameters.

Only worth it compiled (the casts fuse into the neighbouring kernels), so it is a compile mode,
`generate.compile = "blocks-fp8"`: a 28-step 1024 px FLUX.1-dev image in 3.4 s on an H200
(0.67x eager's time, 0.89x the bf16 blocks compiled; 4.3 s on an H100, 0.70x). LoRA training
gains nothing from it (1024 px 0.98x, 512 px 1.40x slower: the casts of activations, gradients
and weights each step cost what the tensor cores save; bench/results/gpu.json, run 9), so
training never uses it and a model swapped for generation is reloaded before a run. Left in
bf16: the LoRA's own layers, the AdaLN modulation (one row per image, nothing to gain), the
embedders and the output layer, and any layer whose sides are not multiples of 16 (the fp8
matmul's rule).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BLOCKS = ("transformer_blocks.", "single_transformer_blocks.")


def unavailable(device: torch.device) -> str | None:
    """Why fp8 matmuls cannot run here, or None."""
    import torch

    if device.type != "cuda":
        return f"fp8 matmuls need a CUDA card with fp8 tensor cores, not {device.type}"
    if torch.cuda.get_device_capability(device) < (8, 9):
        name = torch.cuda.get_device_name(device)
        return f"{name} has no fp8 tensor cores (Ada or Hopper and newer have)"
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        return "fp8 matmuls need torchao: pip install 'lorabooth[fp8]'"
    return None


def wanted(name: str, module: torch.nn.Module) -> bool:
    """Whether the linear layer `name` multiplies in fp8 (see the module's docstring)."""
    import torch

    if type(module) is not torch.nn.Linear or not name.startswith(BLOCKS):
        return False
    if "lora_" in name or ".norm" in name:
        return False
    return module.in_features % 16 == 0 and module.out_features % 16 == 0


def use_fp8_matmuls(transformer: torch.nn.Module, emulate: bool = False) -> int:
    """Swap the wanted linear layers for torchao's Float8Linear in place; the count swapped.
    `emulate`: fp8 arithmetic emulated in high precision (any device; for tests)."""
    from torchao.float8 import Float8LinearConfig, convert_to_float8_training

    config = Float8LinearConfig.from_recipe_name("rowwise")
    if emulate:
        config = dataclasses.replace(config, emulate=True)
    chosen = {name for name, module in transformer.named_modules() if wanted(name, module)}
    convert_to_float8_training(transformer, config=config,
                               module_filter_fn=lambda module, name: name in chosen)
    transformer._lorabooth_fp8 = True
    return len(chosen)


def uses_fp8_matmuls(transformer: torch.nn.Module) -> bool:
    return getattr(transformer, "_lorabooth_fp8", False)
