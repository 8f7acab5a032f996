"""`lorabooth generate` and `lorabooth queue add`: prompts from the command line.

`generate` renders in the foreground, unless an engine already runs for the workspace: then the
request is queued there (its model is warm) and the command waits for the images.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from .errors import EXIT_FAILURE, EXIT_OK, UsageError
from .recipe import (
    LoraRef,
    Recipe,
    RecipeError,
    Request,
    apply_template,
    read_recipe,
    recipe_from_settings,
)
from .safetext import plain
from .workspace import Workspace


def add_request_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", action="append", default=[], metavar="NAME[:SCALE]",
                   help="a LoRA to stack (workspace, step-N, a file); repeatable")
    p.add_argument("--no-lora", action="store_true", help="the base model alone")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--count", type=int, default=1, help="images, with seeds seed, seed+1, ...")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--width", type=int, default=None)
    p.add_argument("--height", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--preset", default=None, help="a named template from lorabooth.toml")
    p.add_argument("--scales", default="", metavar="S1,S2,...",
                   help="sweep the first LoRA's scale over these values")
    p.add_argument("--init-image", default="", metavar="FILE", help="image-to-image source")
    p.add_argument("--strength", type=float, default=0.8)
    p.add_argument("--mask", default="", metavar="FILE", help="inpaint where the mask is white")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _lora(text: str) -> LoraRef:
    name, _, scale = text.rpartition(":") if ":" in text else (text, "", "")
    try:
        return LoraRef(name, float(scale) if scale else 1.0)
    except ValueError:
        raise UsageError(f"--lora {text}: the scale after ':' must be a number") from None


def build_request(ws: Workspace, prompt: str | None, args: argparse.Namespace) -> Request:
    config = ws.config(check_photos=False)
    g = config.generate
    if getattr(args, "from_image", None):
        try:
            recipe = read_recipe(Path(args.from_image))
        except RecipeError as exc:
            raise UsageError(str(exc)) from None
        return Request(replace(recipe, version=""))
    if not prompt:
        raise UsageError("a prompt is needed (or --from-image PNG)")
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    try:
        text = apply_template(prompt, config.trigger, g.presets, args.preset)
        scales = tuple(float(s) for s in args.scales.split(",") if s.strip())
    except RecipeError as exc:
        raise UsageError(str(exc)) from None
    except ValueError:
        raise UsageError(f"--scales {args.scales}: numbers separated by commas") from None
    if args.no_lora:
        loras: tuple[LoraRef, ...] = ()
    elif args.lora:
        loras = tuple(_lora(text) for text in args.lora)
    else:
        default = ws.loras / "pytorch_lora_weights.safetensors"
        loras = (LoraRef("workspace", g.lora_scale),) if default.is_file() else ()
    try:
        recipe = recipe_from_settings(g, config.model, text, args.seed, loras,
                                      width=args.width, height=args.height, steps=args.steps,
                                      guidance=args.guidance,
                                      init_image=_abs(args.init_image) or None,
                                      strength=args.strength, mask=_abs(args.mask) or None)
    except RecipeError as exc:
        raise UsageError(str(exc)) from None
    return Request(recipe, args.count, scales)


def _abs(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else ""


def run_generate(root: Path, prompt: str | None, args: argparse.Namespace) -> int:
    from . import engine
    from .enginecli import wait_for_job
    from .recipe import request_to_params
    from .store import Store

    ws = _workspace(root)
    request = build_request(ws, prompt, args)
    out = Console(highlight=False, soft_wrap=True)
    if engine.running_pid(ws):
        store = Store(ws.db_path)
        job_id = store.add_job("generate", request_to_params(request))
        out.print(plain(f"queued as job {job_id} on the running engine"), style="dim")
        state = wait_for_job(store, job_id, timeout=24 * 3600)
        job = store.job(job_id)
        if state != "done":
            out.print(plain(f"job {job_id} {state}: {job.error or ''}", "red"))
            return EXIT_FAILURE
        paths = [Path(p) for p in job.result["images"]]
    else:
        paths = _generate_here(ws, request, out)
    if args.json:
        print(json.dumps([str(p) for p in paths]))
    else:
        for path in paths:
            out.print(plain(str(path)))
    return EXIT_OK


def _generate_here(ws: Workspace, request: Request, out: Console) -> list[Path]:
    from .generate import complete_recipe, open_generator, run_request

    try:
        base = complete_recipe(ws, request.recipe)
    except RecipeError as exc:
        raise UsageError(str(exc)) from None
    recipes = replace(request, recipe=base).expand()
    generator = open_generator(base.model)

    def progress(index: int, path: Path, recipe: Recipe) -> None:
        if sys.stderr.isatty():
            Console(stderr=True).print(plain(f"{index + 1}/{len(recipes)} {path.name}", "dim"))

    return run_request(generator, ws, recipes, None, progress)


def run_queue_add(root: Path, prompt: str, args: argparse.Namespace) -> int:
    from . import engine
    from .recipe import request_to_params
    from .store import Store

    ws = _workspace(root)
    request = build_request(ws, prompt, args)
    job_id = Store(ws.db_path).add_job("generate", request_to_params(request),
                                       total=len(request.expand()))
    pid, _ = engine.start_detached(ws)
    if args.json:
        print(json.dumps({"id": job_id, "engine_pid": pid}))
    else:
        Console(highlight=False).print(plain(f"queued as job {job_id} (engine pid {pid})"))
    return EXIT_OK


def _workspace(root: Path) -> Workspace:
    ws = Workspace.at(root)
    if not ws.exists():
        raise UsageError(f"{ws.root} is not a lorabooth workspace (no lorabooth.toml)")
    return ws
