"""The GPU benchmark's script, run on the CPU with the demo model (`--dry-run`): the code a GPU
session runs in its one call must not be first tried there."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO


def test_gpu_bench_dry_run_trains_generates_and_renders_between_steps(tmp_path):
    out = tmp_path / "out"
    phases = ("encode,train-64,train-64-nockpt,train-64-between,generate-64,cache-64,bare-64,"
              "bare-64-nockpt")
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--dry-run", "--out", str(out),
                           "--phases", phases], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {row["phase"]: row for row in json.loads((out / "gpu.json").read_text())["rows"]}
    assert [name for name, row in rows.items() if "error" in row] == []
    assert rows["train-64"]["ratio"] > 0
    assert rows["train-64-nockpt"]["loss_last"] == rows["train-64"]["loss_last"]
    # A prompt rendered between two steps leaves the loss curve as it was.
    assert rows["train-64-between"]["loss_last"] == rows["train-64"]["loss_last"]
    assert rows["generate-64"]["lora"] is True
    assert rows["generate-64"]["image_size"] == [64, 64]
    assert rows["cache-64"]["threshold_1_computed"] >= 1  # the first step is always computed


def test_gpu_bench_refuses_to_overwrite_results_with_a_dry_run():
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--dry-run needs --out" in done.stderr
