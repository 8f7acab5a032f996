"""LoRA adapters on the Flux transformer through peft, and the files they are saved as.

Saved files use the diffusers layout (`transformer.<module>.lora_A.weight`) that
`FluxPipeline.load_lora_weights`, ai-toolkit, SimpleTuner and ComfyUI read, with the adapter
config in the safetensors header (diffusers' `lora_adapter_metadata`) so alpha survives, and
lorabooth's own facts (base model, trigger, rank, steps) beside it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save

ADAPTER = "lorabooth"
ATTENTION_TARGETS = ["to_k", "to_q", "to_v", "to_out.0",
                     "add_k_proj", "add_q_proj", "add_v_proj", "to_add_out"]


CLIP_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def target_modules(transformer: torch.nn.Module, targets: str) -> list[str]:
    """Module names for `targets`: the attention projections, or every Linear in the blocks.

    FLUX.2's single blocks fuse their attention and MLP input into `to_qkv_mlp_proj` and name
    their output `attn.to_out` (a Linear, where the double blocks' `to_out` is a list): they
    are named one by one, as diffusers' klein LoRA example does, so that the single blocks
    train too (the FLUX.1 names alone would leave 20 of klein-4B's 25 blocks untouched)."""
    if targets == "attention":
        names = [n for n, m in transformer.named_modules() if isinstance(m, torch.nn.Linear)]
        if any(n.endswith(".to_qkv_mlp_proj") for n in names):
            return [*ATTENTION_TARGETS, "to_qkv_mlp_proj",
                    *(n for n in names if n.startswith("single_transformer_blocks.")
                      and n.endswith(".attn.to_out"))]
        return list(ATTENTION_TARGETS)
    return sorted(name for name, module in transformer.named_modules()
                  if isinstance(module, torch.nn.Linear)
                  and name.startswith(("transformer_blocks.", "single_transformer_blocks.")))


def add_lora(model: torch.nn.Module, rank: int, alpha: float, targets: list[str],
             dropout: float = 0.0) -> dict:
    """Inject a trainable LoRA into `model` (the Flux transformer or the CLIP text encoder);
    its base weights are frozen. Returns the adapter config for the file's header."""
    from peft import LoraConfig

    model.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                        init_lora_weights="gaussian", target_modules=targets)
    if hasattr(model, "set_adapters"):  # a diffusers model: its own PEFT integration
        model.add_adapter(config, adapter_name=ADAPTER)
    else:
        # transformers' add_adapter wants a newer peft than diffusers does; peft's own
        # injection works on any module and saves and loads the same keys.
        from peft import inject_adapter_in_model

        inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    # LoRA weights train in float32 even when the base is bf16 (as diffusers' examples do).
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return adapter_metadata(config)


def skip_input_casts(model: torch.nn.Module) -> list[torch.nn.Module]:
    """For a model that only ever runs under autocast: its float32 LoRA meets the half-precision
    activations as they are. peft would cast each adapted layer's input to the LoRA's float32
    and autocast cast it straight back, an exact round trip that copies the activation twice
    per layer, forward and backward (4.5% of an eager bf16 step on bench.train's mid-size
    model). Returns the layers changed, for `restore_input_casts`."""
    from peft.tuners.lora import LoraLayer

    changed = [m for m in model.modules() if isinstance(m, LoraLayer)
               and getattr(m, "cast_input_dtype_enabled", True)]
    for module in changed:
        module.cast_input_dtype_enabled = False
    return changed


def restore_input_casts(layers: list[torch.nn.Module]) -> None:
    """Back to peft's cast, before the model is used outside autocast (layers that diffusers'
    layerwise casting set themselves were never changed, and stay as it set them)."""
    for module in layers:
        module.cast_input_dtype_enabled = True


def adapter_metadata(config) -> dict:
    data = config.to_dict()
    keep = ("r", "lora_alpha", "lora_dropout", "target_modules", "init_lora_weights",
            "use_dora", "use_rslora", "bias", "rank_pattern", "alpha_pattern")
    data = {k: data[k] for k in keep if k in data}
    if isinstance(data.get("target_modules"), set):
        data["target_modules"] = sorted(data["target_modules"])
    return data


# `components` below maps diffusers' component names ("transformer", "text_encoder") to the
# modules carrying the adapter; every key in a file starts with its component's name.


# transformers 5 dropped CLIPTextModel's `text_model.` level; files keep it on every version,
# the layout diffusers (which strips it where the model lacks it) and ComfyUI read.
CLIP_LEVEL = "text_model."


def lora_state_dict(components: dict[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """The adapters' weights under diffusers' component prefixes, contiguous on the CPU."""
    from peft.utils import get_peft_model_state_dict

    out = {}
    for name, module in components.items():
        state = get_peft_model_state_dict(module, adapter_name=ADAPTER)
        level = _missing_level(name, module)
        out.update({f"{name}.{level}{k}": v.detach().to("cpu").contiguous()
                    for k, v in state.items()})
    return out


def _missing_level(name: str, module: torch.nn.Module) -> str:
    return CLIP_LEVEL if name == "text_encoder" and not hasattr(module, "text_model") else ""


def lora_file_metadata(adapters: dict[str, dict], info: dict[str, object]) -> dict[str, str]:
    """The safetensors header: diffusers' adapter configs plus `lorabooth.*` facts."""
    # Pipeline-level LoRA files prefix each config key with its component, as
    # FluxPipeline.save_lora_weights does.
    packed = {f"{name}.{k}": v for name, adapter in adapters.items() for k, v in adapter.items()}
    metadata = {"format": "pt", "lora_adapter_metadata": json.dumps(packed, sort_keys=True)}
    metadata.update({f"lorabooth.{k}": str(v) for k, v in info.items()})
    return metadata


def lora_file_bytes(components: dict[str, torch.nn.Module], adapters: dict[str, dict],
                    info: dict[str, object], dtype: torch.dtype) -> bytes:
    tensors = {k: v.to(dtype) for k, v in lora_state_dict(components).items()}
    return save(tensors, metadata=lora_file_metadata(adapters, info))


def set_lora_weights(components: dict[str, torch.nn.Module],
                     state: dict[str, torch.Tensor], adapter: str = ADAPTER) -> None:
    """Put saved weights (diffusers keys) into an adapter: the one being trained, or one a
    generator loaded."""
    from peft.utils import set_peft_model_state_dict

    for name, module in components.items():
        level = _missing_level(name, module)
        weights = {k.removeprefix(f"{name}.").removeprefix(level): v for k, v in state.items()
                   if k.startswith(f"{name}.")}
        result = set_peft_model_state_dict(module, weights, adapter_name=adapter)
        unexpected = getattr(result, "unexpected_keys", None)
        if unexpected:
            raise ValueError(f"the saved LoRA does not match this one "
                             f"(unexpected {unexpected[:3]})")


def adapter_layers(model: torch.nn.Module, adapter: str) -> Iterator[torch.nn.Module]:
    """The down and up projections one adapter added to `model`."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            for layers in (module.lora_A, module.lora_B):
                if adapter in layers:
                    yield layers[adapter]


def adapter_to(model: torch.nn.Module, adapter: str, dtype: torch.dtype) -> None:
    """Store one adapter's weights in `dtype`. peft gives a new adapter the dtype of the layer
    it wraps, which for a transformer stored in fp8 would keep the LoRA in 3 mantissa bits."""
    for layer in adapter_layers(model, adapter):
        layer.to(dtype)


def adapter_is_finite(model: torch.nn.Module, adapter: str) -> bool:
    # In float: an adapter loaded over an fp8 transformer may still be fp8 (no isfinite).
    return all(bool(torch.isfinite(layer.weight.float()).all())
               for layer in adapter_layers(model, adapter))


def delete_adapter(model: torch.nn.Module, adapter: str) -> None:
    """Take one adapter out of `model`, wherever a load that failed half-way left it."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and adapter in module.lora_A:
            module.delete_adapter(adapter)
    getattr(model, "peft_config", {}).pop(adapter, None)


@contextlib.contextmanager
def adapters_off(model: torch.nn.Module) -> Iterator[None]:
    """`model` as its base, its LoRA layers bypassed while the block runs."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def remove_lora(model: torch.nn.Module) -> None:
    """Take the training adapter out of every layer of `model` that has it."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer) and ADAPTER in module.active_adapters:
            module.delete_adapter(ADAPTER)


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})
