"""Images as coloured half-cell blocks ('▀': the top pixel in the foreground colour, the bottom
one in the background), which every colour terminal shows.

textual-image does this too, but importing it probes the terminal for Sixel and Kitty support
(~0.2 s over a local tmux, more over SSH). When the user has chosen half cells, or the
terminal has no graphics, this widget draws them with no probe at all.
"""

from __future__ import annotations

from pathlib import Path

from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget


class HalfcellImage(Widget):
    """The image fitted into the widget's whole area and centred in it: another image (a key
    in a list of photos) is a repaint, never a new layout of the screen."""

    DEFAULT_CSS = """
    HalfcellImage { width: 1fr; height: 1fr; }
    """

    def __init__(self, path: str | Path, **kwargs):
        super().__init__(**kwargs)
        self.path = Path(path)
        self._source = None
        self._lines: list[Strip] = []
        self._for: tuple[int, int] | None = None

    def show(self, path: str | Path) -> None:
        """Another image in this widget, where a new widget would be mounted, styled and laid
        out at each key."""
        self.path, self._source, self._for = Path(path), None, None
        self.refresh()

    def _image(self):
        if self._source is None:
            from PIL import Image

            with Image.open(self.path) as img:
                self._source = img.convert("RGB")
        return self._source

    def fitted(self, width: int, height: int) -> tuple[int, int]:
        """The image's size in cells within `width` x `height` (a cell: two pixels high)."""
        img = self._image()
        w = max(1, min(width, round(img.width / img.height * height * 2)))
        return w, max(1, min(height, round(img.height / img.width * w / 2)))

    def render_line(self, y: int) -> Strip:
        size = (self.size.width, self.size.height)
        if size != self._for:
            self._lines = self._draw(*size)
            self._for = size
        return self._lines[y] if y < len(self._lines) else Strip.blank(self.size.width,
                                                                          self.rich_style)

    def _draw(self, width: int, height: int) -> list[Strip]:
        if width < 1 or height < 1:
            return []
        from PIL import Image

        w, h = self.fitted(width, height)
        left, top = (width - w) // 2, (height - h) // 2
        pixels = self._image().resize((w, h * 2), Image.Resampling.BOX).load()
        colors: dict[tuple[int, int, int], Color] = {}  # photos repeat colours: made once
        blank = self.rich_style
        lines = [Strip.blank(width, blank)] * top
        for row in range(h):
            segments = [Segment(" " * left, blank)] if left else []
            for column in range(w):
                top_px, bottom_px = pixels[column, row * 2], pixels[column, row * 2 + 1]
                fg = colors.get(top_px) or colors.setdefault(top_px, Color.from_rgb(*top_px))
                bg = colors.get(bottom_px) or colors.setdefault(bottom_px,
                                                                Color.from_rgb(*bottom_px))
                segments.append(Segment("▀", Style(color=fg, bgcolor=bg)))
            if width - left - w:
                segments.append(Segment(" " * (width - left - w), blank))
            # Runs of one colour pair become one segment: one escape sequence, not one a cell.
            lines.append(Strip(segments, width).simplify())
        return lines
