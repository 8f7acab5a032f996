"""lorabooth's own commands in the command palette (ctrl+p): training, the queue, the loss
plot, images, the workspace's model and presets. Each runs the same action as its key, in its
pane, so the palette is a way to find a key as much as to press one."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.fuzzy import Matcher

from lorabooth.core.safetext import printable

# (name, pane, action in that pane, help)
PANE_COMMANDS = [
    ("Train: start training", "train", "start", "s in the Train pane"),
    ("Train: pause or resume training", "train", "pause", "p in the Train pane"),
    ("Train: stop training (a checkpoint is kept)", "train", "stop", "x in the Train pane"),
    ("Train: promote the selected checkpoint", "train", "promote", "P in the Train pane"),
    ("Train: edit the settings", "train", "edit", "e in the Train pane"),
    ("Train: open the samples", "train", "open_samples", "o in the Train pane"),
    ("Train: compare the checkpoints on a prompt", "train", "compare", "c in the Train pane"),
    ("Loss plot: toggle log scale", "train", "log_scale", "l in the Train pane"),
    ("Loss plot: toggle the learning rate", "train", "learning_rate", "r in the Train pane"),
    ("Queue: type a prompt", "queue", "focus_prompt", "i in the Queue pane"),
    ("Queue: pause or run the queue", "queue", "pause_queue", "space in the Queue pane"),
    ("Queue: open the selected job's images", "queue", "open", "enter in the Queue pane"),
    ("Gallery: open the selected image", "gallery", "open", "enter in the Gallery pane"),
    ("Dataset: rescan the photos", "dataset", "rescan", "r in the Dataset pane"),
    ("Dataset: edit the selected caption", "dataset", "edit_caption", "e in the Dataset pane"),
]


# Classes a person LoRA's subject commonly belongs to; any other is written in lorabooth.toml.
CLASSES = {"person": "people", "woman": "women", "man": "men", "child": "children",
           "dog": "dogs", "cat": "cats"}


def preservation_commands(app) -> list[tuple[str, Callable[[], object], str]]:
    """Turning train.preserve_class on with a common class, or off, from the palette."""
    current = app.preserved_class()
    if current is None:  # the file has a problem; the Train pane says which
        return []
    set_class = partial(app.set_workspace_value, "train.preserve_class")
    if current:
        return [(f"Train: stop preserving the class {printable(current)}", partial(set_class, ""),
                 "train.preserve_class = \"\" (steps take their plain time again)")]
    return [(f"Train: preserve the class {word} (keep the subject off other {many})",
             partial(set_class, word),
             f"train.preserve_class = \"{word}\": each step also holds captions naming a "
             f"{word} to the base model's output, ~2.3x the step time")
            for word, many in CLASSES.items()]


class LoraboothCommands(Provider):
    def commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.app
        found: list[tuple[str, Callable[[], object], str]] = [
            (name, partial(app.run_in_pane, pane, action), help_text)
            for name, pane, action, help_text in PANE_COMMANDS]
        for model in app.model_choices():
            found.append((f"Workspace: use the model {model}",
                          partial(app.set_workspace_value, "model", model),
                          "writes model = ... in lorabooth.toml (the next job uses it)"))
        found += preservation_commands(app)
        found.append(("Engine: restart", app.restart_engine,
                      "stops the engine (a frozen one is killed; training resumes from its last "
                      "checkpoint) and starts a fresh one"))
        for preset in app.preset_names():
            found.append((f"Queue: a prompt with the preset {printable(preset)}",
                          partial(app.use_prompt, f"{preset}: "),
                          "puts the preset in the prompt box"))
        return found

    async def discover(self) -> Hits:
        for name, run, help_text in self.commands():
            yield DiscoveryHit(Content(name), run, text=name, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, run, help_text in self.commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, highlighted(matcher, name), run, text=name, help=help_text)


def highlighted(matcher: Matcher, name: str) -> Content:
    """`name` with the letters the query matched marked, as Matcher.highlight marks them, but
    as plain text: a name may hold the user's words (a preset's, a class's), and Textual reads
    a string given to it as markup ("[bold]" would vanish, "[/x]" would raise)."""
    content = Content(name)
    _, offsets = matcher.fuzzy_search.match(matcher.query, name)
    for offset in offsets:
        if not name[offset].isspace():
            content = content.stylize(matcher.match_style, offset, offset + 1)
    return content
