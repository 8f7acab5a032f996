"""Measuring one photo (size, sharpness, light, colours, a perceptual hash, a thumbnail), and
the cache that makes an unchanged folder re-scan in milliseconds."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..fsutil import (
    NotRegular,
    atomic_write_bytes,
    atomic_write_text,
    json_number,
    read_json,
    read_regular_file,
)
from .files import HEIF_SUFFIXES, MAX_FILE_BYTES, decode, heif_available

ANALYSIS_SIZE = 512  # measurements run on a copy whose long side is at most this
THUMB_SIZE = 256
SCAN_CACHE_VERSION = 1


@dataclass
class Measurement:
    """What one file holds, independent of the other files and of the config."""

    size: int
    mtime_ns: int
    sha256: str = ""
    error: str = ""  # set when the file cannot be used at all
    width: int = 0  # after EXIF orientation
    height: int = 0
    mode: str = ""
    brightness: float = 0.0
    blown: float = 0.0
    blur: float = 0.0  # sharpness; low means blurry
    dhash: str = ""  # 16 hex digits
    border: list[float] = field(default_factory=list)  # mean RGB of 4 edge strips, 0..1
    palette: list[float] = field(default_factory=list)  # 4x4x4 colour histogram, sums to 1


def measure(path: Path, thumbs: Path | None = None) -> Measurement:
    """Read one file and measure it; never raises for what the file holds."""
    try:
        data, stat = read_regular_file(path, MAX_FILE_BYTES)
    except NotRegular as exc:
        return Measurement(0, 0, error=str(exc))
    except OSError as exc:
        if os.path.islink(path):
            return Measurement(0, 0, error="a link to nothing (its target is missing, or the "
                               f"link loops: {exc.strerror or exc}): skipped")
        return Measurement(0, 0, error=f"cannot read the file: {exc.strerror or exc}")
    m = Measurement(size=len(data), mtime_ns=stat.st_mtime_ns)
    if not data:
        m.error = "empty file (0 bytes)"
        return m
    m.sha256 = hashlib.sha256(data).hexdigest()
    if path.suffix.lower() in HEIF_SUFFIXES and not heif_available():
        m.error = (f"{path.suffix.lower()[1:].upper()} photos need the heic extra: "
                   "pip install 'lorabooth[heic]'")
        return m
    try:
        decoded = decode(data, draft_size=ANALYSIS_SIZE)
    except ValueError as exc:
        m.error = str(exc)
        return m
    except Exception as exc:  # a codec bug must cost one photo, never the scan
        m.error = f"unreadable: {type(exc).__name__}: {exc}"
        return m
    m.width, m.height, m.mode = decoded.width, decoded.height, decoded.mode
    small = decoded.image  # ours alone: thumbnail() may shrink it in place
    small.thumbnail((ANALYSIS_SIZE, ANALYSIS_SIZE), Image.Resampling.BILINEAR)
    _measure_pixels(m, small)
    if thumbs is not None:
        write_thumbnail(small, thumbs / f"{m.sha256[:32]}.jpg")
    return m


def _measure_pixels(m: Measurement, small: Image.Image) -> None:
    # Sharpness needs the full analysis size; the colour statistics are as good at 128 px and
    # much cheaper there.
    gray = np.asarray(small.convert("L"), dtype=np.int16)
    lap = (gray[:-2, 1:-1] + gray[2:, 1:-1] + gray[1:-1, :-2] + gray[1:-1, 2:]
           - 4 * gray[1:-1, 1:-1])
    m.blur = sharpness(lap)
    m.blown = round(float(np.count_nonzero(gray >= 250)) / max(1, gray.size), 4)
    tiny = small.copy()
    tiny.thumbnail((128, 128), Image.Resampling.BOX)
    rgb = np.asarray(tiny, dtype=np.uint8)
    m.brightness = round(float(np.asarray(tiny.convert("L")).mean()) / 255.0, 4)
    m.dhash = dhash(tiny)
    h, w = rgb.shape[:2]
    bh, bw = max(1, h // 10), max(1, w // 10)
    strips = [rgb[:bh], rgb[-bh:], rgb[:, :bw], rgb[:, -bw:]]
    m.border = [round(float(v) / 255.0, 4) for s in strips for v in s.reshape(-1, 3).mean(axis=0)]
    bins = (rgb // 64).reshape(-1, 3).astype(np.int32)
    hist = np.bincount(bins[:, 0] * 16 + bins[:, 1] * 4 + bins[:, 2], minlength=64)
    m.palette = [round(float(v), 4) for v in hist / max(1, hist.sum())]


def sharpness(lap: np.ndarray) -> float:
    """99.9th percentile of |Laplacian|. The Laplacian of 8-bit pixels is a whole number up to
    1020, so a histogram finds the percentile without sorting (np.percentile is 10x slower)."""
    if not lap.size:
        return 0.0
    counts = np.bincount(np.abs(lap).ravel(), minlength=1021)
    rank = np.searchsorted(np.cumsum(counts), 0.999 * lap.size)
    return float(rank)


def dhash(img: Image.Image) -> str:
    """64-bit difference hash: robust to resizing and recompression, not to crops."""
    tiny = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (tiny[:, 1:] > tiny[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def write_thumbnail(small: Image.Image, path: Path) -> None:
    if path.exists():
        return
    thumb = small.copy()
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    thumb.save(buffer, "JPEG", quality=85)
    atomic_write_bytes(path, buffer.getvalue())


HEX = frozenset("0123456789abcdef")


def _kind_ok(value, default) -> bool:
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return (isinstance(value, list) and len(value) <= 256
                and all(_kind_ok(v, 0.0) for v in value))
    if isinstance(default, float):
        return json_number(value) is not None
    return isinstance(value, int) and not isinstance(value, bool)


def _hex_or_empty(text: str, digits: int) -> bool:
    return text == "" or (len(text) == digits and set(text) <= HEX)


def from_cache(entry: object) -> Measurement | None:
    """The measurement a cache entry records, or None when the entry is not one lorabooth
    wrote: a forged cache (a string for a width, a path for a hash that names the thumbnail)
    is measured again, never trusted nor a crash of every later scan."""
    if not isinstance(entry, dict) or set(entry) != set(Measurement.__dataclass_fields__):
        return None
    template = Measurement(0, 0)
    if not all(_kind_ok(entry[name], getattr(template, name)) for name in entry):
        return None
    if not (_hex_or_empty(entry["sha256"], 64) and _hex_or_empty(entry["dhash"], 16)):
        return None
    return Measurement(**entry)


CACHE_LIMIT = 512 * 2**20  # ~1 KB a photo: hundreds of thousands of photos


class ScanCache:
    """Per-file measurements keyed by relative path, valid while size and mtime match."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, dict] = {}
        if path is not None:
            try:
                blob = read_json(path, CACHE_LIMIT)
                if blob.get("version") == SCAN_CACHE_VERSION and isinstance(blob["files"], dict):
                    self.entries = blob["files"]
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                self.entries = {}  # a damaged cache is rebuilt, never trusted

    def get(self, rel: str, stat: os.stat_result) -> Measurement | None:
        cached = from_cache(self.entries.get(rel))
        if cached and cached.size == stat.st_size and cached.mtime_ns == stat.st_mtime_ns:
            return cached
        return None

    def save(self, measurements: dict[str, Measurement]) -> None:
        fresh = {rel: asdict(m) for rel, m in measurements.items()}
        if self.path is None or fresh == self.entries:
            return
        self.entries = fresh
        text = json.dumps({"version": SCAN_CACHE_VERSION, "files": fresh}, separators=(",", ":"))
        try:
            atomic_write_text(self.path, text)
        except OSError:
            pass  # a read-only or full disk costs speed next time, not this scan


def measure_all(folder: Path, files: Sequence[Path], cache: ScanCache, thumbs: Path | None,
                workers: int | None = None,
                progress: Callable[[int, int], None] | None = None) -> dict[str, Measurement]:
    """Measurements for every file: from the cache when unchanged, else measured in parallel
    (Pillow releases the GIL while decoding, so threads use every core)."""
    result: dict[str, Measurement] = {}
    todo: list[tuple[str, Path]] = []
    for path in files:
        rel = path.relative_to(folder).as_posix()
        try:
            cached = cache.get(rel, path.stat())
        except OSError:
            if os.path.islink(path):  # a dangling or looping link: say so, never drop it
                todo.append((rel, path))
            continue  # else deleted since it was listed
        if cached is not None and (thumbs is None or cached.error or
                                   (thumbs / f"{cached.sha256[:32]}.jpg").exists()):
            result[rel] = cached
        else:
            todo.append((rel, path))
    if todo:
        done = len(result)
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 2) as pool:
            for (rel, _), m in zip(todo, pool.map(lambda item: measure(item[1], thumbs), todo),
                                   strict=True):
                result[rel] = m
                done += 1
                if progress:
                    progress(done, len(files))
    return result
