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

ORIENTATION = 0x0112  # the EXIF tag
SIDEWAYS = (5, 6, 7, 8)  # orientations stored turned a quarter


class HalfcellImage(Widget):
    """The image fitted into the widget's whole area and centred in it: another image (a key
    in a list of photos) is a repaint, never a new layout of the screen."""

    DEFAULT_CSS = """
    HalfcellImage { width: 1fr; height: 1fr; }
    """

    def __init__(self, path: str | Path, **kwargs):
        super().__init__(**kwargs)
        self.path = Path(path)
        self._upright: tuple[int, int] | None = None  # upright, as the camera's EXIF says
        self._turned = False  # stored a quarter turned from upright (read with _upright)
        self._source = None  # decoded, upright, at least the size last drawn
        self._lines: list[Strip] = []
        self._for: tuple[int, int] | None = None

    def show(self, path: str | Path) -> None:
        """Another image in this widget, where a new widget would be mounted, styled and laid
        out at each key."""
        self.path, self._upright, self._source, self._for = Path(path), None, None, None
        self.refresh()

    def _upright_size(self) -> tuple[int, int]:
        """The picture's size as it is seen: a phone's portrait is stored sideways with an
        EXIF orientation, which training obeys (dataset/files.py), so the preview does too."""
        if self._upright is None:
            from PIL import Image

            with Image.open(self.path) as img:  # the header only
                w, h = img.size
                self._turned = img.getexif().get(ORIENTATION) in SIDEWAYS
            self._upright = (h, w) if self._turned else (w, h)
        return self._upright

    def _image(self, at_least: tuple[int, int]):
        """The picture, upright, decoded no larger than needed: a JPEG is decoded at 1/2 to 1/8
        scale when that still covers `at_least` (six times faster for a phone's photo)."""
        source = self._source
        if source is None or source.width < at_least[0] or source.height < at_least[1]:
            from PIL import Image, ImageOps

            self._upright_size()  # whether it is stored turned, read once a picture
            with Image.open(self.path) as img:
                img.draft("RGB", at_least[::-1] if self._turned else at_least)
                source = ImageOps.exif_transpose(img).convert("RGB")
            self._source = source
        return source

    def fitted(self, width: int, height: int) -> tuple[int, int]:
        """The image's size in cells within `width` x `height` (a cell: two pixels high)."""
        iw, ih = self._upright_size()
        w = max(1, min(width, round(iw / ih * height * 2)))
        return w, max(1, min(height, round(ih / iw * w / 2)))

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
        pixels = self._image((w, h * 2)).resize((w, h * 2), Image.Resampling.BOX).load()
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
