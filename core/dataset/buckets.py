"""Aspect-ratio buckets: sizes with about the training resolution's area, multiples of 64, and
the crop that fits a photo into one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

EXTREME_RATIO, WIDE_RATIO = 4.0, 2.5  # photos wider than EXTREME are skipped, WIDE warned


@dataclass(frozen=True, order=True)
class Bucket:
    width: int
    height: int

    @property
    def ratio(self) -> float:
        return self.width / self.height

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def bucket_sizes(resolution: int, step: int = 64, max_ratio: float = WIDE_RATIO) -> list[Bucket]:
    """Sizes that are multiples of `step` with about `resolution`² pixels, from tall to wide."""
    area = resolution * resolution
    buckets = {Bucket(resolution, resolution)}
    width = step
    while width <= resolution * max_ratio:
        height = (area // width) // step * step
        if height >= step and max(width / height, height / width) <= max_ratio:
            buckets.add(Bucket(width, height))
            buckets.add(Bucket(height, width))
        width += step
    return sorted(buckets, key=lambda b: b.ratio)


def nearest_bucket(width: int, height: int, buckets: Sequence[Bucket]) -> Bucket:
    target = np.log(width / height)
    return min(buckets, key=lambda b: (abs(np.log(b.ratio) - target), -b.width * b.height))


def crop_to_bucket(img: Image.Image, bucket: Bucket,
                   focus: tuple[float, float] = (0.5, 0.5)) -> Image.Image:
    """Resize to cover the bucket, then crop around `focus` (fractions of width and height)."""
    scale = max(bucket.width / img.width, bucket.height / img.height)
    size = (max(bucket.width, round(img.width * scale)),
            max(bucket.height, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.LANCZOS)
    left = min(max(0, round(size[0] * focus[0] - bucket.width / 2)), size[0] - bucket.width)
    top = min(max(0, round(size[1] * focus[1] - bucket.height / 2)), size[1] - bucket.height)
    return img.crop((left, top, left + bucket.width, top + bucket.height))
