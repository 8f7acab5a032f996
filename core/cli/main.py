"""The `lorabooth` command: the parser, and the one place errors become exit codes (0 ok,
1 runtime failure, 2 bad usage or config).

Each command lives in its own module with `add_arguments` and `run`; heavy libraries are
imported inside the commands that need them, so `lorabooth --version`, `lorabooth init` and
opening the UI never wait for torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .. import version
from ..errors import EXIT_FAILURE, LoraboothError, describe_os_error
from .console import error

Command = Callable[[argparse.Namespace], int]


class VersionAction(argparse.Action):
    """argparse's "version" action, asking the version only when --version is given (reading
    the package metadata costs every other command ~20 ms of its start, the UI's included)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 **kwargs: object):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="show lorabooth's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"lorabooth {version()}")
        parser.exit()


# The subcommands' names, known without importing their modules: `lorabooth WORKSPACE`, the
# most common start, opens the UI without them (~0.06 s of the first frame).
COMMANDS = ("init", "demo", "check", "train", "engine", "queue", "generate", "doctor", "plan")


def run_queue(args: argparse.Namespace) -> int:
    from . import engine, generate

    if args.action == "add":
        return generate.run_queue_add(args)
    return engine.run_queue(args)


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    from . import check, demo, doctor, engine, generate, init, plan, train

    parser = argparse.ArgumentParser(
        prog="lorabooth",
        description="A keyboard-driven terminal studio for personal Flux LoRAs.",
        epilog="Run `lorabooth WORKSPACE` to open a workspace in the UI.",
    )
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Command] = {}

    def command(name: str, help: str, add: Callable[[argparse.ArgumentParser], None],
                run: Command) -> None:
        add(sub.add_parser(name, help=help))
        handlers[name] = run

    command("init", "create a workspace for a photo folder", init.add_arguments, init.run)
    command("demo", "a demo workspace (sample photos, tiny model) in the UI",
            demo.add_arguments, demo.run)
    command("check", "validate a photo folder and report what it is short of",
            check.add_arguments, check.run)
    command("train", "train the workspace's LoRA in the foreground", train.add_arguments,
            train.run)
    command("engine", "start, stop or look at the workspace's engine",
            engine.add_engine_arguments, engine.run_engine)
    command("queue", "add to, list, cancel or reorder the workspace's jobs",
            generate.add_queue_arguments, run_queue)
    command("generate", "make images with the workspace's model and LoRAs",
            generate.add_generate_arguments, generate.run_generate)
    command("doctor", "GPU, versions, model weights, terminal support", doctor.add_arguments,
            doctor.run)
    command("plan", "what training and generation would use on this (or a named) GPU",
            plan.add_arguments, plan.run)
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        # `lorabooth WORKSPACE`: a path, not a subcommand.
        if len(argv) > 1:
            build_parser()[0].error("unexpected arguments after the workspace: "
                                    f"{' '.join(argv[1:])}")
        return guarded(lambda: open_workspace(argv[0]))
    from ..models.load import quiet_library_logs

    quiet_library_logs()
    parser, handlers = build_parser()

    def run() -> int:
        args = parser.parse_args(argv)
        if args.command is None:
            return open_workspace(None)
        return handlers[args.command](args)
    return guarded(run)


def open_workspace(path: str | None) -> int:
    from .init import run_open

    return run_open(path)


def guarded(run: Callable[[], int]) -> int:
    """`run`, with every error it raises said in one line and turned into an exit code."""
    try:
        return run()
    except LoraboothError as exc:
        error(str(exc))
        return exc.exit_code
    except OSError as exc:
        error(describe_os_error(exc))
        return EXIT_FAILURE
    except KeyboardInterrupt:
        error("interrupted")
        return 130
    except Exception as exc:  # the last line of defence: a message, not a traceback
        if os.environ.get("LORABOOTH_DEBUG"):
            raise
        error(f"{type(exc).__name__}: {exc}\n(set LORABOOTH_DEBUG=1 for the full traceback)")
        return EXIT_FAILURE
