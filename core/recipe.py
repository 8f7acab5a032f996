"""A generation recipe: everything needed to make an image again, and the prompt tools that
expand one request into many (prompt matrix, seed and LoRA-scale sweeps, presets).

This module is pure Python (no torch), so the UI and the CLI can build and read recipes.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

RECIPE_KEY = "lorabooth"  # the PNG text chunk that holds the recipe as JSON
ALTERNATIVES = re.compile(r"\{([^{}]*\|[^{}]*)\}")


class RecipeError(ValueError):
    """A request that cannot be made: bad size, unknown preset, missing file."""


@dataclass(frozen=True)
class LoraRef:
    name: str  # "workspace", "step-000250", a file name in .lorabooth/loras, or a path
    scale: float = 1.0
    path: str = ""  # resolved on the engine side
    sha256: str = ""


@dataclass(frozen=True)
class Recipe:
    prompt: str
    seed: int = 0
    width: int = 1024
    height: int = 1024
    steps: int = 28
    guidance: float = 3.5
    model: str = ""
    loras: tuple[LoraRef, ...] = ()
    init_image: str = ""
    strength: float = 0.8
    mask: str = ""
    version: str = ""
    training_step: int | None = None  # set when made between two training steps

    def check(self) -> None:
        problems = []
        for name, value in (("width", self.width), ("height", self.height)):
            if value % 16 or not 64 <= value <= 4096:
                problems.append(f"{name} {value} must be a multiple of 16 from 64 to 4096")
        if self.steps < 1:
            problems.append(f"steps {self.steps} must be at least 1")
        if self.mask and not self.init_image:
            problems.append("a mask needs an init image to paint into")
        if not 0 < self.strength <= 1:
            problems.append(f"strength {self.strength} must be above 0 and at most 1")
        if problems:
            raise RecipeError("; ".join(problems))

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["loras"] = tuple(LoraRef(**lora) for lora in data.get("loras", ()))
        return cls(**values)


@dataclass(frozen=True)
class Request:
    """What a person queues: a recipe plus the ways to vary it in one job."""

    recipe: Recipe
    count: int = 1  # seeds seed, seed+1, ...
    scales: tuple[float, ...] = ()  # a sweep of the first LoRA's scale
    params: dict[str, Any] = field(default_factory=dict)

    def expand(self) -> list[Recipe]:
        """Every image the request makes: prompt matrix x scale sweep x seeds."""
        recipes = []
        scales = self.scales or (None,)
        for prompt in expand_matrix(self.recipe.prompt):
            for scale in scales:
                loras = self.recipe.loras
                if scale is not None and loras:
                    loras = (replace(loras[0], scale=scale), *loras[1:])
                for n in range(self.count):
                    recipes.append(replace(self.recipe, prompt=prompt, loras=loras,
                                           seed=self.recipe.seed + n))
        return recipes


def expand_matrix(prompt: str) -> list[str]:
    """`a {red|blue} hat` -> [`a red hat`, `a blue hat`]; several groups multiply."""
    groups = ALTERNATIVES.findall(prompt)
    if not groups:
        return [prompt]
    pieces = ALTERNATIVES.split(prompt)
    texts, options = pieces[0::2], [g.split("|") for g in pieces[1::2]]
    results = []
    for choice in itertools.product(*options):
        out = texts[0]
        for option, text in zip(choice, texts[1:], strict=True):
            out += option.strip() + text
        results.append(" ".join(out.split()))
    return results


def apply_template(prompt: str, trigger: str, presets: dict[str, str],
                   preset: str | None = None) -> str:
    """Fill `{trigger}` (and `[trigger]`), and wrap the prompt in a named preset."""
    if preset:
        if preset not in presets:
            raise RecipeError(f"no preset {preset!r}; presets: {', '.join(sorted(presets))}")
        prompt = presets[preset].replace("{prompt}", prompt)
    return prompt.replace("{trigger}", trigger).replace("[trigger]", trigger)


def model_defaults(model: str, steps: int, guidance: float) -> tuple[int, float]:
    """Flux-schnell is distilled for ~4 steps without guidance; Flux-dev wants ~28 at 3.5.
    The config's values stand unless they are the dev defaults and the model is schnell."""
    if "schnell" in model.lower() and (steps, guidance) == (28, 3.5):
        return 4, 0.0
    return steps, guidance


def recipe_from_settings(settings, model: str, prompt: str, seed: int,
                         loras: tuple[LoraRef, ...], **overrides: Any) -> Recipe:
    """A recipe from the config's [generate] settings (`settings`), the model's defaults, and
    the values a person gave (`overrides`; None means "not given")."""
    steps, guidance = model_defaults(model, settings.steps, settings.guidance)
    given = {k: v for k, v in overrides.items() if v is not None}
    values = {"width": settings.width, "height": settings.height, "steps": steps,
              "guidance": guidance, **given}
    recipe = Recipe(prompt=prompt, seed=seed, model=model, loras=loras, **values)
    recipe.check()
    return recipe


def slug(text: str, limit: int = 40) -> str:
    """A safe file-name piece from any prompt: ASCII letters, digits and hyphens only."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return (words[:limit].rstrip("-")) or "image"


def output_name(recipe: Recipe, job_id: int | None, index: int) -> str:
    job = f"j{job_id}" if job_id is not None else "local"
    return f"{slug(recipe.prompt)}-s{recipe.seed}-{job}-{index:02d}.png"


def read_recipe(png: Path) -> Recipe:
    """The recipe stored in a lorabooth PNG's text chunk."""
    from PIL import Image

    try:
        with Image.open(png) as img:
            text = img.text.get(RECIPE_KEY) if hasattr(img, "text") else None
    except OSError as exc:
        raise RecipeError(f"{png}: cannot read it as an image ({exc})") from None
    if not text:
        raise RecipeError(f"{png} holds no lorabooth recipe")
    return Recipe.from_dict(json.loads(text))


def request_to_params(request: Request) -> dict[str, Any]:
    return {"recipe": json.loads(request.recipe.to_json()), "count": request.count,
            "scales": list(request.scales), **request.params}


def request_from_params(params: dict[str, Any]) -> Request:
    extra = {k: v for k, v in params.items() if k not in ("recipe", "count", "scales")}
    return Request(Recipe.from_dict(params["recipe"]), int(params.get("count", 1)),
                   tuple(float(s) for s in params.get("scales", ())), extra)
