"""The lorabooth app: a header with the workspace, engine, job and GPU; the Dataset, Train,
Queue and Gallery panes; a footer with the keys that apply here.

The app composes the screen and routes messages; it does no work of its own. The store is
read on a timer in a thread worker (`store_io.StorePoller`) and written by one store worker
thread (`store_io.StoreWorker`) that runs the panes' commands in order; both post typed
messages, and widgets are only touched on the app's thread. A stopped engine is started
(detached) when work is queued; a vanished one is shown, not a crash. SIGHUP (the SSH link
gone) exits at once; the engine carries on.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.keys import format_key
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from lorabooth.core import engine
from lorabooth.core.fsutil import byte_size
from lorabooth.core.safetext import plain
from lorabooth.core.store import LIVE, Job
from lorabooth.core.workspace import Workspace
from lorabooth.themes import THEMES_DIR
from lorabooth.themes.themes import THEMES

from .commands import LoraboothCommands
from .messages import (
    Done,
    EngineWanted,
    FirstScreen,
    Notice,
    OpenViewer,
    PaneReady,
    PaneUpdate,
    Remake,
    StoreDelta,
    StoreUpdated,
    Write,
)
from .panes.dataset import DatasetPane
from .panes.gallery import GalleryPane
from .panes.queue import QueuePane
from .panes.train import TrainPane
from .settings import UISettings
from .store_io import (
    ERRORS_SEEN,
    AddJob,
    SaveSettings,
    SetSetting,
    StorePoller,
    StoreWorker,
    describe,
)
from .widgets.footer import KeyFooter
from .widgets.inputs import PaneInput, focus_at_once
from .widgets.later import Later
from .widgets.text import set_text

POLL_SECONDS = 0.25  # 4 Hz: live enough for a loss curve, idle enough over SSH
REVEAL_PANES_BY = 1.5  # seconds: the hidden panes mount by then even if the scan is slow
PANES = ("dataset", "train", "queue", "gallery")
EVENTS_KEPT = 200
MAX_ERROR_TOASTS = 2  # more new errors at once are said in one toast


# Below this the status bar warns: a checkpoint of a full-size LoRA with its optimizer state
# takes ~100 MB, and SQLite needs room for the next metric.
LOW_DISK = 512 * 2**20


def disk_is_low(free: int | None) -> bool:
    return free is not None and free < LOW_DISK


class StatusBar(Static):
    """workspace · disk space when low · current job · engine state · GPU"""

    def show(self, ws: Workspace, state: str, pid: int | None, job: Job | None,
             device: str | None, interrupted: bool = False,
             disk_free: int | None = None) -> None:
        # What matters most first: a narrow terminal cuts the end of the line, and the step
        # count was what 80 columns lost.
        parts = [ws.root.name]
        low = disk_is_low(disk_free)
        if low:
            parts.append(f"disk nearly full: {byte_size(disk_free)} free")
        if job is not None:
            shown = "interrupted" if interrupted else job.state  # its engine is gone
            if job.terminal_pid is not None:
                shown += " in a terminal"
            parts.append(f"job {job.id} {job.kind} {job.step}/{job.total} {shown}")
        parts.append(f"engine {state}" + (f" ({pid})" if pid else ""))
        if device:
            parts.append(device)
        set_text(self, plain("  ·  ".join(parts)))
        self.set_class(low or state in ("stopped", "unreachable", "unresponsive"), "-down")


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")]

    def __init__(self, rows: list[tuple[str, str, str]]):
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        from rich.text import Text
        from textual.widgets import DataTable

        table = DataTable(id="help-table", cursor_type="row")
        # Text, not str: a str header is read as markup and "[keys]" vanished.
        table.add_columns(*(Text(c) for c in ("pane", "key", "action",
                                                "id (remap in ui.toml [keys])")))
        for key, description, binding_id in self.rows:
            table.add_row(Text(binding_id.split(".")[0]), Text(key), Text(description),
                          Text(binding_id))
        yield table


class LoraboothApp(App):
    CSS_PATH = str(THEMES_DIR / "app.tcss")
    # A class on the screen by its width, for rows of inputs that must leave room to type.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    TITLE = "lorabooth"
    COMMANDS = App.COMMANDS | {LoraboothCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("1", "show_pane('dataset')", "Dataset", show=False, id="app.dataset"),
        Binding("2", "show_pane('train')", "Train", show=False, id="app.train"),
        Binding("3", "show_pane('queue')", "Queue", show=False, id="app.queue"),
        Binding("4", "show_pane('gallery')", "Gallery", show=False, id="app.gallery"),
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("ctrl+t", "next_theme", "Theme", show=False, id="app.theme"),
    ]

    def __init__(self, workspace: Path, *, start_engine: bool = True, poll: bool = True,
                 settings: UISettings | None = None):
        super().__init__()
        self.ws = Workspace.at(workspace)
        self.settings = settings or UISettings.load()
        self.start_engine = start_engine
        self.poll = poll
        self.poller = StorePoller(self.ws)
        self.writer = StoreWorker(self.ws, self._deliver)
        self.last_delta: StoreDelta | None = None
        self.said_frozen = False  # the engine's unresponsiveness was told (once per episode)
        self.said_interrupted: int | None = None  # the job a vanished engine left, once told
        self.outputs_seen: list = []
        self.events_seen: list = []  # the latest, for a pane that mounts late
        for theme in THEMES:
            self.register_theme(theme)
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        else:
            self.theme = THEMES[0].name
        if self.settings.keys:
            self.set_keymap(self.settings.keys)

    def compose(self) -> ComposeResult:
        yield StatusBar(id="status")
        protocol = self.settings.images
        with TabbedContent(id="panes"):
            with TabPane("1 Dataset", id="dataset"):
                yield DatasetPane(self.ws, protocol, id="dataset-pane")
            # The hidden panes mount once the photo list is drawn, or when opened: half the
            # start-up is their CSS (widgets/later.py).
            with TabPane("2 Train", id="train"):
                yield Later(TrainPane(self.ws, protocol, id="train-pane"))
            with TabPane("3 Queue", id="queue"):
                yield Later(QueuePane(self.ws, protocol, id="queue-pane"))
            with TabPane("4 Gallery", id="gallery"):
                yield Later(GalleryPane(self.ws, protocol, id="gallery-pane"))
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one(StatusBar).show(self.ws, "connecting", None, None, None)
        # A slow first scan (thousands of photos) does not keep the other panes waiting.
        self.set_timer(REVEAL_PANES_BY, self.reveal_panes)
        for problem in self.settings.problems:
            self.notify(problem, severity="warning", markup=False)
        self.read_store()
        if self.poll:  # off for snapshots: one read, then nothing moves
            self.set_interval(POLL_SECONDS, self.read_store)
        if self.start_engine:
            self.ensure_engine()

    @on(FirstScreen)
    def first_screen(self) -> None:
        self.call_after_refresh(self.reveal_panes)  # after the photo list is on the screen

    def reveal_panes(self) -> None:
        for later in self.query(Later).results(Later):
            later.reveal()

    # -- the store ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="store", exit_on_error=False)
    def read_store(self) -> None:
        self.post_message(StoreUpdated(self.poller.read()))

    @on(StoreUpdated)
    def store_updated(self, message: StoreUpdated) -> None:
        bars = self.query(StatusBar)
        if not bars:  # a read that lands while the app closes: its screen is gone
            return
        delta = message.delta
        self.last_delta = delta
        interrupted = delta.interrupted
        current = interrupted or next((j for j in delta.jobs if j.state in LIVE), None)
        bars.first().show(self.ws, delta.engine_state, delta.engine_pid, current, delta.device,
                          interrupted=interrupted is not None, disk_free=delta.disk_free)
        if delta.engine_state == engine.UNRESPONSIVE and not self.said_frozen:
            if disk_is_low(delta.disk_free):
                # Its heartbeat is a write: on a full disk a working engine looks frozen, and
                # a restart would not help.
                self.notify(f"the engine (pid {delta.engine_pid}) cannot write to the "
                            f"workspace: the disk holding {self.ws.state} has "
                            f"{byte_size(delta.disk_free)} free. Free some space (the engine "
                            "stays up; training resumes from its last checkpoint)",
                            severity="warning", markup=False, timeout=15)
            else:
                self.notify(f"the engine (pid {delta.engine_pid}) has not answered for "
                            f"{engine.client.STALE_HEARTBEAT:.0f} s: it may be frozen. "
                            "ctrl+p, Engine: restart (training resumes from its last "
                            "checkpoint)", severity="warning", markup=False, timeout=15)
        self.said_frozen = delta.engine_state == engine.UNRESPONSIVE
        if interrupted is not None and interrupted.id != self.said_interrupted:
            self.notify(f"{engine.interrupted_text(interrupted)}: ctrl+p, Engine: restart",
                        severity="warning", markup=False, timeout=15)
        self.said_interrupted = interrupted.id if interrupted is not None else None
        self.outputs_seen.extend(delta.outputs)
        self.events_seen = (self.events_seen + delta.events)[-EVENTS_KEPT:]
        # A pane still mounting (lazily) catches up from outputs_seen when it says it is ready.
        for pane in self.query("DatasetPane, TrainPane, QueuePane, GalleryPane"):
            if getattr(pane, "ready", False):
                pane.post_message(PaneUpdate(delta))
        self.show_errors(delta.new_errors)

    def show_errors(self, errors: list) -> None:
        """Each new error as a toast, or one toast for many (a burst, or those that happened
        while no UI was open); the Queue pane and the logs keep them all."""
        if not errors:
            return
        if len(errors) <= MAX_ERROR_TOASTS:
            for event in errors:
                self.notify(event.message, severity="error", markup=False, timeout=8)
        else:
            self.notify(f"{len(errors)} errors; the latest: {errors[-1].message}",
                        severity="error", markup=False, timeout=12)
        self.post_message(Write(SetSetting(ERRORS_SEEN, str(errors[-1].id))))

    def on_unmount(self) -> None:
        self.writer.wait_idle(5.0)  # what the user asked for is written before we go
        self.writer.close()

    @on(PaneReady)
    def catch_up(self, message: PaneReady) -> None:
        """Give a pane that mounted late what the store said before it was there."""
        message.pane.ready = True
        tabs = self.query("#panes")
        if not tabs:  # the app is closing: a pane that mounted as it quit needs nothing
            return
        if message.pane.id == f"{tabs.first(TabbedContent).active}-pane":
            self.focus_pane_list(message.pane)  # it opened before it had mounted
        if self.last_delta is not None:
            message.pane.post_message(PaneUpdate(replace(
                self.last_delta, metrics={}, events=list(self.events_seen),
                outputs=list(self.outputs_seen))))

    # -- the store worker -----------------------------------------------------------------

    @on(Write)
    def write(self, message: Write) -> None:
        self.writer.submit(message.command, message.reply_to)

    def _deliver(self, reply_to, done: Done) -> None:
        """From the store worker's thread: post_message is thread-safe."""
        (reply_to or self).post_message(done)

    @on(Done)
    def command_done(self, message: Done) -> None:
        if message.error:
            self.notify(message.error, severity="error", markup=False, timeout=8)
            return
        text = describe(message.command, message.result)
        if text:
            self.notify(text, markup=False, timeout=4)
        if isinstance(message.command, SaveSettings):  # the palette's or the pane's own
            for pane in self.query(TrainPane):
                pane.load_settings()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that failed is said, never dropped."""
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.log.error(f"worker {event.worker.name} failed: {error!r}")
            self.notify(f"{event.worker.name} failed: {type(error).__name__}: {error}",
                        severity="error", markup=False, timeout=8)

    @on(EngineWanted)
    def engine_wanted(self) -> None:
        self.ensure_engine()

    def use_prompt(self, prompt: str, start: str = "", loras: str | None = None) -> None:
        """The Queue pane, with `prompt` in its box (`start` as the start image, `loras` in the
        LoRAs box when given) and the focus there at once. Called directly by the keys that do
        it (`y`, `s`), not through a message: keys typed right after them must not run the
        commands of the list or the viewer left behind (`s` replaced the prompt, `m` and `v`
        queue jobs)."""
        self.when_ready("queue", lambda pane: pane.use_prompt(prompt, start, loras))

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def ensure_engine(self) -> None:
        if os.environ.get("LORABOOTH_NO_ENGINE"):
            return
        try:
            engine.start_detached(self.ws)
        except (engine.EngineStartFailed, OSError) as exc:
            self.post_message(Notice(f"could not start the engine: {exc}", "error"))

    @on(OpenViewer)
    def open_viewer(self, message: OpenViewer) -> None:
        from .viewer import ViewerScreen

        if message.items:
            self.push_screen(ViewerScreen(message.items, message.index, self.settings.images))

    @on(Remake)
    def remake(self, message: Remake) -> None:
        from lorabooth.core.errors import LoraboothError
        from lorabooth.core.generate.request import (
            remake_request,
            request_to_params,
            training_underway,
        )

        training = training_underway(self.last_delta.jobs if self.last_delta else [])
        try:
            request = remake_request(self.ws, self.ws.config(check_photos=False),
                                     message.recipe, variations=message.variations,
                                     training=training)
        except (LoraboothError, ValueError) as exc:
            self.notify(str(exc), severity="error", markup=False, timeout=8)
            return
        what = f"{request.count} variations" if message.variations else "re-make"
        self.writer.submit(AddJob("generate", request_to_params(request), total=request.size(),
                                  says=f"{what} queued as job {{result}}"), None)
        self.ensure_engine()

    @on(Notice)
    def show_notice(self, message: Notice) -> None:
        self.notify(message.text, severity=message.severity, markup=False, timeout=8)

    # -- actions --------------------------------------------------------------------------

    def action_show_pane(self, pane: str) -> None:
        self.query_one("#panes", TabbedContent).active = pane
        for later in self.query(f"#{pane} Later").results(Later):
            later.reveal()
        panes = self.query(f"#{pane}-pane")  # empty, or not composed, while a lazy pane mounts
        if not (panes and self.focus_pane_list(panes.first())):
            # Until it has mounted (and `catch_up` focuses its list), keys typed after the
            # pane's must not reach the hidden pane left behind: `2 s` typed at once ran the
            # Dataset's "Start from".
            self.screen.set_focus(None)

    def focus_pane_list(self, pane) -> bool:
        """A pane's list has focus when the pane opens, so its keys work at once; False when
        it has no list (yet)."""
        tables = pane.query("DataTable")
        if not tables:
            return False
        return focus_at_once(tables.first())

    # -- what the command palette runs ---------------------------------------------------

    def run_in_pane(self, pane: str, action: str) -> None:
        """Open `pane` and run one of its actions."""
        self.when_ready(pane, lambda found: getattr(found, f"action_{action}")())

    def when_ready(self, pane: str, do: Callable[[Widget], object], tries: int = 40) -> None:
        """Open `pane` and call `do` with it once it has mounted (panes mount lazily), at once
        when it has."""
        self.action_show_pane(pane)
        found = self.query(f"#{pane}-pane")
        if found and getattr(found.first(), "ready", False):
            do(found.first())
        elif tries:
            self.set_timer(0.05, lambda: self.when_ready(pane, do, tries - 1))

    def model_choices(self) -> list[str]:
        from lorabooth.core.models.registry import names

        return names()

    def preset_names(self) -> list[str]:
        from lorabooth.core.errors import LoraboothError

        try:
            return list(self.ws.config(check_photos=False).generate.presets)
        except LoraboothError:
            return []

    def preserved_class(self) -> str | None:
        """train.preserve_class as the file has it ("" when off), None when it cannot be read."""
        from lorabooth.core.errors import LoraboothError

        try:
            return self.ws.config(check_photos=False).train.preserved
        except LoraboothError:
            return None

    def set_workspace_value(self, key: str, value: object) -> None:
        self.writer.submit(SaveSettings({key: value}, f"{key} = {value} (lorabooth.toml)"),
                           None)

    @work(thread=True, exclusive=True, group="engine", exit_on_error=False)
    def restart_engine(self) -> None:
        """Stop the engine (killed if frozen; a training run checkpoints or resumes from its
        last checkpoint) and start a fresh one."""
        self.post_message(Notice("restarting the engine", "information"))
        try:
            pid, how = engine.stop(self.ws)
            engine.start_detached(self.ws)
        except (engine.EngineStopFailed, engine.EngineStartFailed, OSError) as exc:
            self.post_message(Notice(f"could not restart the engine: {exc}", "error"))
            return
        was = f"the engine (pid {pid}) {how}; " if pid else ""
        self.post_message(Notice(f"{was}a new engine started", "information"))

    def action_help(self) -> None:
        from .panes.queue import PromptInput

        rows = []
        seen = set()
        # From the classes, so panes that have not mounted yet are listed too.
        from .viewer import ViewerScreen

        for owner in (LoraboothApp, DatasetPane, TrainPane, QueuePane, PromptInput, PaneInput,
                      GalleryPane, ViewerScreen):
            for binding in owner.BINDINGS:
                if isinstance(binding, Binding) and binding.id and binding.id not in seen:
                    seen.add(binding.id)
                    keys = ", ".join(format_key(k.strip())
                                     for k in self._remapped(binding).split(","))
                    rows.append((keys, binding.description, binding.id))
        self.push_screen(HelpScreen(rows))

    def _remapped(self, binding: Binding) -> str:
        return self.settings.keys.get(binding.id, binding.key)

    def action_next_theme(self) -> None:
        names = [t.name for t in THEMES]
        current = names.index(self.theme) if self.theme in names else -1
        self.theme = names[(current + 1) % len(names)]

    def watch_theme(self, theme: str) -> None:
        """A theme chosen anywhere (ctrl+t, the palette's "Theme") is named and remembered."""
        if theme != self.settings.theme and self.is_running:
            self.settings.save_theme(theme)
            self.notify(f"theme: {theme} (remembered; ctrl+t for the next)", markup=False,
                        timeout=3)


def _hang_up(signum, frame) -> None:
    """The terminal is gone (SSH dropped): nothing can be drawn or restored, and everything
    the UI wrote is already committed, so leave at once. The engine is another process."""
    os._exit(0)


def run_app(workspace: Path) -> int:
    signal.signal(signal.SIGHUP, _hang_up)
    settings = UISettings.load()
    if settings.images in ("auto", "kitty", "sixel"):
        # textual-image probes the terminal when imported; it must happen before the app
        # takes the terminal over.
        import textual_image.widget  # noqa: F401
    LoraboothApp(workspace, settings=settings).run()
    return 0
