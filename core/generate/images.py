"""Images on disk: the one PNG writer (atomic, the recipe in a text chunk and a JSON sidecar
beside it, never overwriting) and the one contact-sheet writer (training samples by step, a
job's images side by side)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, PngImagePlugin

from .. import version
from ..fsutil import atomic_open, atomic_write_bytes
from .recipe import RECIPE_KEY, Recipe, output_name

SHEET_BACKGROUND = (24, 24, 24)
LABEL_WIDTH = 96


def png_bytes(image: Image.Image, recipe: Recipe | None = None) -> bytes:
    """PNG-encode `image`, with `recipe` in a text chunk when given."""
    info = PngImagePlugin.PngInfo()
    if recipe is not None:
        info.add_text(RECIPE_KEY, recipe.to_json())
    info.add_text("Software", f"lorabooth {version()}")
    buffer = io.BytesIO()
    # Level 1 compresses ~3x faster than Pillow's default for files ~10% larger: the encode
    # would otherwise cost more than a small image takes to render.
    image.save(buffer, "PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


def save_png(image: Image.Image, path: Path) -> Path:
    """Write `image` to `path` atomically (a sample, a sheet: names the caller owns)."""
    atomic_write_bytes(path, png_bytes(image))
    return path


def save_image(image: Image.Image, recipe: Recipe, folder: Path, job_id: int | None,
               index: int) -> Path:
    """PNG with the recipe in a text chunk, a JSON sidecar beside it; never overwrites."""
    folder.mkdir(parents=True, exist_ok=True)
    data = png_bytes(image, recipe)
    base = output_name(recipe, job_id, index)
    path = folder / base
    n = 1
    while True:
        try:
            # O_EXCL claims the name; the atomic write then fills it.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            break
        except FileExistsError:
            n += 1
            path = folder / base.replace(".png", f"-{n}.png")
    try:
        atomic_write_bytes(path, data)
    except BaseException:  # a full disk: no empty PNG left where the image was to be
        path.unlink(missing_ok=True)
        raise
    with atomic_open(path.with_suffix(".json"), "w", encoding="utf-8") as handle:
        handle.write(json.dumps(json.loads(recipe.to_json()), indent=2, ensure_ascii=False))
    return path


def contact_sheet(rows: Sequence[Sequence[Path]], target: Path, cell: int = 256,
                  labels: Sequence[str] | None = None) -> Path | None:
    """The images of `rows` in a grid, each fitted into a `cell` square; with `labels`, each
    row's label in a column on the left. None when there is nothing to show."""
    from PIL import ImageDraw

    columns = max((len(row) for row in rows), default=0)
    if not columns:
        return None
    left = LABEL_WIDTH if labels else 0
    sheet = Image.new("RGB", (left + columns * cell, len(rows) * cell), SHEET_BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        if labels:
            draw.text((8, r * cell + cell // 2), labels[r], fill=(220, 220, 220))
        for c, path in enumerate(row):
            with Image.open(path) as img:
                img = img.convert("RGB")
                img.thumbnail((cell, cell))
                offset = ((cell - img.width) // 2, (cell - img.height) // 2)
                sheet.paste(img, (left + c * cell + offset[0], r * cell + offset[1]))
    return save_png(sheet, target)


def job_sheet(paths: Sequence[Path], target: Path, recipes: Sequence[Recipe] = (),
              per_row: int = 4) -> Path | None:
    """One job's images side by side, for comparing a sweep or a prompt matrix. Where the
    images' first LoRA differs (checkpoints compared), one row per LoRA, labelled with it as
    the training samples' sheet labels its steps."""
    firsts = [r.loras[0].name if r.loras else "no LoRA" for r in recipes]
    if len(recipes) == len(paths) and len(set(firsts)) > 1:
        groups: dict[str, list[Path]] = {}
        for first, path in zip(firsts, paths, strict=True):
            groups.setdefault(first, []).append(path)
        return contact_sheet(list(groups.values()), target, labels=row_labels(recipes))
    rows = [paths[i:i + per_row] for i in range(0, len(paths), per_row)]
    return contact_sheet(rows, target)


def row_labels(recipes: Sequence[Recipe]) -> list[str]:
    """A comparison sheet's row labels, one per first LoRA in order: its name, and under it
    the checkpoint's validation loss where training measured one."""
    from ..train.checkpoint import recorded_validation

    labels: dict[str, str] = {}
    for recipe in recipes:
        first = recipe.loras[0] if recipe.loras else None
        name = first.name if first else "no LoRA"
        if name not in labels:
            value = recorded_validation(Path(first.path).parent) if first and first.path \
                else None
            labels[name] = lora_label(name) + (f"\nval {value:.4f}" if value is not None
                                               else "")
    return list(labels.values())


def lora_label(name: str) -> str:
    """A LoRA as a sheet's row names it: `run-001/step-000250` is "step-250"; a file, its name
    cut to the label column."""
    from ..train.checkpoint import step_label

    label = step_label(name.rpartition("/")[2]) if name.startswith("run-") else Path(name).name
    return label if len(label) <= 14 else label[:11] + "..."
