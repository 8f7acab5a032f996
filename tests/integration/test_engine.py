"""The engine as a real detached process: it outlives the CLI, survives kill -9, refuses to
run twice, and turns user-facing failures into failed jobs while staying up."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import make_demo_workspace, run_cli, wait_until

from lorabooth.core.engine import running_pid
from lorabooth.core.store import Store
from lorabooth.core.train.checkpoint import all_checkpoints, latest_checkpoint, read_state
from lorabooth.core.workspace import Workspace, init_workspace


def job_json(ws: Workspace) -> list[dict]:
    result = run_cli("queue", str(ws.root), "list", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_detached_training_survives_the_cli(engines, demo_workspace):
    ws = demo_workspace(train_validate=True, train_checkpoint_every=100)
    engines.append(ws)
    result = run_cli("train", str(ws.root), "--detach", "--steps", "300")
    assert result.returncode == 0, result.stderr
    assert "queued as job 1" in result.stdout
    # The CLI has exited; another process sees progress.
    running = wait_until(lambda: [j for j in job_json(ws) if j["state"] == "running"
                                  and j["step"] > 0])
    assert running[0]["kind"] == "train" and running[0]["total"] == 300
    status = json.loads(run_cli("engine", str(ws.root), "status", "--json").stdout)
    assert status["pid"] and status["job"]["id"] == 1
    wait_until(lambda: job_json(ws)[0]["state"] == "done", timeout=120, every=0.3)
    assert (ws.loras / "pytorch_lora_weights.safetensors").is_file()
    assert len(Store(ws.db_path).metrics(1)) == 300
    # The base model and each checkpoint measured, for the Train pane's curve.
    assert [v.step for v in Store(ws.db_path).validations(1)] == [0, 100, 200, 300]
    assert run_cli("engine", str(ws.root), "stop").returncode == 0
    assert running_pid(ws) is None


def test_kill_9_mid_training_resumes_from_the_checkpoint(engines, demo_workspace):
    ws = demo_workspace()
    engines.append(ws)
    store = Store(ws.db_path)
    assert run_cli("train", str(ws.root), "--detach", "--steps", "200").returncode == 0
    wait_until(lambda: (store.job(1).step if store.job(1) else 0) >= 60)
    pid = running_pid(ws)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: running_pid(ws) is None, timeout=10)
    checkpoint = all_checkpoints(ws.checkpoints)[-1]
    assert checkpoint is not None and checkpoint.step >= 50
    assert store.job(1).state == "running"  # as the dead engine left it
    said = run_cli("engine", str(ws.root), "status").stdout  # not "stopped" and nothing else
    assert "engine: stopped" in said and "job 1 (train) was at step" in said
    assert "ended without a word" in said and f"lorabooth engine {ws.root} start" in said
    listed = run_cli("queue", str(ws.root), "list").stdout
    assert "train     interrupted" in listed and "running" not in listed

    assert run_cli("engine", str(ws.root), "start").returncode == 0
    steps_seen = []

    def finished() -> bool:
        job = store.job(1)
        steps_seen.append(job.step)
        return job.state in ("done", "failed", "cancelled")

    wait_until(finished, timeout=240)
    assert store.job(1).state == "done", store.job(1).error
    after_restart = [s for s in steps_seen if s]
    assert min(after_restart) >= checkpoint.step  # never back past the checkpoint
    messages = [e.message for e in store.events()]
    assert any("interrupted" in m for m in messages)
    assert any(f"resumed from step-{checkpoint.step:06d}" in m for m in messages)
    assert (ws.loras / "pytorch_lora_weights.safetensors").is_file()


def test_kill_9_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path):
    script = """
import sys, torch
from pathlib import Path
from lorabooth.core.train.checkpoint import write_checkpoint
root = Path(sys.argv[1])
step = 0
while True:
    step += 1
    big = {"step": step, "weights": torch.full((6_000_000,), float(step))}
    write_checkpoint(root, step, big, {"pytorch_lora_weights.safetensors": b"x" * 1000},
                     {"step": step})
