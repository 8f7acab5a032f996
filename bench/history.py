"""The UI over a long history: months of use leave thousands of finished jobs and images in a
workspace's store. The UI's CPU time while a generation job advances (the Queue pane shown),
and its first full frame, with 5,000 finished jobs and 20,000 images against the same
workspace with none, measured in the same run. Each run is a real `lorabooth WORKSPACE` in a
pseudo-terminal, as over SSH.

    python -m bench.history [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import shutil
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
JOBS, IMAGES = 5000, 20000
STEPS_PER_S = 4.0


def seed_history(db: Path) -> None:
    """JOBS finished prompts and IMAGES images, written in one transaction (the store's own
    `add_job` commits each: minutes for 25,000 rows)."""
    params = json.dumps({"prompt": "photo of zorb on a beach at sunset, wearing a scarf",
                         "seed": 3, "loras": [{"name": "workspace", "scale": 1.0}]})
    recipe = json.dumps({"prompt": "photo of zorb on a beach", "seed": 3, "model": "demo"})

    def insert(conn) -> None:
        now = time.time()
        conn.executemany(
            "INSERT INTO jobs (kind, state, params, position, step, total, created, updated) "
            "VALUES ('generate', 'done', ?, ?, 4, 4, ?, ?)",
            [(params, n, now, now) for n in range(JOBS)])
        conn.executemany(
            "INSERT INTO outputs (job, path, kind, recipe, created) VALUES (?, ?, 'image', ?, ?)",
            [(n // 4 + 1, f"/gone/zorb-{n}.png", recipe, now) for n in range(IMAGES)])

    Store(db).write(insert)


def running_job(db: Path, stop: threading.Event) -> None:
    """A generation the engine advances one denoising step at a time."""
    store = Store(db)
    job = store.add_job("generate", {"prompt": "zorb now"}, total=10**6)
    store.update_job(job, state="running")
    step = 0
    while not stop.wait(1 / STEPS_PER_S):
        step += 1
        store.update_job(job, step=step)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def measure(ws_root: Path, env: dict[str, str], seconds: float) -> tuple[float, float]:
    """First full frame (s) and CPU seconds per second on the Queue pane while a job runs."""
    argv = [sys.executable, "-m", "lorabooth.core.cli", str(ws_root)]
    stop = threading.Event()
    writer = threading.Thread(target=running_job, args=(ws_root / ".lorabooth" /
                                                        "workspace.db", stop), daemon=True)
    start = time.perf_counter()
    with PtyProgram(argv, env, 120, 40) as program:
        program.wait_for("16 photos:")
        frame = time.perf_counter() - start
        program.send("3")
        program.settle(1.0)
        writer.start()
        try:
            program.settle(1.0)
            before = cpu_seconds(program.pid)
            program.settle(seconds)
            cpu = (cpu_seconds(program.pid) - before) / seconds
        finally:
            stop.set()
            writer.join()
    return frame, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lorabooth-bench-history-"))
    env = {"LORABOOTH_NO_ENGINE": "1", "LORABOOTH_IMAGES": "halfcell",
           "LORABOOTH_CONFIG_DIR": str(root / "config"), "TERM": "xterm-256color"}
    try:
        photos = root / "photos"
        shutil.copytree(REPO / "sample_photos", photos,
                        ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        fresh = init_workspace(root / "fresh", photos, model="demo", trigger="zorb")
        old = init_workspace(root / "old", photos, model="demo", trigger="zorb")
        seed_history(old.db_path)
        empty = measure(fresh.root, env, args.seconds)
        history = measure(old.root, env, args.seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        {"case": "first full frame, s", "lorabooth": history[0],
         "baseline": "no history", "baseline_value": empty[0],
         "ratio": history[0] / empty[0]},
        {"case": "UI CPU while a job runs (Queue pane), s/s", "lorabooth": history[1],
         "baseline": "no history", "baseline_value": empty[1],
         "ratio": history[1] / empty[1] if empty[1] else "-"},
    ]
    report("history", rows, {"finished_jobs": JOBS, "images": IMAGES,
                             "job_steps_per_s": STEPS_PER_S, "window_s": args.seconds})


if __name__ == "__main__":
    main()
