"""What the store costs: metric rows written per second while a reader polls at 10 Hz (against
the same writer with no reader, in the same run), and the time from a queued job to the engine
picking it up (goal: under 200 ms).

    python -m bench.store [--rows 3000] [--jobs 20]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench._common import report
from lorabooth.core import engine
from lorabooth.core.store import Store
from lorabooth.core.workspace import Workspace, init_workspace


def poll(db: Path, stop_at: float) -> None:
    store = Store(db)
    last = 0
    while time.time() < stop_at:
        rows = store.metrics(1, last)
        if rows:
            last = rows[-1]["step"]
        store.jobs()
        time.sleep(0.1)


def write_rows(db: Path, rows: int, start_step: int) -> float:
    store = Store(db)
    begin = time.perf_counter()
    for step in range(start_step, start_step + rows):
        store.add_metric(1, step, loss=0.5, lr=1e-4, grad_norm=1.0, seconds=0.01,
                         images_per_s=100.0, memory_gb=None)
        store.update_job(1, step=step)
    return rows / (time.perf_counter() - begin)


def pickup_latency(ws: Workspace, jobs: int) -> list[float]:
    store = Store(ws.db_path)
    engine.start_detached(ws)
    try:
        latencies = []
        for _ in range(jobs):
            # An unknown kind fails at once: the engine's pick-up is all that is timed.
            job_id = store.add_job("bench-noop")
            while (job := store.job(job_id)).started is None:
                time.sleep(0.002)
            latencies.append(job.started - job.created)
            time.sleep(0.05)
        return latencies
    finally:
        engine.stop(ws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lorabooth-bench-store-"))
    try:
        photos = root / "photos"
        photos.mkdir()
        ws = init_workspace(root / "ws", photos, model="demo")
        store = Store(ws.db_path)
        store.add_job("train", {"steps": 10**6})
        alone = write_rows(ws.db_path, args.rows, 1)
        reader = multiprocessing.Process(target=poll, args=(ws.db_path, time.time() + 3600))
        reader.start()
        try:
            polled = write_rows(ws.db_path, args.rows, args.rows + 1)
        finally:
            reader.terminate()
            reader.join()
        latencies = pickup_latency(ws, args.jobs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    p95 = sorted(latencies)[int(0.95 * (len(latencies) - 1))]
    rows = [
        {"case": "metric rows/s, reader at 10 Hz", "value": polled,
         "baseline": "same writer, no reader", "baseline_value": alone,
         "ratio": polled / alone},
        {"case": "queued -> picked up, median ms", "value": statistics.median(latencies) * 1000,
         "baseline": "goal", "baseline_value": 200.0,
         "ratio": statistics.median(latencies) * 1000 / 200},
        {"case": "queued -> picked up, p95 ms", "value": p95 * 1000, "baseline": "goal",
         "baseline_value": 200.0, "ratio": p95 * 1000 / 200},
    ]
    report("store", rows, {"rows": args.rows, "jobs": args.jobs})


if __name__ == "__main__":
    main()
