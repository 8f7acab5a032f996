"""How fast training teaches, on the CPU: seconds of training until a LoRA overfit on one photo
renders that photo clearly closer than the base model does (the check in
tests/integration/test_learning.py, whose helpers live here).

The metric: mean squared error, in pixels scaled to [0, 1], between a render of the photo's own
caption (fixed seed, the user's generation path: `lorabooth generate`'s recipe, the workspace
LoRA) and the photo as training saw it (cropped to its bucket). Passing: under half the base
model's error, and under 0.03.

It trains twice, as is and with `train.preserve_class` (differential output preservation), and
also reports each LoRA's class bleed: how far it moves the render of the caption with the class
in the trigger's place from the base model's, and what preservation costs a step.

    python -m bench.learn [--max-steps 600] [--every 25]
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from lorabooth.sample_photos import SAMPLE_PHOTOS_DIR

PHOTO = "02_beach_scarf"
RESOLUTION = 128
STEPS = 400
SETTINGS = {"train.resolution": [RESOLUTION], "train.steps": STEPS, "train.rank": 16,
            "train.targets": "all-linear", "train.learning_rate": 2e-3,
            "train.checkpoint_every": 100, "train.caption_dropout": 0.0,
            "sample.every": 0, "train.validate": False}  # timed whole: nothing but training
RENDER_STEPS = 20
PASS_RATIO, PASS_MSE = 0.5, 0.03


def one_photo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".jpg", ".txt"):
        shutil.copy2(SAMPLE_PHOTOS_DIR / f"{PHOTO}{suffix}", folder / f"{PHOTO}{suffix}")
    return folder


def workspace(root: Path, **settings):
    """A demo workspace holding the one photo, with SETTINGS and `settings` (dotted keys)."""
    from lorabooth.core.config import set_config_values
    from lorabooth.core.workspace import init_workspace

    ws = init_workspace(root, one_photo(root / "photos"), model="demo", trigger="zorb")
    set_config_values(ws.root, {**SETTINGS, **settings})
    return ws


def photo_as_trained(ws) -> np.ndarray:
    from lorabooth.core.dataset.buckets import bucket_sizes, crop_to_bucket, nearest_bucket
    from lorabooth.core.dataset.files import open_image

    path = ws.config().photos_dir(ws.root) / f"{PHOTO}.jpg"
    image = open_image(path.read_bytes())
    bucket = nearest_bucket(image.width, image.height, bucket_sizes(RESOLUTION))
    return np.asarray(crop_to_bucket(image, bucket), dtype=np.float32) / 255


def caption(ws) -> str:
    from lorabooth.core.dataset.captions import substitute_trigger

    config = ws.config()
    text = (config.photos_dir(ws.root) / f"{PHOTO}.txt").read_text().strip()
    return substitute_trigger(text, config.trigger)


class Renderer:
    """Renders the caption as `lorabooth generate` would, on one warm model."""

    def __init__(self) -> None:
        from lorabooth.core.models.owner import ModelOwner

        self.owner = ModelOwner()

    def __call__(self, ws, scale: float | None, lora: Path | None = None,
                 seed: int = 7, prompt: str | None = None) -> np.ndarray:
        """The photo's caption (or `prompt`) with the workspace LoRA (or the file `lora`) at
        `scale`; with none (`--no-lora`) when scale is None."""
        from lorabooth.core.generate.recipe import LoraRef, Recipe
        from lorabooth.core.generate.request import complete_recipe
        from lorabooth.core.models.resolve import resolve_model

        target = photo_as_trained(ws)
        loras = ()
        if scale is not None:
            loras = (LoraRef("workspace", scale),) if lora is None else (
                LoraRef(lora.name, scale, str(lora),
                        hashlib.sha256(lora.read_bytes()).hexdigest()),)
        recipe = Recipe(prompt or caption(ws), seed=seed, width=target.shape[1],
                        height=target.shape[0], steps=RENDER_STEPS, loras=loras)
        recipe = complete_recipe(ws, recipe) if lora is None else replace(
            recipe, model=ws.config().model)
        generator = self.owner.generator(resolve_model(recipe.model))
        return np.asarray(generator.render(recipe), dtype=np.float32) / 255


def mse(image: np.ndarray, ws, reference: np.ndarray | None = None) -> float:
    """The error against the photo as trained (or against `reference`, another render)."""
    target = photo_as_trained(ws) if reference is None else reference
    return float(((image - target) ** 2).mean())


def passes(learned: float, base: float) -> bool:
    return learned < PASS_RATIO * base and learned < PASS_MSE


PRESERVED = "plush toy"  # the class the bench's preserving run keeps (its photo's subject)


def class_bleed(render: Renderer, ws, lora: Path) -> float:
    """How far the LoRA moves a render of the caption with the class in the trigger's place
    from the base model's render of it: the subject bleeding onto its whole class."""
    from lorabooth.core.dataset.captions import class_caption

    prompt = class_caption(caption(ws), ws.config().trigger, PRESERVED)
    return mse(render(ws, 1.0, lora=lora, prompt=prompt), ws,
               render(ws, None, prompt=prompt))


