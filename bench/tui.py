"""UI speed and bytes in a real terminal, each figure against a bare Textual app measured by
the same harness in the same run:
- start to first full frame (tmux): `lorabooth WORKSPACE` until the photo list is drawn,
  against a minimal Textual app until its first label is drawn (both with their modules
  compiled, as installed);
- key press to repaint (tmux) while a writer adds training metrics at 20 steps/s: toggling the
  loss plot's log scale (`l`) until the screen shows it, against a minimal app toggling a label;
- bytes written to the terminal per second (a pty, what SSH carries) at 80x24 and 160x48: idle
  on each pane with a finished run in the store, and on the Train pane while a run adds one
  metric per step at 2 steps/s; against a bare app idle, and one updating a label per step;
- browsing the photo list (j/k, each key let settle), CPU ms and bytes per key, the half-cell
  preview drawn each time, at both sizes; against a bare app moving a cursor in a list of
  the same names (no preview). Ours also polls the store 4 times a second meanwhile.

    python -m bench.tui [--presses 40] [--seconds 10]
"""

from __future__ import annotations

import argparse
import compileall
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench._common import report
from bench.ptyterm import PtyProgram
from lorabooth.core.store import Store
from lorabooth.core.workspace import init_workspace

REPO = Path(__file__).resolve().parent.parent
BARE_APP = """
from textual.app import App
from textual.widgets import Label
class Bare(App):
    BINDINGS = [("l", "toggle", "toggle")]
    def compose(self):
        yield Label("bare ready", id="l")
    def action_toggle(self):
        label = self.query_one("#l", Label)
        label.update("bare (log)" if "log" not in str(label.render()) else "bare ready")
    def on_mount(self):
        import os
        if os.environ.get("BARE_TICK"):  # a label that changes at each training step
            self.step = 0
            self.set_interval(float(os.environ["BARE_TICK"]), self.tick)
    def tick(self):
        self.step += 1
        self.query_one("#l", Label).update(f"bare ready step {self.step}")
Bare().run()
"""
BARE_LIST = """
from pathlib import Path
import sys
from textual.app import App
from textual.widgets import DataTable
class BareList(App):
    BINDINGS = [("j", "down", "down"), ("k", "up", "up")]
    def compose(self):
        yield DataTable(cursor_type="row")
    def on_mount(self):
        table = self.query_one(DataTable)
        table.add_columns("photo")
        for path in sorted(Path(sys.argv[1]).glob("*.jpg")):
            table.add_row(path.name)
        table.add_row("bare list ready")
    def action_down(self):
        self.query_one(DataTable).action_cursor_down()
    def action_up(self):
        self.query_one(DataTable).action_cursor_up()
BareList().run()
"""
SIZES = ((80, 24), (160, 48))
STEPS_PER_S = 2.0


class Pane:
    def __init__(self, command: str):
        self.socket = f"lorabooth-bench-{os.getpid()}"
        self.tmux("new-session", "-d", "-s", "b", "-x", "120", "-y", "40", command)

    def tmux(self, *args: str) -> str:
        return subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True,
                              text=True).stdout

    def wait(self, text: str, present: bool = True, timeout: float = 30) -> float:
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            if (text in self.tmux("capture-pane", "-p", "-t", "b")) == present:
                return time.perf_counter()
        raise TimeoutError(f"{text!r} not shown:\n" + self.tmux("capture-pane", "-p", "-t", "b"))

    def close(self) -> None:
        self.tmux("kill-server")
        while subprocess.run(["tmux", "-L", self.socket, "list-sessions"],
                             capture_output=True).returncode == 0:
            time.sleep(0.05)


def env_prefix(extra: dict[str, str]) -> str:
    return "env " + " ".join(f"{k}={shlex.quote(v)}" for k, v in extra.items())


def first_frame(command: str, marker: str) -> float:
    start = time.perf_counter()
    pane = Pane(command)
    try:
        return pane.wait(marker) - start
    finally:
        pane.close()


def toggle_latency(command: str, ready: str, switch: list[str], presses: int) -> list[float]:
    pane = Pane(command)
    try:
        pane.wait(ready)
        for key in switch:
            pane.tmux("send-keys", "-t", "b", key)
        time.sleep(0.5)
        times = []
        shown = False
        for _ in range(presses):
            start = time.perf_counter()
            pane.tmux("send-keys", "-t", "b", "l")
            shown = not shown
            times.append(pane.wait("(log)", present=shown) - start)
        return times
    finally:
        pane.close()


