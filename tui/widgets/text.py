"""Text that is repainted only when it changes: every repaint is bytes sent over SSH, and the
panes are told the store's state four times a second whether or not anything moved."""

from __future__ import annotations

from rich.cells import cell_len
from textual.visual import VisualType
from textual.widgets import Static


def set_text(widget: Static, content: VisualType) -> None:
    """`widget.update(content)`, unless it already shows exactly that."""
    if widget.content != content:
        widget.update(content)


def fit_middle(text: str, width: int) -> str:
    """`text` in `width` cells, its middle given up for an ellipsis where it is longer: the
    end of an image's name (seed, job, number) is what tells apart images of one prompt."""
    if cell_len(text) <= width:
        return text
    if width <= 1:
        return "…"[:max(width, 0)]
    head = max(1, (width - 1) // 3)
    tail = width - 1 - head
    # Rich's cells, not characters: a wide character counts two.
    start, end = text, text
    while cell_len(start) > head:
        start = start[:-1]
    while cell_len(end) > tail:
        end = end[1:]
    return f"{start}…{end}"


def fit_end(text: str, width: int) -> str:
    """`text` in `width` cells, cut at the end with an ellipsis where it is longer."""
    if cell_len(text) <= width:
        return text
    cut = text
    while cut and cell_len(cut) > width - 1:
        cut = cut[:-1]
    return f"{cut}…" if width >= 1 else ""


def join_fitting(parts: list[str], width: int, sep: str = " · ") -> str:
    """`parts` joined by `sep`, a new line begun instead of a separator wherever the next part
    would not fit in `width` cells: a figure ("ETA 1h 02m") is never broken across lines.
    A width under 1 (not laid out yet) puts them all on one line."""
    lines: list[str] = []
    for part in parts:
        if lines and (width < 1 or cell_len(lines[-1] + sep + part) <= width):
            lines[-1] += sep + part
        else:
            lines.append(part)
    return "\n".join(lines)
