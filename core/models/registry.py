"""The model registry: every base model lorabooth knows, by short name, with what differs
between them. Training, generation, caching, memory planning and the LoRA writer ask here
("which kind of Flux is this?"), so adding a model is one entry here (and its shipped configs
under `configs/`) plus its tests.

A model named by a local folder or an unknown repo id is recognised from its own configs
(`model_index.json`, `transformer/config.json`), so a renamed folder is still what it is.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from ..errors import EXIT_USAGE, LoraboothError
from ..fsutil import read_json

DEMO = "demo"
DEMO_KLEIN = "demo-klein"
DEMOS = (DEMO, DEMO_KLEIN)
# The demo's text lengths: short, so a CPU step is cheap; the real models use 77 and 512.
DEMO_CLIP_LENGTH = 77
DEMO_T5_LENGTH = 32


@dataclass(frozen=True)
class BaseModel:
    name: str  # the short name a config may use: flux-dev, klein-4b, ...
    title: str  # as people write it: FLUX.1 [dev]
    family: str  # flux1 | flux2: the architecture, text encoders, latents and LoRA keys
    repo: str | None  # the Hugging Face repo id; None for the built-in demo
    configs: str | None  # the shipped config folder under configs/ (weights not needed)
    pipeline: str  # the diffusers pipeline class
    text_length: int  # tokens of the (large) text encoder the transformer sees
    steps: int  # generation defaults
    guidance: float
    guidance_mode: str  # embedded (a value the transformer takes) | cfg (true CFG) | none
    distilled: bool  # few-step distilled: generate with it, do not train on it
    trainable: bool  # lorabooth trains LoRAs on it today
    license: str
    aliases: tuple[str, ...] = ()
    note: str = ""

    @property
    def embeds_guidance(self) -> bool:
        return self.guidance_mode == "embedded"


FLUX1 = dict(family="flux1", pipeline="FluxPipeline")
FLUX2_KLEIN = dict(family="flux2", pipeline="Flux2KleinPipeline", text_length=512)

MODELS: tuple[BaseModel, ...] = (
    BaseModel("flux-dev", "FLUX.1 [dev]", repo="black-forest-labs/FLUX.1-dev",
              configs="flux1-dev", text_length=512, steps=28, guidance=3.5,
              guidance_mode="embedded", distilled=False, trainable=True,
              license="FLUX.1 [dev] non-commercial", aliases=("flux1-dev", "dev"), **FLUX1),
    # Distilled for ~4 steps without guidance; it was trained on 256 T5 tokens (kohya).
    BaseModel("flux-schnell", "FLUX.1 [schnell]", repo="black-forest-labs/FLUX.1-schnell",
              configs="flux1-schnell", text_length=256, steps=4, guidance=0.0,
              guidance_mode="none", distilled=True, trainable=True, license="Apache-2.0",
              aliases=("flux1-schnell", "schnell"), **FLUX1),
    # FLUX.1 [dev]'s architecture and configs, tuned by Krea for photographic looks; Krea's
    # own examples render it at guidance 4.5.
    BaseModel("flux-krea", "FLUX.1 Krea [dev]", repo="black-forest-labs/FLUX.1-Krea-dev",
              configs="flux1-dev", text_length=512, steps=28, guidance=4.5,
              guidance_mode="embedded", distilled=False, trainable=True,
              license="FLUX.1 [dev] non-commercial", aliases=("flux-krea-dev", "krea"),
              **FLUX1),
    # klein: the base checkpoints are for training (50 steps, true CFG); the distilled ones
    # render in 4 steps without guidance, and take a LoRA trained on base.
    BaseModel("klein-4b", "FLUX.2 [klein] 4B", repo="black-forest-labs/FLUX.2-klein-4B",
              configs="flux2-klein-4b", steps=4, guidance=1.0, guidance_mode="none",
              distilled=True, trainable=False, license="Apache-2.0",
              aliases=("flux2-klein-4b", "klein"), **FLUX2_KLEIN),
    BaseModel("klein-4b-base", "FLUX.2 [klein] 4B base",
              repo="black-forest-labs/FLUX.2-klein-base-4B", configs="flux2-klein-4b",
              steps=50, guidance=4.0, guidance_mode="cfg", distilled=False, trainable=True,
              license="Apache-2.0", aliases=("flux2-klein-base-4b",), **FLUX2_KLEIN),
    BaseModel("klein-9b", "FLUX.2 [klein] 9B", repo="black-forest-labs/FLUX.2-klein-9B",
              configs="flux2-klein-9b", steps=4, guidance=1.0, guidance_mode="none",
              distilled=True, trainable=False, license="FLUX non-commercial",
              aliases=("flux2-klein-9b",), **FLUX2_KLEIN),
    BaseModel("klein-9b-base", "FLUX.2 [klein] 9B base",
              repo="black-forest-labs/FLUX.2-klein-base-9B", configs="flux2-klein-9b",
              steps=50, guidance=4.0, guidance_mode="cfg", distilled=False, trainable=True,
              license="FLUX non-commercial", aliases=("flux2-klein-base-9b",), **FLUX2_KLEIN),
    BaseModel(DEMO, "tiny FLUX.1 demo", repo=None, configs=None,
              text_length=DEMO_T5_LENGTH, steps=28, guidance=3.5, guidance_mode="embedded",
              distilled=False, trainable=True, license="lorabooth's", **FLUX1),
    BaseModel(DEMO_KLEIN, "tiny FLUX.2 [klein] demo", repo=None, configs=None, steps=28,
              guidance=4.0, guidance_mode="cfg", distilled=False, trainable=True,
              license="lorabooth's", family="flux2", pipeline="Flux2KleinPipeline",
              text_length=DEMO_T5_LENGTH),
)
_BY_NAME = {key.lower(): m for m in MODELS
            for key in (m.name, *m.aliases, *([m.repo] if m.repo else []))}


def known(spec: str) -> BaseModel | None:
    """The entry for a short name, an alias or a repo id (any case), else None."""
    return _BY_NAME.get(spec.strip().lower())


def names() -> list[str]:
    return [m.name for m in MODELS]


def suggest(spec: str) -> str | None:
    """The closest known name, for "did you mean"."""
    close = difflib.get_close_matches(spec.strip().lower(), list(_BY_NAME), n=1, cutoff=0.6)
    return _BY_NAME[close[0]].name if close else None


def unknown(spec: str) -> str:
    """What to say of a name the registry does not know: the closest one, and what else a
    model may be."""
    guess = suggest(spec)
    return (f"unknown model {spec!r}" + (f": did you mean {guess!r}?" if guess else "")
            + f" Known: {', '.join(names())}; or a diffusers folder, or a Hugging Face repo id "
            "(org/name) already downloaded.")


def looks_like_a_name(spec: str) -> bool:
    """A bare word (no folder, no org/name): it must be a registry name."""
    spec = spec.strip()
    return "/" not in spec and "\\" not in spec and not spec.startswith((".", "~"))


def model_of(spec: str) -> BaseModel:
    """The entry for a config's `model`: by name, else FLUX.1 [dev] or [schnell] by its
    wording (an unknown repo id or folder of FLUX.1 weights)."""
    entry = known(spec)
    if entry is not None:
        return entry
    lowered = spec.lower()
    if "klein" in lowered:
        return _BY_NAME["klein-9b" if "9b" in lowered else "klein-4b"]
    return _BY_NAME["flux-schnell" if "schnell" in lowered else "flux-dev"]


def model_of_folder(path: Path, spec: str) -> BaseModel:
    """The entry for the weights in a diffusers folder, from its own configs: the pipeline
    class tells FLUX.2 from FLUX.1, and FLUX.1 [dev] embeds guidance where [schnell] does
    not. Falls back to the name."""
    named = model_of(spec)
    if spec.strip() in DEMOS:
        return named
    index = _json(path / "model_index.json")
    if str(index.get("_class_name", "")).startswith("Flux2"):
        if named.family == "flux2":
            return named
        distilled = bool(index.get("is_distilled", True))
        return _BY_NAME["klein-4b" if distilled else "klein-4b-base"]
    embeds = _json(path / "transformer" / "config.json").get("guidance_embeds")
    if embeds is None or named.family != "flux1":
        return named
    if embeds == named.embeds_guidance:
        return named  # krea stays krea: same architecture as dev
    return _BY_NAME["flux-dev" if embeds else "flux-schnell"]


class ModelNotSupported(LoraboothError):
    """A known model lorabooth cannot train or run yet."""

    exit_code = EXIT_USAGE


def require_supported(model: BaseModel) -> None:
    """Refuse, in words, a model whose training and generation paths do not exist yet (before
    any weights are read)."""
    if model.family not in ("flux1", "flux2"):
        raise ModelNotSupported(f"{model.title} ({model.name}): {model.note}")


def require_trainable(model: BaseModel, text_encoder_lora: bool = False) -> None:
    """Refuse, before any weights are read, a run that would train the wrong thing."""
    if not model.trainable:
        base = next((m for m in MODELS if m.family == model.family and m.trainable
                     and m.configs == model.configs and m.name != model.name), None)
        hint = (f': train on {base.name} ("{base.title}") and generate with {model.name}, '
                "which takes a LoRA trained on its base" if base else "")
        raise ModelNotSupported(f"{model.title} ({model.name}) is step-distilled: a LoRA "
                                f"trained on it undoes the distillation{hint}")
    if text_encoder_lora and model.family != "flux1":
        raise ModelNotSupported(f"train.text_encoder_lora trains FLUX.1's CLIP; {model.title} "
                                "has no CLIP: set it to false")


def _json(path: Path) -> dict:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def generation_defaults(model: str, steps: int, guidance: float) -> tuple[int, float]:
    """The config's steps and guidance, unless they are the dev defaults and the model wants
    others (schnell: 4 steps, no guidance; Krea: guidance 4.5)."""
    entry = model_of(model)
    dev = _BY_NAME["flux-dev"]
    if (steps, guidance) == (dev.steps, dev.guidance):
        return entry.steps, entry.guidance
    return steps, guidance
