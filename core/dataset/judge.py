"""Judging photos: a status (ok, warn, skipped) and reasons a person understands, for each file
on its own and against the others (exact and near duplicates)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..safetext import unmangled
from . import OK, SKIPPED, WARN
from .buckets import EXTREME_RATIO, WIDE_RATIO
from .captions import effective_caption, read_caption
from .measure import Measurement

if TYPE_CHECKING:
    from .scan import ScanOptions

# Thresholds, tuned on phone photos and the sample set (see tests/unit/test_dataset.py).
# Sharpness is the 99.9th percentile of |Laplacian| at the analysis size: the crispest edges in
# the photo. Unlike the usual Laplacian variance it does not call flat, clean pictures blurry.
# Sharp photos score 100+, a 4 px Gaussian blur about 10.
BLUR_SHARPNESS = 20.0
DARK_MEAN = 0.10
BLOWN_FRACTION = 0.30  # share of pixels at 250+ that makes a photo over-exposed
NEAR_DUP_BITS = 5  # dHash Hamming distance at or below this: near-duplicate


@dataclass
class PhotoRecord:
    path: str  # relative to the photo folder, with forward slashes
    status: str
    reasons: list[str]
    width: int | None
    height: int | None
    caption: str | None
    caption_source: str  # "sidecar", "template" or "none" (file skipped)
    measurement: Measurement | None = None
    duplicate_of: str | None = None  # the earlier photo this one repeats, exactly or nearly

    def public(self) -> dict:
        """The record `lorabooth check --json` prints (a name that is not UTF-8 with its
        bytes as `\\xff`)."""
        return {"path": unmangled(self.path), "status": self.status,
                "reasons": [unmangled(r) for r in self.reasons],
                "width": self.width, "height": self.height, "caption": self.caption,
                "caption_source": self.caption_source,
                "duplicate_of": unmangled(self.duplicate_of) if self.duplicate_of else None}


def judge(folder: Path, files: Iterable[Path], measurements: dict[str, Measurement],
          options: ScanOptions) -> list[PhotoRecord]:
    """Statuses and reasons, including those that compare files with each other."""
    records: list[PhotoRecord] = []
    first_by_hash: dict[str, str] = {}
    for path in files:
        rel = path.relative_to(folder).as_posix()
        m = measurements.get(rel)
        if m is None:
            continue
        records.append(_judge_one(path, rel, m, options, first_by_hash))
    _mark_near_duplicates(records)
    return records


def _judge_one(path: Path, rel: str, m: Measurement, options: ScanOptions,
               first_by_hash: dict[str, str]) -> PhotoRecord:
    if m.error:
        return PhotoRecord(rel, SKIPPED, [m.error], None, None, None, "none", m)
    skip: list[str] = []
    warn: list[str] = []
    duplicate_of = first_by_hash.get(m.sha256)
    if duplicate_of is not None:
        skip.append(f"exact duplicate of {duplicate_of}")
    else:
        first_by_hash[m.sha256] = rel
    short, long = min(m.width, m.height), max(m.width, m.height)
    if short < options.resolution / 2:
        skip.append(f"too small: short side {short} px < {options.resolution} "
                    "(less than half the training resolution)")
    elif short < options.resolution:
        warn.append(f"short side {short} px < {options.resolution}: will be upscaled, "
                    "and look soft")
    ratio = long / max(1, short)
    if ratio > EXTREME_RATIO:
        skip.append(f"extreme aspect ratio {ratio:.1f}:1 (more than {EXTREME_RATIO:g}:1)")
    elif ratio > WIDE_RATIO:
        warn.append(f"very wide aspect ratio {ratio:.1f}:1: a centred crop loses the edges")
    if m.blur < BLUR_SHARPNESS:
        warn.append(f"very blurry (sharpness {m.blur:.0f} < {BLUR_SHARPNESS:g})")
    if m.brightness < DARK_MEAN:
        warn.append(f"very dark (mean brightness {m.brightness:.0%})")
    if m.blown > BLOWN_FRACTION:
        warn.append(f"over-exposed ({m.blown:.0%} of pixels blown out)")
    caption = read_caption(path)
    if caption.problem:
        warn.append(caption.problem)
    status = SKIPPED if skip else WARN if warn else OK
    return PhotoRecord(rel, status, skip + warn, m.width, m.height,
                       effective_caption(caption.text, options.trigger, options.template),
                       "sidecar" if caption.text else "template", m, duplicate_of)


def _hash_bits(records: Sequence[PhotoRecord]) -> np.ndarray:
    values = np.array([int(r.measurement.dhash, 16) for r in records], dtype=np.uint64)
    return np.unpackbits(values.view(np.uint8).reshape(-1, 8), axis=1)


def _mark_near_duplicates(records: list[PhotoRecord]) -> None:
    candidates = [r for r in records if r.status != SKIPPED and r.measurement]
    if len(candidates) < 2:
        return
    bits = _hash_bits(candidates).astype(np.int16)
    # Hamming distances of every pair at once: a loop over pairs would dominate warm re-scans.
    distance = bits.shape[1] - (bits @ bits.T + (1 - bits) @ (1 - bits).T)
    for i, record in enumerate(candidates):
        close = np.nonzero(distance[i, :i] <= NEAR_DUP_BITS)[0]
        if close.size:
            record.duplicate_of = candidates[int(close[0])].path
            record.reasons.append(f"near-duplicate of {record.duplicate_of}")
            if record.status == OK:
                record.status = WARN
