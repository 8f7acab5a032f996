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
    DEFAULT_CSS = """
    HalfcellImage { width: auto; height: auto; }
    """

    def __init__(self, path: str | Path, **kwargs):
        super().__init__(**kwargs)
        self.path = Path(path)
        self._source = None
        self._lines: list[Strip] = []
        self._for: tuple[int, int] | None = None

    def _image(self):
        if self._source is None:
            from PIL import Image

            with Image.open(self.path) as img:
                self._source = img.convert("RGB")
        return self._source

    def get_content_width(self, container, viewport) -> int:
        img = self._image()
        height = max(1, container.height)
        return max(1, min(container.width, round(img.width / img.height * height * 2)))

    def get_content_height(self, container, viewport, width: int) -> int:
        img = self._image()
        return max(1, min(container.height, round(img.height / img.width * width / 2)))

    def render_line(self, y: int) -> Strip:
        size = (self.size.width, self.size.height)
        if size != self._for:
            self._lines = self._draw(*size)
            self._for = size
        return self._lines[y] if y < len(self._lines) else Strip.blank(self.size.width)

    def _draw(self, width: int, height: int) -> list[Strip]:
        if width < 1 or height < 1:
            return []
        from PIL import Image

        pixels = self._image().resize((width, height * 2), Image.Resampling.BOX).load()
        lines = []
        for row in range(height):
            segments = []
            for column in range(width):
                top, bottom = pixels[column, row * 2], pixels[column, row * 2 + 1]
                segments.append(Segment("▀", Style(color=Color.from_rgb(*top),
                                                   bgcolor=Color.from_rgb(*bottom))))
            lines.append(Strip(segments, width))
        return lines
