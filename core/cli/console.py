"""The command line's output: one way to make a Console, the error line, and the progress views
(a bar on a terminal, plain lines when piped)."""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import TYPE_CHECKING

from rich.console import Console

from ..safetext import plain

if TYPE_CHECKING:
    from ..train.trainer import StepMetrics

PLAIN_EVERY = 10  # training steps between lines when the output is not a terminal


def console(stderr: bool = False) -> Console:
    # highlight=False: numbers and paths in user text must not be restyled.
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    console(stderr=True).print(plain("lorabooth: ", "bold red")
                               + plain(message, keep_newlines=True))


def say(message: str, style: str = "") -> None:
    console().print(plain(message, style, keep_newlines=True))


class PlainTrainView:
    """Training progress as a line every PLAIN_EVERY steps. Its loss and s/step are the means
    of the steps since the line before: one step's vary several times over between aspect
    buckets and resolutions (0.09 to 0.68 s on the demo), which a single step's figure hid."""

    def __init__(self, out: Console, total: int):
        self.out, self.total, self.start = out, total, time.monotonic()
        self.window: deque[tuple[float, float]] = deque(maxlen=PLAIN_EVERY)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def means(self, m: StepMetrics) -> tuple[float, float]:
        """The mean loss and seconds a step over the window, `m` included."""
        self.window.append((m.loss, m.seconds))
        losses, seconds = zip(*self.window, strict=True)
        return sum(losses) / len(losses), sum(seconds) / len(seconds)

    def step(self, m: StepMetrics) -> None:
        loss, seconds = self.means(m)
        if m.step % PLAIN_EVERY == 0 or m.step == m.total:
            self.window.clear()
            self.out.print(plain(f"step {m.step}/{m.total} loss {loss:.4f} "
                                 f"lr {m.lr:.2e} {seconds:.3f} s/step"))


class BarTrainView(PlainTrainView):
    """Training progress as a Rich progress bar with loss, speed (means over the last
    PLAIN_EVERY steps) and ETA."""

    def __init__(self, out: Console, total: int):
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        super().__init__(out, total)
        self.progress = Progress(TextColumn("step {task.completed}/{task.total}"), BarColumn(),
                                 TextColumn("loss {task.fields[loss]}"),
                                 TextColumn("{task.fields[speed]} s/step"),
                                 TextColumn("ETA"), TimeRemainingColumn(), console=out)
        self.task = self.progress.add_task("train", total=total, loss="-", speed="-")

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def step(self, m: StepMetrics) -> None:
        loss, seconds = self.means(m)
        self.progress.update(self.task, completed=m.step, total=m.total, loss=f"{loss:.4f}",
                             speed=f"{seconds:.3f}")


def train_view(out: Console, total: int) -> PlainTrainView:
    return BarTrainView(out, total) if sys.stdout.isatty() else PlainTrainView(out, total)
