"""Validation loss: the rectified-flow loss at fixed noise levels with fixed noise.

Training's own loss is drawn at a random noise level each step, and the level alone moves it
ten-fold, so two checkpoints cannot be compared by it. This loss is measured the same way every
time (kohya's validation loss, sd-scripts #1903, is the same idea): each measured photo, cropped
square at the smallest training resolution, at the levels in SIGMAS, with noise fixed by the
photo and the run's seed. It changes only when the weights do.

What it measures depends on `train.validation_photos`: photos held out of training show whether
the LoRA learns the subject (their loss falls) or, later, its photos (it turns up again); with
none held out, a few training photos give a steady curve of how well the LoRA fits its set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

import torch

from ..config import MEASURED_TRAINING_PHOTOS
from ..dataset.buckets import Bucket
from . import TrainingError
from .data import Example

SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _rank(sha256: str, seed: int) -> str:
    """A photo's place in the draw: stable when photos are added, so a continued run holds
    out the same photos unless a newcomer ranks among the first."""
    return hashlib.sha256(f"{seed}:{sha256}".encode()).hexdigest()


@dataclass(frozen=True)
class Split:
    train: list[Example]  # what training sees
    measured: list[Example]  # one per measured photo, square at the smallest resolution
    held_out: int  # how many of the measured photos training never sees


def split_examples(examples: list[Example], held_out: int, seed: int,
                   resolution: int) -> Split:
    """Hold `held_out` photos (at every resolution) out of training, and choose what the
    validation loss measures: each photo square at `resolution`, the smallest training one (the
    cheapest, and the shape the samples render at: a compiled model has it already)."""
    photos = sorted({e.sha256: e for e in examples}.values(), key=lambda e: _rank(e.sha256, seed))
    if held_out and held_out >= len(photos):
        raise TrainingError(
            f"train.validation_photos = {held_out} would hold out every one of the "
            f"{len(photos)} usable photos, leaving none to train on: hold out fewer "
            f"(a set of 20 or more can spare 2), or set it to 0")
    out = {e.sha256 for e in photos[:held_out]}
    measured = photos[:held_out] if held_out else photos[:MEASURED_TRAINING_PHOTOS]
    square = Bucket(resolution, resolution)
    return Split([e for e in examples if e.sha256 not in out],
                 [replace(e, bucket=square) for e in measured], held_out)


def fixed_noise(sha256: str, seed: int, shape: torch.Size) -> torch.Tensor:
    """The same noise for a photo every time it is measured in this run (and any run with the
    same seed), whatever else the set holds."""
    generator = torch.Generator().manual_seed(int(_rank(sha256, seed)[:15], 16))
    return torch.randn(shape, generator=generator)


def describe(split: Split) -> str:
    """What the validation loss is measured on, for the log and the UI."""
    if split.held_out:
        return f"{split.held_out} held-out photo(s)"
    return f"{len(split.measured)} training photo(s)"
