"""The real models' configs, shipped with lorabooth so that their size is known without their
weights: `lorabooth plan` answers "will FLUX.1-dev train on my 24 GB card?" before a 34 GB
download, and the GPU benchmark builds the full-size architecture with random weights.

Each folder under `configs/` is a diffusers folder with every component's config and no weights.
Parameter counts come from building each component on the meta device (no memory, no weights),
so they are the real classes' counts, not numbers copied from a model card.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent / "configs"
COMPONENTS = ("transformer", "text_encoder_2", "text_encoder", "vae")


def shipped_folder(spec: str) -> Path | None:
    """The shipped config folder for a registry name, alias or repo id, or None for others."""
    from .registry import known

    entry = known(spec)
    return CONFIGS / entry.configs if entry is not None and entry.configs else None


def read_config(folder: Path, component: str) -> dict:
    name = "scheduler_config.json" if component == "scheduler" else "config.json"
    return json.loads((folder / component / name).read_text(encoding="utf-8"))


def build_component(folder: Path, component: str):
    """One component of the pipeline from its config, with fresh (random) weights on the
    current default device: `torch.device("meta")` as a context gives an empty one."""
    config = read_config(folder, component)
    kind = config.get("_class_name") or (config.get("architectures") or [""])[0]
    if kind in ("FluxTransformer2DModel", "Flux2Transformer2DModel", "AutoencoderKL",
                "AutoencoderKLFlux2"):
        import diffusers

        return getattr(diffusers, kind).from_config(config)
    if kind == "CLIPTextModel":
        from transformers import CLIPTextConfig, CLIPTextModel

        return CLIPTextModel(CLIPTextConfig(**_plain(config)))
    if kind == "T5EncoderModel":
        from transformers import T5Config, T5EncoderModel

        return T5EncoderModel(T5Config(**_plain(config)))
    if kind == "Qwen3ForCausalLM":  # FLUX.2 [klein]'s text encoder
        from transformers import Qwen3Config, Qwen3ForCausalLM

        return Qwen3ForCausalLM(Qwen3Config(**_plain(config)))
    raise ValueError(f"unknown {component} class {kind!r} in {folder}")


def _plain(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in ("architectures", "torch_dtype")}


@cache
def component_params(folder: Path) -> dict[str, int]:
    """Parameters per component of the model a config folder describes, counted on the meta
    device."""
    import torch

    counts = {}
    with torch.device("meta"):
        for component in COMPONENTS:
            if (folder / component).is_dir():
                model = build_component(folder, component)
                counts[component] = sum(p.numel() for p in model.parameters())
    return counts
