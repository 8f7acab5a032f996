"""The Gallery pane: outputs newest first with their recipes; `y` copies a recipe's prompt
into the prompt box to vary it, `s` the image too, as the start image of the next ones."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Static

from lorabooth.core.safetext import plain
from lorabooth.core.store import Output
from lorabooth.core.train.checkpoint import step_label
from lorabooth.core.workspace import Workspace

from ..messages import OpenViewer, PaneReady, PaneUpdate
from ..viewer import Shown, recipe_lines
from ..widgets.lists import move_cursor
from ..widgets.preview import Preview
from ..widgets.text import fit_middle
from . import filling

# The newest outputs listed. The table is rebuilt when one arrives (its rows are newest
# first), at ~0.15 ms a row on a small CPU: a workspace of 20,000 images froze the UI for a
# second per new image. Older ones stay in .lorabooth/outputs.
LISTED = 500


class GalleryPane(Vertical):
    BINDINGS = [
        Binding("enter", "open", "Open", id="gallery.open"),
        Binding("y", "use_recipe", "Use prompt", id="gallery.use"),
        Binding("s", "start_from", "Start from", id="gallery.start"),
        Binding("j", "cursor('down')", "Down", show=False, id="gallery.down"),
        Binding("k", "cursor('up')", "Up", show=False, id="gallery.up"),
        Binding("g,home", "cursor('top')", "Top", show=False, id="gallery.top"),
        Binding("G,end", "cursor('bottom')", "Bottom", show=False, id="gallery.bottom"),
    ]

    def __init__(self, ws: Workspace, protocol: str, **kwargs):
        super().__init__(**kwargs)
        self.ws = ws
        self.protocol = protocol
        self.items: list[Output] = []  # newest first, at most LISTED
        self.total = 0  # every output seen, listed or not
        self.name_room = 0  # cells the file column had at the last redraw

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield DataTable(id="outputs", cursor_type="row", zebra_stripes=True)
            with Vertical(id="gallery-right"):
                yield Preview(self.protocol, id="output-preview")
                yield Static(id="recipe")

    def on_mount(self) -> None:
        with filling(self):
            self.redraw()  # the empty state says what will appear here
            self.post_message(PaneReady(self))

    @on(PaneUpdate)
    def apply(self, message: PaneUpdate) -> None:
        delta = message.delta
        if not delta.outputs:
            return
        fresh = [o for o in delta.outputs if o.kind in ("image", "sample")]
        if fresh:
            self.items[:0] = reversed(fresh[-LISTED:])
            del self.items[LISTED:]
            self.total += len(fresh)
            self.redraw()

    def redraw(self) -> None:
        table = self.query_one("#outputs", DataTable)
        row = table.cursor_row
        table.clear(columns=True)  # the columns fitted anew: a narrower window narrows them
        unlisted = self.total - len(self.items)
        table.add_columns("kind", f"file · newest {len(self.items):,} of {self.total:,}"
                          if unlisted else "file")
        self.name_room = self.room_for_names(table)
        for output in self.items:
            path = Path(output.path)
            # Samples share names across steps: their step folder tells them apart.
            name = f"{step_label(path.parent.name)}/{path.stem}" if output.kind == "sample" \
                else path.stem
            table.add_row(output.kind, plain(fit_middle(name, self.name_room)))
        if self.items and row:
            table.move_cursor(row=min(row, len(self.items) - 1))
        self.show_selected()

    def room_for_names(self, table: DataTable) -> int:
        """Cells the file column has without scrolling sideways: the table's width less the
        kind column, each cell's padding and a scrollbar. A name cut at its end hid what tells
        one image of a prompt from the next (at 80 columns every image of a long prompt read
        the same). Before the first layout, no limit."""
        if not table.size.width:
            return 10**6
        padding = 2 * table.cell_padding
        return max(8, table.size.width - len("sample") - 2 * padding
                   - table.styles.scrollbar_size_vertical)

    def on_resize(self) -> None:
        # After the layout that follows, when the table has its new width.
        self.call_after_refresh(self.refit)

    def refit(self) -> None:
        table = self.query_one("#outputs", DataTable)
        if self.items and self.room_for_names(table) != self.name_room:
            self.redraw()

    def selected(self) -> Output | None:
        table = self.query_one("#outputs", DataTable)
        if not self.items or table.cursor_row is None or table.cursor_row >= len(self.items):
            return None
        return self.items[table.cursor_row]

    @on(DataTable.RowHighlighted, "#outputs")
    def show_selected(self) -> None:
        item = self.selected()
        preview = self.query_one("#output-preview", Preview)
        recipe = self.query_one("#recipe", Static)
        if item is None:
            preview.show(None, "images you make appear here, newest first")
            recipe.update("")
            return
        preview.show(Path(item.path))
        lines = recipe_lines(Shown.of(item))  # as the viewer lists it
        recipe.update(plain("\n".join(lines), keep_newlines=True))

    def action_cursor(self, direction: str) -> None:
        table = self.query_one("#outputs", DataTable)
        move_cursor(table, direction)

    @on(DataTable.RowSelected, "#outputs")
    def action_open(self) -> None:
        table = self.query_one("#outputs", DataTable)
        items = [Shown.of(o) for o in self.items]
        self.post_message(OpenViewer(items, table.cursor_row or 0))

    def action_use_recipe(self) -> None:
        item = self.selected()
        if item is None:
            return
        shown = Shown.of(item)
        if shown.prompt:
            self.app.use_prompt(shown.prompt, loras=shown.loras_text)

    def action_start_from(self) -> None:
        """Its prompt, and the image itself as the start image of the next ones."""
        item = self.selected()
        if item is None:
            return
        shown = Shown.of(item)
        self.app.use_prompt(shown.prompt, start=item.path, loras=shown.loras_text)
