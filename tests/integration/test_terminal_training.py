"""A training started in a terminal (`lorabooth train`) is a job in the workspace's store, so the
UI shows it as it shows the engine's: its numbers, measures and samples are rows; the engine
leaves it alone while it lives and closes it when its process dies without a word; a store
that takes no write costs the recording, never the training."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator

import pytest
from support import run_cli, wait_until

from lorabooth.core.engine.terminal_job import close_orphans
from lorabooth.core.store import TERMINAL_PID, Store


@contextlib.contextmanager
def terminal_training(ws, *args: str) -> Iterator[subprocess.Popen]:
    """`lorabooth train WS ARGS` as a person starts it in a terminal; killed afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "lorabooth.core.cli", "train", str(ws.root),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def the_job(store: Store, step: int = 0):
    """The store's training job once it has reached `step`."""
    def found():
        jobs = [j for j in store.jobs() if j.kind == "train"]
        return jobs[-1] if jobs and jobs[-1].step >= step else None
    return wait_until(found, timeout=90)


def test_a_terminal_training_is_recorded_as_a_job_the_engine_leaves_alone(demo_workspace,
                                                                          engines):
    ws = demo_workspace(train_validate=True, sample_every=100, train_checkpoint_every=100)
    engines.append(ws)
    store = Store(ws.db_path)
    with terminal_training(ws, "--steps", "300") as proc:
        job = the_job(store)
        assert job.state == "running" and job.terminal_pid == proc.pid
        assert job.params["run"] == "run-001" and job.total == 300
        listed = run_cli("queue", str(ws.root), "list").stdout
        assert f"in a terminal (pid {proc.pid})" in listed, listed
        # An engine started meanwhile (the UI starts one) must not take the job as one of its
        # own that died, queue it, and train the run a second time.
        assert run_cli("engine", str(ws.root), "start").returncode == 0
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    job = store.job(job.id)
    assert job.state == "done", (job.state, job.error)
    assert job.result["run"] == "run-001" and job.result["step"] == 300
    assert [m.step for m in store.metrics(job.id)] == list(range(1, 301))
    assert [v.step for v in store.validations(job.id)] == [0, 100, 200, 300]
    samples = store.outputs(job.id)
    assert {o.recipe["step"] for o in samples if o.kind == "sample"} == {0, 100, 200, 300}
    assert [o.path for o in samples if o.kind == "lora"] == [str(ws.lora_path)]
    assert len(store.jobs()) == 1  # the engine queued nothing
    assert f"`lorabooth {ws.root}` shows this run live" in out  # where to watch it, said
    said = [e.message for e in store.events() if e.job == job.id]
    assert f"job {job.id} (train) started in a terminal (pid {proc.pid})" in said
    assert not any("interrupted" in m for m in said), said
    assert said[-1] == f"job {job.id} done"


def test_stop_from_the_store_ends_a_terminal_training_with_a_checkpoint(demo_workspace):
    """What `x` in the Train pane and `lorabooth queue cancel` write reaches the terminal."""
    ws = demo_workspace()
    store = Store(ws.db_path)
    with terminal_training(ws, "--steps", "3000") as proc:
        job = the_job(store, step=30)
        assert store.request(job.id, "pause")
        wait_until(lambda: store.job(job.id).state == "paused")
        held = store.job(job.id).step
        with pytest.raises(AssertionError):  # no step is taken while paused
            wait_until(lambda: store.job(job.id).step > held, timeout=1.0)
        assert store.request(job.id, "cancel")
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "job 1 paused from the UI (p there resumes it; Ctrl-C here stops it)" in out
    assert "stopping after this step, as the UI asked" in out
    job = store.job(job.id)
    assert job.state == "cancelled" and job.step == held
    assert f"stopped at step {held} of run-001" in out
    assert (ws.checkpoints / "run-001" / f"step-{held:06d}").is_dir()


def prompt(store: Store, count: int = 1, **recipe) -> int:
    from lorabooth.core.generate.recipe import Recipe
    from lorabooth.core.generate.request import Request, request_to_params

    recipe = {"width": 64, "height": 64, "steps": 2, **recipe}
    return store.add_job("generate", request_to_params(Request(Recipe(
        "zorb on a beach", model="demo", **recipe), count=count)))


def test_a_prompt_queued_during_a_terminal_training_renders_between_its_steps(demo_workspace,
                                                                             engines):
    """On the model the terminal's process holds, as the engine's training does: the engine,
    running meanwhile, leaves the prompt to it rather than load a second copy of the model."""
    ws = demo_workspace()
    engines.append(ws)
    store = Store(ws.db_path)
    assert run_cli("engine", str(ws.root), "start").returncode == 0
    with terminal_training(ws, "--steps", "3000") as proc:
        job = the_job(store, step=5)
        assert job.params["renders"] == "demo"
        # Paused, it renders nothing; the engine must not take the prompt meanwhile.
        store.request(job.id, "pause")
        wait_until(lambda: store.job(job.id).state == "paused")
        asked = prompt(store)
        with pytest.raises(AssertionError):
            wait_until(lambda: store.job(asked).state != "queued", timeout=2.0)
        store.request(job.id, None)
        rendered = wait_until(lambda: (j := store.job(asked)).state == "done" and j, timeout=60)
        at = rendered.result["training_step"]
        assert 5 < at < 3000 and rendered.params[TERMINAL_PID] == proc.pid
        images = [o for o in store.outputs(asked) if o.kind == "image"]
        assert len(images) == 1 and images[0].recipe["training_step"] == at
        assert store.job(job.id).state == "running"  # training went on
        store.request(job.id, "cancel")
        out, _ = proc.communicate(timeout=60)
    assert f"job {asked} (generate) runs at training step {at}" in out
    engine_said = [e.message for e in store.events() if e.kind == "engine"]
    assert not any("loaded" in m or f"job {asked}" in m for m in engine_said), engine_said


