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
    # fp8 with every model but T5 resident (T5 streams from CPU memory), not model offload
    assert generate["fits"] and generate["plan"]["quantize"] == "fp8"
    assert generate["plan"]["placement"] == "stream" and not generate["plan"]["offload"]
    assert generate["placement"] == "T5 streamed"


def test_plan_table_over_the_usual_cards_and_its_reasons(tmp_path: Path, photos: Path):
    ws = workspace(tmp_path, photos, "flux-dev")
    done = run_cli("plan", str(ws))
    assert done.returncode == 0, done.stderr
    for card in ("12 GB", "16 GB", "24 GB", "32 GB", "48 GB", "80 GB"):
        assert card in done.stdout
    assert "does not fit" in done.stdout  # 12 GB without bitsandbytes
    one = run_cli("plan", str(ws), "--gpu-memory", "80")
    assert "every model on the GPU" in one.stdout and "training: ~" in one.stdout


def test_without_a_gpu_plan_also_says_what_this_cpu_would_do(tmp_path: Path, photos: Path):
    ws = workspace(tmp_path, photos, "black-forest-labs/FLUX.1-dev")
    done = run_cli("plan", str(ws))
    assert done.returncode == 0, done.stderr
    assert "on this machine (no GPU), train 512 px: CPU: float32" in done.stdout
    (ws / "lorabooth.toml").write_text((ws / "lorabooth.toml").read_text().replace(
        'memory = "auto"', 'memory = "bf16"'))
    data = json.loads(run_cli("plan", str(ws), "--json").stdout)
    assert {row["job"] for row in data["this_cpu"]} == {"train", "generate"}
    for row in data["this_cpu"]:
        assert row["plan"]["dtype"] == "bfloat16"
        assert row["reason"].startswith("CPU: bf16 weights as configured")
    named = json.loads(run_cli("plan", str(ws), "--gpu-memory", "24", "--json").stdout)
    assert named["this_cpu"] == []  # a card was named: only it is planned


def test_plan_for_weights_it_cannot_find_says_so(tmp_path: Path, photos: Path):
    ws = workspace(tmp_path, photos, "someone/unknown-flux")
    done = run_cli("plan", str(ws), "--gpu-memory", "24")
    assert done.returncode == 2
    assert "knows the registry's models without their weights" in done.stderr


def test_plan_refuses_a_card_size_that_is_not_a_number(tmp_path: Path, photos: Path):
    ws = workspace(tmp_path, photos, "flux-dev")
    done = run_cli("plan", str(ws), "--gpu-memory", "nan")
    assert done.returncode == 2
    assert "out of range" in done.stderr  # nan is a float, but not a card size


def test_plan_answers_for_klein_and_krea_without_their_weights(tmp_path: Path, photos: Path):
    """FLUX.2 [klein] 4B and 9B and FLUX.1 Krea [dev] are planned from the shipped configs:
    klein-4B (a 3.9B transformer, Qwen3-4B) trains at 1024 px on a 16 GB card in bf16, where
    FLUX.1-dev needs fp8 on 24 GB; Krea plans exactly as dev does (the same architecture)."""
    peaks = {}
    for model in ("klein-4b", "klein-9b", "flux-krea", "flux-dev"):
        ws = workspace(tmp_path / model, photos, model)
        done = run_cli("plan", str(ws), "--gpu-memory", "16", "--gpu-memory", "24", "--json")
        assert done.returncode == 0, done.stderr
        rows = {(r["card"], r["job"], r["resolution"]): r for r in json.loads(done.stdout)["plans"]}
        peaks[model] = {key: (r["fits"], r["plan"] and r["plan"]["quantize"])
                        for key, r in rows.items() if key[2] == 1024}
    assert peaks["klein-4b"][("16 GB", "train", 1024)] == (True, None)  # bf16, no quantising
    assert peaks["klein-9b"][("24 GB", "train", 1024)][0]
    assert peaks["flux-dev"][("24 GB", "train", 1024)] == (True, "fp8")
    assert peaks["flux-krea"] == peaks["flux-dev"]


