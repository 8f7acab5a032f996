"""`lorabooth train`: training in the foreground, with a progress bar on a terminal and plain
lines when piped. Ctrl-C finishes the step, writes a checkpoint, and exits (before the first
step, while the model loads, it quits at once). `--detach` hands the run to the engine instead."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable

from ..config import MAX_STEPS
from ..errors import EXIT_OK, UsageError
from ..safetext import plain
from ..workspace import require_workspace
from .args import whole
from .console import console, train_view


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--steps", type=whole(1, MAX_STEPS), default=None,
                   help="steps in all (default: config)")
    p.add_argument("--resume", action="store_true",
                   help="continue a run from its last checkpoint (default: the latest run)")
    p.add_argument("--run", default=None, metavar="RUN",
                   help="with --resume: the run to continue (run-001, run-002, ...)")
    p.add_argument("--detach", action="store_true",
                   help="hand the run to the engine and return at once")


def run(args: argparse.Namespace) -> int:
    ws = require_workspace(args.workspace)
    if args.run is not None and not args.resume:
        raise UsageError("--run names the run to continue: use it with --resume")
    config = ws.config()  # a broken config is reported now, not as a failed job later
    if args.detach:
        from .engine import detach_training

        return detach_training(ws, args.steps, args.resume, args.run)
    from ..engine.terminal_job import TerminalJob
    from ..train.trainer import Trainer

    out = console()
    stop = {"asked": False}

    def on_interrupt(signum, frame) -> None:
        if record.trainer is None or record.trainer.step == 0:
            # Still loading or encoding (minutes for a full-size model): nothing to save yet,
            # and every cache file is written atomically, so quit now rather than after a step.
            out.print(plain("interrupted before the first step: nothing to save", "yellow"))
            raise KeyboardInterrupt
        if stop["asked"]:
            raise KeyboardInterrupt
        stop["asked"] = True
        out.print(plain("stopping after this step; writing a checkpoint "
                        "(Ctrl-C again to quit at once)", "yellow"))

    def say(text: str) -> None:
        out.print(plain(text, "yellow"))

    def note(text: str) -> None:
        out.print(plain(text, "dim"))

    # The run is a job in the store, so the UI (`lorabooth WORKSPACE`) shows it live.
    record = TerminalJob(ws, warn=say, interrupted=lambda: stop["asked"], say=say,
                         note=note)
    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        view = train_view(out, args.steps or config.train.steps)
        trainer = Trainer(ws, config, on_step=chained(view.step, record.on_step),
                          should_stop=record.should_stop, log=chained(note, record.log),
                          on_sample=record.on_sample, on_validation=record.on_validation,
                          on_run_start=record.on_run_start, on_run_end=record.on_run_end)
        record.trainer = trainer
        with view:
            result = trainer.run(steps=args.steps, resume=args.resume, run=args.run)
    finally:
        signal.signal(signal.SIGINT, previous)
    if not trainer.team.main:  # under `accelerate launch` the first process reports
        return EXIT_OK
    if result.stopped:
        out.print(plain(f"stopped at step {result.step} of {result.run}; resume with: "
                        f"lorabooth train {ws.root} --resume --run {result.run}"))
        return EXIT_OK
    out.print(plain(f"done: step {result.step}, LoRA written to {result.lora_path}"))
    return EXIT_OK


def chained(*calls: Callable) -> Callable:
    def call(*args) -> None:
        for each in calls:
            each(*args)
    return call
