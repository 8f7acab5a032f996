"""A live loss curve drawn with braille dots: the raw loss as scattered dots, its smoothed line
as a connected line (told apart without colour), the validation loss of each checkpoint as ●,
y ticks at round values, step ticks, a mark where each resume of the run began, a one-line
legend, and the learning rate as an optional second series.

The data is downsampled to two points per dot column before drawing, so 100k steps cost the
same to draw as 200. The y range snaps to round tick values, so a new step usually changes a
few cells, and only the lines that changed are repainted: over SSH a live plot costs bytes per
step, not a screenful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.segment import Segment
from textual.geometry import Region
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget

BRAILLE = 0x2800
# Dot bit for (column 0..1, row 0..3) inside one braille cell.
DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
SMOOTHING = 0.95  # exponential moving average weight
GUTTER = 8  # y labels: 7 characters and a space
SPARKS = "▁▂▃▄▅▆▇█"


def smooth(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Bias-corrected EMA (TensorBoard's smoothing)."""
    return extend_smooth([], values, weight)


def extend_smooth(done: list[float], values: list[float],
                  weight: float = SMOOTHING) -> list[float]:
    """`smooth(values)`, reusing the first len(done) results already computed."""
    out = list(done)
    norm = 1 - weight ** len(done)
    last = done[-1] * norm if done else 0.0
    for v in values[len(done):]:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def downsample(steps: Sequence[int], values: Sequence[float],
               columns: int) -> list[tuple[int, float]]:
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


def nice_step(span: float, count: int) -> float:
    """A round tick spacing (1, 2, 2.5 or 5 times a power of ten) giving about `count` ticks."""
    raw = max(span, 1e-12) / max(count, 1)
    magnitude = 10.0 ** math.floor(math.log10(raw))  # a float: ints grow without bound
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)


def ticks(lo: float, hi: float, count: int) -> tuple[float, float, list[float]]:
    """The axis range snapped outwards to round ticks, and the ticks. A range no float can
    hold (a loss of 1e308 beside one of -1e308) keeps its ends, unrounded."""
    if not math.isfinite(hi - lo):
        return lo, hi, [lo, hi]
    step = nice_step(hi - lo, count)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    if last == first:
        last += 1
    if last - first > 4 * count + 4:  # rounding gone wrong at float's edge: never a flood
        return lo, hi, [lo, hi]
    return first * step, last * step, [i * step for i in range(first, last + 1)]


def _label(value: float, log: bool) -> str:
    if log:
        return f"{10.0 ** value:.3g}" if -300 < value < 300 else f"1e{value:.0f}"
    return f"{value:.3g}"


