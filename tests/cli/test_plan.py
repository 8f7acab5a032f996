"""`lorabooth plan`: what a card would do for FLUX.1-dev, asked before any weights exist."""

from __future__ import annotations

import json
from pathlib import Path

from support import run_cli


def workspace(tmp_path: Path, photos: Path, model: str) -> Path:
    ws = tmp_path / "ws"
    done = run_cli("init", str(ws), "--photos", str(photos), "--model", model)
    assert done.returncode == 0, done.stderr
    return ws


def test_plan_answers_for_flux_dev_without_its_weights(tmp_path: Path, photos: Path):
    ws = workspace(tmp_path, photos, "black-forest-labs/FLUX.1-dev")
    done = run_cli("plan", str(ws), "--gpu-memory", "24", "--json")
    assert done.returncode == 0, done.stderr
    rows = {(r["job"], r["resolution"]): r for r in json.loads(done.stdout)["plans"]}
    train = rows["train", 1024]
    assert train["fits"] and train["plan"]["quantize"] == "fp8"
    assert train["plan"]["peak_gib"] <= 23.5
    assert {p["name"] for p in train["plan"]["phases"]} == {"caching", "training", "sampling"}
    generate = rows["generate", 1024]
    assert generate["fits"] and generate["plan"]["offload"]


def test_plan_table_over_the_usual_cards_and_its_reasons(tmp_path: Path, photos: Path):
    ws = workspace(tmp_path, photos, "flux-dev")
    done = run_cli("plan", str(ws))
    assert done.returncode == 0, done.stderr
    for card in ("12 GB", "16 GB", "24 GB", "32 GB", "48 GB", "80 GB"):
        assert card in done.stdout
    assert "does not fit" in done.stdout  # 12 GB without bitsandbytes
    one = run_cli("plan", str(ws), "--gpu-memory", "80")
    assert "every model on the GPU" in one.stdout and "training: ~" in one.stdout


def test_plan_for_weights_it_cannot_find_says_so(tmp_path: Path, photos: Path):
    ws = workspace(tmp_path, photos, "someone/unknown-flux")
    done = run_cli("plan", str(ws), "--gpu-memory", "24")
    assert done.returncode == 2
    assert "knows FLUX.1-dev and FLUX.1-schnell without their weights" in done.stderr


def test_plan_refuses_a_card_size_that_is_not_a_number(tmp_path: Path, photos: Path):
    ws = workspace(tmp_path, photos, "flux-dev")
    done = run_cli("plan", str(ws), "--gpu-memory", "nan")
    assert done.returncode == 2
    assert "out of range" in done.stderr  # nan is a float, but not a card size
