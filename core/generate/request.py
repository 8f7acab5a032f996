"""A request: what a person queues (a recipe plus the ways to vary it in one job), and the ONE
place a request is built from typed words, for the command line and the Queue pane alike.

Settled rules (both front ends follow them because both call `build_request`):
- a seed not given is 0: the same prompt makes the same picture, so what changed an image is
  what you changed; `--count`, the Queue's repeat key and variations draw new seeds;
- the workspace LoRA is attached, at `generate.lora_scale` unless a scale is given, when its
  file exists or a training run is queued or under way (a prompt queued during training renders
  with the LoRA as it is at that step); `--no-lora` or explicit LoRAs replace it.

Pure Python (no torch).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import version
from ..config import Config, GenerateSettings
from ..dataset.captions import substitute_trigger
from ..models.registry import generation_defaults, model_of
from ..store import ACTIVE, Job
from ..workspace import LORA_FILE, Workspace
from .recipe import (
    MAX_IMAGES,
    SCALE_RANGE,
    LoraRef,
    Recipe,
    RecipeError,
    expand_matrix,
    lora_scale_ok,
    matrix_size,
)


@dataclass(frozen=True)
class Request:
    """What a person queues: a recipe plus the ways to vary it in one job."""

    recipe: Recipe
    count: int = 1  # seeds seed, seed+1, ...
    scales: tuple[float, ...] = ()  # a sweep of the first LoRA's scale
    # A sweep of LoRAs (a run's checkpoints): each image stacks one of them first, before the
    # recipe's own LoRAs, so the same prompt and seed compare them side by side.
    sweep: tuple[LoraRef, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)

    def size(self) -> int:
        return (matrix_size(self.recipe.prompt) * max(1, len(self.sweep))
                * max(1, len(self.scales)) * self.count)

    def check_size(self) -> None:
        if self.size() > MAX_IMAGES:
            sweep = f" x LoRAs {len(self.sweep)}" if self.sweep else ""
            raise RecipeError(
                f"this request would make {self.size():,} images (prompt matrix "
                f"{matrix_size(self.recipe.prompt):,}{sweep} x scales "
                f"{max(1, len(self.scales))} x count {self.count}); one request makes at "
                f"most {MAX_IMAGES}")

    def expand(self) -> list[Recipe]:
        """Every image the request makes: prompt matrix x LoRA sweep x scale sweep x seeds."""
        self.check_size()
        recipes = []
        scales = self.scales or (None,)
        for prompt in expand_matrix(self.recipe.prompt):
            for swept in self.sweep or (None,):
                stack = self.recipe.loras if swept is None else (swept, *self.recipe.loras)
                for scale in scales:
                    loras = stack
                    if scale is not None and loras:
                        loras = (replace(loras[0], scale=scale), *loras[1:])
                    for n in range(self.count):
                        recipes.append(replace(self.recipe, prompt=prompt, loras=loras,
                                               seed=self.recipe.seed + n))
        return recipes


def apply_template(prompt: str, trigger: str, presets: dict[str, str],
                   preset: str | None = None) -> str:
    """Fill `{trigger}` (and `[trigger]`), and wrap the prompt in a named preset."""
    if preset:
        if preset not in presets:
            raise RecipeError(f"no preset {preset!r}; presets: {', '.join(sorted(presets))}")
        prompt = presets[preset].replace("{prompt}", prompt)
    return substitute_trigger(prompt, trigger)


def recipe_from_settings(settings: GenerateSettings, model: str, prompt: str, seed: int,
                         loras: tuple[LoraRef, ...], **overrides: Any) -> Recipe:
    """A recipe from the config's [generate] settings (`settings`), the model's defaults, and
    the values a person gave (`overrides`; None means "not given")."""
    steps, guidance = generation_defaults(model, settings.steps, settings.guidance)
    given = {k: v for k, v in overrides.items() if v is not None}
    values = {"width": settings.width, "height": settings.height, "steps": steps,
              "guidance": guidance, "step_cache": settings.step_cache, **given}
    recipe = Recipe(prompt=prompt, seed=seed, model=model, loras=loras, **values)
    recipe.check()
    return recipe


def request_to_params(request: Request) -> dict[str, Any]:
    sweep = {"sweep": [[ref.name, ref.scale] for ref in request.sweep]} if request.sweep else {}
    return {"recipe": json.loads(request.recipe.to_json()), "count": request.count,
            "scales": list(request.scales), **sweep, **request.params}


def _sweep_from_params(sweep: Any) -> tuple[LoraRef, ...]:
    """A queued job's LoRA sweep, [[name, scale], ...], checked (a job row may come from
    anywhere); paths and hashes are found again when the job runs."""
    if not isinstance(sweep, list) or len(sweep) > MAX_IMAGES or not all(
            isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
            and 0 < len(item[0]) <= 4096 and isinstance(item[1], int | float)
            and not isinstance(item[1], bool) and lora_scale_ok(item[1]) for item in sweep):
        raise RecipeError(f"sweep {str(sweep)[:200]} must be a list of [LoRA name, scale] "
                          f"pairs, each scale from {SCALE_RANGE}")
    return tuple(LoraRef(name, float(scale)) for name, scale in sweep)


def request_from_params(params: Any) -> Request:
    """A queued job's request, every value checked (a job row may come from anywhere)."""
    if not isinstance(params, dict) or "recipe" not in params:
        raise RecipeError("a generate job needs a recipe")
    count, scales = params.get("count", 1), params.get("scales", [])
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_IMAGES:
        raise RecipeError(f"count {count!r} must be a whole number from 1 to {MAX_IMAGES}")
    if not isinstance(scales, list) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and lora_scale_ok(v)
            for v in scales):
        raise RecipeError(f"scales {scales!r} must be numbers from {SCALE_RANGE}")
    extra = {k: v for k, v in params.items()
             if k not in ("recipe", "count", "scales", "sweep")}
    request = Request(Recipe.from_dict(params["recipe"]), count,
                      tuple(float(s) for s in scales), _sweep_from_params(params.get("sweep", [])),
                      extra)
    request.check_size()
    return request