class LossPlot(Widget):
    COMPONENT_CLASSES = {"lossplot--raw", "lossplot--smooth", "lossplot--axis",
                         "lossplot--mark", "lossplot--val"}
    DEFAULT_CSS = """
    LossPlot { height: 1fr; min-height: 6; }
    LossPlot > .lossplot--raw { color: $foreground-muted; }
    LossPlot > .lossplot--smooth { color: $accent; text-style: bold; }
    LossPlot > .lossplot--axis { color: $foreground-muted; }
    LossPlot > .lossplot--mark { color: $warning; }
    LossPlot > .lossplot--val { color: $success; text-style: bold; }
    """
    log_scale: reactive[bool] = reactive(False)
    show_lr: reactive[bool] = reactive(False)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.starts: list[int] = []
        self.validation: list[tuple[int, float]] = []
        self.total = 0
        self.empty = "no loss yet: start training (s)"
        self._smoothed: list[float] = []
        self._lines: list[Strip] = []
        self._key: tuple = ()
        self._data: tuple = ()

    def set_data(self, steps: list[int], losses: list[float], total: int, *,
                 lrs: list[float] | None = None, starts: Sequence[int] = (),
                 empty: str | None = None,
                 validation: Sequence[tuple[int, float]] = ()) -> None:
        """New data; repaints only the lines that changed, and nothing if nothing did.
        `validation`: (step, loss) of each measured checkpoint (step 0: the base model)."""
        data = (len(steps), steps[:1], steps[-1:], losses[:1], losses[-1:], total,
                tuple(starts), len(lrs or ()), empty or self.empty, tuple(validation))
        if data == self._data:
            return
        self._data = data
        if len(losses) < len(self._smoothed) or losses[:1] != self.losses[:1] \
                or steps[:1] != self.steps[:1]:
            self._smoothed = []
        self.steps, self.losses, self.total = list(steps), list(losses), total
        self.lrs, self.starts = list(lrs or ()), list(starts)
        self.validation = [p for p in validation if math.isfinite(p[1])]
        self.empty = empty or self.empty
        # The moving average is extended, not recomputed, as rows arrive.
        self._smoothed = extend_smooth(self._smoothed, self.losses)
        self._repaint_changed()

    def watch_log_scale(self) -> None:
        self.refresh()

    def watch_show_lr(self) -> None:
        self.refresh()

    def _view_key(self) -> tuple:
        return (self._data, self.log_scale, self.show_lr, self.size, self.app.theme)

    def _repaint_changed(self) -> None:
        if not self.is_mounted or self.size.width == 0:
            self.refresh()
            return
        old = self._lines
        self._lines, self._key = self.draw(), self._view_key()
        width = self.size.width
        changed = [Region(0, y, width, 1) for y in range(max(len(old), len(self._lines)))
                   if y >= len(old) or y >= len(self._lines) or old[y] != self._lines[y]]
        if changed:
            self.refresh(*changed)

    def render_line(self, y: int) -> Strip:
        key = self._view_key()
        if key != self._key:
            self._lines, self._key = self.draw(), key
        if y < len(self._lines):
            return self._lines[y]
        return Strip.blank(self.size.width)

    # -- drawing ---------------------------------------------------------------------------

    def draw(self) -> list[Strip]:
        """The whole plot as one Strip per line: a few segments per line, not one per dot."""
        axis = self.get_component_rich_style("lossplot--axis")
        if not self.losses:
            return [Strip([Segment(self.empty, axis)])]
        footer = 3 if self.show_lr else 2  # step ticks, legend, learning rate
        width = max(self.size.width - GUTTER, 4)
        height = max(self.size.height - footer, 2)
        columns, rows = width * 2, height * 4
        scale = (lambda v: math.log10(max(v, 1e-8))) if self.log_scale else (lambda v: v)
        raw = [(s, scale(v)) for s, v in downsample(self.steps, self.losses, columns)]
        smoothed = [(s, scale(v)) for s, v in downsample(self.steps, self._smoothed, columns)]
        measured = [(s, scale(v)) for s, v in self.validation]
        values = [v for _, v in raw] + [v for _, v in smoothed] + [v for _, v in measured]
        if not all(math.isfinite(v) for v in values):
            values = [v for v in values if math.isfinite(v)] or [0.0]
        lo, hi, y_ticks = ticks(min(values), max(values), max(1, height // 3))
        first_step = 0 if self.total or self.steps[0] <= 1 else min(
            [self.steps[0]] + [s for s, _ in self.validation])
        last_step = max(self.total, self.steps[-1], first_step + 1)

        def column(step: int) -> int:
            return round((step - first_step) / (last_step - first_step) * (columns - 1))

        def row(value: float) -> int:
            # Halved before subtracting: the span of +-1e308 overflows a float.
            where = (hi / 2 - value / 2) / (hi / 2 - lo / 2) if hi > lo else 0.0
            if not math.isfinite(where):
                return rows - 1
            return min(rows - 1, max(0, round(where * (rows - 1))))

        grid = [[0] * width for _ in range(height)]
        bright = [[False] * width for _ in range(height)]
        # A validation loss is a whole cell (●), drawn over the dots: a few points a run.
        marks = {(min(height - 1, row(v) // 4), min(width - 1, column(s) // 2))
                 for s, v in measured if s >= first_step}

        def dot(x: int, y: int, strong: bool) -> None:
            cell_x, cell_y = min(x // 2, width - 1), min(y // 4, height - 1)
            grid[cell_y][cell_x] |= DOTS[y % 4][x % 2]
            bright[cell_y][cell_x] |= strong

        for step, value in raw:
            dot(column(step), row(value), False)
        previous = None
        for step, value in smoothed:  # a connected line: every dot between two points
            x, y = column(step), row(value)
            if previous is not None:
                px, py = previous
                for i in range(1, max(abs(x - px), abs(y - py))):
                    t = i / max(abs(x - px), abs(y - py))
                    dot(round(px + (x - px) * t), round(py + (y - py) * t), True)
            dot(x, y, True)
            previous = (x, y)

        labels = {}
        for value in y_ticks:
            labels.setdefault(min(height - 1, row(value) // 4), _label(value, self.log_scale))
        raw_style = self.get_component_rich_style("lossplot--raw")
        smooth_style = self.get_component_rich_style("lossplot--smooth")
        val_style = self.get_component_rich_style("lossplot--val")
        lines = []
        for r in range(height):
            segments = [Segment(labels.get(r, "").rjust(GUTTER - 1)[:GUTTER - 1] + " ", axis)]
            run, run_style = [], raw_style
            for c in range(width):
                if (r, c) in marks:
                    style, char = val_style, "●"
                else:  # U+2800 is a blank of the same width
                    style, char = smooth_style if bright[r][c] else raw_style, \
                        chr(BRAILLE + grid[r][c])
                if run and style is not run_style:
                    segments.append(Segment("".join(run), run_style))
                    run = []
                run_style = style
                run.append(char)
            segments.append(Segment("".join(run), run_style))
            lines.append(Strip(segments))
        lines.append(self._step_axis(width, first_step, last_step, column))
        lines.append(self._legend(raw_style, smooth_style, val_style))
        if self.show_lr:
            lines.append(self._lr_line(width))
        return lines

    def _step_axis(self, width: int, first: int, last: int, column) -> Strip:
        """Step ticks at round values, and ▲ where a resume of this run began."""
        axis = self.get_component_rich_style("lossplot--axis")
        mark = self.get_component_rich_style("lossplot--mark")
        cells = [" "] * width
        styles = [axis] * width
        _, _, step_ticks = ticks(first, last, max(1, width // 12))
        for value in step_ticks:
            text = f"{value:g}"
            x = min(column(value) // 2, width - 1)
            start = min(max(0, x - len(text) // 2), width - len(text))
            if value > last or start < 0 or any(c != " " for c in cells[max(0, start - 1):
                                                                        start + len(text) + 1]):
                continue
            cells[start:start + len(text)] = text
        for step in self.starts[1:]:  # the run's own start is the axis' left end
            if step > first:
                x = min(column(step) // 2, width - 1)
                cells[x], styles[x] = "▲", mark
        segments = [Segment(" " * (GUTTER - 1) + "└", axis)]
        segments += [Segment(c, s) for c, s in zip(cells, styles, strict=True)]
        return Strip(segments).simplify()

    def _legend(self, raw_style, smooth_style, val_style) -> Strip:
        axis = self.get_component_rich_style("lossplot--axis")
        mark = self.get_component_rich_style("lossplot--mark")
        segments = [Segment(" " * GUTTER, axis), Segment("⠂⠄ ", raw_style),
                    Segment("raw  ", axis), Segment("⠒⠒ ", smooth_style),
                    Segment("smoothed  ", axis)]
        if self.validation:  # its values are in the checkpoints' list, the best above
            segments += [Segment("● ", val_style), Segment("val  ", axis)]
        if len(self.starts) > 1:
            segments += [Segment("▲ ", mark), Segment("resumed  ", axis)]
        text = f"loss {self.losses[-1]:.4g}"  # the step is in the line above the plot
        segments.append(Segment(text + ("  (log)" if self.log_scale else ""), axis))
        return Strip(segments)

    def _lr_line(self, width: int) -> Strip:
        axis = self.get_component_rich_style("lossplot--axis")
        lrs = [v for v in self.lrs if v is not None and math.isfinite(v)]
        if not lrs:
            return Strip([Segment(" " * GUTTER + "lr: not recorded", axis)])
        points = [v for _, v in downsample(list(range(len(lrs))), lrs, width)]
        top = max(points) or 1.0
        spark = "".join(SPARKS[min(7, int(v / top * 7.999))] for v in points)
        return Strip([Segment(f"{'lr':>{GUTTER - 1}} ", axis),
                      Segment(spark, self.get_component_rich_style("lossplot--smooth")),
                      Segment(f" max {top:.2g}", axis)])
