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
import re
from dataclasses import dataclass, replace

import torch

from ..config import MEASURED_TRAINING_PHOTOS
from ..dataset.buckets import Bucket
from . import TrainingError
from .data import Example

SIGMAS = (0.1, 0.3, 0.5, 0.7, 0.9)
SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_MEASURED = 64  # train.validation_photos' own limit


def _rank(sha256: str, seed: int) -> str:
    """A photo's place in the draw: stable when photos are added, so a continued run holds
    out the same photos unless a newcomer ranks among the first."""
    return hashlib.sha256(f"{seed}:{sha256}".encode()).hexdigest()


@dataclass(frozen=True)
class Split:
    train: list[Example]  # what training sees
    measured: list[Example]  # one per measured photo, square at the smallest resolution
    held_out: int  # how many of the measured photos training never sees
    note: str = ""  # how a resumed run's measured photos came to differ from its first ones

    def record(self) -> dict:
        """What a checkpoint keeps, so a resume measures the same photos (`kept_of` reads it)."""
        return {"sha256": [e.sha256 for e in self.measured], "held_out": bool(self.held_out)}


@dataclass(frozen=True)
class Kept:
    """The photos a run measured: a resume measures these again, so the run's curve compares
    like with like even when photos were added (a newcomer ranked first would otherwise be
    held out, and a held-out photo trained on) or removed since."""
    sha256: tuple[str, ...]
    held_out: bool
    run: str


def kept_of(record: object, run: str) -> Kept | None:
    """A checkpoint's record of its measured photos, None when it has none a run could have
    written (an older checkpoint, a forged file)."""
    if not isinstance(record, dict) or not isinstance(record.get("held_out"), bool):
        return None
    shas = record.get("sha256")
    if (not isinstance(shas, list) or not 0 < len(shas) <= MAX_MEASURED
            or not all(isinstance(s, str) and SHA256.fullmatch(s) for s in shas)):
        return None
    return Kept(tuple(dict.fromkeys(shas)), record["held_out"], run)


def split_examples(examples: list[Example], held_out: int, seed: int,
                   resolution: int, kept: Kept | None = None) -> Split:
    """Hold `held_out` photos (at every resolution) out of training, and choose what the
    validation loss measures: each photo square at `resolution`, the smallest training one (the
    cheapest, and the shape the samples render at: a compiled model has it already). A resumed
    run passes what it `kept`: the same photos again, those still there."""
    photos = sorted({e.sha256: e for e in examples}.values(), key=lambda e: _rank(e.sha256, seed))
    if kept is not None:
        split = _split_kept(examples, photos, held_out, kept, resolution)
        if split is not None:
            return split
    if held_out and held_out >= len(photos):
        raise TrainingError(
            f"train.validation_photos = {held_out} would hold out every one of the "
            f"{len(photos)} usable photos, leaving none to train on: hold out fewer "
            f"(a set of 20 or more can spare 2), or set it to 0")
    measured = photos[:held_out] if held_out else photos[:MEASURED_TRAINING_PHOTOS]
    return _split(examples, measured, held_out > 0, resolution)


def _split(examples: list[Example], measured: list[Example], held_out: bool,
           resolution: int, note: str = "") -> Split:
    out = {e.sha256 for e in measured} if held_out else set()
    square = Bucket(resolution, resolution)
    return Split([e for e in examples if e.sha256 not in out],
                 [replace(e, bucket=square) for e in measured], len(out), note)


def _split_kept(examples: list[Example], photos: list[Example], held_out: int, kept: Kept,
                resolution: int) -> Split | None:
    """The photos a run kept, those still in the set; None (a fresh split) when none is, or
    when holding them out would leave nothing to train on."""
    present = {e.sha256: e for e in photos}
    measured = [present[s] for s in kept.sha256 if s in present]
    if not measured or (kept.held_out and len(measured) >= len(photos)):
        return None
    notes = []
    what = "held-out" if kept.held_out else "measured"
    if len(measured) < len(kept.sha256):
        notes.append(f"{len(measured)} of the {len(kept.sha256)} {what} photos {kept.run} "
                     "started with are left")
    if kept.held_out != bool(held_out) or (kept.held_out and held_out != len(kept.sha256)):
        asked = f"holds out {held_out}" if held_out else "holds out none"
        notes.append(f"train.validation_photos now {asked}: {kept.run} keeps measuring the "
                     "photos it started with (a new run follows the setting)")
    return _split(examples, measured, kept.held_out, resolution, "; ".join(notes))


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
