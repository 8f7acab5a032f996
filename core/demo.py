"""`lorabooth demo`: a ready workspace of the sample photos and the tiny demo model, sized so
training and generation run on a CPU in minutes."""

from __future__ import annotations

import shutil
from pathlib import Path

from lorabooth.sample_photos import SAMPLE_PHOTOS_DIR, TRIGGER

from .config import set_config_value
from .models import DEMO, ensure_demo_model
from .workspace import Workspace, init_workspace

# The tiny model learns at 256 px on a CPU; the real defaults (512-1024 px) would be slow. Its
# weights are random, not pretrained, so it needs a larger learning rate to visibly learn.
DEMO_SETTINGS = {
    "train.resolution": [256],
    "train.learning_rate": 1e-3,
    "train.steps": 300,
    "train.checkpoint_every": 50,
    "sample.every": 100,
    "sample.steps": 8,
    "generate.width": 256,
    "generate.height": 256,
    "generate.steps": 8,
}


def make_demo_workspace(root: Path) -> Workspace:
    """Create (or re-use) the demo workspace at `root`, with its own copy of the photos."""
    ws = Workspace.at(root)
    if not ws.exists():
        photos = ws.root / "photos"
        photos.mkdir(parents=True, exist_ok=True)
        for source in sorted(SAMPLE_PHOTOS_DIR.iterdir()):
            if source.suffix in (".jpg", ".txt"):
                shutil.copy2(source, photos / source.name)
        init_workspace(ws.root, photos, model=DEMO, trigger=TRIGGER)
        for key, value in DEMO_SETTINGS.items():
            set_config_value(ws.root, key, value)
    ensure_demo_model()
    return ws
