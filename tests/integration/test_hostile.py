"""The hostile-input list of issue 12, tried again as a user would: each item is one test, and
each failed before the change that made it hold."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from support import frozen_engine, run_cli, wait_until

from lorabooth.core.config import ConfigError, set_config_value
from lorabooth.core.engine import client, running_pid
from lorabooth.core.store import Store
from lorabooth.core.train import TrainingError
from lorabooth.core.train.checkpoint import all_checkpoints
from lorabooth.core.train.trainer import Trainer
from lorabooth.core.workspace import init_workspace

SMALL = ["--width", "64", "--height", "64", "--steps", "2"]


# 1. A new run never resumes another run's checkpoint; a resume names its run.
def test_a_new_run_never_resumes_an_earlier_runs_checkpoint(demo_workspace):
    ws = demo_workspace(train_checkpoint_every=10)
    old = Trainer(ws, device="cpu").run(steps=30)
    assert old.run == "run-001"
    set_config_value(ws.root, "train.learning_rate", 5e-4)
    new = Trainer(ws, device="cpu")
    new.should_stop = lambda: new.step >= 15
    partial = new.run(steps=30)
    assert partial.stopped and partial.run == "run-002" and partial.step == 15
    logs: list[str] = []
    resumed = Trainer(ws, device="cpu", log=logs.append).run(steps=30, resume=True)
    assert resumed.run == "run-002" and len(resumed.losses) == 15  # 15 -> 30, not 30 -> 30
    assert any("resumed from step-000015 of run-002" in line for line in logs)
    assert [c.label for c in all_checkpoints(ws.checkpoints)][:3] == [
        "run-001/step-000010", "run-001/step-000020", "run-001/step-000030"]  # kept, listed


# 2. A checkpoint's pickle never runs code.
class _Planted:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['PLANTED_MARKER']}",))


def test_a_planted_pickle_in_a_checkpoint_is_refused_not_run(demo_workspace, tmp_path,
                                                             monkeypatch):
    import torch

    ws = demo_workspace(train_checkpoint_every=10)
    Trainer(ws, device="cpu").run(steps=10)
    marker = tmp_path / "pwned"
    monkeypatch.setenv("PLANTED_MARKER", str(marker))
    state = ws.checkpoints / "run-001" / "step-000010" / "state.pt"
    torch.save({"step": 10, "payload": _Planted()}, state)
    logs: list[str] = []
    Trainer(ws, device="cpu", log=logs.append).run(steps=12, resume=True)
    assert not marker.exists()
    assert any("cannot be loaded safely" in line for line in logs)


# 3. Not-a-number settings are refused; a loss that goes non-finite stops the run cleanly.
def test_nan_settings_are_refused_everywhere(demo_workspace):
    ws = demo_workspace()
    for key in ("train.alpha", "train.max_grad_norm", "train.guidance",
                "generate.lora_scale", "generate.guidance"):
        with pytest.raises(ConfigError, match="not a finite number"):
            set_config_value(ws.root, key, math.nan)
    text = ws.config_path.read_text().replace("alpha = 16.0", "alpha = nan")
    ws.config_path.write_text(text)
    result = run_cli("train", str(ws.root), "--steps", "2")
    assert result.returncode == 2 and "not a finite number" in result.stderr
    for args in (["--guidance", "nan"], ["--lora", "workspace:nan"], ["--strength", "inf"]):
        result = run_cli("generate", str(ws.root), "zorb", *args)
        assert result.returncode == 2, (args, result.stderr)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
        demo_workspace):
    import torch

    ws = demo_workspace(train_checkpoint_every=5)
    trainer = Trainer(ws, device="cpu")
    trainer.run(steps=5)
    good = (ws.checkpoints / "run-001" / "step-000005" / "state.pt").read_bytes()
    for latent in trainer.latents:  # a damaged cache entry: NaN in the data
        latent.fill_(float("nan"))
    with pytest.raises(TrainingError, match="loss became nan"):
        trainer.run(steps=10, run="run-001")
    assert (ws.checkpoints / "run-001" / "step-000005" / "state.pt").read_bytes() == good
    assert not (ws.checkpoints / "run-001" / "step-000010").exists()
    saved = torch.load(ws.checkpoints / "run-001" / "step-000005" / "state.pt",
                       weights_only=True)
    assert all(torch.isfinite(v).all() for v in saved["lora"].values())


def test_a_full_disk_stops_training_saying_which_checkpoint_it_resumes_from(
        demo_workspace, monkeypatch):
    """The disk fills between two checkpoints: the run stops in words that name the file it
    could not write, the checkpoint it resumes from and the command, and it does resume."""
    import contextlib
    import errno

    from lorabooth.core import fsutil

    ws = demo_workspace(train_checkpoint_every=3)
    Trainer(ws, device="cpu").run(steps=3)
    real = fsutil.atomic_open

    @contextlib.contextmanager
    def full(path, *args, **kwargs):
        with real(path, *args, **kwargs) as handle:
            if "step-000006" in str(path):
                raise OSError(errno.ENOSPC, "No space left on device")
            yield handle

    with monkeypatch.context() as patch:
        patch.setattr(fsutil, "atomic_open", full)
        with pytest.raises(TrainingError) as stopped:
            Trainer(ws, device="cpu").run(steps=9, resume=True)
    words = str(stopped.value)
    assert "the disk is full" in words and "step-000006" in words
    assert (f"Training stopped at step 6; run-001 resumes from its checkpoint of step 3: "
            f"lorabooth train {ws.root} --resume --run run-001") in words
    assert [c.step for c in all_checkpoints(ws.checkpoints)] == [3]
    assert Trainer(ws, device="cpu").run(steps=9, resume=True).step == 9


# 4. A FIFO or a device named like a photo is skipped, never opened.
def test_fifo_and_device_named_like_photos_are_skipped(photos: Path):
    os.mkfifo(photos / "trap.jpg")
    (photos / "zero.jpg").symlink_to("/dev/zero")
    (photos / "04_city_glasses.txt").unlink()
    os.mkfifo(photos / "04_city_glasses.txt")  # a caption that is a FIFO
    result = run_cli("check", str(photos), "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    records = {r["path"]: r for r in json.loads(result.stdout)}
    assert records["trap.jpg"]["status"] == "skipped"
    assert "FIFO" in records["trap.jpg"]["reasons"][0]
    assert "not a regular file" in records["zero.jpg"]["reasons"][0]
    assert records["04_city_glasses.jpg"]["caption_source"] == "template"


def test_dangling_and_looping_links_are_listed_not_dropped(photos: Path):
    (photos / "gone.jpg").symlink_to(photos / "moved-away.jpg")
    (photos / "loop.jpg").symlink_to("loop.jpg")
    result = run_cli("check", str(photos), "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    records = {r["path"]: r for r in json.loads(result.stdout)}
    for name in ("gone.jpg", "loop.jpg"):
        assert records[name]["status"] == "skipped"
        assert "a link to nothing" in records[name]["reasons"][0]


# 5. A frozen engine is reported as such, stop tells the truth, generate stops waiting.
def test_a_frozen_engine_is_seen_and_stopped(demo_workspace, engines, monkeypatch):
    ws = demo_workspace()
    engines.append(ws)
    with frozen_engine(ws, monkeypatch) as pid:
        wait_until(lambda: client.status(ws).state == "unresponsive", timeout=10)
        store = Store(ws.db_path)
        job = store.add_job("generate", {})
        assert client.wait_for_job(ws, store, job, timeout=30).startswith("waiting: the engine")
        assert client.stop(ws, wait=2.0) == (pid, "killed")
        assert running_pid(ws) is None


# 6. A prompt matrix cannot exhaust memory: it is counted before it is made.
def test_a_huge_prompt_matrix_is_refused_with_its_size(demo_workspace):
    ws = demo_workspace()
    prompt = "zorb " + " ".join(["{a|b}"] * 26)
    started = time.monotonic()
    result = run_cli("queue", str(ws.root), "add", prompt)
    assert result.returncode == 2
    assert "67,108,864 images" in result.stderr and time.monotonic() - started < 30
    assert Store(ws.db_path).jobs() == []


# 7. Deleting the lock file (or the state folder) does not let a second engine start.
def test_a_deleted_lock_file_does_not_let_a_second_engine_start(demo_workspace, engines):
    ws = demo_workspace()
    engines.append(ws)
    assert run_cli("engine", str(ws.root), "start").returncode == 0
    first = running_pid(ws)
    (ws.state / "engine.lock").unlink()
    second = subprocess.run([sys.executable, "-m", "lorabooth.core.engine", str(ws.root)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 1 and "already runs" in second.stderr
    wait_until(lambda: running_pid(ws) == first, timeout=10)  # the file is back, with its pid
    assert run_cli("engine", str(ws.root), "stop").returncode == 0
    assert running_pid(ws) is None


# 8. An interrupted generation job resumes at the image it reached.
def test_an_interrupted_generation_resumes_at_the_image_it_reached(demo_workspace):
    from lorabooth.core.engine import generate_job
    from lorabooth.core.engine.loop import Engine, Stop
    from lorabooth.core.generate.recipe import Recipe
    from lorabooth.core.generate.request import Request, request_to_params

    ws = demo_workspace()
    engine = Engine(ws)
    engine.store = Store(ws.db_path)
    params = request_to_params(Request(Recipe("zorb", width=64, height=64, steps=2,
                                              model="demo"), count=4))
    job = engine.store.add_job("generate", params)

    def shut_down_after_two(job_id: int) -> str | None:
        """As SIGTERM would: the engine stops once two images are saved."""
        saved = [o for o in engine.store.outputs(job_id) if o.kind == "image"]
        engine.stopping = len(saved) >= 2
        return "stop" if engine.stopping else None

    engine.between_steps = shut_down_after_two
    with pytest.raises(Stop):
        generate_job.run(engine, engine.store.job(job))
    assert len(sorted((ws.outputs / "images").glob("*.png"))) == 2
    del engine.between_steps  # the engine starts again
    engine.stopping = False
    assert generate_job.run(engine, engine.store.job(job)) == "done"
    assert len(sorted((ws.outputs / "images").glob("*.png"))) == 4  # 2 more, not 4 more
    assert len([o for o in engine.store.outputs(job) if o.kind == "image"]) == 4


# 9. File names that are not UTF-8.
def test_names_that_are_not_utf8_are_shown_and_never_crash(photos: Path):
    bad = os.path.join(os.fsencode(photos), b"bad\xff\xfe.jpg")
    with open(bad, "wb") as handle:
        handle.write((photos / "01_studio.jpg").read_bytes())
    result = run_cli("check", str(photos), "--json")
    assert result.returncode == 0, result.stderr
    paths = [r["path"] for r in json.loads(result.stdout)]
    assert "bad\\xff\\xfe.jpg" in paths
    plain_run = run_cli("check", str(photos))
    assert plain_run.returncode == 0 and "bad\\xff\\xfe.jpg" in plain_run.stdout


# 10. --json prints only JSON, also when an engine runs the job.
def test_generate_json_prints_only_json_with_an_engine_running(demo_workspace, engines):
    ws = demo_workspace()
    engines.append(ws)
    assert run_cli("engine", str(ws.root), "start").returncode == 0
    result = run_cli("generate", str(ws.root), "zorb", "--json", *SMALL)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == 1
    assert "queued as job" in result.stderr


# 11. Bounds and types at the edge: usage errors, exit 2, nothing queued.
@pytest.mark.parametrize("args", [
    ["train", "{ws}", "--steps", "1000000000"],
    ["generate", "{ws}", "zorb", "--seed", "1e23"],
    ["generate", "{ws}", "zorb", "--steps", "1000000000"],
    ["generate", "{ws}", "zorb", "--lora", "step-abc"],
    ["queue", "{ws}", "cancel", "²"],
    ["queue", "{ws}", "move", "5", "-3"],
    ["queue", "{ws}", "add", "zorb", "--lora", "missing.safetensors"],
])
def test_bad_values_are_usage_errors(demo_workspace, args):
    ws = demo_workspace()
    result = run_cli(*[a.replace("{ws}", str(ws.root)) for a in args])
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Error:" not in result.stderr
    assert Store(ws.db_path).jobs() == []


def test_a_forged_recipe_is_a_usage_error(demo_workspace, tmp_path):
    from PIL import Image, PngImagePlugin

    ws = demo_workspace()
    for forged in ({"prompt": "zorb", "steps": 1e9}, {"prompt": "zorb", "steps": "many"},
                   {"prompt": ["x"]}, {"prompt": "zorb", "loras": [{"scale": "x"}]}, [1, 2]):
        info = PngImagePlugin.PngInfo()
        info.add_text("lorabooth", json.dumps(forged))
        png = tmp_path / "forged.png"
        Image.new("RGB", (8, 8)).save(png, pnginfo=info)
        result = run_cli("generate", str(ws.root), "--from-image", str(png))
        assert result.returncode == 2, (forged, result.stderr)
        assert "recipe" in result.stderr


# 12. A damaged newest checkpoint falls back to the one before it.
def test_a_corrupted_latest_checkpoint_falls_back_to_the_previous(demo_workspace):
    ws = demo_workspace(train_checkpoint_every=10)
    first = Trainer(ws, device="cpu")
    first.should_stop = lambda: first.step >= 20
    first.run(steps=40)
    state = ws.checkpoints / "run-001" / "step-000020" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    logs: list[str] = []
    result = Trainer(ws, device="cpu", log=logs.append).run(steps=30, resume=True)
    assert any("resumed from step-000010 of run-001" in line for line in logs)
    assert len(result.losses) == 20


# 13. Status probes never make a start fail.
def test_engine_starts_never_lose_to_status_probes(demo_workspace, engines):
    ws = demo_workspace()
    engines.append(ws)
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            running_pid(ws)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        for _ in range(4):
            start = run_cli("engine", str(ws.root), "start")
            assert start.returncode == 0, start.stderr
            assert run_cli("engine", str(ws.root), "stop").returncode == 0
    finally:
        done.set()
        prober.join()
    assert running_pid(ws) is None


def test_a_probe_holding_the_claim_is_not_taken_for_a_running_engine(tmp_path):
    # The pid file outlives its engine; another client's status probe holds the claim for a
    # moment. Answering then named that long-gone pid as the running engine.
    import socket

    from lorabooth.core.engine.lock import LOCK_FILE, claim_name

    ws = init_workspace(tmp_path / "ws", tmp_path / "photos")
    (ws.state / LOCK_FILE).write_text(f"{2**22 + 7}\n")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.bind(claim_name(ws))
    threading.Timer(0.2, probe.close).start()
    assert running_pid(ws) is None


# 14. Small things: demo over a folder with captions, a BOM, an empty database, a link loop.
def test_demo_keeps_the_users_own_captions(tmp_path):
    photos = tmp_path / "demo" / "photos"
    photos.mkdir(parents=True)
    (photos / "01_studio.txt").write_text("my own words")
    assert run_cli("demo", str(tmp_path / "demo"), "--no-ui").returncode == 0
    assert (photos / "01_studio.txt").read_text() == "my own words"


def test_a_byte_order_mark_in_the_config_is_fine(demo_workspace):
    ws = demo_workspace()
    ws.config_path.write_bytes(b"\xef\xbb\xbf" + ws.config_path.read_bytes())
    assert run_cli("engine", str(ws.root), "status").returncode == 0


def test_an_emptied_database_is_refused_not_recreated(demo_workspace):
    ws = demo_workspace()
    store = Store(ws.db_path)
    store.add_job("train", {})
    store.close()
    for side in ("-wal", "-shm"):
        Path(str(ws.db_path) + side).unlink(missing_ok=True)
    ws.db_path.write_bytes(b"")
    os.utime(ws.db_path, (time.time() - 60, time.time() - 60))
    result = run_cli("queue", str(ws.root), "list")
    assert result.returncode == 1 and "is empty (0 bytes)" in result.stderr
    assert ws.db_path.stat().st_size == 0


def test_a_photo_folder_that_loops_is_a_config_error(demo_workspace, tmp_path):
    ws = demo_workspace()
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    set_config_value(ws.root, "photos", str(loop))
    result = run_cli("train", str(ws.root), "--steps", "1")
    assert result.returncode == 2 and "cannot be followed" in result.stderr


def test_engine_start_fails_truthfully_while_the_database_is_locked(demo_workspace, engines):
    import sqlite3

    ws = demo_workspace()
    engines.append(ws)
    Store(ws.db_path).close()
    holder = sqlite3.connect(ws.db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        with pytest.raises(client.EngineStartFailed, match="could not write to its database"):
            client.start_detached(ws, wait=3.0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_queue_add_refuses_a_model_that_is_not_here(demo_workspace):
    ws = demo_workspace()
    set_config_value(ws.root, "model", "/nowhere/flux")
    result = run_cli("queue", str(ws.root), "add", "zorb")
    assert result.returncode == 2 and "does not exist" in result.stderr
    assert Store(ws.db_path).jobs() == []


# One training at a time in a workspace, whoever started it; a killed one frees it.
HOLD_CLAIM = """
import sys, time
from pathlib import Path
from lorabooth.core.train.claim import TrainingClaim
from lorabooth.core.workspace import Workspace
with TrainingClaim(Workspace.at(Path(sys.argv[1]))):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_second_training_in_a_workspace_is_refused_before_loading(demo_workspace):
    ws = demo_workspace()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(ws.root)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = run_cli("train", str(ws.root), "--steps", "2")
        assert refused.returncode != 0
        assert "a training already runs in this workspace" in refused.stderr
        assert f"pid {holder.pid}" in refused.stderr
        assert not list(ws.checkpoints.glob("run-*")) and not ws.lora_path.exists()
        trainer = Trainer(ws, device="cpu")
        with pytest.raises(TrainingError, match="already runs"):
            trainer.run(steps=2)
        assert trainer.pipe is None  # refused before loading anything
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL left no stale lock: the next training runs.
    assert run_cli("train", str(ws.root), "--steps", "2").returncode == 0
    assert ws.lora_path.exists()


