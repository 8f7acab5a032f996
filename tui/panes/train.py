"""The Train pane: the settings that will be used (the common ones editable), start / pause /
resume / stop, the live loss curve, step, speed, ETA and memory, the latest samples, and the
checkpoints with "promote"."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, Label, Static

from lorabooth.core.checkpoint import list_checkpoints, promote
from lorabooth.core.config import ConfigError, set_config_value
from lorabooth.core.safetext import plain
from lorabooth.core.store import Job, Store
from lorabooth.core.workspace import Workspace

from ..messages import Notice, StoreDelta
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
        self.ready = True
        self.app.catch_up(self)

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

    def apply(self, delta: StoreDelta) -> None:
        trains = [j for j in delta.jobs if j.kind == "train"]
        job = next((j for j in reversed(trains) if j.state in ("running", "paused")),
                   trains[-1] if trains else None)
        if job is not None and (self.job is None or job.id != self.job.id):
            self.steps, self.losses, self.seconds = [], [], []
            self.reload_metrics(job.id)
        self.job = job
        if job is not None:
            for row in delta.metrics.get(job.id, []):
                if self.steps and row["step"] <= self.steps[-1]:
                    cut = next(i for i, s in enumerate(self.steps) if s >= row["step"])
                    del self.steps[cut:], self.losses[cut:], self.seconds[cut:]
                self.steps.append(row["step"])
                self.losses.append(row["loss"])
                self.seconds.append(row["seconds"] or 0.0)
                self.memory = row["memory_gb"]
        samples = [o for o in delta.outputs if o["kind"] == "sample"]
        if samples:
            self.last_sample = Path(samples[-1]["path"])
            self.query_one("#sample-preview", Preview).show(self.last_sample)
        if delta.outputs or any(e["message"].startswith("job") for e in delta.events):
            self.refresh_checkpoints()
        self.update_stats()

    @work(thread=True, exclusive=True, group="train-metrics", exit_on_error=False)
    def reload_metrics(self, job_id: int) -> None:
        rows = Store(self.ws.db_path).metrics(job_id)
        self.app.call_from_thread(self._set_history, job_id, [dict(r) for r in rows])

    def _set_history(self, job_id: int, rows: list[dict]) -> None:
        if self.job is None or self.job.id != job_id:
            return
        self.steps = [r["step"] for r in rows]
        self.losses = [r["loss"] for r in rows]
        self.seconds = [r["seconds"] or 0.0 for r in rows]
        self.update_stats()

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
            text = (f"job {job.id} {job.state} · step {done}/{job.total} · "
                    f"{speed:.3f} s/step · ETA {eta_text(speed, job.total - done)}{memory}"
                    if speed else f"job {job.id} {job.state} · step {done}/{job.total}")
            if job.error:
                text += f"\n{job.error}"
        self.query_one("#train-stats", Static).update(plain(text, keep_newlines=True))

    def refresh_checkpoints(self) -> None:
        table = self.query_one("#checkpoints", DataTable)
        table.clear()
        import json

        for info in reversed(list_checkpoints(self.ws.checkpoints)):
            try:
                loss = json.loads((info.path / "meta.json").read_text()).get("loss")
            except (OSError, ValueError):
                loss = None
            table.add_row(info.path.name, f"{loss:.4f}" if loss is not None else "-",
                          key=str(info.step))

    # -- actions --------------------------------------------------------------------------

    def _store(self) -> Store:
        return Store(self.ws.db_path)

    def action_start(self) -> None:
        if self.job is not None and self.job.state in ("queued", "running", "paused"):
            self.app.notify("training is already queued or running", markup=False)
            return
        steps = self.query_one("#field-steps", Input).value
        resume = bool(list_checkpoints(self.ws.checkpoints))
        params = {"resume": resume}
        if steps.isdigit():
            params["steps"] = int(steps)
        job_id = self._store().add_job("train", params, total=params.get("steps", 0))
        self.app.notify(f"training queued as job {job_id}", markup=False)
        self.app.ensure_engine()

    def action_pause(self) -> None:
        if self.job is None:
            return
        store = self._store()
        job = store.job(self.job.id)  # fresh: the last poll may predate the last key press
        if job is None or job.state not in ("running", "paused"):
            return
        wanted = None if job.state == "paused" or job.control == "pause" else "pause"
        store.request(job.id, wanted)
        self.app.notify("resuming" if wanted is None else "pausing after this step",
                        markup=False)

    def action_stop(self) -> None:
        if self.job is not None and self.job.state in ("queued", "running", "paused"):
            self._store().request(self.job.id, "cancel")
            self.app.notify("stopping after this step (a checkpoint is kept)", markup=False)

    def action_log_scale(self) -> None:
        plot = self.query_one("#loss-plot", LossPlot)
        plot.log_scale = not plot.log_scale

    def action_edit(self) -> None:
        self.query_one("#field-steps", Input).focus()

    @on(Input.Submitted, ".field-input")
    def action_save(self) -> None:
        changed = []
        try:
            config = self.ws.config(check_photos=False)
            for key, label, parse in FIELDS:
                text = self.query_one(f"#field-{label}", Input).value.strip()
                if text == field_value(config, key):
                    continue
                try:
                    value = parse(text)
                except ValueError:
                    self.post_message(Notice(f"{label}: {text!r} is not a number", "error"))
                    return
                set_config_value(self.ws.root, key, value)
                changed.append(label)
        except ConfigError as exc:
            self.post_message(Notice(str(exc), "error"))
            return
        self.load_settings()
        if changed:
            self.app.notify(f"saved: {', '.join(changed)}", markup=False)

    def action_promote(self) -> None:
        table = self.query_one("#checkpoints", DataTable)
        if table.row_count == 0:
            return
        step = int(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)
        try:
            promote(self.ws.checkpoints, self.ws.loras, step)
        except (ValueError, OSError) as exc:
            self.post_message(Notice(str(exc), "error"))
            return
        self.app.notify(f"step {step} is now the workspace's LoRA", markup=False)
