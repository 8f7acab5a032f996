"""Scanning a photo folder: one `PhotoRecord` per image file with a status and reasons; nothing
a folder holds can make a scan fail. Unchanged files come from the measurement cache."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import SKIPPED
from .captions import DEFAULT_TEMPLATE
from .files import HEIF_SUFFIXES, heif_available, list_photos, register_heif
from .judge import PhotoRecord, judge
from .measure import ScanCache, measure_all


@dataclass(frozen=True)
class ScanOptions:
    resolution: int = 512  # the smallest training resolution
    trigger: str = ""  # empty: captions are used as written
    template: str = DEFAULT_TEMPLATE
    recursive: bool = False


@dataclass
class ScanResult:
    folder: Path
    records: list[PhotoRecord]
    notes: list[str]  # about the folder as a whole (missing extra, folder gone)

    def usable(self) -> list[PhotoRecord]:
        return [r for r in self.records if r.status != SKIPPED]


def scan_folder(folder: Path, options: ScanOptions | None = None,
                cache_dir: Path | None = None, workers: int | None = None,
                progress: Callable[[int, int], None] | None = None,
                skip: frozenset[Path] = frozenset()) -> ScanResult:
    """Scan `folder` and return one record per image file, in path order. Files in `skip`
    (still being copied, say) are left out as if they were not there yet."""
    options = options or ScanOptions()
    notes: list[str] = []
    if not folder.is_dir():
        return ScanResult(folder, [], [f"photo folder {folder} does not exist"])
    register_heif()
    files = [p for p in list_photos(folder, options.recursive) if p not in skip]
    if not heif_available() and any(p.suffix.lower() in HEIF_SUFFIXES for p in files):
        notes.append("HEIC/HEIF/AVIF photos need the heic extra: pip install 'lorabooth[heic]'")
    cache = ScanCache(cache_dir / "scan.json" if cache_dir else None)
    thumbs = cache_dir / "thumbs" if cache_dir else None
    measurements = measure_all(folder, files, cache, thumbs, workers, progress)
    cache.save(measurements)
    records = judge(folder, files, measurements, options)
    return ScanResult(folder, records, notes)
