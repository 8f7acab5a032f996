"""What training reads: one example per usable photo and resolution (with its caption and
bucket), a fingerprint of the set, and the batch order, a pure function of seed and epoch so a
resumed run sees exactly the batches it would have."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import Config
from ..dataset.buckets import Bucket, bucket_sizes, nearest_bucket
from ..dataset.scan import ScanOptions, scan_folder
from ..workspace import Workspace
from . import TrainingError


@dataclass(frozen=True)
class Example:
    photo: Path
    sha256: str
    caption: str
    bucket: Bucket


def collect_examples(ws: Workspace, config: Config) -> list[Example]:
    """Usable photos with their caption and bucket, for every training resolution."""
    folder = config.photos_dir(ws.root)
    if not folder.is_dir():
        raise TrainingError(f"the photos folder {folder} does not exist")
    options = ScanOptions(resolution=min(config.train.resolution), trigger=config.trigger)
    scan = scan_folder(folder, options, ws.cache)
    usable = scan.usable()
    if not usable:
        raise TrainingError(f"no usable photos in {folder}: run `lorabooth check {folder}`")
    examples = []
    for resolution in config.train.resolution:
        buckets = bucket_sizes(resolution)
        for record in usable:
            bucket = nearest_bucket(record.width, record.height, buckets)
            examples.append(Example(folder / record.path, record.measurement.sha256,
                                    record.caption or config.trigger, bucket))
    return examples


def dataset_fingerprint(examples: list[Example]) -> str:
    text = "\n".join(f"{e.sha256} {e.bucket} {e.caption}" for e in examples)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def epoch_batches(examples: list[Example], batch_size: int, seed: int,
                  epoch: int) -> list[list[int]]:
    """The batches of one epoch, each from a single bucket, in a seeded order.

    A pure function of (seed, epoch): a resumed run sees exactly the batches it would have.
    """
    rng = np.random.default_rng([seed, epoch])
    by_bucket: dict[Bucket, list[int]] = {}
    for index, example in enumerate(examples):
        by_bucket.setdefault(example.bucket, []).append(index)
    batches = []
    for bucket in sorted(by_bucket):
        members = list(rng.permutation(by_bucket[bucket]))
        batches += [members[i:i + batch_size] for i in range(0, len(members), batch_size)]
    order = rng.permutation(len(batches))
    return [[int(i) for i in batches[j]] for j in order]


class BatchOrder:
    """Batch number -> example indices, across epochs."""

    def __init__(self, examples: list[Example], batch_size: int, seed: int):
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self._epoch, self._batches = -1, []
        self.per_epoch = len(epoch_batches(examples, batch_size, seed, 0))

    def __getitem__(self, number: int) -> list[int]:
        epoch, position = divmod(number, self.per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, epoch_batches(
                self.examples, self.batch_size, self.seed, epoch)
        return self._batches[position]
