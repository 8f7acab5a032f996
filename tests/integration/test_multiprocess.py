"""Several processes through `accelerate launch` (here two CPU processes with gloo), the same
Trainer code as one device: DDP averages the gradients, the first process writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from lorabooth.core.config import set_config_value
from lorabooth.core.workspace import init_workspace

ACCELERATE = Path(sys.executable).with_name("accelerate")


@pytest.mark.skipif(not ACCELERATE.exists(), reason="accelerate's launcher is not installed")
@pytest.mark.parametrize("preserve", ["", "plush toy"], ids=["plain", "preserving"])
def test_two_processes_train_one_lora(tmp_path: Path, photos: Path, demo_model, preserve):
    """Preserving a class, each step runs two backward passes through DDP (each averages)."""
    ws = init_workspace(tmp_path / "ws", photos, model="demo", trigger="zorb")
    for key, value in {"train.resolution": [256], "train.learning_rate": 1e-3,
                       "train.checkpoint_every": 10, "sample.every": 0,
                       "train.preserve_class": preserve}.items():
        set_config_value(ws.root, key, value)
    result = subprocess.run(
        [str(ACCELERATE), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "lorabooth.core.cli",
         "train", str(ws.root), "--steps", "20"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("done: step 20") == 1  # one report, from the first process
    assert sorted(p.name for p in (ws.checkpoints / "run-001").iterdir()) == ["step-000010",
                                                                         "step-000020"]
    lora = load_file(ws.loras / "pytorch_lora_weights.safetensors")
    assert lora and all(np.isfinite(v.float().numpy()).all() for v in lora.values())
    assert ("preserving the class" in result.stdout + result.stderr) == bool(preserve)
