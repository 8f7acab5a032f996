"""The GPU benchmark's script, run on the CPU with the demo model (`--dry-run`): the code a GPU
session runs in its one call must not be first tried there."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO


def test_gpu_bench_dry_run_trains_generates_and_renders_between_steps(tmp_path):
    out = tmp_path / "out"
    phases = ("encode,train-64,train-64-nockpt,train-64-between,train-64-sync,generate-64,"
              "cache-64,bare-64,bare-64-nockpt,train-64-preserve")
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
    # The baseline for a step queued ahead (a card's fused AdamW) reads each step at once.
    assert rows["train-64-sync"]["queued_ahead"] is False
    assert rows["train-64-sync"]["loss_last"] == rows["train-64"]["loss_last"]
    assert rows["generate-64"]["lora"] is True
    assert rows["generate-64"]["image_size"] == [64, 64]
    assert rows["cache-64"]["threshold_1_computed"] >= 1  # the first step is always computed
    # The next device session times a step that preserves a class against a plain one.
    assert rows["train-64-preserve"]["preserving"] and not rows["train-64"]["preserving"]


def test_gpu_bench_refuses_to_overwrite_results_with_a_dry_run():
    done = subprocess.run([sys.executable, "-m", "bench.gpu", "--dry-run"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--dry-run needs --out" in done.stderr


def test_the_flop_model_counts_the_weights_a_token_passes():
    """FLUX.1-dev has 11.9 B parameters, but a token passes 6.46 B of them (its own stream of
    the double blocks; the modulation runs once per sample): the MFU the bench reports must
    come from those, not from every parameter (which overstated it 1.7x)."""
    import torch

    from bench.gpu import forward_flops, token_weights
    from lorabooth.core.models.shipped import shipped_folder
    from lorabooth.core.models.sizes import build_component

    with torch.device("meta"):
        transformer = build_component(shipped_folder("flux-dev"), "transformer")
    image, text = token_weights(transformer)
    assert 6.40e9 < image < 6.52e9 and 6.40e9 < text < 6.52e9
    forward = forward_flops(transformer, 4096, 512)  # 1024 px: ~74 TFLOP (ANCHORS.md)
    assert 72e12 < forward < 77e12
