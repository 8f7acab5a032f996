"""The image viewer: one image as large as the terminal allows (kitty or sixel graphics where
the terminal has them, half cells elsewhere; `images` in ui.toml forces one), its full recipe,
and keys to step through the set, reuse the prompt, make it again, make variations, or get the
file's path (printed and put on the clipboard, which reaches a laptop over SSH via OSC 52)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Static

from lorabooth.core.fsutil import json_number
from lorabooth.core.generate.request import loras_as_typed
from lorabooth.core.safetext import plain
from lorabooth.core.store import Output

from .messages import Remake
from .widgets.footer import KeyFooter
from .widgets.preview import Preview


@dataclass(frozen=True)
class Shown:
    """One image and what made it."""

    path: Path
    kind: str  # image | sample
    recipe: dict[str, Any]

    @classmethod
    def of(cls, output: Output) -> Shown:
        """An output from the store, as it recorded itself."""
        return cls(Path(output.path), output.kind, output.recipe)

    @property
    def prompt(self) -> str:
        """The prompt it was made with, or "" (none recorded, or not text in a forged one)."""
        prompt = self.recipe.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    @property
    def loras_text(self) -> str | None:
        """The LoRAs it was made with, as the Queue's LoRAs box takes them ("0.8" for the
        workspace's own, "none", "step-750:0.8 style.safetensors:0.5"); None where that cannot
        be said: a training sample (its LoRA was the run's at that step), a name the box would
        split, a record that is not what lorabooth writes."""
        loras = self.recipe.get("loras")
        if self.kind != "image" or not isinstance(loras, list):
            return None
        refs = []
        for lora in loras:
            name = lora.get("name") if isinstance(lora, dict) else None
            scale = json_number(lora.get("scale")) if isinstance(lora, dict) else None
            if not isinstance(name, str) or scale is None:
                return None
            refs.append((name, scale))
        return loras_as_typed(refs)


def recipe_lines(item: Shown) -> list[str]:
    lines = []
    first = ("prompt", "seed", "step", "loras")  # what people look for, then the rest
    ordered = sorted(item.recipe.items(),
                     key=lambda kv: first.index(kv[0]) if kv[0] in first else len(first))
    for key, value in ordered:
        if key == "loras":
            lines += [f"lora: {lora.get('name')} x{lora.get('scale')}" for lora in value
                      if isinstance(lora, dict)]
        elif key == "step_cache" and not value:
            continue  # every step computed: what every image did before the cache existed
        elif value not in ("", None, [], {}):
            lines.append(f"{key}: {value}")
    return lines


class ViewerScreen(Screen):
    BINDINGS = [
        Binding("escape,q", "close", "Close", id="viewer.close"),
        Binding("right,n,l", "step(1)", "Next", id="viewer.next"),
        Binding("left,p,h", "step(-1)", "Previous", id="viewer.previous"),
        Binding("y", "use_prompt", "Use prompt", id="viewer.use"),
        Binding("m", "remake(False)", "Re-make", id="viewer.remake"),
        Binding("v", "remake(True)", "Variations", id="viewer.variations"),
        Binding("s", "start_from", "Start from", id="viewer.start"),
        Binding("o", "path", "File path", id="viewer.path"),
    ]

    def __init__(self, items: list[Shown], index: int, protocol: str):
        super().__init__()
        self.items = items
        self.index = max(0, min(index, len(items) - 1))
        self.protocol = protocol

    def compose(self) -> ComposeResult:
        yield Static(id="viewer-title")
        with Horizontal(id="viewer-main"):
            yield Preview(self.protocol, id="viewer-image")
            yield Static(id="viewer-recipe")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.show()

    @property
    def item(self) -> Shown | None:
        return self.items[self.index] if self.items else None

    def show(self) -> None:
        item = self.item
        title = self.query_one("#viewer-title", Static)
        recipe = self.query_one("#viewer-recipe", Static)
        if item is None:
            title.update("nothing to show")
            return
        # The folder and name: the whole path is one key away (o), and would be cut here.
        where = f"{item.path.parent.name}/{item.path.name}"
        title.update(plain(f"{self.index + 1}/{len(self.items)} · {item.kind} · {where} · "
                           f"o: full path"))
        self.query_one("#viewer-image", Preview).show(item.path, f"{item.path.name} is gone")
        recipe.update(plain("\n".join(recipe_lines(item)) or "no recipe recorded",
                            keep_newlines=True))

    def action_close(self) -> None:
        self.dismiss()

    def action_step(self, step: int) -> None:
        if self.items:
            self.index = (self.index + step) % len(self.items)
            self.show()

    def action_use_prompt(self) -> None:
        prompt = self.item.prompt if self.item else ""
        if prompt:
            self.leave_for_prompt(prompt)
        else:
            self.notify("this image recorded no prompt", markup=False)

    def action_start_from(self) -> None:
        """This image in the Queue's start-image box, its prompt in the prompt box."""
        if self.item is not None:
            self.leave_for_prompt(self.item.prompt, str(self.item.path))

    def leave_for_prompt(self, prompt: str, start: str = "") -> None:
        """Close, and the Queue's box takes the prompt (its LoRAs box the image's LoRAs), at
        once (see LoraboothApp.use_prompt): keys typed right after must not run this screen's
        `m` and `v`."""
        self.app.pop_screen()
        self.app.use_prompt(prompt, start, loras=self.item.loras_text if self.item else None)

    def action_remake(self, variations: bool) -> None:
        if self.item is not None:
            self.app.post_message(Remake(self.item.recipe, variations))

    def action_path(self) -> None:
        if self.item is not None:
            path = str(self.item.path.resolve())
            self.app.copy_to_clipboard(path)
            self.notify(f"{path} (on the clipboard)", markup=False, timeout=10)
