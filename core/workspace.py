"""A workspace is one folder: `lorabooth.toml`, the photos (or a path to them), and `.lorabooth/`
holding the database, caches, checkpoints, LoRAs and outputs. Moving the folder moves it all."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .config import CONFIG_NAME, Config, load_config, parse_config, render_config
from .errors import UsageError
from .fsutil import atomic_write_text

STATE_DIR = ".lorabooth"
# The LoRA file name diffusers' save_lora_weights writes and load_lora_weights looks for.
LORA_FILE = "pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike[str]) -> Workspace:
        return cls(Path(path).expanduser().resolve())

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    @property
    def db_path(self) -> Path:
        return self.state / "workspace.db"

    @property
    def cache(self) -> Path:
        return self.state / "cache"

    @property
    def checkpoints(self) -> Path:
        return self.state / "checkpoints"

    @property
    def loras(self) -> Path:
        return self.state / "loras"

    @property
    def outputs(self) -> Path:
        return self.state / "outputs"

    @property
    def lora_path(self) -> Path:
        """The workspace's LoRA: the last finished run's, or a promoted checkpoint's."""
        return self.loras / LORA_FILE

    def exists(self) -> bool:
        return self.config_path.is_file()

    def config(self, *, check_photos: bool = True) -> Config:
        return load_config(self.root, check_photos=check_photos)

    def make_dirs(self) -> None:
        for folder in (self.cache, self.checkpoints, self.loras, self.outputs):
            folder.mkdir(parents=True, exist_ok=True)


def require_workspace(path: str | os.PathLike[str]) -> Workspace:
    """The workspace at `path`, or a usage error saying how to make one."""
    ws = Workspace.at(path)
    if not ws.exists():
        raise UsageError(f"{ws.root} is not a lorabooth workspace (no {CONFIG_NAME}).\n"
                         f"Create one: lorabooth init {ws.root} --photos DIR\n"
                         "Or try the demo: lorabooth demo")
    return ws


class WorkspaceExists(UsageError):
    pass


def init_workspace(root: Path, photos: Path, model: str = "black-forest-labs/FLUX.1-dev",
                   trigger: str = "ohwx") -> Workspace:
    """Create `lorabooth.toml` and `.lorabooth/` in `root`; never overwrite an existing config."""
    ws = Workspace.at(root)
    if ws.exists():
        raise WorkspaceExists(f"{ws.config_path} already exists; edit it, or pick another folder")
    photos = photos.expanduser().resolve()
    # A relative path keeps the workspace movable when the photos live inside it.
    try:
        photos_value = photos.relative_to(ws.root).as_posix() or "."
    except ValueError:
        photos_value = str(photos)
    text = render_config(photos=photos_value, model=model, trigger=trigger)
    parse_config(text)  # the values the user passed are checked before anything is written
    ws.make_dirs()
    atomic_write_text(ws.config_path, text)
    return ws