def until_it_passes(root: Path, render: Renderer, base: float, max_steps: int, every: int,
                    **settings) -> dict[str, object]:
    """Train until the probe passes (or `max_steps`): when, how fast, and the class bleed."""
    from lorabooth.core.train.trainer import Trainer

    ws = workspace(root, **{"train.steps": max_steps, **settings})
    state = {"seconds": 0.0, "passed": None, "mse": None, "steps": 0}
    probe = root / "probe.safetensors"
    trainer: Trainer | None = None

    def on_step(metrics) -> None:
        state["seconds"] += metrics.seconds  # training time only, not the probes
        state["steps"] = metrics.step
        if state["passed"] or metrics.step % every:
            return
        probe.write_bytes(trainer.lora_bytes())
        state["mse"] = mse(render(ws, 1.0, lora=probe), ws)
        if passes(state["mse"], base):
            state["passed"] = (metrics.step, state["seconds"])

    trainer = Trainer(ws, device="cpu", on_step=on_step,
                      should_stop=lambda: state["passed"] is not None)
    trainer.run()
    step, seconds = state["passed"] or (None, state["seconds"])
    return {"base_mse": round(base, 4), "lora_mse": round(state["mse"], 4),
            "steps_to_pass": step, "train_seconds_to_pass": round(seconds, 1),
            "s_per_step": round(state["seconds"] / state["steps"], 4),
            "class_bleed_mse": round(class_bleed(render, ws, probe), 4)}


def main() -> None:
    import os

    from bench._common import report

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=25)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lorabooth-bench-learn-"))
    os.environ.setdefault("LORABOOTH_CACHE", str(root / "cache"))
    case = f"one photo, {RESOLUTION} px, all-linear rank 16"
    try:
        render = Renderer()
        plain_ws = workspace(root / "base")
        base = mse(render(plain_ws, None), plain_ws)
        rows = [{"case": case, **until_it_passes(root / "plain", render, base, args.max_steps,
                                                  args.every)},
                {"case": f"{case}, preserve_class {PRESERVED!r}",
                 **until_it_passes(root / "preserve", render, base, args.max_steps,
                                   args.every, **{"train.preserve_class": PRESERVED})}]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    plain, kept = rows
    report("learn", rows,
           {"pass": f"lora_mse < {PASS_RATIO} x base_mse and < {PASS_MSE}",
            "probe_every": args.every,
            "class_bleed": "mean squared error between renders, with and without the LoRA, "
                           "of the caption with the class in the trigger's place",
            "preserve_vs_plain": {
                "s_per_step": round(kept["s_per_step"] / plain["s_per_step"], 2),
                "class_bleed": round(kept["class_bleed_mse"] / plain["class_bleed_mse"], 3)}})


if __name__ == "__main__":
    main()
