from __future__ import annotations

import json
import re
from pathlib import Path

from support import run_cli

from lorabooth.core import __version__


def test_version():
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"lorabooth {__version__}"


def test_init_writes_a_commented_config_and_state_folder(tmp_path: Path, photos: Path):
    ws = tmp_path / "ws"
    result = run_cli("init", str(ws), "--photos", str(photos), "--model", "demo",
                     "--trigger", "zorb")
    assert result.returncode == 0, result.stderr
    text = (ws / "lorabooth.toml").read_text()
    assert "# LoRA rank" in text
    assert 'trigger = "zorb"' in text and 'model = "demo"' in text
    assert (ws / ".lorabooth" / "checkpoints").is_dir()
    again = run_cli("init", str(ws), "--photos", str(photos))
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert (ws / "lorabooth.toml").read_text() == text


def test_init_with_bad_trigger_is_a_usage_error(tmp_path: Path, photos: Path):
    result = run_cli("init", str(tmp_path / "ws"), "--photos", str(photos), "--trigger", "a b")
    assert result.returncode == 2
    assert 'trigger: "a b" must be one word' in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "ws" / "lorabooth.toml").exists()


def test_opening_a_folder_that_is_no_workspace(tmp_path: Path):
    result = run_cli(str(tmp_path))
    assert result.returncode == 2
    assert "lorabooth init" in result.stderr and "lorabooth demo" in result.stderr


def test_broken_config_exits_2_with_every_problem(tmp_path: Path):
    (tmp_path / "lorabooth.toml").write_text('[train]\nrank = "x"\nsteps = -1\n')
    result = run_cli(str(tmp_path))
    assert result.returncode == 2
    assert "2 problems" in result.stderr
    assert "train.rank" in result.stderr and "train.steps" in result.stderr


def test_doctor_reports_on_a_cpu_machine():
    result = run_cli("doctor")
    assert result.returncode == 0, result.stderr
    for needle in ("python", "torch", "CUDA", "diffusers", "peft", "demo",
                   "black-forest-labs/FLUX.1-dev", "colours", "images"):
        assert needle in result.stdout


def test_doctor_json():
    result = run_cli("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["python"]["status"] == "ok"
    assert checks["torch"]["status"] == "ok"
    # system RAM, which the plan counts: "23.5 GiB (21.8 GiB available), no swap"
    assert re.fullmatch(r"\d+\.\d GiB \(\d+\.\d GiB available\), (no swap|swap \d+\.\d GiB)",
                        checks["memory"]["value"])


def test_demo_without_ui_makes_a_workspace(tmp_path: Path):
    result = run_cli("demo", str(tmp_path / "demo"), "--no-ui")
    assert result.returncode == 0, result.stderr
    photos = sorted((tmp_path / "demo" / "photos").glob("*.jpg"))
    assert len(photos) >= 12
    text = (tmp_path / "demo" / "lorabooth.toml").read_text()
    assert 'model = "demo"' in text and "resolution = [128]" in text


def test_piped_training_lines_show_the_means_of_their_steps():
    """A line every ten steps: its loss and s/step are the ten steps' means, not the last
    step's (which swings between buckets and resolutions)."""
    import io

    from rich.console import Console

    from lorabooth.core.cli.console import PlainTrainView
    from lorabooth.core.train.trainer import StepMetrics

    out = io.StringIO()
    view = PlainTrainView(Console(file=out, width=200), total=20)
    for step in range(1, 21):
        fast = step % 2
        view.step(StepMetrics(step, 20, loss=0.2 if fast else 0.4, lr=1e-4, grad_norm=1.0,
                              seconds=0.1 if fast else 0.7, images_per_s=1.0,
                              gpu_memory_gb=None))
    assert out.getvalue().splitlines() == [
        "step 10/20 loss 0.3000 lr 1.00e-04 0.400 s/step",
        "step 20/20 loss 0.3000 lr 1.00e-04 0.400 s/step"]


def test_every_subcommand_is_known_without_importing_it():
    """`lorabooth WORKSPACE` tells a path from a command by COMMANDS alone (the parser, and
    the modules it imports, cost the UI's start 0.04 s): a command missing there would open
    as a workspace."""
    from lorabooth.core.cli.main import COMMANDS, build_parser

    assert sorted(build_parser()[1]) == sorted(COMMANDS)
