"""Per-user UI settings (theme, image protocol, remapped keys), remembered across workspaces in
`~/.config/lorabooth/ui.toml` (LORABOOTH_CONFIG_DIR overrides the folder).

    theme = "lorabooth-light"
    images = "halfcell"          # auto | kitty | sixel | halfcell | unicode
    [keys]
    "train.start" = "S"          # binding id = keys (comma-separated)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_config_path

from lorabooth.core.fsutil import NotRegular, atomic_write_text, read_regular_file

IMAGE_PROTOCOLS = ("auto", "kitty", "sixel", "halfcell", "unicode")
SETTINGS_LIMIT = 2**20  # a settings file of ours is a few hundred bytes


def settings_path() -> Path:
    folder = os.environ.get("LORABOOTH_CONFIG_DIR")
    return (Path(folder) if folder else user_config_path("lorabooth")) / "ui.toml"


@dataclass
class UISettings:
    theme: str = "lorabooth-dark"
    images: str = "auto"
    keys: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def load(cls) -> UISettings:
        """The file's settings, with LORABOOTH_IMAGES over its `images` (also where there is
        no file: the way to skip the terminal probe on a slow link, for one session)."""
        path = settings_path()
        settings = cls()
        try:
            data = tomllib.loads(read_settings(path))
        except FileNotFoundError:
            data = {}
        except RecursionError:  # brackets nested past tomllib's recursion
            settings.problems.append(f"{path}: nested too deeply to be settings; using defaults")
            data = {}
        except (OSError, ValueError) as exc:  # a FIFO there is refused, never opened
            settings.problems.append(f"{path}: {exc}; using defaults")
            data = {}
        theme = data.get("theme")
        if isinstance(theme, str):
            settings.theme = theme
        if forced := os.environ.get("LORABOOTH_IMAGES"):
            images, where = forced, "LORABOOTH_IMAGES"
        else:
            images, where = data.get("images", "auto"), f"{path}: images"
        if images in IMAGE_PROTOCOLS:
            settings.images = images
        else:
            settings.problems.append(f"{where} = {images!r} is not one of "
                                     f"{', '.join(IMAGE_PROTOCOLS)}")
        keys = data.get("keys", {})
        if isinstance(keys, dict):
            settings.keys = {str(k): str(v) for k, v in keys.items()}
        return settings

    def save_theme(self, theme: str) -> None:
        """Remember the theme, keeping the rest of the file as the user wrote it."""
        import tomlkit  # only here: it keeps the user's comments, and costs the start 5 ms

        path = settings_path()
        self.theme = theme
        try:
            doc = tomlkit.parse(read_settings(path))
        except NotRegular:
            return  # a FIFO or a device in its place is left alone: the choice lasts the session
        except (OSError, ValueError):
            doc = tomlkit.document()
        doc["theme"] = theme
        try:
            atomic_write_text(path, tomlkit.dumps(doc))
        except OSError:
            pass  # a read-only home: the choice lasts this session


def read_settings(path: Path) -> str:
    data, _ = read_regular_file(path, SETTINGS_LIMIT, "a settings file")
    return data.decode("utf-8")
