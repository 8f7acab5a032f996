"""The Train pane: the settings that will be used (the common ones editable), start / pause /
resume / stop, the live loss curve, step, speed, ETA and memory, the latest samples, and the
checkpoints with "promote"."""

from __future__ import annotations

import math
from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, Static

from lorabooth.core.config import MEASURED_TRAINING_PHOTOS, ConfigError
from lorabooth.core.models.registry import model_of
from lorabooth.core.safetext import plain
from lorabooth.core.store import ACTIVE, CANCELLED, LIVE, RUNNING, Job, Metric, Validation
from lorabooth.core.train.checkpoint import (
    all_checkpoints,
    lowest_validation,
    promoted,
    recorded_loss,
    validations_of,
)
from lorabooth.core.workspace import Workspace

from ..messages import Done, EngineWanted, Notice, OpenViewer, PaneReady, PaneUpdate, Write
from ..store_io import (
    AddJob,
    Control,
    Promote,
    ReadMetrics,
    RunNumbers,
    SaveSettings,
    TogglePause,
)
from ..widgets.inputs import PaneInput
from ..widgets.lossplot import LossPlot
from ..widgets.preview import Preview
from ..widgets.text import join_fitting, set_text
from . import filling

# (config key, label, parse)
FIELDS = [
    ("train.steps", "steps", int),
    ("train.rank", "rank", int),
    ("train.learning_rate", "lr", float),
    ("train.resolution", "resolution", lambda s: [int(v) for v in s.replace(",", " ").split()]),
    ("trigger", "trigger", str),
]


def field_value(config, key: str) -> str:
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return " ".join(map(str, value)) if isinstance(value, list) else f"{value:g}" \
        if isinstance(value, float) else str(value)


def eta_text(seconds_per_step: float | None, remaining: int) -> str:
    if not seconds_per_step or remaining <= 0:
        return "-"
    total = int(seconds_per_step * remaining)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def run_of(job: Job | None, trains: list[Job]) -> tuple[int, ...]:
    """The jobs that trained `job`'s run (a new run, then its resumes and continues)."""
    if job is None:
        return ()
    run = job.params.get("run") if isinstance(job.params, dict) else None
    if not run:
        return (job.id,)
    return tuple(j.id for j in trains if isinstance(j.params, dict)
                 and j.params.get("run") == run and j.id <= job.id)


def loss_text(value: float) -> str:
    """A loss in a column's width: four decimals, or three figures where that would not fit
    (a forged or diverged record of 1e308 is 309 digits with four decimals)."""
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"


def run_validations(by_job: dict[int, list[Validation]], run_jobs: tuple[int, ...],
                    starts: dict[int, int]) -> list[tuple[int, float]]:
    """The run's validation losses as (step, loss): a resume that re-trained from step S
    replaces what earlier jobs measured after S."""
    points: list[tuple[int, float]] = []
    for job_id in run_jobs:
        if job_id in starts:
            points = [p for p in points if p[0] < starts[job_id]]
        points += [(v.step, v.loss) for v in by_job.get(job_id, [])
                   if v.loss is not None and math.isfinite(v.loss)]
    return points


def best_of(points: list[tuple[int, float]]) -> tuple[int, float] | None:
    """The lowest validation loss of the run's checkpoints (the base model's excluded)."""
    trained = [p for p in points if p[0] > 0]
    return min(trained, key=lambda p: p[1]) if trained else None


def add_rows(rows: list[Metric | Validation], new: list[Metric | Validation]) -> None:
    """Append `new` to `rows`; a step seen again (a retried step) replaces what followed it."""
    for row in new:
        while rows and rows[-1].step >= row.step:
            rows.pop()
        rows.append(row)


