"""The lorabooth app: one screen of panes (Dataset, Train) over a workspace.

Workspace reads happen in thread workers that post typed messages back; widgets are only ever
touched on the app's own thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from lorabooth.core.config import Config, ConfigError
from lorabooth.core.safetext import plain
from lorabooth.core.workspace import Workspace
from lorabooth.themes import THEMES_DIR

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".tif", ".tiff", ".bmp",
                  ".heic", ".heif", ".avif"}


@dataclass(frozen=True)
class PhotoRow:
    name: str
    caption: str


class WorkspaceLoaded(Message):
    def __init__(self, config: Config | None, photos: list[PhotoRow], problem: str = ""):
        super().__init__()
        self.config = config
        self.photos = photos
        self.problem = problem


def read_photos(folder: Path) -> list[PhotoRow]:
    rows = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        sidecar = path.with_suffix(".txt")
        caption = sidecar.read_text(encoding="utf-8", errors="replace").strip() \
            if sidecar.is_file() else ""
        rows.append(PhotoRow(path.name, caption))
    return rows


class LoraboothApp(App):
    CSS_PATH = str(THEMES_DIR / "app.tcss")
    TITLE = "lorabooth"
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("d", "show_tab('dataset')", "Dataset", id="app.dataset"),
        Binding("t", "show_tab('train')", "Train", id="app.train"),
    ]

    def __init__(self, workspace: Path):
        super().__init__()
        self.workspace = Workspace.at(workspace)
        self.sub_title = str(self.workspace.root)

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(id="panes"):
            with TabPane("Dataset", id="dataset"):
                yield DataTable(id="photos", cursor_type="row", zebra_stripes=True)
            with TabPane("Train", id="train"):
                yield Static(id="train-config")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#photos", DataTable)
        table.add_columns("photo", "caption")
        self.load_workspace()

    @work(thread=True, exclusive=True, group="workspace", exit_on_error=False)
    def load_workspace(self) -> None:
        try:
            config = self.workspace.config(check_photos=False)
        except ConfigError as exc:
            self.post_message(WorkspaceLoaded(None, [], str(exc)))
            return
        folder = config.photos_dir(self.workspace.root)
        try:
            photos = read_photos(folder)
            problem = ""
        except OSError as exc:
            photos, problem = [], f"cannot read the photos folder {folder}: {exc.strerror}"
        self.post_message(WorkspaceLoaded(config, photos, problem))

    def on_workspace_loaded(self, message: WorkspaceLoaded) -> None:
        table = self.query_one("#photos", DataTable)
        table.clear()
        for row in message.photos:
            table.add_row(plain(row.name), plain(row.caption))
        summary = self.query_one("#train-config", Static)
        if message.config is None:
            summary.update(plain(message.problem, keep_newlines=True))
            return
        train = message.config.train
        lines = [
            f"model       {message.config.model}",
            f"trigger     {message.config.trigger}",
            f"resolution  {', '.join(map(str, train.resolution))} px",
            f"rank/alpha  {train.rank} / {train.alpha:g}",
            f"lr          {train.learning_rate:g}",
            f"steps       {train.steps}",
            f"photos      {len(message.photos)}",
        ]
        if message.problem:
            lines.append(message.problem)
        summary.update(plain("\n".join(lines), keep_newlines=True))

    def action_show_tab(self, tab: str) -> None:
        self.query_one("#panes", TabbedContent).active = tab


def run_app(workspace: Path) -> int:
    LoraboothApp(workspace).run()
    return 0
