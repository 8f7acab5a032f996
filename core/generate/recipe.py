"""A generation recipe: everything needed to make an image again, read back from any PNG
lorabooth wrote, and the names its images get.

Pure Python (no torch), so the UI and the CLI can build and read recipes.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import UsageError

RECIPE_KEY = "lorabooth"  # the PNG text chunk that holds the recipe as JSON
MAX_IMAGES = 1000  # the most images one request may make (matrix x scales x count)
MAX_RENDER_STEPS = 200
MAX_SEED = 2**63 - 1
MAX_REFS = 4  # reference images one FLUX.2 [klein] edit may take
# T5 reads 512 tokens (~2,000 characters of English) and CLIP 77; a prompt five times that is
# a paste gone wrong, refused rather than kept whole in every image's recipe.
MAX_PROMPT_CHARS = 10_000
MAX_LORA_SCALE = 4.0  # a LoRA's scale, and each of a sweep's scales, lies within +-this
SCALE_RANGE = f"-{MAX_LORA_SCALE:g} to {MAX_LORA_SCALE:g}"
MAX_STEP_CACHE = 1.0  # above this every step after the first would reuse it: noise
ALTERNATIVES = re.compile(r"\{([^{}]*\|[^{}]*)\}")



def lora_scale_ok(value: float) -> bool:
    return math.isfinite(value) and -MAX_LORA_SCALE <= value <= MAX_LORA_SCALE

class RecipeError(UsageError, ValueError):
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
    refs: tuple[str, ...] = ()  # FLUX.2 [klein] reference images ("this person in this jacket")
    # First-block cache: a denoising step whose first block changed less than this (relative)
    # since the last full step reuses that step's other blocks. 0: every step computed.
    step_cache: float = 0.0
    version: str = ""
    training_step: int | None = None  # set when made between two training steps

    def check(self) -> None:
        problems = []
        for name, value in (("width", self.width), ("height", self.height)):
            if value % 16 or not 64 <= value <= 4096:
                problems.append(f"{name} {value} must be a multiple of 16 from 64 to 4096")
        if not 1 <= self.steps <= MAX_RENDER_STEPS:
            problems.append(f"steps {self.steps} must be from 1 to {MAX_RENDER_STEPS}")
        if not 0 <= self.seed <= MAX_SEED:
            problems.append(f"seed {self.seed} must be from 0 to {MAX_SEED}")
        if not (math.isfinite(self.guidance) and 0 <= self.guidance <= 30):
            problems.append(f"guidance {self.guidance} must be a number from 0 to 30")
        for lora in self.loras:
            if not lora_scale_ok(lora.scale):
                problems.append(f"LoRA {lora.name} scale {lora.scale} must be from {SCALE_RANGE}")
        if self.mask and not self.init_image:
            problems.append("a mask needs an init image to paint into")
        if not (math.isfinite(self.strength) and 0 < self.strength <= 1):
            problems.append(f"strength {self.strength} must be above 0 and at most 1")
        if not (math.isfinite(self.step_cache) and 0 <= self.step_cache <= MAX_STEP_CACHE):
            problems.append(f"step cache {self.step_cache} must be a number from 0 (off) to "
                            f"{MAX_STEP_CACHE:g}")
        if len(self.prompt) > MAX_PROMPT_CHARS:
            problems.append(f"a prompt of {len(self.prompt):,} characters: at most "
                            f"{MAX_PROMPT_CHARS:,} (the text encoder reads the first 512 "
                            "tokens, about 2,000 characters)")
        if len(self.refs) > MAX_REFS:
            problems.append(f"{len(self.refs)} reference images: at most {MAX_REFS}")
        if problems:
            raise RecipeError("; ".join(problems))

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Any) -> Recipe:
        """A recipe from JSON (a PNG's text chunk, a queued job): every field's type is
        checked, so a forged or damaged recipe is a RecipeError, never a crash later."""
        if not isinstance(data, dict):
            raise RecipeError("a recipe must be a JSON object")
        values = {}
        for name, kinds in FIELD_TYPES.items():
            if name not in data or name in ("loras", "refs"):
                continue
            value = data[name]
            if name == "training_step" and value is None:
                values[name] = None
            elif isinstance(value, bool) or not isinstance(value, kinds):
                raise RecipeError(f"recipe {name}: {value!r} is not {_KIND_WORDS[kinds]}")
            else:
                values[name] = float(value) if kinds == (int, float) else value
        values["loras"] = tuple(_lora_from(item) for item in _list(data.get("loras", [])))
        refs = data.get("refs", [])
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise RecipeError(f"recipe refs: {refs!r} is not a list of file paths")
        values["refs"] = tuple(refs)
        recipe = cls(**values)
        recipe.check()
        return recipe


FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "prompt": (str,), "seed": (int,), "width": (int,), "height": (int,), "steps": (int,),
    "guidance": (int, float), "model": (str,), "loras": (list,), "init_image": (str,),
    "strength": (int, float), "mask": (str,), "refs": (list,), "version": (str,),
    "training_step": (int,), "step_cache": (int, float),
}
_KIND_WORDS = {(str,): "text", (int,): "a whole number", (int, float): "a number",
               (list,): "a list"}


def _list(value: Any) -> list:
    if not isinstance(value, list):
        raise RecipeError("recipe loras: not a list")
    return value


def _lora_from(item: Any) -> LoraRef:
    if not isinstance(item, dict) or not isinstance(item.get("name", ""), str) \
            or isinstance(item.get("scale", 1.0), bool) \
            or not isinstance(item.get("scale", 1.0), int | float):
        raise RecipeError(f"recipe loras: {item!r} is not a LoRA (a name and a scale)")
    return LoraRef(item.get("name", ""), float(item.get("scale", 1.0)),
                   str(item.get("path", "")), str(item.get("sha256", "")))


def matrix_size(prompt: str) -> int:
    """How many prompts `expand_matrix` would make, without making them."""
    return math.prod(len(group.split("|")) for group in ALTERNATIVES.findall(prompt))


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
    try:
        data = json.loads(text)
    except ValueError:
        raise RecipeError(f"{png}: its recipe is not valid JSON") from None
    except RecursionError:  # a forged chunk of 100,000 nested brackets
        raise RecipeError(f"{png}: its recipe is nested too deeply to be one") from None
    return Recipe.from_dict(data)
