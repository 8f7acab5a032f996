"""`lorabooth check` speed on a folder of generated phone-sized JPEGs.

Rows, each against a baseline measured in the same run:
- cold scan (measurements and thumbnails made) vs. a plain full-size Pillow decode of every
  file on one thread, the way a naive scanner reads them;
- warm re-scan (nothing changed) vs. listing the folder and stat-ing every file, the floor any
  re-scan pays.

    python -m bench.dataset [--count 2000] [--width 2048 --height 1536]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from bench._common import report, timed
from lorabooth.core.dataset.files import list_photos
from lorabooth.core.dataset.scan import ScanOptions, scan_folder


def make_photos(folder: Path, count: int, size: tuple[int, int]) -> None:
    """Photo-like JPEGs (smooth gradients plus sensor noise), each one different."""
    existing = len(list(folder.glob("*.jpg")))
    if existing == count:
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def one(i: int) -> None:
        rng = np.random.default_rng(i)
        base = np.stack([(xx * rng.uniform(0.02, 0.1) + yy * rng.uniform(0.02, 0.1)
                          + rng.uniform(0, 255)) % 255 for _ in range(3)], axis=-1)
        noise = rng.normal(0, 12, (h // 4, w // 4, 3)).repeat(4, 0).repeat(4, 1)
        img = np.clip(base + noise, 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"IMG_{i:05}.jpg", quality=88)

    with ThreadPoolExecutor() as pool:
        list(pool.map(one, range(count)))


def naive_decode(folder: Path) -> None:
    for path in list_photos(folder):
        with Image.open(path) as img:
            img.convert("RGB").load()


def list_and_stat(folder: Path) -> None:
    for path in list_photos(folder):
        path.stat()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--height", type=int, default=1536)
    parser.add_argument("--photos", type=Path,
                        default=Path(tempfile.gettempdir()) / "lorabooth-bench-photos")
    args = parser.parse_args()
    make_photos(args.photos, args.count, (args.width, args.height))
    options = ScanOptions(resolution=512)
    cache = Path(tempfile.mkdtemp(prefix="lorabooth-bench-cache-"))
    try:
        # The naive baseline decodes a subset (it is slow); its rate is what compares.
        subset = args.photos.parent / "lorabooth-bench-subset"
        shutil.rmtree(subset, ignore_errors=True)
        subset.mkdir()
        for path in list_photos(args.photos)[:100]:
            (subset / path.name).symlink_to(path)
        naive = timed(lambda: naive_decode(subset)) / len(list_photos(subset))
        cold = timed(lambda: scan_folder(args.photos, options, cache)) / args.count
        warm_total = timed(lambda: scan_folder(args.photos, options, cache), repeat=3)
        floor_total = timed(lambda: list_and_stat(args.photos), repeat=3)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    rows = [
        {"case": "cold scan (thumbnails made)", "files_per_s": 1 / cold,
         "baseline": "full decode, 1 thread", "baseline_files_per_s": 1 / naive,
         "speedup": naive / cold},
        {"case": "warm re-scan (nothing changed)", "files_per_s": args.count / warm_total,
         "baseline": "list + stat only", "baseline_files_per_s": args.count / floor_total,
         "speedup": floor_total / warm_total},
    ]
    report("dataset", rows, {"count": args.count, "size": [args.width, args.height],
                             "warm_rescan_s": warm_total, "goal_warm_rescan_s": 1.0})
    print(f"warm re-scan of {args.count} files: {warm_total:.3f} s (goal: under 1 s)")


if __name__ == "__main__":
    main()
