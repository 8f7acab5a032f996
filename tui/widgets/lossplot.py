"""A live loss curve drawn with braille dots: raw loss (dim) and its smoothed line (bright).

The data is downsampled to two points per dot column before drawing, so 100k steps cost the
same to draw as 200; the owner calls `set_data` as rows arrive and the widget redraws at most
a few times a second.
"""

from __future__ import annotations

import math

from rich.segment import Segment
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

BRAILLE = 0x2800
# Dot bit for (column 0..1, row 0..3) inside one braille cell.
DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
SMOOTHING = 0.95  # exponential moving average weight


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Bias-corrected EMA (TensorBoard's smoothing)."""
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def downsample(steps: list[int], values: list[float], columns: int) -> list[tuple[int, float]]:
    """At most `columns` points: the mean of each run of consecutive values."""
    if len(values) <= columns:
        return list(zip(steps, values, strict=True))
    out = []
    size = len(values) / columns
    for c in range(columns):
        lo, hi = int(c * size), max(int((c + 1) * size), int(c * size) + 1)
        chunk = values[lo:hi]
        out.append((steps[min(hi, len(steps)) - 1], sum(chunk) / len(chunk)))
    return out


class LossPlot(Widget):
    COMPONENT_CLASSES = {"lossplot--raw", "lossplot--smooth", "lossplot--axis"}
    DEFAULT_CSS = """
    LossPlot { height: 1fr; min-height: 6; }
    LossPlot > .lossplot--raw { color: $foreground-muted; }
    LossPlot > .lossplot--smooth { color: $accent; text-style: bold; }
    LossPlot > .lossplot--axis { color: $foreground-muted; }
    """
    log_scale: reactive[bool] = reactive(False)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.total = 0
        self._smoothed: list[float] = []
        self._lines: list[Strip] = []
        self._key: tuple = ()

    def set_data(self, steps: list[int], losses: list[float], total: int) -> None:
        if len(losses) < len(self._smoothed) or losses[:1] != self.losses[:1]:
            self._smoothed = []
        self.steps, self.losses, self.total = steps, losses, total
        # The moving average is extended, not recomputed, as rows arrive.
        self._smoothed = extend_smooth(self._smoothed, losses)
        self.refresh()

    def watch_log_scale(self) -> None:
        self.refresh()

    def render_line(self, y: int) -> Strip:
        key = (len(self.losses), self.total, self.log_scale, self.size, self.app.theme)
        if key != self._key:
            self._lines = self.draw()
            self._key = key
        if y < len(self._lines):
            return self._lines[y]
        return Strip.blank(self.size.width)

    def draw(self) -> list[Strip]:
        """The whole plot as one Strip per line: a few segments per line, not one per dot,
        so that a repaint costs a fraction of a millisecond."""
        width, height = max(self.size.width - 8, 4), max(self.size.height - 1, 2)
        axis = self.get_component_rich_style("lossplot--axis")
        if not self.losses:
            return [Strip([Segment("no loss yet: start training (s)", axis)])]
        raw_style = self.get_component_rich_style("lossplot--raw")
        smooth_style = self.get_component_rich_style("lossplot--smooth")
        columns, rows = width * 2, height * 4
        scale = (lambda v: math.log10(max(v, 1e-8))) if self.log_scale else (lambda v: v)
        raw = downsample(self.steps, self.losses, columns)
        smoothed = downsample(self.steps, self._smoothed, columns)
        values = [scale(v) for _, v in raw] + [scale(v) for _, v in smoothed]
        lo, hi = min(values), max(values)
        span = (hi - lo) or 1.0
        last_step = max(self.total, self.steps[-1], 1)
        first_step = self.steps[0] if self.total == 0 else 0
        grid = [[0] * width for _ in range(height)]
        bright = [[False] * width for _ in range(height)]

        def plot(points: list[tuple[int, float]], strong: bool) -> None:
            for step, value in points:
                x = int((step - first_step) / max(1, last_step - first_step) * (columns - 1))
                y = int((hi - scale(value)) / span * (rows - 1))
                cell_x, cell_y = min(x // 2, width - 1), min(y // 4, height - 1)
                grid[cell_y][cell_x] |= DOTS[y % 4][x % 2]
                bright[cell_y][cell_x] |= strong

        plot(raw, False)
        plot(smoothed, True)
        lines = []
        for r in range(height):
            label = _axis(hi if r == 0 else lo if r == height - 1 else None, self.log_scale)
            segments = [Segment(label.rjust(7) + " ", axis)]
            run, run_bright = [], False
            for c in range(width):
                if run and bright[r][c] != run_bright:
                    segments.append(Segment("".join(run), smooth_style if run_bright
                                            else raw_style))
                    run = []
                run_bright = bright[r][c]
                run.append(chr(BRAILLE + grid[r][c]))  # U+2800 is a blank of the same width
            segments.append(Segment("".join(run), smooth_style if run_bright else raw_style))
            lines.append(Strip(segments))
        caption = f"step {self.steps[-1]}/{self.total or '?'}  loss {self.losses[-1]:.4f}"
        lines.append(Strip([Segment(" " * 8 + caption + ("  (log)" if self.log_scale else ""),
                                    axis)]))
        return lines


def extend_smooth(done: list[float], values: list[float],
                  weight: float = SMOOTHING) -> list[float]:
    """`smooth(values)`, reusing the first len(done) results already computed."""
    if not done:
        return smooth(values, weight)
    out = list(done)
    norm = 1 - weight ** len(done)
    last = done[-1] * norm
    for v in values[len(done):]:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def _axis(value: float | None, log: bool) -> str:
    if value is None:
        return ""
    return f"{10 ** value:.3g}" if log else f"{value:.3g}"
