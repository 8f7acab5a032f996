"""The `lorabooth` command. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or config.

Heavy libraries are imported inside the commands that need them, so `lorabooth --version`,
`lorabooth init` and opening the UI never wait for torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.console import Console

from . import __version__
from .config import ConfigError
from .errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError, describe_os_error
from .gencli import add_request_arguments
from .models import ModelNotFound
from .safetext import plain
from .store import StoreError


def _console(stderr: bool = False) -> Console:
    # highlight=False: numbers and paths in user text must not be restyled.
    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    console = _console(stderr=True)
    console.print(plain("lorabooth: ", "bold red") + plain(message, keep_newlines=True))


# ---------------------------------------------------------------------------------------------
# commands


def cmd_init(args: argparse.Namespace) -> int:
    from .workspace import WorkspaceExists, init_workspace

    photos = Path(args.photos)
    if not photos.is_dir():
        raise UsageError(f"--photos {photos}: no such folder")
    try:
        ws = init_workspace(Path(args.workspace), photos, model=args.model, trigger=args.trigger)
    except WorkspaceExists as exc:
        raise UsageError(str(exc)) from None
    out = _console()
    out.print(plain(f"created {ws.config_path}"))
    out.print(plain(f"open it with: lorabooth {ws.root}"))
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import FAIL, as_json, run_checks

    checks = run_checks()
    if args.json:
        print(json.dumps(as_json(checks), indent=2))
    else:
        _print_checks(checks)
    return EXIT_FAILURE if any(c.status == FAIL for c in checks) else EXIT_OK


def _print_checks(checks) -> None:
    out = _console()
    marks = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "bold red"),
             "info": ("·", "dim")}
    if not out.is_terminal:
        for c in checks:
            tail = f"  ({c.advice})" if c.advice else ""
            out.print(plain(f"{c.section:9} {c.name:28} {c.status:5} {c.value}{tail}"))
        return
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_column()
    table.add_column()
    section = ""
    for c in checks:
        mark, style = marks[c.status]
        value = plain(c.value)
        if c.advice:
            value.append_text(plain(f"\n{c.advice}", "italic dim"))
        table.add_row(plain(c.section if c.section != section else ""), plain(mark, style),
                      plain(c.name), value)
        section = c.section
    out.print(table)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import make_demo_workspace

    ws = make_demo_workspace(Path(args.dir))
    out = _console()
    out.print(plain(f"demo workspace ready: {ws.root}"))
    if args.no_ui or not (sys.stdin.isatty() and sys.stdout.isatty()):
        out.print(plain(f"open it with: lorabooth {ws.root}"))
        return EXIT_OK
    return _open_ui(ws.root)


def cmd_open(args: argparse.Namespace) -> int:
    from .workspace import Workspace

    ws = Workspace.at(args.workspace or ".")
    if not ws.exists():
        raise UsageError(f"{ws.root} is not a lorabooth workspace (no lorabooth.toml).\n"
                         f"Create one: lorabooth init {ws.root} --photos DIR\n"
                         "Or try the demo: lorabooth demo")
    ws.config(check_photos=False)  # a broken config is reported before the screen opens
    return _open_ui(ws.root)


def _open_ui(root: Path) -> int:
    # The only place core/ reaches Textual, and only when the UI is asked for.
    from lorabooth.tui.app import run_app

    return run_app(root)


def cmd_check(args: argparse.Namespace) -> int:
    from .checkview import run_check

    return run_check(Path(args.photos), as_json=args.json, recursive=args.recursive,
                     resolution=args.resolution, trigger=args.trigger)


def cmd_train(args: argparse.Namespace) -> int:
    if args.detach:
        from .enginecli import detach_training

        return detach_training(Path(args.workspace), args.steps, args.resume)
    from .traincli import run_train

    return run_train(Path(args.workspace), steps=args.steps, resume=args.resume)


def cmd_engine(args: argparse.Namespace) -> int:
    from .enginecli import run_engine

    return run_engine(Path(args.workspace), args.action, args.json)


def cmd_queue(args: argparse.Namespace) -> int:
    if args.action == "add":
        from .gencli import run_queue_add

        if not args.rest:
            raise UsageError("queue add needs a prompt")
        return run_queue_add(Path(args.workspace), " ".join(args.rest), args)
    from .enginecli import run_queue

    numbers = []
    for text in args.rest:
        if not text.lstrip("-").isdigit():
            raise UsageError(f"queue {args.action}: {text!r} is not a number")
        numbers.append(int(text))
    job_id = numbers[0] if numbers else None
    position = numbers[1] if len(numbers) > 1 else None
    return run_queue(Path(args.workspace), args.action, job_id, position, args.json)


def cmd_generate(args: argparse.Namespace) -> int:
    from .gencli import run_generate

    return run_generate(Path(args.workspace), args.prompt, args)


Command = Callable[[argparse.Namespace], int]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    parser = argparse.ArgumentParser(
        prog="lorabooth",
        description="A keyboard-driven terminal studio for personal Flux LoRAs.",
        epilog="Run `lorabooth WORKSPACE` to open a workspace in the UI.",
    )
    parser.add_argument("--version", action="version", version=f"lorabooth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    handlers: dict[str, Command] = {}

    p = sub.add_parser("init", help="create a workspace for a photo folder")
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--photos", required=True, metavar="DIR", help="folder of your photos")
    p.add_argument("--model", default="black-forest-labs/FLUX.1-dev",
                   help='"demo", a local diffusers folder, or a repo id in your HF cache')
    p.add_argument("--trigger", default="ohwx", help="the word that names your subject")
    handlers["init"] = cmd_init

    p = sub.add_parser("demo", help="a demo workspace (sample photos, tiny model) in the UI")
    p.add_argument("dir", nargs="?", default="lorabooth-demo", metavar="DIR")
    p.add_argument("--no-ui", action="store_true", help="create the workspace and exit")
    handlers["demo"] = cmd_demo

    p = sub.add_parser("check", help="validate a photo folder and report what it is short of")
    p.add_argument("photos", metavar="PHOTOS_DIR")
    p.add_argument("--json", action="store_true", help="one JSON record per file")
    p.add_argument("--recursive", action="store_true", help="include sub-folders")
    p.add_argument("--resolution", type=int, default=None,
                   help="smallest training resolution (default: the workspace's, else 512)")
    p.add_argument("--trigger", default=None, help="trigger word (default: the workspace's)")
    handlers["check"] = cmd_check

    p = sub.add_parser("train", help="train the workspace's LoRA in the foreground")
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--steps", type=int, default=None, help="steps in all (default: config)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--detach", action="store_true",
                   help="hand the run to the engine and return at once")
    handlers["train"] = cmd_train

    p = sub.add_parser("engine", help="start, stop or look at the workspace's engine")
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--json", action="store_true", help="status as JSON")
    handlers["engine"] = cmd_engine

    p = sub.add_parser("queue", help="list, cancel or reorder the workspace's jobs")
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("action", choices=["add", "list", "cancel", "move"])
    p.add_argument("rest", nargs="*", metavar="PROMPT | ID [POS]")
    add_request_arguments(p)
    handlers["queue"] = cmd_queue

    p = sub.add_parser("generate", help="make images with the workspace's model and LoRAs")
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("prompt", nargs="?", metavar="PROMPT")
    p.add_argument("--from-image", default=None, metavar="PNG",
                   help="make an image again from the recipe stored in it")
    add_request_arguments(p)
    handlers["generate"] = cmd_generate

    p = sub.add_parser("doctor", help="GPU, versions, model weights, terminal support")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    handlers["doctor"] = cmd_doctor
    return parser, handlers


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, handlers = build_parser()
    try:
        if argv and not argv[0].startswith("-") and argv[0] not in handlers:
            # `lorabooth WORKSPACE`: a path, not a subcommand.
            if len(argv) > 1:
                parser.error(f"unexpected arguments after the workspace: {' '.join(argv[1:])}")
            return cmd_open(argparse.Namespace(workspace=argv[0]))
        args = parser.parse_args(argv)
        if args.command is None:
            return cmd_open(argparse.Namespace(workspace=None))
        return handlers[args.command](args)
    except (UsageError, ConfigError, ModelNotFound) as exc:
        error(str(exc))
        return EXIT_USAGE
    except StoreError as exc:
        error(str(exc))
        return EXIT_FAILURE
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


if __name__ == "__main__":
    sys.exit(main())