def metrics_writer(db: Path, stop: threading.Event) -> None:
    store = Store(db)
    job = store.add_job("train", {"steps": 10**6}, total=10**6)
    store.update_job(job, state="running")
    step = 0
    while not stop.is_set():
        step += 1
        store.add_metric(job, step, loss=1.0 / (1 + step / 500), lr=1e-4, grad_norm=1.0,
                         seconds=0.05, images_per_s=20.0, memory_gb=None)
        store.update_job(job, step=step)
        time.sleep(0.05)


def seed_finished_run(db: Path, steps: int = 400) -> None:
    """A finished training run in the store: what the Train pane shows when nothing moves."""
    store = Store(db)
    job = store.add_job("train", {"steps": steps, "run": "run-001"}, total=steps)
    store.update_job(job, state="running")
    for step in range(1, steps + 1):
        store.add_metric(job, step, loss=0.3 / (1 + step / 50) + 0.02 * (step % 7) / 7,
                         lr=1e-4, grad_norm=1.0, seconds=0.5, images_per_s=2.0,
                         memory_gb=None)
    store.update_job(job, state="done", step=steps)


def live_writer(db: Path, stop: threading.Event, steps_per_s: float) -> None:
    """A run that adds one metric per step, as the engine does."""
    store = Store(db)
    job = store.add_job("train", {"steps": 10**5, "run": "run-002"}, total=10**5)
    store.update_job(job, state="running")
    step = 0
    while not stop.wait(1 / steps_per_s):
        step += 1
        store.add_metric(job, step, loss=0.3 / (1 + step / 50), lr=1e-4, grad_norm=1.0,
                         seconds=1 / steps_per_s, images_per_s=steps_per_s, memory_gb=None)
        store.update_job(job, step=step)


