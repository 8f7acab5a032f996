"""Finding photo files in a folder and decoding any of them upright as 8-bit RGB."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp"}
HEIF_SUFFIXES = {".heic", ".heif", ".avif"}
PARTIAL_SUFFIXES = (".part", ".crdownload", ".tmp", ".download", ".partial", ".swp")
TOOL_DIRS = {".lorabooth", "__pycache__"}

# Above this many pixels a file is treated as a decompression bomb (Pillow's own error level).
MAX_PIXELS = 2 * 89_478_485
MAX_FILE_BYTES = 200 * 2**20  # no photo is this large; /dev/zero behind a link would be


NEUTRAL_BACKGROUND = (128, 128, 128)


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


def heif_available() -> bool:
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        return False
    return True


def register_heif() -> None:
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
