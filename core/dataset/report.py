"""The dataset report: what a photo set is short of, in plain advice.

A LoRA learns whatever its photos share: the face, and also a background, a palette, the light
or the camera's framing. The report counts what the usable photos have in common and says what
to add or to describe in captions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from . import OK, SKIPPED, WARN
from .captions import substitute_trigger
from .judge import PhotoRecord
from .scan import ScanOptions, ScanResult

ENOUGH_PHOTOS = 10
SAME_BACKGROUND = 0.07  # largest mean border-colour difference that counts as the same
SAME_PALETTE = 0.75  # colour-histogram intersection that counts as the same palette


@dataclass
class Spread:
    low: float
    median: float
    high: float


@dataclass
class DatasetReport:
    total: int
    counts: dict[str, int]
    short_side: Spread | None
    orientation: dict[str, int]
    same_background: list[str]  # the largest group of photos sharing a background
    same_palette: list[str]
    brightness: Spread | None
    sharpness: Spread | None
    captions_from_sidecar: int
    duplicate_groups: list[list[str]]
    advice: list[str] = field(default_factory=list)


def _spread(values: list[float]) -> Spread | None:
    if not values:
        return None
    arr = np.array(values, dtype=np.float64)
    return Spread(float(arr.min()), float(np.median(arr)), float(arr.max()))


def _largest_group(records: list[PhotoRecord], similar: np.ndarray) -> list[str]:
    """The photo with the most look-alikes, and those look-alikes."""
    if not records:
        return []
    best = int(similar.sum(axis=1).argmax())
    return [records[j].path for j in np.nonzero(similar[best])[0]]


def background_similarity(records: list[PhotoRecord]) -> np.ndarray:
    borders = np.array([r.measurement.border for r in records], dtype=np.float32)
    diff = np.abs(borders[:, None, :] - borders[None, :, :]).mean(axis=2)
    return diff <= SAME_BACKGROUND


def palette_similarity(records: list[PhotoRecord]) -> np.ndarray:
    hists = np.array([r.measurement.palette for r in records], dtype=np.float32)
    overlap = np.minimum(hists[:, None, :], hists[None, :, :]).sum(axis=2)
    return overlap >= SAME_PALETTE


def _duplicate_groups(records: list[PhotoRecord]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for r in records:
        if r.duplicate_of is not None:
            groups.setdefault(r.duplicate_of, []).append(r.path)
    return [[first, *others] for first, others in groups.items()]


def build_report(scan: ScanResult, options: ScanOptions) -> DatasetReport:
    records = scan.records
    usable = [r for r in records if r.status != SKIPPED and r.measurement]
    counts = Counter(r.status for r in records)
    orientation = Counter(
        "square" if abs(r.width - r.height) <= 0.05 * max(r.width, r.height)
        else "portrait" if r.height > r.width else "landscape"
        for r in usable)
    same_bg = _largest_group(usable, background_similarity(usable)) if usable else []
    same_pal = _largest_group(usable, palette_similarity(usable)) if usable else []
    report = DatasetReport(
        total=len(records),
        counts={status: counts.get(status, 0) for status in (OK, WARN, SKIPPED)},
        short_side=_spread([min(r.width, r.height) for r in usable]),
        orientation={k: orientation.get(k, 0) for k in ("portrait", "landscape", "square")},
        same_background=same_bg,
        same_palette=same_pal,
        brightness=_spread([r.measurement.brightness for r in usable]),
        sharpness=_spread([r.measurement.blur for r in usable]),
        captions_from_sidecar=sum(r.caption_source == "sidecar" for r in usable),
        duplicate_groups=_duplicate_groups(records),
    )
    report.advice = advise(report, usable, options)
    return report


def advise(report: DatasetReport, usable: list[PhotoRecord], options: ScanOptions) -> list[str]:
    n = len(usable)
    advice: list[str] = []
    if n == 0:
        return ["No usable photos: add photos of your subject (15-30 varied ones work well)."]
    if n < ENOUGH_PHOTOS:
        advice.append(f"Only {n} usable photo{'s' if n != 1 else ''}: 15-30 varied photos of "
                      "the subject train a steadier LoRA.")
    if n >= 3 and len(report.same_background) >= max(3, n / 2):
        advice.append(f"{len(report.same_background)} of {n} photos have the same background: "
                      "the LoRA will learn it; add variety or describe it in the captions.")
    if n >= 3 and len(report.same_palette) >= max(3, 0.6 * n):
        advice.append(f"{len(report.same_palette)} of {n} photos share one colour palette: the "
                      "LoRA will tint its images with it; add photos in other light and colours.")
    for kind, count in report.orientation.items():
        if n >= 5 and count == n:
            advice.append(f"All photos are {kind}: the LoRA will favour that framing; add a few "
                          "of the other shapes.")
    small = sum(min(r.width, r.height) < options.resolution for r in usable)
    if small:
        advice.append(f"{small} photo{'s are' if small != 1 else ' is'} smaller than the "
                      f"{options.resolution} px training resolution and will look soft: "
                      "lower train.resolution or use larger originals.")
    if report.brightness and n >= 5 and report.brightness.high - report.brightness.low < 0.1:
        advice.append("All photos have much the same light: the LoRA will learn it; add some "
                      "in other light (outdoors, evening, lamp light).")
    templated = n - report.captions_from_sidecar
    if templated:
        # No trigger word known (a plain folder checked): the template as written, not
        # "photo of " with nothing where the subject's word goes.
        template = (substitute_trigger(options.template, options.trigger) if options.trigger
                    else options.template)
        advice.append(f"{templated} photo{'s have' if templated != 1 else ' has'} no usable "
                      f"caption file and use {template!r}: describe what must stay changeable "
                      "(clothes, background) in a .txt beside each.")
    dupes = sum(len(g) - 1 for g in report.duplicate_groups)
    if dupes:
        advice.append(f"{dupes} duplicate photo{'s' if dupes != 1 else ''}: repeated shots "
                      "weigh twice and get memorised; keep one of each.")
    if report.counts[SKIPPED]:
        advice.append(f"{report.counts[SKIPPED]} file{'s' if report.counts[SKIPPED] != 1 else ''}"
                      " will not be used: the reasons are listed with each.")
    return advice
