"""The photo set: scan a folder, validate and measure each photo, read captions, report what the
set is short of.

Every file ends as one `PhotoRecord` with a status (`ok`, `warn`, `skipped`) and reasons a
person understands; nothing a folder holds can make a scan fail. Per-file measurements are
cached by path, size and mtime (and thumbnails by content hash) so an unchanged folder re-scans
in milliseconds.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .fsutil import atomic_write_bytes, atomic_write_text

OK, WARN, SKIPPED = "ok", "warn", "skipped"

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"}
HEIF_SUFFIXES = {".heic", ".heif", ".avif"}
PARTIAL_SUFFIXES = (".part", ".crdownload", ".tmp", ".download", ".partial", ".swp")
TOOL_DIRS = {".lorabooth", "__pycache__"}

# Above this many pixels a file is treated as a decompression bomb (Pillow's own error level).
MAX_PIXELS = 2 * 89_478_485
ANALYSIS_SIZE = 512  # measurements run on a copy whose long side is at most this
THUMB_SIZE = 256
SCAN_CACHE_VERSION = 1

# Thresholds, tuned on phone photos and the sample set (see tests/test_dataset.py).
# Sharpness is the 99.9th percentile of |Laplacian| at ANALYSIS_SIZE: the crispest edges in the
# photo. Unlike the usual Laplacian variance it does not call flat, clean pictures blurry.
# Sharp photos score 100+, a 4 px Gaussian blur about 10.
BLUR_SHARPNESS = 20.0
DARK_MEAN = 0.10
BLOWN_FRACTION = 0.30  # share of pixels at 250+ that makes a photo over-exposed
EXTREME_RATIO, WIDE_RATIO = 4.0, 2.5
NEAR_DUP_BITS = 5  # dHash Hamming distance at or below this: near-duplicate
SAME_BACKGROUND = 0.07  # largest mean border-colour difference that counts as the same
SAME_PALETTE = 0.75  # colour-histogram intersection that counts as the same palette
NEUTRAL_BACKGROUND = (128, 128, 128)


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

    def public(self) -> dict:
        """The record `lorabooth check --json` prints."""
        return {"path": self.path, "status": self.status, "reasons": self.reasons,
                "width": self.width, "height": self.height, "caption": self.caption,
                "caption_source": self.caption_source}


@dataclass(frozen=True)
class ScanOptions:
    resolution: int = 512  # the smallest training resolution
    trigger: str = ""  # empty: captions are used as written
    template: str = "photo of {trigger}"
    recursive: bool = False


# ---------------------------------------------------------------------------------------------
# finding files


def is_ignored(name: str) -> bool:
    """Hidden files, partial downloads and editor leftovers are never photos nor errors."""
    lower = name.lower()
    return name.startswith(".") or name.endswith("~") or lower.endswith(PARTIAL_SUFFIXES)


def list_photos(folder: Path, recursive: bool = False) -> list[Path]:
    """Image-named files under `folder`, sorted, skipping ignored names and our own folders."""
    found: list[Path] = []
    suffixes = IMAGE_SUFFIXES | HEIF_SUFFIXES
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if recursive and d not in TOOL_DIRS and not is_ignored(d))
        for name in files:
            if not is_ignored(name) and os.path.splitext(name)[1].lower() in suffixes:
                found.append(Path(root, name))
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# reading one image


def heif_available() -> bool:
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def _register_heif() -> None:
    try:
        import pillow_heif
    except ImportError:
        return
    pillow_heif.register_heif_opener()
    if hasattr(pillow_heif, "register_avif_opener"):
        pillow_heif.register_avif_opener()


@dataclass(frozen=True)
class Decoded:
    image: Image.Image  # upright 8-bit RGB, possibly reduced by draft decoding
    width: int  # the file's full size, upright
    height: int
    mode: str  # the stored colour mode


def open_image(data: bytes, draft_size: int | None = None) -> Image.Image:
    """Decode `data` upright and as 8-bit RGB; raise ValueError with a readable reason."""
    return decode(data, draft_size).image


def decode(data: bytes, draft_size: int | None = None) -> Decoded:
    """Decode `data` upright and as 8-bit RGB; raise ValueError with a readable reason.

    With `draft_size`, JPEGs are decoded at a reduced scale (libjpeg's DCT scaling) whose long
    side is still at least `draft_size`: several times faster than a full decode and resize.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            img.seek(0)  # the first frame of a GIF or multi-page TIFF
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ValueError(f"decompression bomb: {width}x{height} px is more than "
                                 f"{MAX_PIXELS // 1_000_000} megapixels")
            mode = img.mode
            orientation = img.getexif().get(0x0112, 1)
            if draft_size and img.format == "JPEG":
                scale = draft_size / max(width, height)
                img.draft("RGB", (max(1, int(width * scale)), max(1, int(height * scale))))
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ValueError(f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ValueError("not an image (the content is not a picture format Pillow reads)") \
            from None
    except OSError as exc:
        text = str(exc)
        if "truncated" in text or "broken data stream" in text or "premature end" in text:
            raise ValueError("truncated or damaged file: the picture data ends early") from None
        raise ValueError(f"unreadable: {text}") from None
    except (SyntaxError, ValueError, EOFError) as exc:  # Pillow raises these for bad headers
        raise ValueError(f"unreadable: {exc or type(exc).__name__}") from None
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return Decoded(to_rgb(img), width, height, mode)


def to_rgb(img: Image.Image) -> Image.Image:
    """CMYK, 16-bit, palette, grayscale and alpha images as 8-bit RGB. Transparency is
    composited on a neutral grey, so the LoRA learns no black or white halo."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if array.max() > 255 else 255.0
        img = Image.fromarray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        array = np.asarray(img, dtype=np.float64)
        span = max(float(array.max() - array.min()), 1e-6)
        img = Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8), "L")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (*NEUTRAL_BACKGROUND, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


# ---------------------------------------------------------------------------------------------
# measuring one file


def measure(path: Path, thumbs: Path | None = None) -> Measurement:
    """Read one file and measure it; never raises for what the file holds."""
    try:
        stat = path.stat()
        data = path.read_bytes()
    except OSError as exc:
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


# ---------------------------------------------------------------------------------------------
# captions


@dataclass(frozen=True)
class Caption:
    text: str | None  # None when there is no usable sidecar
    problem: str = ""


def sidecar_path(photo: Path) -> Path:
    return photo.with_suffix(".txt")


def _decode(data: bytes) -> tuple[str, str]:
    """(text, encoding) of a sidecar: UTF-8, with or without a BOM, or UTF-16 with a BOM."""
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8"), "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16"), "utf-16"
    return data.decode("utf-8"), "utf-8"


def read_caption(photo: Path) -> Caption:
    sidecar = sidecar_path(photo)
    try:
        data = sidecar.read_bytes()
    except FileNotFoundError:
        return Caption(None)
    except OSError as exc:
        return Caption(None, f"caption file unreadable ({exc.strerror}); using the template")
    try:
        text, _ = _decode(data)
    except UnicodeDecodeError as exc:
        return Caption(None, f"caption {sidecar.name} is not UTF-8 (bad byte at {exc.start}); "
                             "using the template")
    text = " ".join(text.split())
    return Caption(text or None, "" if text else f"caption {sidecar.name} is empty; "
                                                 "using the template")


def effective_caption(raw: str | None, options: ScanOptions) -> str:
    """The caption training uses: the sidecar or the template, with the trigger word in it."""
    trigger = options.trigger
    text = raw or (options.template if trigger else "photo")
    # `[trigger]` is ai-toolkit's spelling of the placeholder; both are accepted.
    text = " ".join(text.replace("[trigger]", trigger).replace("{trigger}", trigger).split())
    words = text.lower().replace(",", " ").replace(".", " ").split()
    if trigger and trigger.lower() not in words:
        text = f"{trigger}, {text}"
    return text


def write_caption(photo: Path, text: str) -> Path:
    """Save a caption sidecar atomically, keeping the old file's encoding and line endings."""
    sidecar = sidecar_path(photo)
    encoding, newline, trailing = "utf-8", "\n", True
    try:
        old = sidecar.read_bytes()
    except FileNotFoundError:
        old = None
    if old is not None:
        try:
            old_text, encoding = _decode(old)
        except UnicodeDecodeError:
            old_text = ""
        newline = "\r\n" if "\r\n" in old_text else "\n"
        trailing = old_text.endswith(("\n", "\r")) or not old_text
    body = newline.join(text.splitlines()) + (newline if trailing else "")
    if encoding == "utf-8-sig":
        data = codecs.BOM_UTF8 + body.encode("utf-8")
    else:
        data = body.encode(encoding)
    atomic_write_bytes(sidecar, data)
    return sidecar


# ---------------------------------------------------------------------------------------------
# the scan


@dataclass
class ScanResult:
    folder: Path
    records: list[PhotoRecord]
    notes: list[str]  # about the folder as a whole (missing extra, folder gone)

    def usable(self) -> list[PhotoRecord]:
        return [r for r in self.records if r.status != SKIPPED]


class ScanCache:
    """Per-file measurements keyed by relative path, valid while size and mtime match."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, dict] = {}
        if path is not None:
            try:
                blob = json.loads(path.read_text(encoding="utf-8"))
                if blob.get("version") == SCAN_CACHE_VERSION:
                    self.entries = blob["files"]
            except (OSError, ValueError, KeyError, TypeError):
                self.entries = {}  # a damaged cache is rebuilt, never trusted

    def get(self, rel: str, stat: os.stat_result) -> Measurement | None:
        entry = self.entries.get(rel)
        if entry and entry["size"] == stat.st_size and entry["mtime_ns"] == stat.st_mtime_ns:
            return Measurement(**entry)
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
    _register_heif()
    files = [p for p in list_photos(folder, options.recursive) if p not in skip]
    if not heif_available() and any(p.suffix.lower() in HEIF_SUFFIXES for p in files):
        notes.append("HEIC/HEIF/AVIF photos need the heic extra: pip install 'lorabooth[heic]'")
    cache = ScanCache(cache_dir / "scan.json" if cache_dir else None)
    thumbs = cache_dir / "thumbs" if cache_dir else None
    measurements = measure_all(folder, files, cache, thumbs, workers, progress)
    cache.save(measurements)
    records = judge(folder, files, measurements, options)
    return ScanResult(folder, records, notes)


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
            continue  # deleted since it was listed
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
    if m.sha256 in first_by_hash:
        skip.append(f"exact duplicate of {first_by_hash[m.sha256]}")
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
                       effective_caption(caption.text, options),
                       "sidecar" if caption.text else "template", m)


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
            record.reasons.append(f"near-duplicate of {candidates[int(close[0])].path}")
            if record.status == OK:
                record.status = WARN


# ---------------------------------------------------------------------------------------------
# aspect-ratio buckets


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
