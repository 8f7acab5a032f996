"""Text that is repainted only when it changes: every repaint is bytes sent over SSH, and the
panes are told the store's state four times a second whether or not anything moved."""

from __future__ import annotations

from textual.visual import VisualType
from textual.widgets import Static


def set_text(widget: Static, content: VisualType) -> None:
    """`widget.update(content)`, unless it already shows exactly that."""
    if widget.content != content:
        widget.update(content)
