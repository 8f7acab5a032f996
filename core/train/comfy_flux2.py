"""A FLUX.2 [klein] LoRA in the layout ComfyUI and ai-toolkit use: Black Forest Labs' own
module names under `diffusion_model.` (`double_blocks.N.img_attn.qkv`,
`single_blocks.N.linear1`, ...), `lora_A`/`lora_B` weights, the strength baked in.

ComfyUI's FLUX.2 model carries BFL's names, so it reads these keys on any version without a
diffusers mapping; diffusers' `Flux2KleinPipeline.load_lora_weights` reads them too (its
ai-toolkit conversion). Where BFL fuses layers that diffusers keeps apart (q, k and v in one
`qkv` Linear), the separate LoRAs become one of three times the rank: the down matrices
stacked, the up matrices placed block-diagonally, which is exactly the same update.

Plain numpy on float32 (no torch): the UI writes this copy when it promotes a checkpoint.
"""

from __future__ import annotations

import re

import numpy as np

PREFIX = "diffusion_model."
# diffusers module (within a double block) -> (BFL module, part of a fused q/k/v)
DOUBLE = {
    "attn.to_q": ("img_attn.qkv", 0), "attn.to_k": ("img_attn.qkv", 1),
    "attn.to_v": ("img_attn.qkv", 2),
    "attn.add_q_proj": ("txt_attn.qkv", 0), "attn.add_k_proj": ("txt_attn.qkv", 1),
    "attn.add_v_proj": ("txt_attn.qkv", 2),
    "attn.to_out.0": ("img_attn.proj", None), "attn.to_add_out": ("txt_attn.proj", None),
    "ff.linear_in": ("img_mlp.0", None), "ff.linear_out": ("img_mlp.2", None),
    "ff_context.linear_in": ("txt_mlp.0", None), "ff_context.linear_out": ("txt_mlp.2", None),
}
SINGLE = {"attn.to_qkv_mlp_proj": "linear1", "attn.to_out": "linear2"}
FUSED_PARTS = 3


def is_flux2_layout(modules: list[str]) -> bool:
    """Whether diffusers module names are FLUX.2's (its single blocks fuse attention and MLP)."""
    return any(".attn.to_qkv_mlp_proj" in m or ".ff.linear_in" in m for m in modules)


def bfl_module(module: str) -> tuple[str, int | None]:
    """`transformer.transformer_blocks.0.attn.to_k` -> (`double_blocks.0.img_attn.qkv`, 1)."""
    name = module.removeprefix("transformer.")
    found = re.fullmatch(r"transformer_blocks\.(\d+)\.(.+)", name)
    if found and found[2] in DOUBLE:
        target, part = DOUBLE[found[2]]
        return f"double_blocks.{found[1]}.{target}", part
    found = re.fullmatch(r"single_transformer_blocks\.(\d+)\.(.+)", name)
    if found and found[2] in SINGLE:
        return f"single_blocks.{found[1]}.{SINGLE[found[2]]}", None
    raise ValueError(f"no BFL name for the FLUX.2 module {module!r}")


def to_bfl(tensors: dict[str, np.ndarray], alpha: float | None) -> dict[str, np.ndarray]:
    """diffusers-named LoRA weights (`<module>.lora_A.weight`, `.lora_B.weight`) -> BFL-named
    ones with `alpha / rank` multiplied into each up matrix."""
    modules = sorted({k.rsplit(".lora_", 1)[0] for k in tensors if ".lora_" in k})
    groups: dict[str, dict[int | None, tuple[np.ndarray, np.ndarray]]] = {}
    for module in modules:
        down = tensors[f"{module}.lora_A.weight"].astype(np.float32)
        up = tensors[f"{module}.lora_B.weight"].astype(np.float32)
        rank = down.shape[0]
        scale = 1.0 if alpha is None else alpha / rank
        target, part = bfl_module(module)
        groups.setdefault(target, {})[part] = (down, up * scale)
    out: dict[str, np.ndarray] = {}
    for target, parts in groups.items():
        if None in parts:
            down, up = parts[None]
        else:
            down, up = _fuse(parts)
        out[f"{PREFIX}{target}.lora_A.weight"] = np.ascontiguousarray(down)
        out[f"{PREFIX}{target}.lora_B.weight"] = np.ascontiguousarray(up)
    return out


def _fuse(parts: dict[int | None, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """q, k and v LoRAs as one on the fused Linear: down matrices stacked, up matrices on the
    diagonal (a part not trained contributes zeros)."""
    some_down, some_up = next(iter(parts.values()))
    rank, d_in = some_down.shape
    d_out = some_up.shape[0]
    down = np.zeros((FUSED_PARTS * rank, d_in), np.float32)
    up = np.zeros((FUSED_PARTS * d_out, FUSED_PARTS * rank), np.float32)
    for part, (d, u) in parts.items():
        down[part * rank:(part + 1) * rank] = d
        up[part * d_out:(part + 1) * d_out, part * rank:(part + 1) * rank] = u
    return down, up
