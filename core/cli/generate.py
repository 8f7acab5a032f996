"""`lorabooth generate` and `lorabooth queue add`: prompts from the command line.

`generate` renders in the foreground, unless an engine already runs for the workspace: then the
request is queued there (its model is warm) and the command waits for the images.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from ..engine import running_pid, start_detached, wait_for_job
from ..errors import EXIT_OK, LoraboothError, UsageError
from ..generate.recipe import (
    MAX_IMAGES,
    MAX_RENDER_STEPS,
    SCALE_RANGE,
    LoraRef,
    Recipe,
    read_recipe,
)
from ..generate.request import (
    Asked,
    Request,
    build_request,
    checkpoint_sweep,
    complete_recipe,
    complete_request,
    parse_lora,
    request_to_params,
    training_underway,
    typed_scale,
)
from ..models.resolve import resolve_model
from ..safetext import plain
from ..store import ACTIVE, DONE, Store
from ..workspace import Workspace, require_workspace
from .args import MAX_SEED, number, whole
from .console import console


def add_generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("prompt", nargs="?", metavar="PROMPT")
    p.add_argument("--from-image", default=None, metavar="PNG",
                   help="make an image again from the recipe stored in it")
    add_request_arguments(p)


def add_queue_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("action", choices=["add", "list", "cancel", "move"])
    p.add_argument("rest", nargs="*", metavar="PROMPT | ID [POS]")
    add_request_arguments(p)


def add_request_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", action="append", default=[], metavar="NAME[:SCALE]",
                   help="a LoRA to stack (workspace, step-N, a file); repeatable")
    p.add_argument("--no-lora", action="store_true", help="the base model alone")
    p.add_argument("--seed", type=whole(0, MAX_SEED), default=None,
                   help="default 0: a prompt makes the same picture until you change something")
    p.add_argument("--count", type=whole(1, MAX_IMAGES), default=1,
                   help="images, with seeds seed, seed+1, ...")
    p.add_argument("--steps", type=whole(1, MAX_RENDER_STEPS), default=None)
    p.add_argument("--width", type=whole(64, 4096), default=None)
    p.add_argument("--height", type=whole(64, 4096), default=None)
    p.add_argument("--guidance", type=number(0, 30), default=None)
    p.add_argument("--step-cache", type=number(0, 1), default=None, metavar="T",
                   help="first-block cache: reuse a step's work when the first block changed "
                        "less than T (0.05-0.12: faster, small changes; 0: every step; "
                        "default generate.step_cache)")
    p.add_argument("--preset", default=None, help="a named template from lorabooth.toml")
    p.add_argument("--scales", default="", metavar="S1,S2,...",
                   help="sweep the first LoRA's scale over these values")
    p.add_argument("--checkpoints", nargs="?", const="", default=None, metavar="RUN",
                   help="compare the checkpoints of a training run (default the newest): one "
                        "image each, same prompt and seed, side by side in a sheet")
    p.add_argument("--init-image", default="", metavar="FILE", help="image-to-image source")
    p.add_argument("--strength", type=number(0.01, 1), default=0.8)
    p.add_argument("--mask", default="", metavar="FILE", help="inpaint where the mask is white")
    p.add_argument("--ref", action="append", default=[], metavar="IMG",
                   help="a reference image to edit with (FLUX.2 [klein]: 'this person in this "
                        "jacket'); repeatable; with --init-image (and --mask) they guide what "
                        "is painted")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _scales(text: str) -> tuple[float, ...]:
    scales = tuple(typed_scale(s) for s in text.split(",") if s.strip())
    if None in scales:
        raise UsageError(f"--scales {text}: numbers from {SCALE_RANGE} separated by commas")
    return scales


def asked_from_args(ws: Workspace, prompt: str, args: argparse.Namespace) -> Asked:
    if args.no_lora:
        loras: tuple[LoraRef, ...] | None = ()
    else:
        loras = tuple(parse_lora(text) for text in args.lora) or None
    sweep = () if args.checkpoints is None else checkpoint_sweep(ws, args.checkpoints or None)
    return Asked(prompt, preset=args.preset, loras=loras, seed=args.seed, count=args.count,
                 sweep=sweep,
                 scales=_scales(args.scales), width=args.width, height=args.height,
                 steps=args.steps, guidance=args.guidance, step_cache=args.step_cache,
                 init_image=_abs(args.init_image),
                 strength=args.strength, mask=_abs(args.mask),
                 refs=tuple(_abs(path) for path in args.ref))


def request_for(ws: Workspace, prompt: str | None, args: argparse.Namespace) -> Request:
    if getattr(args, "from_image", None):
        recipe = read_recipe(Path(args.from_image))
        model = ws.config(check_photos=False).model
        if recipe.model and recipe.model != model:
            console(stderr=True).print(plain(
                f"note: this image was made with model {recipe.model} (the workspace's is "
                f"{model}); re-making it with {recipe.model}", "yellow"))
        return Request(replace(recipe, version=""))
    if not prompt:
        raise UsageError("a prompt is needed (or --from-image PNG)")
    config = ws.config(check_photos=False)
    training = training_underway(Store(ws.db_path).jobs(ACTIVE))
    return build_request(ws, config, asked_from_args(ws, prompt, args),
                         training=training)


def _abs(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else ""


def run_generate(args: argparse.Namespace) -> int:
    ws = require_workspace(args.workspace)
    request = request_for(ws, args.prompt, args)
    if running_pid(ws):
        store = Store(ws.db_path)
        job_id = store.add_job("generate", request_to_params(request))
        # --json keeps stdout for the JSON alone.
        console(stderr=args.json).print(plain(f"queued as job {job_id} on the running engine",
                                              "dim"))
        state = wait_for_job(ws, store, job_id, timeout=24 * 3600)
        job = store.job(job_id)
        if state != DONE:
            raise LoraboothError(f"job {job_id} {state}: {job.error or ''}")
        paths = [Path(p) for p in job.result["images"]]
    else:
        paths = _generate_here(ws, request)
    if args.json:
        print(json.dumps([str(p) for p in paths]))
    else:
        out = console()
        for path in paths:
            out.print(plain(str(path)))
    return EXIT_OK


def _generate_here(ws: Workspace, request: Request) -> list[Path]:
    from ..generate.generator import plan_for, run_request
    from ..models.autocompile import for_generation
    from ..models.owner import ModelOwner

    request = complete_request(ws, request)
    base = request.recipe
    recipes = request.expand()
    source = resolve_model(base.model)
    plan = plan_for(ws, source, recipes)
    err = console(stderr=True)
    if err.is_terminal:
        err.print(plain(f"generation: {plan.reason}", "dim"))
    generator = ModelOwner().generator(source, plan)
    compiled = for_generation(generator.pipe.transformer, ws.config().generate.compile,
                              generator.device, source.spec)
    if err.is_terminal:
        err.print(plain(compiled, "dim"))

    store = Store(ws.db_path)

    def progress(index: int, path: Path, recipe: Recipe) -> None:
        # In the store as the engine's images are: the Gallery shows them, now or later.
        store.add_output(None, path, "image", json.loads(recipe.to_json()))
        if err.is_terminal:
            err.print(plain(f"{index + 1}/{len(recipes)} {path.name}", "dim"))

    return run_request(generator, ws, recipes, None, progress)


def run_queue_add(args: argparse.Namespace) -> int:
    ws = require_workspace(args.workspace)
    if not args.rest:
        raise UsageError("queue add needs a prompt")
    request = request_for(ws, " ".join(args.rest), args)
    # What would only fail later is said now: a LoRA or model weights that are not there.
    resolve_model(complete_recipe(ws, request.recipe).model, build_demo=False)
    job_id = Store(ws.db_path).add_job("generate", request_to_params(request),
                                       total=request.size())
    pid, _ = start_detached(ws)
    if args.json:
        print(json.dumps({"id": job_id, "engine_pid": pid}))
    else:
        console().print(plain(f"queued as job {job_id} (engine pid {pid})"))
    return EXIT_OK
