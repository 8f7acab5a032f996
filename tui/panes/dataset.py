"""The Dataset pane: every photo with its status and reasons, a preview, the caption edited in
place (saved atomically), and the report of what the set is short of. New photos dropped into
the folder appear when the engine's watcher reports them."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import DataTable, Label, Static, TextArea

from lorabooth.core.config import ConfigError
from lorabooth.core.dataset import OK, SKIPPED, WARN
from lorabooth.core.dataset.captions import CaptionChanged, caption_stamp
from lorabooth.core.safetext import plain, printable
from lorabooth.core.workspace import Workspace

from ..messages import (
    DatasetScanned,
    Done,
    FirstScreen,
    Notice,
    PaneReady,
    PaneUpdate,
    Write,
)
from ..store_io import SaveCaption
from ..widgets.lists import move_cursor
from ..widgets.preview import Preview
from ..widgets.text import fit_end, fit_middle, set_text
from . import filling

# The scanner (numpy, Pillow) is imported in the scan worker, off the start-up path.
ICONS = {OK: ("✓", "green"), WARN: ("!", "yellow"), SKIPPED: ("✗", "red")}
FILTERS = ("all", OK, WARN, SKIPPED)
CAPTION_READ = "caption · e edit"
NAME_WIDTH = 28  # the list keeps the "why" column in view beside the preview at 80 columns
WHY_WIDTH = 24
CAPTION_EDIT = "editing · ^s save · esc cancel"


def headline(reason: str) -> str:
    """A reason's first words, for the list ("too small", "not an image"); the selected
    photo's reasons are shown in full under its caption."""
    for mark in (":", " ("):
        reason = reason.split(mark, 1)[0]
    return fit_end(reason, WHY_WIDTH)


