"""`lorabooth train`: training in the foreground, with a progress bar on a terminal and plain
lines when piped. Ctrl-C finishes the step, writes a checkpoint, and exits."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

from rich.console import Console

from .safetext import plain
from .train import StepMetrics, Trainer, TrainingError
from .workspace import Workspace

PLAIN_EVERY = 10  # steps between lines when the output is not a terminal


def run_train(root: Path, *, steps: int | None, resume: bool) -> int:
    from .errors import EXIT_FAILURE, EXIT_OK, UsageError

    ws = Workspace.at(root)
    if not ws.exists():
        raise UsageError(f"{ws.root} is not a lorabooth workspace (no lorabooth.toml)")
    if steps is not None and steps < 1:
        raise UsageError("--steps must be at least 1")
    config = ws.config()
    out = Console(highlight=False, soft_wrap=True)
    stop = {"asked": False}

    def on_interrupt(signum, frame) -> None:
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        out.print(plain("stopping after this step; writing a checkpoint "
                        "(Ctrl-C again to quit at once)", "yellow"))

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        view = _view(out, steps or config.train.steps)
        trainer = Trainer(ws, config, on_step=view.step, should_stop=lambda: stop["asked"],
                          log=lambda text: out.print(plain(text, "dim")))
        with view:
            result = trainer.run(steps=steps, resume=resume)
    except TrainingError as exc:
        out.print(plain(f"lorabooth: {exc}", "red"))
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGINT, previous)
    if not trainer.team.main:  # under `accelerate launch` the first process reports
        return EXIT_OK
    if result.stopped:
        out.print(plain(f"stopped at step {result.step}; resume with: "
                        f"lorabooth train {ws.root} --resume"))
        return EXIT_OK
    out.print(plain(f"done: step {result.step}, LoRA written to {result.lora_path}"))
    return EXIT_OK


class _PlainView:
    def __init__(self, out: Console, total: int):
        self.out, self.total, self.start = out, total, time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def step(self, m: StepMetrics) -> None:
        if m.step % PLAIN_EVERY == 0 or m.step == m.total:
            self.out.print(plain(f"step {m.step}/{m.total} loss {m.loss:.4f} "
                                 f"lr {m.lr:.2e} {m.seconds:.3f} s/step"))


class _BarView(_PlainView):
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
        self.progress.update(self.task, completed=m.step, total=m.total, loss=f"{m.loss:.4f}",
                             speed=f"{m.seconds:.3f}")


def _view(out: Console, total: int) -> _PlainView:
    return _BarView(out, total) if sys.stdout.isatty() else _PlainView(out, total)
