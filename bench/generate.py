"""Generation speed: lorabooth's queue path against plain FluxPipeline calls on the same model.

For the demo model and a mid-size Flux transformer (hidden 256), in one run:
- `bare`: `pipe(prompt, ...)` on a pipeline loaded once with the same LoRA, images per second;
- `lorabooth`: the engine's path for a queued job (recipe check, LoRA selection, render, PNG
  with recipe and sidecar, store rows), images per second;
- switching the LoRA's scale between images (set_adapters) against loading the LoRA file;
- lorabooth's path with the repeated blocks compiled against eager, and the compile's cost;
- (demo) the first-block cache (`generate.step_cache` 0.1) at 28 steps against every step
  computed: speed, the share of steps computed in full, and the pictures' PSNR against.

    python -m bench.generate [--images 12] [--size 256] [--steps 8] [--no-compile]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench._common import FullSteps, report
from bench.train import mid_size_model, workspace
from lorabooth.core.generate.generator import run_request
from lorabooth.core.generate.recipe import LoraRef, Recipe
from lorabooth.core.generate.request import complete_recipe
from lorabooth.core.models.demo import ensure_demo_model
from lorabooth.core.models.load import load_pipeline
from lorabooth.core.models.owner import ModelOwner
from lorabooth.core.models.resolve import ModelSource
from lorabooth.core.store import Store
from lorabooth.core.train.trainer import Trainer
from lorabooth.core.workspace import Workspace


def base_recipe(ws: Workspace, args) -> Recipe:
    return complete_recipe(ws, Recipe("photo of zorb", width=args.size, height=args.size,
                                      steps=args.steps, loras=(LoraRef("workspace", 1.0),)))


def rates(ws: Workspace, source: ModelSource, args) -> dict[str, float]:
    """Both paths on their own warm pipeline (the same model and LoRA), measured in
    alternating rounds so that drift in the machine's speed hits both alike."""
    lora = ws.lora_path
    bare = load_pipeline(source)
    bare.load_lora_weights(lora, adapter_name="bench")
    store = Store(ws.db_path)
    generator = ModelOwner().generator(source)
    base = base_recipe(ws, args)
    load_start = time.perf_counter()
    generator.use_loras(base.loras)
    load = time.perf_counter() - load_start
    job = store.add_job("generate", {})

    def on_image(index: int, path: Path, recipe: Recipe) -> None:
        store.add_output(job, path, "image", {"seed": recipe.seed})
        store.update_job(job, step=index + 1)

    def bare_round() -> None:
        for i in range(args.images):
            bare(prompt=base.prompt, width=args.size, height=args.size,
                 num_inference_steps=args.steps, guidance_scale=base.guidance,
                 generator=torch.Generator().manual_seed(i),
                 max_sequence_length=source.max_sequence_length)

    def lorabooth_round() -> None:
        run_request(generator, ws, [replace(base, seed=i) for i in range(args.images)], job,
                    on_image)

    best = {"bare": float("inf"), "lorabooth": float("inf")}
    for _ in range(args.rounds + 1):  # the first round of each warms up
        for name, fn in (("bare", bare_round), ("lorabooth", lorabooth_round)):
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    switch_start = time.perf_counter()
    for scale in (0.2, 0.4, 0.6, 0.8, 1.0):
        generator.use_loras((replace(base.loras[0], scale=scale),))
    return {"bare": args.images / best["bare"], "lorabooth": args.images / best["lorabooth"],
            "load": load, "switch": (time.perf_counter() - switch_start) / 5}