@dataclass(frozen=True)
class Asked:
    """What a person asked for, as typed; None means "not given"."""

    prompt: str
    preset: str | None = None
    loras: tuple[LoraRef, ...] | None = None  # None: the workspace LoRA, when there is one
    lora_scale: float | None = None  # the workspace LoRA's scale (default generate.lora_scale)
    seed: int | None = None
    count: int = 1
    scales: tuple[float, ...] = ()
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    step_cache: float | None = None
    init_image: str = ""
    strength: float = 0.8
    mask: str = ""
    refs: tuple[str, ...] = ()  # reference images (FLUX.2 [klein] editing)
    sweep: tuple[LoraRef, ...] = ()  # LoRAs compared side by side (checkpoint_sweep)


def split_preset(text: str, presets: dict[str, str]) -> tuple[str | None, str]:
    """`portrait: smiling` -> ("portrait", "smiling") when `portrait` is a preset."""
    name, sep, rest = text.partition(":")
    if sep and name.strip() in presets:
        return name.strip(), rest.strip()
    return None, text


def typed_path(ws: Workspace, config: Config, name: str) -> str:
    """An image named in the Queue pane: a relative name is looked for in the workspace, then
    among the photos (`01_studio.jpg`)."""
    path = Path(name).expanduser()
    if not path.is_absolute():
        in_photos = config.photos_dir(ws.root) / path
        path = ws.root / path if (ws.root / path).exists() or not in_photos.exists() \
            else in_photos
    return str(path.resolve())


def typed_refs(ws: Workspace, config: Config, text: str) -> tuple[str, ...]:
    """Reference images as typed in the Queue pane: paths separated by commas."""
    return tuple(typed_path(ws, config, name) for name in (p.strip() for p in text.split(","))
                 if name)


LORA_SEPARATORS = re.compile(r"[\s,]+")  # between the names in the LoRAs box


def typed_scale(text: str) -> float | None:
    """A LoRA scale as typed, or None when it is not a number lora_scale_ok takes."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if lora_scale_ok(value) else None


def parse_lora(text: str, what: str = "--lora") -> LoraRef:
    """`NAME[:SCALE]`, as `--lora` and the Queue pane's LoRAs box take it."""
    name, _, scale = text.rpartition(":") if ":" in text else (text, "", "")
    value = typed_scale(scale) if scale else 1.0
    if value is None:
        raise RecipeError(f"{what} {text}: the scale after ':' must be a number from "
                          f"{SCALE_RANGE}")
    return LoraRef(name, value)


