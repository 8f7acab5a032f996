"""Image previews: Kitty or Sixel graphics where the terminal has them, half-cell blocks
elsewhere. The protocol can be forced (settings `images = ...`) because detection probes can
time out over a slow SSH link."""

from __future__ import annotations

from pathlib import Path

from textual.containers import Container
from textual.widgets import Static

from lorabooth.core.safetext import plain

_KINDS = {"kitty": "TGPImage", "sixel": "SixelImage", "halfcell": "HalfcellImage",
          "unicode": "UnicodeImage", "auto": "Image"}


def image_class(protocol: str):
    if protocol == "halfcell":
        from .halfcell import HalfcellImage

        return HalfcellImage
    import textual_image.widget as widgets

    return getattr(widgets, _KINDS.get(protocol, "Image"))


class Preview(Container):
    """Shows one image file, or a line of text when there is none."""

    DEFAULT_CSS = """
    Preview { height: 1fr; align: center middle; }
    Preview > Static { width: 100%; color: $foreground-muted; text-align: center; }
    Preview > .image { width: auto; height: 100%; max-width: 100%; }
    Preview > HalfcellImage.image { width: 100%; height: 100%; }
    """

    def __init__(self, protocol: str = "auto", **kwargs):
        super().__init__(**kwargs)
        self.protocol = protocol
        self.path: Path | None = None

    def compose(self):
        yield Static("no image", id="preview-empty")

    def show(self, path: Path | None, note: str = "no image") -> None:
        if path == self.path and path is not None:
            return
        self.path = path
        shown = self.query(".image")
        if path is not None and path.is_file() and shown and hasattr(shown[0], "show"):
            shown[0].show(path)
            return
        self.remove_children()
        if path is None or not path.is_file():
            self.mount(Static(plain(note)))
            return
        try:
            self.mount(image_class(self.protocol)(str(path), classes="image"))
        except Exception as exc:  # a damaged image must not take the pane down
            self.mount(Static(plain(f"cannot show {path.name}: {exc}")))
