"""The Queue pane: a prompt box (history on up/down, {trigger} and preset completion, LoRAs
to use), the queue with states and progress, keys to cancel, move, repeat and pause, and the
selected job's images."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.coordinate import Coordinate
from textual.suggester import SuggestFromList
from textual.widgets import DataTable, Input, Label, Static

from lorabooth.core.errors import LoraboothError
from lorabooth.core.generate.request import (
    Asked,
    Request,
    build_request,
    check_typed_loras,
    request_from_params,
    request_to_params,
    split_preset,
    training_underway,
    typed_loras,
    typed_path,
    typed_refs,
    typed_start,
    typed_sweep,
)
from lorabooth.core.models.registry import model_of
from lorabooth.core.safetext import plain, printable
from lorabooth.core.store import ACTIVE, CANCELLED, DONE, FAILED, PAUSED, QUEUED, RUNNING, Job
from lorabooth.core.workspace import Workspace

from ..messages import EngineWanted, Notice, OpenViewer, PaneReady, PaneUpdate, Write
from ..store_io import AddJob, Control, Move, SetSetting
from ..widgets.inputs import PaneInput, focus_at_once
from ..widgets.lists import move_cursor
from ..widgets.preview import Preview
from ..widgets.text import set_text
from . import filling

STATE_STYLE = {QUEUED: "", RUNNING: "bold", PAUSED: "yellow", DONE: "green", FAILED: "red",
               CANCELLED: "dim"}


class PromptInput(PaneInput):
    """An Input with shell-like history on up and down."""

    BINDINGS = [
        Binding("up", "history(-1)", "Previous prompt", show=False, id="prompt.previous"),
        Binding("down", "history(1)", "Next prompt", show=False, id="prompt.next"),
    ]

    def __init__(self, **kwargs):
        # A prompt put here (`y`, history) is there to be edited: focus leaves the cursor at
        # its end, where selecting it all made the first key typed replace it.
        super().__init__(select_on_focus=False, **kwargs)
        self.history: list[str] = []
        self.position = 0

    def remember(self, text: str) -> None:
        if text and (not self.history or self.history[-1] != text):
            self.history.append(text)
        self.position = len(self.history)

    def action_history(self, step: int) -> None:
        if not self.history:
            return
        self.position = max(0, min(len(self.history), self.position + step))
        self.value = self.history[self.position] if self.position < len(self.history) else ""
        self.cursor_position = len(self.value)


def describe_job(job: Job) -> str:
    """The list's last column: a generation's prompt, or what a training run does."""
    if job.kind == "train":
        steps = job.params.get("steps") if isinstance(job.params, dict) else None
        return f"training {steps or job.total} steps" + (
            f" ({job.params['run']})" if isinstance(job.params, dict) and job.params.get("run")
            else "") + (" in a terminal" if job.terminal_pid is not None else "")
    try:
        request = request_from_params(job.params)
    except (KeyError, TypeError, ValueError):
        return "?"
    swept = f"{len(request.sweep)} checkpoints · " if request.sweep else ""
    return swept + request.recipe.prompt


def job_cells(job: Job) -> tuple:
    progress = f"{job.step}/{job.total}" if job.total else ""
    return (str(job.id), plain(job.state, STATE_STYLE.get(job.state, "")), progress,
            plain(describe_job(job).replace("\n", " ")))


class QueuePane(Vertical):
    BINDINGS = [
        Binding("i", "focus_prompt", "Prompt", id="queue.prompt"),
        Binding("enter", "open", "Open", id="queue.open"),
        Binding("c", "cancel", "Cancel", id="queue.cancel"),
        Binding("K", "move(-1)", "Move up", id="queue.up"),
        Binding("J", "move(1)", "Move down", id="queue.down"),
        Binding("R", "repeat", "Repeat", id="queue.repeat"),
        Binding("space", "pause_queue", "Pause queue", id="queue.pause"),
        Binding("j", "cursor('down')", "Down", show=False, id="queue.cursor_down"),
        Binding("k", "cursor('up')", "Up", show=False, id="queue.cursor_up"),
        Binding("g,home", "cursor('top')", "Top", show=False, id="queue.top"),
        Binding("G,end", "cursor('bottom')", "Bottom", show=False, id="queue.bottom"),
    ]

    def __init__(self, ws: Workspace, protocol: str, **kwargs):
        super().__init__(**kwargs)
        self.ws = ws
        self.protocol = protocol
        self.jobs: list[Job] = []
        self.images: dict[int, list[str]] = {}  # paths as text: 20,000 Paths cost 0.3 s
        self.recipes: dict[str, dict] = {}  # image path -> the recipe it was made with
        self.paused = False

    def compose(self) -> ComposeResult:
        with Horizontal(id="prompt-row"):
            prompt = PromptInput(placeholder="type here · {trigger} · preset: prompt",
                                 id="prompt")
            prompt.border_title = "prompt (i)"
            yield prompt
            loras = PaneInput(value="1.0", id="loras", placeholder="1.0 · none · step-750:0.8")
            loras.border_title = "LoRAs"
            loras.tooltip = ("a number: the workspace LoRA at that scale; none: no LoRA; or "
                             "NAME[:SCALE] ... (step-750, a file in .lorabooth/loras, a path); "
                             "checkpoints: each checkpoint of the newest run, side by side")
            yield loras
            start = PaneInput(id="start", placeholder="me.jpg 0.8")
            start.border_title = "start image"
            yield start
            mask = PaneInput(id="mask", placeholder="hole.png")
            mask.border_title = "mask"
            mask.display = False  # inpainting needs a start image: shown once one is typed
            yield mask
            refs = PaneInput(id="refs", placeholder="me.jpg, jacket.png")
            refs.border_title = "references"
            refs.display = False  # FLUX.2 [klein] edits with them; shown on klein workspaces
            yield refs
        yield Label("", id="queue-state")
        with Horizontal(id="queue-main"):
            yield DataTable(id="jobs", cursor_type="row", zebra_stripes=True)
            with Vertical(id="job-detail"):
                yield Preview(self.protocol, id="job-preview")
                yield Static(id="job-text")  # the whole prompt the list cuts

    def on_mount(self) -> None:
        with filling(self):
            self.query_one("#jobs", DataTable).add_columns("id", "state", "progress", "prompt")
            self.fill_from_config()
            self.post_message(PaneReady(self))

    def fill_from_config(self) -> None:
        """What the config decides: completions, the LoRA scale, the reference images' box."""
        try:
            config = self.ws.config(check_photos=False)
        except LoraboothError:
            return
        words = ["{trigger}", config.trigger] + [f"{name}: " for name in config.generate.presets]
        self.query_one("#prompt", Input).suggester = SuggestFromList(words, case_sensitive=False)
        self.query_one("#loras", Input).value = f"{config.generate.lora_scale:g}"
        self.query_one("#refs", Input).display = model_of(config.image_model).family == "flux2"

    # -- live state -----------------------------------------------------------------------

    @on(PaneUpdate)
    def apply(self, message: PaneUpdate) -> None:
        delta = message.delta
        for output in delta.outputs:
            if output.kind == "image" and output.job is not None:
                self.images.setdefault(output.job, []).append(output.path)
                self.recipes[output.path] = output.recipe
        # Every job, training too: the queue is one line of work (a training job holds the
        # engine, and prompts render between its steps).
        jobs = list(delta.jobs)
        if jobs != self.jobs:
            before, self.jobs = self.jobs, jobs
            if [j.id for j in before] == [j.id for j in jobs]:
                self.update_rows(before)  # a running job's progress: one row changes
            else:
                self.refill()
        training = [j for j in jobs if j.kind == "train" and j.state in ACTIVE]
        unlisted = delta.jobs_total - len(jobs)
        set_text(self.query_one("#queue-state", Label), plain(
            f"{len([j for j in jobs if j.state == QUEUED])} waiting"
            + (f" · training (job {training[0].id})" if training else "")
            + (" · queue paused (space)" if self.paused else "")
            + (f" · {unlisted:,} older finished jobs not listed (lorabooth queue list)"
               if unlisted > 0 else "")))

    def update_rows(self, before: list[Job]) -> None:
        table = self.query_one("#jobs", DataTable)
        for row, (old, job) in enumerate(zip(before, self.jobs, strict=True)):
            if old != job:
                for column, value in enumerate(job_cells(job)):
                    table.update_cell_at(Coordinate(row, column), value)
        self.show_selected()

    def refill(self) -> None:
        table = self.query_one("#jobs", DataTable)
        keep = table.cursor_row
        # The cursor follows its job (moved with K/J, or shifted by a job above it ending),
        # not its row number.
        rows = table.ordered_rows
        kept_job = rows[keep].key.value if keep is not None and keep < len(rows) else None
        table.clear()
        for job in self.jobs:
            table.add_row(*job_cells(job), key=str(job.id))
        ids = [str(job.id) for job in self.jobs]
        if kept_job in ids:
            table.move_cursor(row=ids.index(kept_job))
        elif keep is not None and self.jobs:
            table.move_cursor(row=min(keep, len(self.jobs) - 1))
        self.show_selected()

    def selected(self) -> Job | None:
        table = self.query_one("#jobs", DataTable)
        if not self.jobs or table.cursor_row is None or table.cursor_row >= len(self.jobs):
            return None
        return self.jobs[table.cursor_row]

    @on(DataTable.RowHighlighted, "#jobs")
    def show_selected(self) -> None:
        job = self.selected()
        images = self.job_images(job) if job else []
        note = f"job {job.id} failed: {job.error}" if job and job.error else \
            "its samples show in the Train pane (2)" if job and job.kind == "train" else \
            "images show here when a job is done"
        self.query_one("#job-preview", Preview).show(Path(images[-1]) if images else None, note)
        text = "" if job is None else f"job {job.id} · {job.state} · {describe_job(job)}"
        set_text(self.query_one("#job-text", Static), plain(text, keep_newlines=True))

    def job_images(self, job: Job) -> list[str]:
        result = job.result if isinstance(job.result, dict) else {}
        found = self.images.get(job.id) or result.get("images")
        # A hand-edited database may hold anything there: what is not a path is skipped.
        return [p for p in found if isinstance(p, str)] if isinstance(found, list) else []

    @on(DataTable.RowSelected, "#jobs")
    def action_open(self) -> None:
        """The selected job's images, full-screen."""
        from ..viewer import Shown

        job = self.selected()
        if job is None:
            return
        if job.kind == "train":
            self.notify("a training job's samples open from the Train pane (2, then o)",
                        markup=False)
            return
        paths = [Path(p) for p in self.job_images(job)]
        if not paths:
            self.notify(f"job {job.id} has no images yet", markup=False)
            return
        recipe = job.params.get("recipe", {}) if isinstance(job.params, dict) else {}
        self.post_message(OpenViewer([Shown(p, "image", self.recipes.get(str(p), recipe))
                                      for p in paths], 0))

    # -- the prompt -----------------------------------------------------------------------

    def action_focus_prompt(self) -> None:
        self.query_one("#prompt", Input).focus()

    @on(Input.Submitted, "#prompt")
    def submit(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        prompt_box = self.query_one("#prompt", PromptInput)
        try:
            request = self.build_request(text)
        except (LoraboothError, ValueError) as exc:
            self.post_message(Notice(printable(str(exc)), "error"))
            return
        self.post_message(Write(AddJob("generate", request_to_params(request),
                                       total=request.size()), self))
        self.post_message(EngineWanted())
        prompt_box.remember(text)
        prompt_box.value = ""

    def build_request(self, text: str) -> Request:
        config = self.ws.config(check_photos=False)
        preset, prompt = split_preset(text, config.generate.presets)
        stack, sweep = typed_sweep(self.ws, self.query_one("#loras", Input).value)
        loras, scale = typed_loras(stack)
        refs = typed_refs(self.ws, config, self.query_one("#refs", Input).value)
        start, strength = typed_start(self.ws, config, self.query_one("#start", Input).value)
        mask_text = self.query_one("#mask", Input).value.strip()
        mask = typed_path(self.ws, config, mask_text) if start and mask_text else ""
        request = build_request(self.ws, config,
                                Asked(prompt, preset=preset, loras=loras, lora_scale=scale,
                                      refs=refs, init_image=start, strength=strength,
                                      mask=mask, sweep=sweep),
                                training=self.training())
        check_typed_loras(self.ws, loras or (), self.training())
        return request

    @on(Input.Changed, "#start")
    def show_mask(self, event: Input.Changed) -> None:
        self.query_one("#mask", Input).display = bool(event.value.strip())

    def training(self) -> bool:
        return training_underway(self.jobs)

    def use_prompt(self, prompt: str, start: str = "", loras: str | None = None) -> None:
        if start:
            self.query_one("#start", Input).value = start
        if loras is not None:
            self.query_one("#loras", Input).value = loras
        self.set_prompt(prompt)

    def set_prompt(self, text: str) -> None:
        box = self.query_one("#prompt", PromptInput)
        box.value = text
        box.cursor_position = len(text)
        focus_at_once(box)

    # -- queue actions --------------------------------------------------------------------

    def action_cursor(self, direction: str) -> None:
        table = self.query_one("#jobs", DataTable)
        move_cursor(table, direction)

    def action_cancel(self) -> None:
        job = self.selected()
        if job:
            self.post_message(Write(Control(job.id, "cancel",
                                            f"job {job.id}: cancel requested"), self))

    def action_move(self, step: int) -> None:
        job = self.selected()
        if job is None or job.state != QUEUED:
            return
        queued = [j.id for j in self.jobs if j.state == QUEUED]
        position = queued.index(job.id) + 1 + step
        self.post_message(Write(Move(job.id, max(1, position)), self))

    def action_repeat(self) -> None:
        job = self.selected()
        if job is None or job.kind != "generate":
            return
        request = request_from_params(job.params)
        recipe = replace(request.recipe, seed=request.recipe.seed + 1000 + job.id)
        says = f"job {job.id} repeated as job {{result}} with seed {recipe.seed}"
        self.post_message(Write(AddJob("generate",
                                       request_to_params(replace(request, recipe=recipe)),
                                       total=job.total, says=says), self))
        self.post_message(EngineWanted())

    def action_pause_queue(self) -> None:
        self.paused = not self.paused
        self.post_message(Write(SetSetting("queue_paused", "1" if self.paused else "0",
                                           "queue paused" if self.paused else "queue running"),
                                self))