def typed_loras(text: str) -> tuple[tuple[LoraRef, ...] | None, float | None]:
    """The Queue pane's LoRAs box, as `Asked`'s (loras, lora_scale): empty, the workspace LoRA
    at generate.lora_scale; a number, the workspace LoRA at that scale; `none`, no LoRA; else
    LoRAs as `NAME[:SCALE]` separated by spaces or commas (`step-750:0.8 style.safetensors:0.5`,
    `workspace` the workspace's own), as `--lora` names them."""
    text = text.strip()
    if not text:
        return None, None
    if text.lower() == "none":
        return (), None
    if re.fullmatch(r"[-+.\deE]+|nan|inf|-inf", text, re.IGNORECASE):
        if (scale := typed_scale(text)) is None:
            hint = f" (the checkpoint of step {text} is step-{text})" if text.isdigit() else ""
            raise RecipeError(f"LoRA scale {text}: a number from {SCALE_RANGE}{hint}")
        return None, scale
    names = [part for part in LORA_SEPARATORS.split(text) if part]
    return tuple(parse_lora(part, "LoRA") for part in names), None


def loras_as_typed(loras: Iterable[tuple[str, float]]) -> str | None:
    """LoRAs as the LoRAs box takes them, `typed_loras` read backwards ("0.8" for the
    workspace's own alone, "none", "step-750:0.8 style.safetensors:0.5"); None for a name the
    box would split."""
    loras = list(loras)
    if any(not name or LORA_SEPARATORS.search(name) for name, _ in loras):
        return None
    if not loras:
        return "none"
    if len(loras) == 1 and loras[0][0] == "workspace":
        return f"{loras[0][1]:g}"
    return " ".join(f"{name}:{scale:g}" for name, scale in loras)


def check_typed_loras(ws: Workspace, loras: Iterable[LoraRef], training: bool) -> None:
    """Each LoRA named is found and is a LoRA file (its header read, no hash), so a name typed
    wrong is said as the prompt is queued; the workspace's own is taken on trust while a
    training makes it, as build_request takes it."""
    for lora in loras:
        if not (lora.name in ("", "workspace") and training):
            lora_file(ws, lora)


DEFAULT_STRENGTH = Asked.strength


def typed_start(ws: Workspace, config: Config, text: str) -> tuple[str, float]:
    """The start image as typed in the Queue pane, and its strength: `photo.jpg` (at the usual
    strength) or `photo.jpg 0.6`; a file whose whole name ends in a number wins over that
    reading. ("", default) when the box is empty."""
    text = text.strip()
    if not text:
        return "", DEFAULT_STRENGTH
    name, _, last = text.rpartition(" ")
    whole = typed_path(ws, config, text)
    if name and not Path(whole).exists():
        try:
            strength = float(last)
        except ValueError:
            pass
        else:
            return typed_path(ws, config, name.strip()), strength
    return whole, DEFAULT_STRENGTH


# diffusers' first-block cache fails on FLUX.2's blocks (a double block's pair of outputs taken
# away from a single block's one tensor), and klein renders in 4 steps: nothing to skip.
STEP_CACHE_FLUX2 = ("the step cache works on FLUX.1 models only; FLUX.2 [klein] renders every "
                    "step (in 4 distilled steps it would have little to skip)")


def training_underway(jobs: Iterable[Job]) -> bool:
    """`build_request`'s `training`: a training run is queued or under way."""
    return any(j.kind == "train" and j.state in ACTIVE for j in jobs)