def test_generation_is_planned_for_the_model_that_makes_the_images(tmp_path: Path,
                                                                   photos: Path):
    """generate.model: trained on klein-4b-base, images made with flux-dev: the generation
    row is FLUX.1-dev's (fp8, T5 streamed on 24 GB), the training row klein's (bf16)."""
    from lorabooth.core.config import set_config_values

    ws = workspace(tmp_path, photos, "klein-4b-base")
    set_config_values(ws, {"generate.model": "flux-dev"})
    done = run_cli("plan", str(ws), "--gpu-memory", "24", "--json")
    assert done.returncode == 0, done.stderr
    rows = {(r["job"], r["resolution"]): r["plan"] for r in json.loads(done.stdout)["plans"]}
    assert rows["train", 1024]["quantize"] is None
    assert rows["generate", 1024]["quantize"] == "fp8"
    assert rows["generate", 1024]["placement"] == "stream"


def test_the_shipped_klein_configs_build_the_real_sizes():
    """Counted on the meta device from the shipped configs: the parameter counts the model
    cards give (transformer 3.9B / 9.1B, Qwen3-4B / Qwen3-8B)."""
    from lorabooth.core.models.shipped import component_params, shipped_folder

    four = component_params(shipped_folder("klein-4b"))
    nine = component_params(shipped_folder("black-forest-labs/FLUX.2-klein-9B"))
    assert round(four["transformer"] / 1e9, 2) == 3.88
    assert round(four["text_encoder"] / 1e9, 2) == 4.02
    assert round(nine["transformer"] / 1e9, 2) == 9.08
    assert round(nine["text_encoder"] / 1e9, 2) == 8.19
    assert 0.08e9 < four["vae"] < 0.09e9


def test_klein_lora_targets_reach_its_single_blocks():
    """FLUX.2's single blocks name their attention differently (`to_qkv_mlp_proj`, a Linear
    `attn.to_out`): the attention targets include them, so the plan counts (and a run would
    train) a LoRA over all 25 of klein-4B's blocks, not the 5 double ones."""
    import torch

    from lorabooth.core.memory import lora_parameters
    from lorabooth.core.models.shipped import build_component, shipped_folder
    from lorabooth.core.train.lora import ATTENTION_TARGETS, target_modules

    with torch.device("meta"):
        klein = build_component(shipped_folder("klein-4b"), "transformer")
        dev = build_component(shipped_folder("flux-dev"), "transformer")
    targets = target_modules(klein, "attention")
    assert "to_qkv_mlp_proj" in targets and "single_transformer_blocks.19.attn.to_out" in targets
    assert target_modules(dev, "attention") == ATTENTION_TARGETS  # FLUX.1 unchanged
    double_only = lora_parameters(klein, ATTENTION_TARGETS, 16)
    assert lora_parameters(klein, targets, 16) > 3 * double_only


def test_plan_says_what_system_ram_each_job_needs(tmp_path: Path, photos: Path):
    """A 24 GB card in a machine with 8 GB free is told its 1024 px runs are short of system
    RAM (T5 pinned there to stream to the card), not only whether the card fits; with 64 GB
    they fit. The table is whole in 80 columns."""
    ws = workspace(tmp_path, photos, "flux-dev")
    short = run_cli("plan", str(ws), "--gpu-memory", "24", "--host-memory", "8", "--json")
    assert short.returncode == 0, short.stderr
    data = json.loads(short.stdout)
    assert data["host_memory_gib"] == 8.0
    rows = {(r["job"], r["resolution"]): r for r in data["plans"]}
    assert rows["train", 1024]["fits"] and rows["train", 1024]["host_fits"] is False
    assert rows["train", 1024]["plan"]["host_peak_gib"] > 8.0
    assert "system RAM: needs ~" in rows["train", 1024]["reason"]
    roomy = json.loads(run_cli("plan", str(ws), "--gpu-memory", "24", "--host-memory", "64",
                               "--json").stdout)
    assert all(r["host_fits"] for r in roomy["plans"])
    text = run_cli("plan", str(ws), "--gpu-memory", "24", "--gpu-memory", "80",
                   "--host-memory", "8")
    assert "RAM short" in text.stdout and "system RAM: 8.0 GiB as asked" in text.stdout
    assert "…" not in text.stdout
    table = [line for line in text.stdout.splitlines() if line.startswith(("card", "24 GB",
                                                                           "80 GB"))]
    assert len(table) == 1 + 2 * 4 and max(len(line.rstrip()) for line in table) <= 80
    one = run_cli("plan", str(ws), "--gpu-memory", "24", "--host-memory", "8")
    assert "system RAM: ~1.5 GiB of its own; parking +8.9 (T5 pinned)" in one.stdout
    assert "system RAM: ~1.5 GiB of its own, no weights beyond the page cache" in one.stdout
