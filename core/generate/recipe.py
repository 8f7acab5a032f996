"""A generation recipe: everything needed to make an image again, read back from any PNG
lorabooth wrote, and the names its images get.

Pure Python (no torch), so the UI and the CLI can build and read recipes.
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

RECIPE_KEY = "lorabooth"  # the PNG text chunk that holds the recipe as JSON
ALTERNATIVES = re.compile(r"\{([^{}]*\|[^{}]*)\}")


class RecipeError(UsageError):
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