def build_request(ws: Workspace, config: Config, asked: Asked, *, training: bool) -> Request:
    """The request for what was asked, by the rules in this module's docstring. `training`:
    a training run is queued or under way in this workspace."""
    g = config.generate
    if not asked.prompt.strip():
        raise RecipeError("a prompt is needed")
    if asked.count < 1:
        raise RecipeError(f"count {asked.count} must be at least 1")
    text = apply_template(asked.prompt, config.trigger, g.presets, asked.preset)
    if asked.loras is not None:
        loras = asked.loras
    elif asked.sweep:
        loras = ()  # the checkpoints compared stand for the workspace's LoRA
    elif ws.lora_path.is_file() or training:
        scale = g.lora_scale if asked.lora_scale is None else asked.lora_scale
        loras = (LoraRef("workspace", scale),)
    else:
        loras = ()
    image_model = model_of(config.image_model)
    if asked.refs and image_model.family != "flux2":
        raise RecipeError(f"reference images need FLUX.2 [klein]; this workspace makes images "
                          f"with {image_model.title}")
    step_cache = asked.step_cache
    if image_model.family == "flux2":
        if step_cache:
            raise RecipeError(STEP_CACHE_FLUX2)
        step_cache = 0.0  # generate.step_cache is FLUX.1's: klein renders every step
    named = [("reference image", ref) for ref in asked.refs]
    named += [(what, path) for what, path in (("start image", asked.init_image),
                                              ("mask", asked.mask)) if path]
    for what, path in named:
        if not Path(path).exists():
            raise RecipeError(f"{what} {path}: no such file")
        if not Path(path).is_file():  # a FIFO would hang whoever opens it
            raise RecipeError(f"{what} {path}: not a regular file (a FIFO, a device "
                              "or a folder)")
    recipe = recipe_from_settings(
        g, config.image_model, text, asked.seed if asked.seed is not None else 0, loras,
        width=asked.width, height=asked.height, steps=asked.steps, guidance=asked.guidance,
        step_cache=step_cache, init_image=asked.init_image or None,
        strength=asked.strength, mask=asked.mask or None,
        refs=asked.refs or None)
    for ref in asked.sweep:
        lora_file(ws, ref)
    request = Request(recipe, asked.count, asked.scales, asked.sweep)
    request.check_size()
    return request


SWEEP_WORD = "checkpoints"  # in the LoRAs box: `checkpoints`, `run-002/checkpoints:0.8`
SWEEP_TOKEN = re.compile(rf"^(?:(run-\d{{3,}})/)?{SWEEP_WORD}(?::(.*))?$", re.IGNORECASE)


def checkpoint_sweep(ws: Workspace, run: str | None = None,
                     scale: float = 1.0) -> tuple[LoraRef, ...]:
    """Every checkpoint of `run` (default the newest run that has any), oldest first, as LoRAs
    to compare (`--checkpoints`, or `checkpoints` in the Queue pane's LoRAs box): faces peak
    early and then overfit, and the run's own samples show only its sample prompts."""
    from ..train.checkpoint import run_checkpoints

    found = run_checkpoints(ws, run)
    if not found:
        where = f" in {run}" if run else ""
        raise RecipeError(f"no checkpoints{where} to compare yet: train first (a checkpoint "
                          f"is saved every train.checkpoint_every steps)")
    newest = found[-1].run
    return tuple(LoraRef(c.label, scale) for c in found if c.run == newest)


def typed_sweep(ws: Workspace, text: str) -> tuple[str, tuple[LoraRef, ...]]:
    """The LoRAs box with its sweep taken out: `checkpoints` (or `run-002/checkpoints`, with
    `:SCALE`) compares every checkpoint of the run; the rest of the box stacks as typed."""
    rest, sweep = [], ()
    for part in (p for p in LORA_SEPARATORS.split(text) if p):
        match = SWEEP_TOKEN.match(part)
        if match is None:
            rest.append(part)
            continue
        scale = typed_scale(match.group(2)) if match.group(2) else 1.0
        if scale is None:
            raise RecipeError(f"LoRA {part}: the scale after ':' must be a number from "
                              f"{SCALE_RANGE}")
        run = match.group(1).lower() if match.group(1) else None
        sweep = checkpoint_sweep(ws, run, scale)
    return " ".join(rest), sweep


CHECKPOINT_NAME = re.compile(r"^(?:(run-\d{3,})/)?(?:step-)?(\d+)$")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


HEADER_LIMIT = 100 * 2**20  # safetensors' own limit on its JSON header


