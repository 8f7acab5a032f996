"""`lorabooth demo`: a ready workspace of the sample photos and the tiny demo model, sized so
training and generation run on a CPU in minutes."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from lorabooth.sample_photos import SAMPLE_PHOTOS_DIR, TRIGGER

from ..config import set_config_value
from ..errors import EXIT_OK
from ..models.registry import DEMO, DEMO_KLEIN
from ..models.resolve import resolve_model
from ..safetext import plain
from ..workspace import Workspace, init_workspace
from .console import console
from .open import open_ui

# The demo model was pre-trained at 128 px on drawn scenes (core/models/demo_train.py). A LoRA
# on every Linear of its blocks, four photos a step at a rate that suits a model this small,
# decaying to the end: on a 2-core CPU the subject appears within the run (about two minutes
# with its samples), where one photo a step or the attention alone left soft blobs. The sample
# prompts read like the captions, which is what a text encoder this small can follow.
DEMO_SETTINGS = {
    "train.resolution": [128],
    "train.targets": "all-linear",
    "train.rank": 16,
    "train.batch_size": 4,
    "train.learning_rate": 2e-3,
    "train.lr_schedule": "cosine",
    "train.steps": 3000,
    "train.checkpoint_every": 750,
    "sample.every": 750,
    "sample.steps": 20,
    "sample.prompts": [
        "photo of {trigger}, a round teal plush creature, in a photo studio, plain gray "
        "backdrop, soft light",
        "photo of {trigger}, a round teal plush creature, wearing a red scarf, on a sunny "
        "beach, blue sky and sand",
        "photo of {trigger}, a round teal plush creature, in a green forest, soft light",
    ],
    "generate.width": 128,
    "generate.height": 128,
    "generate.steps": 20,
}


# The klein demo is FLUX.2 [klein]'s real classes with tiny *random* weights: it runs every
# klein path (Qwen3 text, the FLUX.2 VAE, true CFG) in seconds, but draws noise, not the
# subject; the FLUX.1 demo, pre-trained, is the one that shows a subject being learned.
KLEIN_DEMO_SETTINGS = {
    "train.batch_size": 1,
    "train.learning_rate": 1e-3,
    "train.steps": 300,
    "train.checkpoint_every": 100,
    "sample.every": 100,
    "generate.guidance": 4.0,
}
DEMO_MODELS = {"flux1": DEMO, "flux2": DEMO_KLEIN, "klein": DEMO_KLEIN}


def make_demo_workspace(root: Path, family: str = "flux1") -> Workspace:
    """Create (or re-use) the demo workspace at `root`, with its own copy of the photos, on
    the tiny model of `family`."""
    ws = Workspace.at(root)
    if not ws.exists():
        photos = ws.root / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        for source in sorted(SAMPLE_PHOTOS_DIR.iterdir()):
            # Never over a file already there: a folder the user had keeps their captions.
            if source.suffix in (".jpg", ".txt") and not (photos / source.name).exists():
                shutil.copy2(source, photos / source.name)
        init_workspace(ws.root, photos, model=DEMO_MODELS[family], trigger=TRIGGER)
        extra = KLEIN_DEMO_SETTINGS if DEMO_MODELS[family] == DEMO_KLEIN else {}
        for key, value in {**DEMO_SETTINGS, **extra}.items():
            set_config_value(ws.root, key, value)
    resolve_model(DEMO_MODELS[family])  # built on first use
    return ws


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", default="lorabooth-demo", metavar="DIR")
    p.add_argument("--no-ui", action="store_true", help="create the workspace and exit")
    p.add_argument("--family", choices=sorted(DEMO_MODELS), default="flux1",
                   help="flux1: the pre-trained tiny FLUX.1 that learns the subject (default); "
                        "flux2 (or klein): a tiny random FLUX.2 [klein] that runs every klein "
                        "path")


def run(args: argparse.Namespace) -> int:
    ws = make_demo_workspace(Path(args.dir), args.family)
    out = console()
    out.print(plain(f"demo workspace ready: {ws.root}"))
    if args.no_ui or not (sys.stdin.isatty() and sys.stdout.isatty()):
        out.print(plain(f"open it with: lorabooth {ws.root}"))
        return EXIT_OK
    return open_ui(ws.root)