def byte_rate(argv: list[str], env: dict[str, str], size: tuple[int, int], ready: str,
              keys: str, seconds: float) -> float:
    """Bytes per second written while `keys` shows a pane and nothing else is pressed."""
    with PtyProgram(argv, env, *size) as program:
        program.wait_for(ready)
        program.settle(1.0)
        for key in keys:
            program.send(key)
            program.settle(1.0)
        return program.count(seconds) / seconds


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def browse_cost(argv: list[str], env: dict[str, str], size: tuple[int, int], ready: str,
                presses: int) -> tuple[float, float]:
    """CPU ms and bytes per key moving through a list: down 8 rows, up 8, and so on, each key
    given 0.15 s to be drawn."""
    with PtyProgram(argv, env, *size) as program:
        program.wait_for(ready)
        program.settle(1.0)
        cpu, written = cpu_seconds(program.pid), program.total
        for i in range(presses):
            program.send("j" if (i // 8) % 2 == 0 else "k")
            program.settle(0.15)
        program.settle(0.5)
        return ((cpu_seconds(program.pid) - cpu) / presses * 1000,
                (program.total - written) / presses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presses", type=int, default=40)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per byte-rate window")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("bench/tui.py needs tmux")
    # As installed: pip compiles the package's modules, and a first run writes them where the
    # shell does not forbid it (PYTHONDONTWRITEBYTECODE); without this, a checkout edited since
    # its last run compiled ours at each start (~0.05 s) and not the bare app's.
    for folder in ("core", "tui", "themes"):
        compileall.compile_dir(REPO / folder, quiet=1)
    root = Path(tempfile.mkdtemp(prefix="lorabooth-bench-tui-"))
    env = {"LORABOOTH_NO_ENGINE": "1", "LORABOOTH_IMAGES": "halfcell",
           "LORABOOTH_CONFIG_DIR": str(root / "config"), "TERM": "xterm-256color"}
    python = shlex.quote(sys.executable)
    try:
        photos = root / "photos"
        shutil.copytree(REPO / "sample_photos", photos,
                        ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        ws = init_workspace(root / "ws", photos, model="demo", trigger="zorb")
        bare_file = root / "bare.py"
        bare_file.write_text(BARE_APP)
        bare_list = root / "bare_list.py"
        bare_list.write_text(BARE_LIST)
        ours_cmd = f"{env_prefix(env)} {python} -m lorabooth.core.cli {shlex.quote(str(ws.root))}"
        bare_cmd = f"{env_prefix(env)} {python} {shlex.quote(str(bare_file))}"
        ours_start = min(first_frame(ours_cmd, "16 photos:") for _ in range(args.starts))
        bare_start = min(first_frame(bare_cmd, "bare ready") for _ in range(args.starts))
        ours_argv = [sys.executable, "-m", "lorabooth.core.cli", str(ws.root)]
        bare_argv = [sys.executable, str(bare_file)]
        browsing = [(size, browse_cost(ours_argv, env, size, "16 photos:", args.presses),
                     browse_cost([sys.executable, str(bare_list), str(photos)], env, size,
                                 "bare list ready", args.presses)) for size in SIZES]
        seed_finished_run(ws.db_path)
        rates = []
        for size in SIZES:
            bare_idle = byte_rate(bare_argv, env, size, "bare ready", "", args.seconds)
            for key, pane in zip("1234", ("dataset", "train", "queue", "gallery"), strict=True):
                rates.append(("idle", pane, size, byte_rate(ours_argv, env, size, "photos:",
                                                            key, args.seconds), bare_idle))
        stop = threading.Event()
        writer = threading.Thread(target=live_writer, args=(ws.db_path, stop, STEPS_PER_S),
                                  daemon=True)
        writer.start()
        try:
            for size in SIZES:
                bare_tick = byte_rate(bare_argv, {**env, "BARE_TICK": str(1 / STEPS_PER_S)},
                                      size, "bare ready", "", args.seconds)
                rates.append(("training", "train", size, byte_rate(
                    ours_argv, env, size, "photos:", "2", args.seconds), bare_tick))
        finally:
            stop.set()
            writer.join()
        stop = threading.Event()
        writer = threading.Thread(target=metrics_writer, args=(ws.db_path, stop), daemon=True)
        writer.start()
        try:
            ours = toggle_latency(ours_cmd, "16 photos:", ["2"], args.presses)
            bare = toggle_latency(bare_cmd, "bare ready", [], args.presses)
        finally:
            stop.set()
            writer.join()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def p95(values: list[float]) -> float:
        return sorted(values)[int(0.95 * (len(values) - 1))]

    rows = [
        {"case": "start to first full frame, s", "lorabooth": ours_start,
         "baseline": "bare Textual app", "baseline_value": bare_start,
         "ratio": ours_start / bare_start},
        {"case": "key to repaint p50, ms", "lorabooth": statistics.median(ours) * 1000,
         "baseline": "bare Textual app", "baseline_value": statistics.median(bare) * 1000,
         "ratio": statistics.median(ours) / statistics.median(bare)},
        {"case": "key to repaint p95, ms", "lorabooth": p95(ours) * 1000,
         "baseline": "bare Textual app", "baseline_value": p95(bare) * 1000,
         "ratio": p95(ours) / p95(bare)},
    ]
    for (columns, lines), (ours_cpu, ours_bytes), (bare_cpu, bare_bytes) in browsing:
        for unit, mine, theirs in (("CPU ms", ours_cpu, bare_cpu),
                                   ("bytes", ours_bytes, bare_bytes)):
            rows.append({"case": f"browse photos {columns}x{lines}, {unit} per key",
                         "lorabooth": mine, "baseline": "bare app, a list of the names",
                         "baseline_value": theirs, "ratio": mine / theirs if theirs else "-"})
    for case, pane, (columns, lines), ours_rate, bare_rate in rates:
        baseline = "bare app idle" if case == "idle" else "bare app, a label per step"
        rows.append({"case": f"{case} {pane} {columns}x{lines}, B/s", "lorabooth": ours_rate,
                     "baseline": baseline, "baseline_value": bare_rate,
                     "ratio": ours_rate / bare_rate if bare_rate else "-"})
    report("tui", rows, {"presses": args.presses, "metrics_per_s": 20,
                         "training_steps_per_s": STEPS_PER_S, "byte_window_s": args.seconds,
                         "goals": {"first_frame_s": 0.5, "key_repaint_p95_ms": 50,
                                   "idle_bytes_per_s": 300, "training_bytes_per_s": 4000}})


if __name__ == "__main__":
    main()
