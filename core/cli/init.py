"""`lorabooth init`: a workspace for a photo folder, and `lorabooth [WORKSPACE]`: open it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import EXIT_OK, UsageError
from ..safetext import plain
from ..workspace import init_workspace, require_workspace
from .console import console
from .open import open_ui


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("workspace", metavar="WORKSPACE")
    p.add_argument("--photos", required=True, metavar="DIR", help="folder of your photos")
    p.add_argument("--model", default="black-forest-labs/FLUX.1-dev",
                   help='"demo", a local diffusers folder, or a repo id in your HF cache')
    p.add_argument("--trigger", default="ohwx", help="the word that names your subject")


def run(args: argparse.Namespace) -> int:
    photos = Path(args.photos)
    if not photos.is_dir():
        raise UsageError(f"--photos {photos}: no such folder")
    ws = init_workspace(Path(args.workspace), photos, model=args.model, trigger=args.trigger)
    out = console()
    out.print(plain(f"created {ws.config_path}"))
    out.print(plain(f"open it with: lorabooth {ws.root}"))
    return EXIT_OK


def run_open(workspace: str | None) -> int:
    ws = require_workspace(workspace or ".")
    ws.config(check_photos=False)  # a broken config is reported before the screen opens
    return open_ui(ws.root)
