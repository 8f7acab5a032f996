"""Per-family facts: what differs between FLUX.1 [dev], [schnell] and the demo model when
encoding text, training and generating. Everything that asks "which kind of Flux is this?"
asks here; new families become new entries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DEMO = "demo"
KNOWN_REPOS = {
    "flux-dev": "black-forest-labs/FLUX.1-dev",
    "flux-schnell": "black-forest-labs/FLUX.1-schnell",
}
# The demo's text lengths: short, so a CPU step is cheap; the real models use 77 and 512.
DEMO_CLIP_LENGTH = 77
DEMO_T5_LENGTH = 32


@dataclass(frozen=True)
class Family:
    name: str
    t5_length: int  # tokens of T5 text the transformer sees
    steps: int  # generation defaults
    guidance: float
    embeds_guidance: bool = True  # the transformer takes a guidance value (dev) or not


DEV = Family("flux-dev", t5_length=512, steps=28, guidance=3.5)
# Schnell is distilled for ~4 steps without guidance; it was trained on 256 T5 tokens (kohya).
SCHNELL = Family("flux-schnell", t5_length=256, steps=4, guidance=0.0, embeds_guidance=False)
DEMO_FAMILY = Family(DEMO, t5_length=DEMO_T5_LENGTH, steps=28, guidance=3.5)


def family_of(spec: str) -> Family:
    """The family of a model spec (the config's `model`: "demo", a path or a repo id)."""
    if spec.strip() == DEMO:
        return DEMO_FAMILY
    return SCHNELL if "schnell" in spec.lower() else DEV


def family_of_folder(path: Path, spec: str) -> Family:
    """The family of the weights in a diffusers folder, from `transformer/config.json`:
    FLUX.1 [dev] embeds guidance, [schnell] does not. Falls back to the name."""
    if spec.strip() == DEMO:
        return DEMO_FAMILY
    try:
        config = json.loads((path / "transformer" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return family_of(spec)
    embeds = config.get("guidance_embeds") if isinstance(config, dict) else None
    if embeds is None:
        return family_of(spec)
    return DEV if embeds else SCHNELL


def generation_defaults(model: str, steps: int, guidance: float) -> tuple[int, float]:
    """The config's steps and guidance, unless they are the dev defaults and the model's
    family wants others (schnell: 4 steps, no guidance)."""
    family = family_of(model)
    if (steps, guidance) == (DEV.steps, DEV.guidance):
        return family.steps, family.guidance
    return steps, guidance