def compile_rows(name: str, ws: Workspace, source: ModelSource, args) -> list[dict]:
    """lorabooth's path with the repeated blocks compiled against the same path eager, on one
    generator; the compile's cost (the first compiled round less a steady one) on its own row."""
    from lorabooth.core.models.compile import compile_in_place

    generator = ModelOwner().generator(source)
    base = base_recipe(ws, args)
    recipes = [replace(base, seed=i) for i in range(args.images)]

    def best_of(rounds: int) -> tuple[float, float]:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            run_request(generator, ws, recipes, None, lambda index, path, recipe: None)
            times.append(time.perf_counter() - start)
        return times[0], min(times[1:])

    eager = best_of(args.rounds + 1)[1]
    compile_in_place(generator.pipe.transformer, "blocks")
    first, compiled = best_of(args.rounds + 1)
    return [
        {"model": name, "case": "images/s, blocks compiled", "lorabooth": args.images / compiled,
         "baseline": "eager", "baseline_value": args.images / eager, "ratio": eager / compiled},
        {"model": name, "case": "compile time, s", "lorabooth": first - compiled,
         "baseline": "a steady round", "baseline_value": compiled,
         "ratio": (first - compiled) / compiled},
    ]


def step_cache_rows(name: str, ws: Workspace, source: ModelSource, args,
                    threshold: float = 0.1, steps: int = 28) -> list[dict]:
    """Images through the queue's path with the first-block cache against every step computed,
    on one generator, at `steps` denoising steps (the cache has nothing to skip in a few): the
    speed, the share of steps computed in full and how near the pictures stay (PSNR)."""
    import numpy as np

    generator = ModelOwner().generator(source)
    computed = FullSteps()
    base = replace(base_recipe(ws, args), steps=steps)
    images: dict[float, list] = {0.0: [], threshold: []}
    best = {0.0: float("inf"), threshold: float("inf")}
    share: dict[float, float] = {}
    for _ in range(args.rounds + 1):  # alternating; the first round of each warms up
        for cache in (0.0, threshold):
            computed.count = 0
            start = time.perf_counter()
            made = [np.asarray(generator.render(replace(base, seed=i, step_cache=cache)),
                               dtype=np.float64) for i in range(args.images)]
            best[cache] = min(best[cache], time.perf_counter() - start)
            share[cache] = computed.count / (steps * args.images)
            images[cache] = made
    psnr = [10 * np.log10(255**2 / max(((a - b) ** 2).mean(), 1e-12))
            for a, b in zip(images[0.0], images[threshold], strict=True)]
    return [{"model": name, "case": f"images/s, step cache {threshold:g}, {steps} steps",
             "lorabooth": args.images / best[threshold], "baseline": "every step computed",
             "baseline_value": args.images / best[0.0], "ratio": best[0.0] / best[threshold],
             "steps_computed_share": round(share[threshold], 3),
             "psnr_vs_every_step_db": round(float(np.mean(psnr)), 1),
             "psnr_lowest_db": round(float(np.min(psnr)), 1)}]


def bench(name: str, source: ModelSource, root: Path, args) -> list[dict]:
    ws = Workspace.at(workspace(root / name, 256))
    Trainer(ws, source=source, device="cpu").run(steps=5)  # a LoRA to generate with
    r = rates(ws, source, args)
    rows = [
        {"model": name, "case": "images/s", "lorabooth": r["lorabooth"],
         "baseline": "bare pipe()", "baseline_value": r["bare"],
         "ratio": r["lorabooth"] / r["bare"]},
        {"model": name, "case": "LoRA scale switch, s", "lorabooth": r["switch"],
         "baseline": "load LoRA file", "baseline_value": r["load"],
         "ratio": r["switch"] / r["load"]},
    ]
    if name == "demo":  # trained weights: the mid-size model's random ones change nothing alike
        rows += step_cache_rows(name, ws, source, args)
    return rows + (compile_rows(name, ws, source, args) if args.compile else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timed rounds")
    parser.add_argument("--no-compile", dest="compile", action="store_false",
                        help="skip the compiled rows")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lorabooth-bench-generate-"))
    try:
        demo = ModelSource("demo", ensure_demo_model(), is_demo=True)
        mid = ModelSource("mid", mid_size_model(root / "mid-model"), is_demo=True)
        rows = bench("demo", demo, root, args) + bench("mid-256", mid, root, args)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report("generate", rows, {"size": args.size, "steps": args.steps, "images": args.images,
                              "goal": "images/s ratio >= 0.98; scale switch << file load"})


if __name__ == "__main__":
    main()
