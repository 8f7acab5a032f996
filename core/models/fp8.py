"""fp8 matmuls for the transformer's large linear layers, for generation
(`generate.compile = "blocks-fp8"`): each chosen layer's weight is quantised to float8 once
(torchao's inference recipe, `Float8DynamicActivationFloat8WeightConfig` with rowwise scales)
and its input as it runs, multiplied on the card's fp8 tensor cores, twice the bf16 rate on
Hopper and Ada. The transformer then holds ~11 GiB of fp8 weights where bf16 held 22.

Only worth it compiled (the activations' casts fuse into the neighbouring kernels), so it is a
compile mode. A 28-step 1024 px FLUX.1-dev image on an H100: 6.3 s eager bf16, 4.4 s with
torchao's float8 *training* layers (which cast the bf16 weights again on every call: what this
mode did before run 13), 4.0 s with the weights quantised once, 8 GiB less resident, and as
close to eager bf16's pixels as before (0.74 of 255 apart on average; 0.73 before; run 13 of
bench/results/gpu.json). LoRA training gains nothing from fp8
(1024 px 0.98x, 512 px 1.40x slower: the casts of activations, gradients and weights each step
cost what the tensor cores save; run 9), so training never uses it and a model swapped for
generation is reloaded before a run. Left in bf16: the LoRA's own layers (peft wraps the
quantised layer and adds its bf16 product), the AdaLN modulation (one row per image, nothing to
gain), the embedders and the output layer, and any layer whose sides are not multiples of 16
(the fp8 matmul's rule).

torchao's fp8 inference kernels run on CUDA only; on a CPU the tests use its float8 training
layers in emulation, which choose the same layers and cast in the same places.
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


def not_on_card(transformer: torch.nn.Module) -> str | None:
    """Why weights offloaded to the CPU between forwards get no fp8 copies, or None: they are
    quantised where they lie, and torchao's fp8 weights are made and run on a card."""
    if any(param.device.type != "cuda" for param in transformer.parameters()):
        return "the transformer is offloaded to the CPU"
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
    """Give the wanted linear layers fp8 weights in place (see the module's docstring); the
    count chosen. `emulate`: torchao's float8 training layers with the arithmetic emulated in
    high precision, the one fp8 path torchao runs on a CPU (for tests)."""
    chosen = {name for name, module in transformer.named_modules() if wanted(name, module)}
    if emulate:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training

        config = dataclasses.replace(Float8LinearConfig.from_recipe_name("rowwise"),
                                     emulate=True)
        convert_to_float8_training(transformer, config=config,
                                   module_filter_fn=lambda module, name: name in chosen)
    else:
        from torchao.quantization import (
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            quantize_,
        )

        # set_inductor_config=False: torchao's own inductor settings made the first compile
        # too slow to finish in 70 s on an H100, where lorabooth's took 17 s (run 13).
        config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(),
                                                           set_inductor_config=False)
        quantize_(transformer, config, filter_fn=lambda module, name: name in chosen)
    transformer._lorabooth_fp8 = True
    return len(chosen)


def uses_fp8_matmuls(transformer: torch.nn.Module) -> bool:
    return getattr(transformer, "_lorabooth_fp8", False)