class DatasetPane(Vertical):
    BINDINGS = [
        Binding("f", "cycle_filter", "Filter", id="dataset.filter"),
        Binding("e", "edit_caption", "Edit caption", id="dataset.edit"),
        Binding("ctrl+s", "save_caption", "Save caption", id="dataset.save"),
        Binding("escape", "cancel_edit", "Cancel edit", show=False, id="dataset.cancel"),
        Binding("r", "rescan", "Rescan", id="dataset.rescan"),
        Binding("s", "start_from", "Start from", id="dataset.start"),
        Binding("j", "cursor('down')", "Down", show=False, id="dataset.down"),
        Binding("k", "cursor('up')", "Up", show=False, id="dataset.up"),
        Binding("g,home", "cursor('top')", "Top", show=False, id="dataset.top"),
        Binding("G,end", "cursor('bottom')", "Bottom", show=False, id="dataset.bottom"),
    ]

    def __init__(self, ws: Workspace, protocol: str, **kwargs):
        super().__init__(**kwargs)
        self.ws = ws
        self.protocol = protocol
        self.scan = None
        self.filter = "all"
        self.rows: list = []
        self.folder: Path | None = None
        self.thumbs = ws.cache / "thumbs"
        self.editing: str | None = None  # the photo whose caption is being typed
        self.edit_since: str | None = None  # its sidecar's caption_stamp when editing began
        self.counts = {OK: 0, WARN: 0, SKIPPED: 0}

    def compose(self) -> ComposeResult:
        with Horizontal(id="dataset-main"):
            with Vertical(id="dataset-left"):
                yield Label("", id="dataset-summary")
                yield DataTable(id="photos", cursor_type="row", zebra_stripes=True)
            with Vertical(id="dataset-right"):
                yield Preview(self.protocol, id="photo-preview")
                yield Label(CAPTION_READ, id="caption-label")
                yield TextArea(id="caption", soft_wrap=True, read_only=True)
                yield Static(id="photo-reasons")
        with VerticalScroll(id="dataset-report"):
            yield Static(id="report-text")

    def on_mount(self) -> None:
        with filling(self):
            self.query_one("#photos", DataTable).add_columns(" ", "photo", "size / why")
            self.rescan()
            self.post_message(PaneReady(self))

    @on(PaneUpdate)
    def store_changed(self, message: PaneUpdate) -> None:
        if any(e.kind == "dataset" for e in message.delta.events):
            self.rescan()  # the engine's watcher saw the folder change

    # -- scanning -------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="dataset-scan", exit_on_error=False)
    def rescan(self) -> None:
        from lorabooth.core.dataset.report import build_report
        from lorabooth.core.dataset.scan import ScanOptions, scan_folder

        try:
            config = self.ws.config(check_photos=False)
        except ConfigError as exc:
            self.post_message(DatasetScanned(None, None, str(exc)))
            return
        self.folder = config.photos_dir(self.ws.root)
        options = ScanOptions(resolution=min(config.train.resolution), trigger=config.trigger)
        try:
            scan = scan_folder(self.folder, options, self.ws.cache)
            report = build_report(scan, options)
        except Exception as exc:  # shown in the pane, never a silent empty list
            self.post_message(DatasetScanned(None, None, f"could not read the photos: "
                                                         f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(DatasetScanned(scan, report))

    def action_rescan(self) -> None:
        self.rescan()

    @on(DatasetScanned)
    def show_scan(self, message: DatasetScanned) -> None:
        message.stop()
        self.post_message(FirstScreen())  # the app heeds the first only
        summary = self.query_one("#dataset-summary", Label)
        if message.scan is None:
            summary.update(plain(message.problem, "red", keep_newlines=True))
            return
        self.scan = message.scan
        self.refill()
        report = message.report
        c = report.counts
        self.counts = c
        summary.update(self.summary_text())
        lines = Text()
        for note in message.scan.notes:
            lines.append_text(plain(f"note: {note}\n", "yellow"))
        for advice in report.advice or ["Nothing missing: a varied, well-captioned set."]:
            lines.append_text(plain("• " + advice + "\n", keep_newlines=True))
        self.query_one("#report-text", Static).update(lines)

    def summary_text(self) -> Text:
        """Counts and the filter in one line that fits the list's width at 80 columns."""
        c = self.counts
        counts = [f"{c[OK]} ok"] + [f"{c[k]} {k}" for k in (WARN, SKIPPED) if c[k]]
        return plain(f"{sum(c.values())} photos: {' · '.join(counts)} · showing {self.filter} "
                     f"(f)")

    def refill(self) -> None:
        table = self.query_one("#photos", DataTable)
        selected = self.current_record()
        table.clear()
        self.rows = [r for r in self.scan.records
                     if self.filter == "all" or r.status == self.filter]
        for record in self.rows:
            icon, style = ICONS[record.status]
            size = f"{record.width}x{record.height}" if record.width else ""
            why = headline(record.reasons[0]) if record.reasons else size
            table.add_row(Text(icon, style=style), plain(fit_middle(record.path, NAME_WIDTH)),
                          plain(why, style if record.reasons else ""), key=record.path)
        if selected is not None:
            for index, record in enumerate(self.rows):
                if record.path == selected.path:
                    table.move_cursor(row=index)
        self.show_selected()

    # -- the selected photo ---------------------------------------------------------------

    def current_record(self):
        table = self.query_one("#photos", DataTable)
        if not self.rows or table.cursor_row is None or table.cursor_row >= len(self.rows):
            return None
        return self.rows[table.cursor_row]

    @on(DataTable.RowHighlighted, "#photos")
    def row_changed(self) -> None:
        self.show_selected()

    def show_selected(self) -> None:
        record = self.current_record()
        caption = self.query_one("#caption", TextArea)
        preview = self.query_one("#photo-preview", Preview)
        reasons = self.query_one("#photo-reasons", Static)
        if record is None:
            empty = ("no photos here yet: copy some into the folder"
                     if self.scan is None or not self.scan.records else
                     f"no {self.filter} photos: f shows the others")
            preview.show(None, empty)
            caption.load_text("")
            reasons.update("")
            return
        thumb = self.thumbs / f"{record.measurement.sha256[:32]}.jpg" \
            if record.measurement and record.measurement.sha256 else None
        preview.show(thumb, "no preview")
        if self.editing == record.path:
            return  # a re-scan while typing must not take the text away
        self.editing = None
        caption.read_only = True
        set_text(self.query_one("#caption-label", Label), CAPTION_READ)
        text = printable(record.caption or "", keep_newlines=True)
        if caption.text != text:
            caption.load_text(text)
        set_text(reasons, plain("\n".join(record.reasons), keep_newlines=True))

    def action_cursor(self, direction: str) -> None:
        table = self.query_one("#photos", DataTable)
        move_cursor(table, direction)

    def action_cycle_filter(self) -> None:
        self.filter = FILTERS[(FILTERS.index(self.filter) + 1) % len(FILTERS)]
        if self.scan is not None:
            self.refill()
            self.query_one("#dataset-summary", Label).update(self.summary_text())

    def action_edit_caption(self) -> None:
        record = self.current_record()
        if record is None:
            return
        self.editing = record.path
        self.edit_since = caption_stamp(self.folder / record.path) if self.folder else None
        caption = self.query_one("#caption", TextArea)
        caption.read_only = False
        caption.focus()
        self.query_one("#caption-label", Label).update(CAPTION_EDIT)

    def action_start_from(self) -> None:
        """The photo as the Queue's start image and its caption as the prompt: the subject in
        this very pose, somewhere else."""
        record = self.current_record()
        if record is None or self.folder is None:
            return
        if record.width is None:  # not a picture at all (a FIFO, a broken file)
            self.post_message(Notice(f"{printable(record.path)} is not a picture", "error"))
            return
        self.app.use_prompt(record.caption or "", start=str(self.folder / record.path))

    def action_cancel_edit(self) -> None:
        self.editing = None
        self.show_selected()
        self.query_one("#photos", DataTable).focus()

    def action_save_caption(self) -> None:
        record = self.current_record()
        caption = self.query_one("#caption", TextArea)
        if record is None or caption.read_only or self.folder is None:
            return
        self.post_message(Write(SaveCaption(self.folder / record.path, caption.text.strip(),
                                            self.edit_since), self))

    @on(Done)
    def caption_saved(self, message: Done) -> None:
        command = message.command
        if not isinstance(command, SaveCaption):
            return
        if message.error:  # a failed save keeps the text and the editor open; the app says why
            if message.failure is CaptionChanged:
                self.edit_since = None  # told once: the next ctrl+s saves over the file
            return
        record = self.current_record()
        if record is not None and self.folder / record.path == command.photo:
            record.caption = command.text
            self.editing = None
            self.query_one("#caption", TextArea).read_only = True
            self.query_one("#caption-label", Label).update(CAPTION_READ)
            self.query_one("#photos", DataTable).focus()
        self.rescan()