def test_ctrl_c_during_a_render_between_steps_gives_the_prompt_back(demo_workspace,
                                                                   engines):
    """Ctrl-C stops the training, not the prompt it was rendering: the prompt goes back to
    the queue with the images it saved, and the engine renders the rest."""
    ws = demo_workspace()
    engines.append(ws)
    store = Store(ws.db_path)
    with terminal_training(ws, "--steps", "3000") as proc:
        job = the_job(store, step=5)
        # Larger and longer than the others, so that Ctrl-C lands during the render.
        asked = prompt(store, count=3, width=192, height=192, steps=24)
        wait_until(lambda: store.job(asked).state == "running" and store.job(asked).step >= 1,
                   timeout=60, every=0.01)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    back = store.job(asked)
    saved = [o for o in store.outputs(asked) if o.kind == "image"]
    assert back.state == "queued" and back.terminal_pid is None, (back.state, out)
    assert back.step == len(saved)  # the image it resumes at, as its progress says
    assert f"job {asked} goes back to the queue" in out
    assert store.job(job.id).state == "cancelled"  # the training stopped with a checkpoint
    assert run_cli("engine", str(ws.root), "start").returncode == 0
    wait_until(lambda: store.job(asked).state == "done", timeout=90)
    images = [o for o in store.outputs(asked) if o.kind == "image"]
    assert len(images) == 3 and images[:len(saved)] == saved  # the rest, not all again


def test_a_killed_terminal_training_is_closed_and_its_run_resumes(demo_workspace, engines):
    ws = demo_workspace()
    engines.append(ws)
    store = Store(ws.db_path)
    with terminal_training(ws, "--steps", "3000") as proc:
        job = the_job(store, step=30)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert store.job(job.id).state == "running"  # nobody has looked yet
    # The engine looks within seconds of starting, and closes it.
    assert run_cli("engine", str(ws.root), "start").returncode == 0
    closed = wait_until(lambda: (j := store.job(job.id)).state != "running" and j, timeout=30)
    assert closed.state == "cancelled"
    assert f"its terminal's process (pid {proc.pid}) ended without a word" in closed.error
    assert run_cli("engine", str(ws.root), "stop").returncode == 0
    resumed = run_cli("train", str(ws.root), "--resume", "--steps", "60")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    again = the_job(store)
    assert again.id != job.id and again.state == "done"
    first = store.metrics(again.id)[0].step
    assert first in (26, 51)  # from the run's last checkpoint, not from 1


HOLD_CLAIM = """
import sys, time
from pathlib import Path
from lorabooth.core.train.claim import TrainingClaim
from lorabooth.core.workspace import Workspace
with TrainingClaim(Workspace.at(Path(sys.argv[1]))):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_training_lives_while_its_pid_holds_the_claim(demo_workspace):
    """A training records its end before it lets the claim go: a job whose pid does not hold
    the claim is one whose process died without a word (or whose pid is now another's)."""
    ws = demo_workspace()
    store = Store(ws.db_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_CLAIM, str(ws.root)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        alive = store.add_job("train", {"run": "run-002", TERMINAL_PID: holder.pid},
                              running_from=9)
        # A process that lives (this one) but holds no claim: its pid was reused.
        reused = store.add_job("train", {"run": "run-001", TERMINAL_PID: os.getpid()},
                               running_from=7)
        engine_job = store.add_job("train", {"run": "run-003"}, running_from=0)  # the engine's
        # A prompt the dead training was rendering between its steps.
        rendering = prompt(store)
        assert store.take(rendering, {**store.job(rendering).params, TERMINAL_PID: os.getpid()})
        assert not store.take(rendering)  # taken once only
        assert close_orphans(store, ws) == [reused, rendering]
        closed = store.job(reused)
        assert closed.state == "cancelled" and "ended without a word at step 7" in closed.error
        again = store.job(rendering)
        assert again.state == "queued" and again.terminal_pid is None  # for anyone to render
        assert store.job(alive).state == "running"
    finally:
        holder.kill()
        holder.wait()
    assert close_orphans(store, ws) == [alive]
    assert store.job(engine_job).state == "running"  # never a terminal's to close


def test_a_store_that_takes_no_write_costs_the_recording_not_the_training(demo_workspace):
    ws = demo_workspace()
    Store(ws.db_path).close()
    with sqlite3.connect(ws.db_path) as db:
        db.execute("PRAGMA user_version = 99")  # a newer lorabooth's workspace
    done = run_cli("train", str(ws.root), "--steps", "3")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the UI will not show this run's progress" in done.stdout
    assert "written by a newer lorabooth" in done.stdout
    assert ws.lora_path.exists()