"""
    root = tmp_path / "ckpt"
    for delay in (0.9, 1.3, 1.7, 2.2):
        proc = subprocess.Popen([sys.executable, "-c", script, str(root)])
        time.sleep(delay)
        proc.kill()
        proc.wait()
        latest = latest_checkpoint(root)
        if latest is None:
            continue
        state = read_state(latest)  # loads: never a half-written file
        assert state["step"] == latest.step
        assert float(state["weights"][-1]) == latest.step
    assert latest_checkpoint(root) is not None


def test_two_starts_at_once_make_one_engine(engines, demo_workspace):
    ws = demo_workspace()
    engines.append(ws)
    cmd = [sys.executable, "-m", "lorabooth.core.cli", "engine", str(ws.root), "start"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    pid = running_pid(ws)
    assert all(f"(pid {pid})" in out for out, _ in outs)
    engines_running = [p for p in Path("/proc").iterdir() if p.name.isdigit()
                       and _cmdline(p).endswith(f"lorabooth.core.engine {ws.root}")]
    assert len(engines_running) == 1


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\x00", b" ").decode().strip()
    except OSError:
        return ""


def test_missing_photos_folder_fails_the_job_not_the_engine(tmp_path, photos, engines,
                                                            demo_workspace):
    ws = demo_workspace()
    engines.append(ws)
    assert run_cli("engine", str(ws.root), "start").returncode == 0
    store = Store(ws.db_path)
    pid = running_pid(ws)
    photos.rename(tmp_path / "elsewhere")
    job = store.add_job("train", {"steps": 5})
    wait_until(lambda: store.job(job).state == "failed", timeout=60)
    assert "does not exist" in store.job(job).error
    assert running_pid(ws) == pid  # still up
    (tmp_path / "elsewhere").rename(photos)
    again = store.add_job("train", {"steps": 5})
    wait_until(lambda: store.job(again).state == "done", timeout=60)


def test_sigterm_checkpoints_and_requeues(engines, demo_workspace):
    ws = demo_workspace(train_checkpoint_every=1000)
    engines.append(ws)
    store = Store(ws.db_path)
    assert run_cli("train", str(ws.root), "--detach", "--steps", "2000").returncode == 0
    wait_until(lambda: (store.job(1).step if store.job(1) else 0) >= 30)
    result = run_cli("engine", str(ws.root), "stop")
    assert result.returncode == 0
    job = store.job(1)
    assert job.state == "queued" and job.params["resume"] is True
    checkpoint = all_checkpoints(ws.checkpoints)[-1]
    assert checkpoint is not None and checkpoint.step == job.step  # the stop wrote it


def test_queue_move_and_cancel(demo_workspace):
    ws = demo_workspace()
    store = Store(ws.db_path)
    ids = [store.add_job("train", {"steps": 1}) for _ in range(4)]
    assert run_cli("queue", str(ws.root), "move", str(ids[3]), "1").returncode == 0
    assert run_cli("queue", str(ws.root), "cancel", str(ids[1])).returncode == 0
    jobs = job_json(ws)
    assert [j["id"] for j in jobs if j["state"] == "queued"] == [ids[3], ids[0], ids[2]]
    assert run_cli("queue", str(ws.root), "cancel", "99").returncode == 2


def test_database_from_a_newer_version_is_refused(demo_workspace):
    import sqlite3

    ws = demo_workspace()
    Store(ws.db_path)
    conn = sqlite3.connect(ws.db_path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    result = run_cli("queue", str(ws.root), "list")
    assert result.returncode == 1
    assert "newer lorabooth" in result.stderr


def test_disk_full_fails_the_job_and_keeps_the_engine(tmp_path, photos, engines, demo_workspace):
    with small_tmpfs(tmp_path / "small", "4m", engines) as mount:
        ws = make_demo_workspace(mount / "ws", photos)
        engines.append(ws)
        store = Store(ws.db_path)
        assert run_cli("engine", str(ws.root), "start").returncode == 0
        stat = os.statvfs(mount)
        ballast = stat.f_bavail * stat.f_frsize - 600_000
        (mount / "ballast").write_bytes(b"\0" * ballast)
        job = store.add_job("train", {"steps": 50})
        wait_until(lambda: store.job(job).state in ("failed", "done"), timeout=60)
        assert store.job(job).state == "failed"
        assert "disk is full" in store.job(job).error
        assert running_pid(ws)  # the engine is still up


def test_a_disk_that_fills_mid_training_ends_the_job_in_words_once_space_is_freed(
        tmp_path, photos, engines):
    """The disk fills while the engine trains, so the database cannot take the job's end
    either: once space is freed the job reads failed, with the checkpoint it resumes from,
    never `running` forever; and it resumes from there."""
    with small_tmpfs(tmp_path / "small", "48m", engines) as mount:
        ws = make_demo_workspace(mount / "ws", photos, train_checkpoint_every=5)
        engines.append(ws)
        store = Store(ws.db_path)
        job = store.add_job("train", {"steps": 100000})
        assert run_cli("engine", str(ws.root), "start").returncode == 0
        wait_until(lambda: all_checkpoints(ws.checkpoints), timeout=120)
        ballast = mount / "ballast"
        with contextlib.suppress(OSError), open(ballast, "wb") as handle:
            while True:
                handle.write(b"\0" * 2**20)
                handle.flush()
        log = ws.state / "engine.log"
        wait_until(lambda: "is full" in log.read_text(errors="replace"), timeout=60)
        ballast.unlink()
        wait_until(lambda: store.job(job).state == "failed", timeout=30)
        error = store.job(job).error
        kept = all_checkpoints(ws.checkpoints)[-1].step
        assert "is full" in error
        assert f"run-001 resumes from its checkpoint of step {kept}" in error
        assert running_pid(ws)
        resumed = store.add_job("train", {"steps": kept + 5, "resume": True})
        wait_until(lambda: store.job(resumed).state in ("done", "failed"), timeout=120)
        assert store.job(resumed).state == "done", store.job(resumed).error
        assert f"resumed from step-{kept:06d}" in log.read_text(errors="replace")


def test_new_photos_become_dataset_events_and_can_continue_training(photos, engines,
                                                                    demo_workspace):
    import shutil

    ws = demo_workspace(train_auto_continue_after=2, train_steps=10)
    engines.append(ws)
    store = Store(ws.db_path)
    assert run_cli("engine", str(ws.root), "start").returncode == 0
    wait_until(lambda: [e for e in store.events() if e.kind == "dataset"], timeout=30)
    assert not store.jobs()  # the folder as it was is no reason to train
    for name in ("01_studio", "02_beach_scarf"):
        shutil.copy(photos / f"{name}.jpg", photos / f"new_{name}.jpg")
    started = time.monotonic()

    def reported() -> str:
        return " ".join(e.message for e in store.events() if e.kind == "dataset")

    wait_until(lambda: "new_01_studio.jpg" in reported() and
               "new_02_beach_scarf.jpg" in reported(), timeout=30)
    assert time.monotonic() - started < 5
    # Usually one event ("2 added: ..."); on a loaded machine the second copy can start after
    # the first has settled, and then each is its own event: both are fine for a user, what
    # matters is that each photo is reported once and the two count towards auto-continue.
    events = [e.message for e in store.events() if e.kind == "dataset"][1:]
    assert sum(m.count("new_") for m in events) == 2, events
    job = wait_until(lambda: store.jobs(), timeout=10)[0]
    assert job.kind == "train" and job.params["resume"]
    wait_until(lambda: store.job(job.id).state == "done", timeout=60)
    assert store.job(job.id).total == 10


def test_generation_and_training_share_one_loaded_model(engines, demo_workspace):
    from lorabooth.core.generate.recipe import Recipe
    from lorabooth.core.generate.request import Request, request_to_params

    ws = demo_workspace()
    engines.append(ws)
    store = Store(ws.db_path)
    store.set_setting("queue_paused", "1")
    request = request_to_params(Request(Recipe("zorb", width=64, height=64, steps=2,
                                               model="demo")))
    first = store.add_job("generate", request)
    train = store.add_job("train", {"steps": 30})
    last = store.add_job("generate", request)
    store.set_setting("queue_paused", "0")
    assert run_cli("engine", str(ws.root), "start").returncode == 0
    # The last prompt may well run between two training steps; wait for all three.
    wait_until(lambda: all(store.job(j).state in ("done", "failed") for j in
                           (first, train, last)), timeout=90)
    assert [store.job(j).state for j in (first, train, last)] == ["done"] * 3
    loads = [e.message for e in store.events() if e.message.startswith("model demo")]
    assert len(loads) == 1, loads  # loaded once, then trained and generated in memory
    assert store.engine().device == "cpu"


def test_after_training_the_warm_model_generates_like_a_fresh_one(demo_workspace):
    """The pipeline handed back by training (adapter removed) renders exactly as a pipeline
    freshly loaded with the trained LoRA file."""
    import numpy as np

    from lorabooth.core.generate.recipe import LoraRef, Recipe
    from lorabooth.core.generate.request import complete_recipe
    from lorabooth.core.models.owner import ModelOwner
    from lorabooth.core.models.resolve import resolve_model
    from lorabooth.core.train.trainer import Trainer

    ws = demo_workspace()
    owner = ModelOwner()
    warm = owner.generator(resolve_model("demo"))
    trainer = Trainer(ws, device="cpu", owner=owner)
    trainer.run(steps=10)
    assert not trainer.loaded_model and trainer.pipe is warm.pipe  # one copy, lent
    trainer.release()
    reused = owner.generator(resolve_model("demo"))
    fresh = ModelOwner().generator(resolve_model("demo"))
    recipe = complete_recipe(ws, Recipe("zorb", width=64, height=64, steps=2,
                                        loras=(LoraRef("workspace", 1.0),)))
    assert np.array_equal(np.asarray(reused.render(recipe)), np.asarray(fresh.render(recipe)))


def test_read_only_workspace_says_so(tmp_path, photos):
    with small_tmpfs(tmp_path / "ro", "8m", []) as mount:
        ws = init_workspace(mount / "ws", photos, model="demo", trigger="zorb")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        for args in (("queue", str(ws.root), "list"), ("engine", str(ws.root), "start"),
                     ("train", str(ws.root), "--detach")):
            result = run_cli(*args)
            assert result.returncode == 1, (args, result.stderr)
            assert "read-only" in result.stderr and "Traceback" not in result.stderr


@contextlib.contextmanager
def small_tmpfs(mount: Path, size: str, engines: list[Workspace]):
    """A tmpfs of `size` at `mount` (the test is skipped where mounting is not permitted);
    engines running on it are killed before it is unmounted."""
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True)
    if made.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield mount
    finally:
        for ws in engines:
            pid = running_pid(ws)
            if pid and pid > 0:
                os.kill(pid, signal.SIGKILL)
        if engines:
            time.sleep(0.3)
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
