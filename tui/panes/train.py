"""The Train pane: the settings that will be used (the common ones editable), start / pause /
resume / stop, the live loss curve, step, speed, ETA and memory, the latest samples, and the
checkpoints with "promote"."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, Static

from lorabooth.core.config import ConfigError
from lorabooth.core.safetext import plain
from lorabooth.core.store import ACTIVE, CANCELLED, LIVE, RUNNING, Job, Metric
from lorabooth.core.train.checkpoint import all_checkpoints
from lorabooth.core.workspace import Workspace

from ..messages import Done, EngineWanted, Notice, PaneReady, PaneUpdate, Write
from ..store_io import AddJob, Control, Promote, ReadMetrics, SaveSettings, TogglePause
from ..widgets.lossplot import LossPlot
from ..widgets.preview import Preview

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


class TrainPane(Vertical):
    BINDINGS = [
        Binding("s", "start", "Start", id="train.start"),
        Binding("p", "pause", "Pause/resume", id="train.pause"),
        Binding("x", "stop", "Stop", id="train.stop"),
        Binding("l", "log_scale", "Log scale", id="train.log"),
        Binding("e", "edit", "Edit settings", id="train.edit"),
        Binding("ctrl+s", "save", "Save settings", id="train.save"),
        Binding("P", "promote", "Promote checkpoint", id="train.promote"),
    ]

    def __init__(self, ws: Workspace, protocol: str, **kwargs):
        super().__init__(**kwargs)
        self.ws = ws
        self.protocol = protocol
        self.job: Job | None = None
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.seconds: list[float] = []
        self.memory: float | None = None
        self.last_sample: Path | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="train-top"):
            with Vertical(id="train-settings"):
                for _key, label, _ in FIELDS:
                    with Horizontal(classes="field"):
                        yield Label(label, classes="field-label")
                        yield Input(id=f"field-{label}", classes="field-input")
                yield Static(id="train-config-note")
            with Vertical(id="train-live"):
                yield Static(id="train-stats")
                yield LossPlot(id="loss-plot")
        with Horizontal(id="train-bottom"):
            yield Preview(self.protocol, id="sample-preview")
            yield DataTable(id="checkpoints", cursor_type="row")

    def on_mount(self) -> None:
        self.query_one("#checkpoints", DataTable).add_columns("checkpoint", "loss")
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
        self.query_one("#train-config-note", Static).update(
            plain(f"model {config.model} · alpha {config.train.alpha:g} · "
                  f"optimizer {config.train.optimizer}"))

    # -- live state -----------------------------------------------------------------------

    @on(PaneUpdate)
    def apply(self, message: PaneUpdate) -> None:
        delta = message.delta
        trains = [j for j in delta.jobs if j.kind == "train"]
        job = next((j for j in reversed(trains) if j.state in LIVE),
                   trains[-1] if trains else None)
        if job is not None and (self.job is None or job.id != self.job.id):
            self.steps, self.losses, self.seconds = [], [], []
            self.post_message(Write(ReadMetrics(job.id), self))
        self.job = job
        if job is not None:
            self._add_rows(delta.metrics.get(job.id, []))
        samples = [o for o in delta.outputs if o.kind == "sample"]
        if samples:
            self.last_sample = Path(samples[-1].path)
            self.query_one("#sample-preview", Preview).show(self.last_sample)
        if delta.outputs or any(e.message.startswith("job") for e in delta.events):
            self.refresh_checkpoints()
        self.update_stats()

    def _add_rows(self, rows: list[Metric]) -> None:
        for row in rows:
            if self.steps and row.step <= self.steps[-1]:
                cut = next(i for i, s in enumerate(self.steps) if s >= row.step)
                del self.steps[cut:], self.losses[cut:], self.seconds[cut:]
            self.steps.append(row.step)
            self.losses.append(row.loss)
            self.seconds.append(row.seconds or 0.0)
            self.memory = row.memory_gb

    @on(Done)
    def command_done(self, message: Done) -> None:
        command = message.command
        if isinstance(command, ReadMetrics) and not message.error:
            if self.job is not None and self.job.id == command.job_id:
                self.steps, self.losses, self.seconds = [], [], []
                self._add_rows(message.result)
                self.update_stats()
        elif isinstance(command, SaveSettings) and not message.error:
            self.load_settings()
        elif isinstance(command, Promote):
            self.refresh_checkpoints()

    def update_stats(self) -> None:
        job = self.job
        plot = self.query_one("#loss-plot", LossPlot)
        plot.set_data(self.steps, self.losses, job.total if job else 0)
        if job is None:
            text = "no training yet · s starts it"
        else:
            recent = self.seconds[-20:]
            speed = sum(recent) / len(recent) if recent else None
            done = self.steps[-1] if self.steps else job.step
            memory = f" · GPU {self.memory:.1f} GiB" if self.memory else ""
            text = f"job {job.id} {job.state} · step {done}/{job.total}"
            if speed:
                text += f" · {speed:.3f} s/step"
                if job.state == RUNNING:  # a paused, stopped or ended job has no ETA
                    text += f" · ETA {eta_text(speed, job.total - done)}"
                text += memory
            if job.error:
                text += f"\n{job.error}"
        self.query_one("#train-stats", Static).update(plain(text, keep_newlines=True))

    def refresh_checkpoints(self) -> None:
        table = self.query_one("#checkpoints", DataTable)
        table.clear()
        import json

        for info in reversed(all_checkpoints(self.ws.checkpoints)):
            try:
                loss = json.loads((info.path / "meta.json").read_text()).get("loss")
            except (OSError, ValueError):
                loss = None
            table.add_row(info.label, f"{loss:.4f}" if loss is not None else "-",
                          key=info.label)

    # -- actions --------------------------------------------------------------------------

    def action_start(self) -> None:
        if self.job is not None and self.job.state in ACTIVE:
            self.notify("training is already queued or running", markup=False)
            return
        steps = self.query_one("#field-steps", Input).value
        params: dict = {"resume": False}  # a new run, with checkpoints of its own
        if self.job is not None and self.job.state == CANCELLED and self.job.params.get("run"):
            # The last run was stopped before its end: start carries it on.
            params = {"resume": True, "run": self.job.params["run"]}
        if steps.isdigit():
            params["steps"] = int(steps)
        self.post_message(Write(AddJob("train", params, total=params.get("steps", 0),
                                       says="training queued as job {result}"), self))
        self.post_message(EngineWanted())

    def action_pause(self) -> None:
        if self.job is not None:
            self.post_message(Write(TogglePause(self.job.id), self))

    def action_stop(self) -> None:
        if self.job is not None and self.job.state in ACTIVE:
            self.post_message(Write(Control(self.job.id, "cancel",
                                            "stopping after this step (a checkpoint is kept)"),
                                    self))

    def action_log_scale(self) -> None:
        plot = self.query_one("#loss-plot", LossPlot)
        plot.log_scale = not plot.log_scale

    def action_edit(self) -> None:
        self.query_one("#field-steps", Input).focus()

    @on(Input.Submitted, ".field-input")
    def action_save(self) -> None:
        """Every field is checked before anything is written; any problem writes nothing."""
        try:
            config = self.ws.config(check_photos=False)
        except ConfigError as exc:
            self.post_message(Notice(str(exc), "error"))
            return
        values = {}
        for key, label, parse in FIELDS:
            text = self.query_one(f"#field-{label}", Input).value.strip()
            if text == field_value(config, key):
                continue
            try:
                values[key] = parse(text)
            except ValueError:
                self.post_message(Notice(f"{label}: {text!r} is not a number", "error"))
                return
        if values:
            labels = ", ".join(label for key, label, _ in FIELDS if key in values)
            self.post_message(Write(SaveSettings(values, f"saved: {labels}"), self))

    def action_promote(self) -> None:
        table = self.query_one("#checkpoints", DataTable)
        if table.row_count == 0:
            return
        label = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        run, _, step = label.partition("/step-")
        self.post_message(Write(Promote(int(step), run), self))
