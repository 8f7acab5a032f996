"""Sample images while training: the sample prompts rendered from fixed seeds at a step, and
the contact sheet of every step of the run so far (faces peak early and then overfit; the sheet
shows where). Rendering never touches the training state: eval mode, no grad, the RNGs as they were.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..config import Config
from ..dataset.captions import class_caption, substitute_trigger
from ..generate.images import contact_sheet, save_png
from .checkpoint import step_label

if TYPE_CHECKING:
    from .trainer import Trainer

SHEET_CELL = 192


def sample_prompts(config: Config) -> list[str]:
    """The sample prompts with the trigger word in them; preserving a class, one more: the
    first with the class in the trigger's place, so the sheet's column for it shows, step by
    step, whether the subject bleeds onto the class (it should look as at step 0)."""
    prompts = [substitute_trigger(p, config.trigger) for p in config.sample.prompts]
    word = config.train.preserved
    if word and prompts:
        kept = class_caption(prompts[0], config.trigger, word)
        if kept not in prompts:
            prompts.append(kept)
    return prompts


def step_folder(samples: Path, step: int) -> Path:
    return samples / f"step-{step:06d}"


def run_samples(trainer: Trainer) -> Path:
    """This run's samples folder, beside its checkpoints' name (outputs/samples/run-002): a
    second run's sheet never mixes in rows of the first, and the first's stay."""
    return trainer.ws.outputs / "samples" / trainer.run_dir.name


def sample_recipe(trainer: Trainer, step: int, index: int) -> dict:
    """What made sample `index` of `step`, as the Gallery shows it (its prompt to reuse, its
    seed and size to make it again), whoever ran the training: the engine or `lorabooth
    train` in the foreground."""
    recipe: dict = {"step": step}
    if index < len(trainer.sample_prompts):
        sample = trainer.config.sample
        size = min(trainer.config.train.resolution)
        recipe.update(prompt=trainer.sample_prompts[index], seed=sample.seed + index,
                      steps=sample.steps, width=size, height=size, run=trainer.run_dir.name)
    return recipe


def render_samples(trainer: Trainer) -> list[Path]:
    """The sample prompts at the trainer's current step; the sheet is rewritten after."""
    s = trainer.config.sample
    if not trainer.sample_texts:
        return []
    pipe, device = trainer.pipe, trainer.device
    size = min(trainer.config.train.resolution)
    folder = step_folder(run_samples(trainer), trainer.step)
    paths = []
    with trainer.evaluating():
        for index, prompt in enumerate(trainer.sample_prompts):
            image = pipe(
                **trainer.pipe_text(prompt), guidance_scale=trainer.source.model.guidance,
                height=size, width=size, num_inference_steps=s.steps,
                generator=torch.Generator(device).manual_seed(s.seed + index),
            ).images[0]
            paths.append(save_png(image, folder / f"prompt-{index:02d}.png"))
    write_sample_sheet(run_samples(trainer))
    return paths


def write_sample_sheet(samples: Path) -> Path | None:
    """Every sample so far: a row per step, a column per prompt."""
    steps = sorted(p for p in samples.glob("step-*") if p.is_dir())
    rows = [sorted(step.glob("prompt-*.png")) for step in steps]
    labels = [step_label(step.name) for step in steps]
    return contact_sheet(rows, samples / "contact_sheet.png", SHEET_CELL, labels)