def test_the_engines_training_waits_for_a_terminals_and_generation_goes_ahead(
        demo_workspace, engines):
    from lorabooth.core.generate.recipe import Recipe
    from lorabooth.core.generate.request import Request, request_to_params

    ws = demo_workspace()
    engines.append(ws)
    store = Store(ws.db_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(ws.root)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        train = store.add_job("train", {"steps": 3}, total=3)
        prompt = store.add_job("generate", request_to_params(Request(Recipe(
            "zorb", width=64, height=64, steps=2, model="demo"))))
        assert run_cli("engine", str(ws.root), "start").returncode == 0
        wait_until(lambda: store.job(prompt).state == "done", timeout=60)
        assert store.job(train).state == "queued"
        said = [e.message for e in store.events() if e.job == train]
        assert any(f"waits for the training outside the engine (pid {holder.pid})" in m
                   for m in said), said
        listed = run_cli("queue", str(ws.root), "list").stdout
        assert f"waits for the training outside the engine (pid {holder.pid})" in listed
        status = run_cli("engine", str(ws.root), "status").stdout
        assert "a queued training waits for the training outside the engine" in status
    finally:
        holder.kill()
        holder.wait()
    wait_until(lambda: store.job(train).state in ("done", "failed"), timeout=90)
    assert store.job(train).state == "done", store.job(train).error


def test_a_refused_training_says_when_the_engine_holds_it(demo_workspace, monkeypatch):
    from lorabooth.core.engine import lock
    from lorabooth.core.train.claim import TrainingClaim

    ws = demo_workspace()
    monkeypatch.setattr(lock, "running_pid", lambda _ws: os.getpid())
    with TrainingClaim(ws), pytest.raises(TrainingError) as refused:
        Trainer(ws, device="cpu").run(steps=2)
    assert "the engine is training it" in str(refused.value)
    assert f"lorabooth queue {ws.root} cancel N" in str(refused.value)