def tensor_names(path: Path) -> list[str]:
    """The tensors a safetensors file holds, read from its header alone (8 bytes of length,
    then JSON), so a queued prompt is refused at once rather than failing when the engine
    reaches it. ValueError says what is wrong with the file."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            total = path.stat().st_size
            if total < 8 or not 2 <= size <= min(HEADER_LIMIT, total - 8):
                raise ValueError("not a safetensors file (no header where one begins)")
            header = json.loads(handle.read(size))
    except OSError as exc:
        raise ValueError(f"cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError("not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (its header is not a table of tensors)")
    body = total - 8 - size
    names = [k for k in header if k != "__metadata__"]
    for name in names:
        entry = header[name]
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and 0 <= o <= body for o in offsets)):
            raise ValueError(f"not a safetensors file (tensor {name[:80]!r} lies outside "
                             "the file)")
    return names


def lora_problem(path: Path) -> str | None:
    """Why `path` is not a LoRA file, or None: a safetensors file holding LoRA weights
    (diffusers' and peft's lora_A/lora_B, kohya's lora_down/lora_up)."""
    try:
        names = tensor_names(path)
    except ValueError as exc:
        return str(exc)
    if not any("lora" in name.lower() for name in names):
        return (f"not a LoRA (none of its {len(names)} tensors is a LoRA weight, "
                "lora_A/lora_B or lora_down/lora_up)")
    return None


def resolve_lora(ws: Workspace, ref: LoraRef) -> LoraRef:
    """The LoRA a name means, with its file's path and hash."""
    path = lora_file(ws, ref)
    return LoraRef(ref.name or "workspace", ref.scale, str(path.resolve()), file_sha256(path))


def lora_file(ws: Workspace, ref: LoraRef) -> Path:
    """The file a LoRA name means: the workspace's own (`workspace`), a checkpoint (`step-250`,
    `250` or `run-002/step-000250`), a file in .lorabooth/loras, or a path; checked from its
    header alone (no hash: a UI asks this as a prompt is queued)."""
    from ..train.checkpoint import find_checkpoint

    name = ref.name
    if name in ("", "workspace"):
        path = ws.lora_path
    elif match := CHECKPOINT_NAME.match(name):
        path = find_checkpoint(ws, int(match.group(2)), match.group(1)).path / LORA_FILE
    elif name.startswith("step-"):
        raise RecipeError(f"--lora {name}: a checkpoint is named step-N (N a number) or "
                          "run-NNN/step-N")
    elif (ws.loras / name).is_file():
        path = ws.loras / name
    else:
        path = Path(name).expanduser()
    if not path.is_file():
        hint = " (train first, or name another LoRA)" if name in ("", "workspace") else ""
        raise RecipeError(f"LoRA {name or 'workspace'} not found: {path}{hint}")
    if problem := lora_problem(path):
        where = "" if str(path) == name else f" ({path})"
        raise RecipeError(f"LoRA {name or 'workspace'}{where}: {problem}")
    return path


def complete_request(ws: Workspace, request: Request) -> Request:
    """The request with its recipe completed and its swept LoRAs' files found and hashed."""
    return replace(request, recipe=complete_recipe(ws, request.recipe),
                   sweep=tuple(resolve_lora(ws, ref) for ref in request.sweep))


def complete_recipe(ws: Workspace, recipe: Recipe) -> Recipe:
    """Fill in what the workspace knows: the model and the LoRA files with their hashes."""
    config = ws.config(check_photos=False)
    loras = tuple(resolve_lora(ws, lora) for lora in recipe.loras)
    return replace(recipe, model=recipe.model or config.image_model, loras=loras,
                   version=version())


VARIATIONS = 4


def remake_request(ws: Workspace, config: Config, made: dict[str, Any], *, variations: bool,
                   training: bool) -> Request:
    """The request that makes an output again from what it recorded: a generated image's full
    recipe (the same seed gives the same image with the same LoRA), or a training sample's
    prompt and seed (with the workspace LoRA as it is now). `variations`: the same recipe with
    VARIATIONS new seeds."""
    if "model" in made:
        recipe = Recipe.from_dict(made)
    elif isinstance(made.get("prompt"), str):
        seed = made.get("seed")
        recipe = build_request(ws, config, Asked(made["prompt"], seed=seed if isinstance(
            seed, int) and not isinstance(seed, bool) else None), training=training).recipe
    else:
        raise RecipeError("this image recorded no prompt to make it again from")
    if not variations:
        return Request(recipe)
    request = Request(replace(recipe, seed=recipe.seed + 1), VARIATIONS)
    request.check_size()
    return request