class TrainPane(Vertical):
    BINDINGS = [
        Binding("s", "start", "Start", id="train.start"),
        Binding("p", "pause", "Pause", id="train.pause"),
        Binding("x", "stop", "Stop", id="train.stop"),
        Binding("l", "log_scale", "Log scale", id="train.log"),
        Binding("r", "learning_rate", "Learning rate", show=False, id="train.lr"),
        Binding("e", "edit", "Settings", id="train.edit"),
        Binding("ctrl+s", "save", "Save", id="train.save"),
        Binding("P", "promote", "Promote", id="train.promote"),
        Binding("b", "best", "Best checkpoint", show=False, id="train.best"),
        Binding("o", "open_samples", "Samples", id="train.samples"),
        Binding("c", "compare", "Compare checkpoints", show=False, id="train.compare"),
    ]

    def __init__(self, ws: Workspace, protocol: str, **kwargs):
        super().__init__(**kwargs)
        self.ws = ws
        self.protocol = protocol
        self.job: Job | None = None
        self.run_jobs: tuple[int, ...] = ()  # the shown job's run: its start and resumes
        self.by_job: dict[int, list[Metric]] = {}
        self.val_by_job: dict[int, list[Validation]] = {}
        self.validation: list[tuple[int, float]] = []  # the run's, as (step, loss)
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.lrs: list[float] = []
        self.seconds: list[float] = []
        self.starts: list[int] = []
        self.memory: float | None = None
        self.last_sample: Path | None = None
        self.samples: list = []  # every sample output, oldest first
        self.doing: dict[int, str] = {}  # job id -> what its last event said
        self.elsewhere: int | None = None  # pid of a training the engine does not run
        self.best_rows: dict[str, str] = {}  # run -> label of its best checkpoint (val)

    def compose(self) -> ComposeResult:
        with Horizontal(id="train-top"):
            with Vertical(id="train-settings"):
                for _key, label, _ in FIELDS:
                    with Horizontal(classes="field"):
                        yield Label(label, classes="field-label")
                        yield PaneInput(id=f"field-{label}", classes="field-input")
                yield Static(id="train-config-note")
            with Vertical(id="train-live"):
                yield Static(id="train-stats")
                yield LossPlot(id="loss-plot")
        with Horizontal(id="train-bottom"):
            yield Preview(self.protocol, id="sample-preview")
            yield DataTable(id="checkpoints", cursor_type="row")

    def on_mount(self) -> None:
        with filling(self):
            # ★ marks the promoted checkpoint: the workspace's LoRA, kept until you promote
            # another
            # val: the validation loss (train.validate), which compares checkpoints as their
            # one step's loss cannot
            self.query_one("#checkpoints", DataTable).add_columns("", "checkpoint", "loss",
                                                                  "val")
            self.load_settings()
            self.update_stats()
            self.refresh_checkpoints()
            self.post_message(PaneReady(self))

    def load_settings(self) -> None:
        try:
            config = self.ws.config(check_photos=False)
        except ConfigError as exc:
            self.query_one("#train-config-note", Static).update(
                plain(str(exc), "red", keep_newlines=True))
            return
        for key, label, _ in FIELDS:
            self.query_one(f"#field-{label}", Input).value = field_value(config, key)
        base = model_of(config.model)
        t = config.train
        note = f"model {config.model} ({base.title}) · alpha {t.alpha:g} · optimizer {t.optimizer}"
        if word := t.preserved:  # train.preserve_class, set in the file
            note += f" · preserves {word!r}"
        # What the val column measures: held-out photos tell overfitting, training ones cannot.
        note += (" · val: off" if not t.validate else
                 f" · val: {t.validation_photos} held-out photos" if t.validation_photos else
                 f" · val: {MEASURED_TRAINING_PHOTOS} training photos")
        self.query_one("#train-config-note", Static).update(plain(note))

    # -- live state -----------------------------------------------------------------------

    @on(PaneUpdate)
    def apply(self, message: PaneUpdate) -> None:
        delta = message.delta
        trains = [j for j in delta.jobs if j.kind == "train"]
        job = next((j for j in reversed(trains) if j.state in LIVE),
                   trains[-1] if trains else None)
        self.job = job
        self.elsewhere = delta.training_elsewhere
        run_jobs = run_of(job, trains)
        if run_jobs != self.run_jobs:
            self.run_jobs, self.by_job, self.val_by_job = run_jobs, {}, {}
            if run_jobs:
                self.post_message(Write(ReadMetrics(run_jobs), self))
        changed = False
        for job_id in self.run_jobs:
            if delta.metrics.get(job_id):
                add_rows(self.by_job.setdefault(job_id, []), delta.metrics[job_id])
                changed = True
            if delta.validations.get(job_id):
                add_rows(self.val_by_job.setdefault(job_id, []), delta.validations[job_id])
                changed = True
        if changed:
            self.join_run()
        for event in delta.events:
            if event.job is not None:
                self.doing[event.job] = event.message
        samples = [o for o in delta.outputs if o.kind == "sample"]
        self.samples += samples
        if samples:
            self.last_sample = Path(samples[-1].path)
            self.query_one("#sample-preview", Preview).show(self.last_sample)
        if delta.outputs or any(e.message.startswith("job") for e in delta.events):
            self.refresh_checkpoints()
        self.update_stats()

    def join_run(self) -> None:
        """One series for the run: a resume re-trains from its checkpoint's step, so each job's
        rows replace the earlier jobs' rows from its first step on."""
        rows: list[Metric] = []
        starts = {}
        for job_id in self.run_jobs:
            mine = self.by_job.get(job_id, [])
            if not mine:
                continue
            starts[job_id] = mine[0].step
            add_rows(rows, mine)
        self.validation = run_validations(self.val_by_job, self.run_jobs, starts)
        self.steps = [r.step for r in rows]
        self.losses = [r.loss if r.loss is not None else math.nan for r in rows]
        self.lrs = [r.lr if r.lr is not None else math.nan for r in rows]
        self.seconds = [r.seconds or 0.0 for r in rows[-20:]]
        self.starts = list(starts.values())
        self.memory = rows[-1].memory_gb if rows else None

    @on(Done)
    def command_done(self, message: Done) -> None:
        command = message.command
        if isinstance(command, ReadMetrics) and not message.error:
            if command.job_ids == self.run_jobs:
                numbers: RunNumbers = message.result
                for job_id, rows in numbers.metrics.items():
                    # Rows the poller delivered meanwhile are newer than this read's.
                    add_rows(rows := list(rows), self.by_job.get(job_id, []))
                    self.by_job[job_id] = rows
                for job_id, measured in numbers.validations.items():
                    add_rows(measured := list(measured), self.val_by_job.get(job_id, []))
                    self.val_by_job[job_id] = measured
                self.join_run()
                self.update_stats()
        elif isinstance(command, SaveSettings) and message.error:
            # Saved, the app reloads every Train pane's settings (the Done bubbles up to it).
            self.mark_refused(message.error)
        elif isinstance(command, Promote):
            self.refresh_checkpoints()

    def on_resize(self) -> None:
        # The figures are laid out in lines for the width they get: after a resize, again
        # (once the stats' own width is known).
        self.call_after_refresh(self.update_stats)

    def update_stats(self) -> None:
        job = self.job
        plot = self.query_one("#loss-plot", LossPlot)
        empty = "no loss yet: start training (s)"
        if job is not None and job.state in LIVE and not self.by_job.get(job.id):
            empty = f"job {job.id}: " + self.doing.get(job.id, f"{job.state}, no step yet")
        plot.set_data(self.steps, self.losses, job.total if job else 0, lrs=self.lrs,
                      starts=self.starts, empty=empty, validation=self.validation)
        if job is None:
            text = "no training yet · s starts it"
        else:
            speed = sum(self.seconds) / len(self.seconds) if self.seconds else None
            done = self.steps[-1] if self.steps else job.step
            where = " in a terminal" if job.terminal_pid is not None else ""
            figures = [f"job {job.id} {job.state}{where}", f"step {done}/{job.total}"]
            if speed:
                figures.append(f"{speed:.3f} s/step")
                if job.state == RUNNING and done < job.total:  # paused/ended: no ETA
                    figures.append(f"ETA {eta_text(speed, job.total - done)}")
                if self.memory:
                    figures.append(f"GPU {self.memory:.1f} GiB")
            best = best_of(self.validation)
            if best is not None:
                figures.append(f"best val {loss_text(best[1])} at step {best[0]}")
            stats = self.query_one("#train-stats", Static)
            text = join_fitting(figures, stats.content_size.width)
            if self.carries_on():
                text += f"\ns carries it on to step {job.total}"
            if job.error:
                text += f"\n{job.error}"
        if self.elsewhere is not None and (job is None or job.state not in LIVE):
            text = (f"{elsewhere_text(self.elsewhere)}: its curve shows here from its first "
                    "step; s queues a run to start when it ends\n" + text)
        set_text(self.query_one("#train-stats", Static), plain(text, keep_newlines=True))

    def refresh_checkpoints(self) -> None:
        table = self.query_one("#checkpoints", DataTable)
        table.clear()
        chosen = promoted(self.ws, verify=False)
        pairs = validations_of(all_checkpoints(self.ws.checkpoints))  # oldest first
        self.best_rows = {}  # run -> the label of its checkpoint of lowest validation loss
        for run in dict.fromkeys(info.run for info, _ in pairs):
            found = lowest_validation(p for p in pairs if p[0].run == run)
            if found is not None:
                self.best_rows[run] = found[0].label
        for info, value in reversed(pairs):
            loss = recorded_loss(info.path)
            mark = "★" if chosen is not None and chosen.label == info.label else " "
            best = self.best_rows.get(info.run) == info.label
            val = Text("-") if value is None else Text(loss_text(value),
                                                       "bold green" if best else "")
            table.add_row(mark, info.label, loss_text(loss) if loss is not None else "-", val,
                          key=info.label)

    # -- actions --------------------------------------------------------------------------

    def action_start(self) -> None:
        if self.job is not None and self.job.state in ACTIVE:
            self.notify("training is already queued or running", markup=False)
            return
        steps = self.query_one("#field-steps", Input).value
        params: dict = {"resume": False}  # a new run, with checkpoints of its own
        if self.carries_on():
            # The last run was stopped before its end: start carries it on, to the step count
            # it shows ("step 700/1500"); the steps field is a new run's.
            params = {"resume": True, "run": self.job.params["run"]}
            if self.job.total > 0:
                params["steps"] = self.job.total
        elif steps.isdigit():
            params["steps"] = int(steps)
        self.post_message(Write(AddJob("train", params, total=params.get("steps", 0),
                                       says="training queued as job {result}"), self))
        self.post_message(EngineWanted())

    def carries_on(self) -> bool:
        """Whether start continues the shown run: it was stopped before its end."""
        job = self.job
        return job is not None and job.state == CANCELLED and bool(job.params.get("run"))

    def action_pause(self) -> None:
        if self.job is not None:
            self.post_message(Write(TogglePause(self.job.id), self))

    def action_stop(self) -> None:
        if self.job is not None and self.job.state in ACTIVE:
            self.post_message(Write(Control(self.job.id, "cancel",
                                            "stopping after this step (a checkpoint is kept)"),
                                    self))

    def action_open_samples(self) -> None:
        """Every sample so far, full-screen, starting at the newest."""
        from ..viewer import Shown

        if not self.samples:
            self.notify("no samples yet: they are made every sample.every steps", markup=False)
            return
        items = [Shown.of(o) for o in self.samples]
        self.post_message(OpenViewer(items, len(items) - 1))

    def action_log_scale(self) -> None:
        plot = self.query_one("#loss-plot", LossPlot)
        plot.log_scale = not plot.log_scale

    def action_learning_rate(self) -> None:
        plot = self.query_one("#loss-plot", LossPlot)
        plot.show_lr = not plot.show_lr

    def action_edit(self) -> None:
        self.query_one("#field-steps", Input).focus()

    @on(Input.Submitted, ".field-input")
    def action_save(self) -> None:
        """Every field is checked before anything is written; any problem writes nothing, and
        each field at fault is marked where it is."""
        try:
            config = self.ws.config(check_photos=False)
        except ConfigError as exc:
            self.post_message(Notice(str(exc), "error"))
            return
        values, problems = {}, []
        for key, label, parse in FIELDS:
            box = self.query_one(f"#field-{label}", Input)
            text = box.value.strip()
            box.set_class(False, "-invalid")
            if text == field_value(config, key):
                continue
            try:
                values[key] = parse(text)
            except ValueError:
                problems.append(f"{label}: {text!r} is not a number")
                box.set_class(True, "-invalid")
        if problems:
            self.post_message(Notice("not saved: " + "; ".join(problems), "error"))
        elif values:
            labels = ", ".join(label for key, label, _ in FIELDS if key in values)
            self.post_message(Write(SaveSettings(values, f"saved: {labels}"), self))

    def mark_refused(self, error: str) -> None:
        """The config refused the values (e.g. rank 0): mark the fields it names."""
        for key, label, _ in FIELDS:
            if key in error or key.split(".")[-1] in error:
                self.query_one(f"#field-{label}", Input).set_class(True, "-invalid")

    def action_compare(self) -> None:
        """A prompt in the Queue that renders with each checkpoint of the selected run, side by
        side (same seed): the way to pick one when the samples' prompts are not yours."""
        table = self.query_one("#checkpoints", DataTable)
        if table.row_count == 0:
            self.notify("no checkpoints to compare yet", markup=False)
            return
        label = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        run = label.partition("/")[0]
        self.app.use_prompt("", loras=f"{run}/checkpoints")

    def action_best(self) -> None:
        """The cursor to the shown run's checkpoint of lowest validation loss (the newest
        run's when none is shown): P then promotes it."""
        run = self.job.params.get("run") if self.job and isinstance(self.job.params, dict) \
            else None
        newest = list(self.best_rows.values())[-1] if self.best_rows else None
        label = self.best_rows.get(run, newest)
        if label is None:
            self.notify("no checkpoint has a validation loss yet (train.validate)",
                        markup=False)
            return
        table = self.query_one("#checkpoints", DataTable)
        table.focus()
        table.move_cursor(row=table.get_row_index(label))
        self.notify(f"{label}: the lowest validation loss of its run · P promotes it",
                    markup=False)

    def action_promote(self) -> None:
        table = self.query_one("#checkpoints", DataTable)
        if table.row_count == 0:
            return
        label = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        run, _, step = label.partition("/step-")
        self.post_message(Write(Promote(int(step), run), self))


def elsewhere_text(pid: int) -> str:
    who = f"pid {pid}" if pid > 0 else "another process"
    return f"a training runs outside the engine ({who}, `lorabooth train` in a terminal?)"
