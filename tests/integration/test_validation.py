"""The validation loss tells a person which checkpoint to keep. Measured on photos held out of
training, it falls as the LoRA learns the subject (from photos it never saw: that is the
subject learned, not the photos) and turns up again once the LoRA memorises its own photos,
so the best checkpoint is not the last. Measuring changes nothing about the training."""

from __future__ import annotations

import hashlib
import json

import pytest

from lorabooth.core.cli.demo import DEMO_SETTINGS
from lorabooth.core.train import TrainingError
from lorabooth.core.train.checkpoint import all_checkpoints, recorded_validation
from lorabooth.core.train.trainer import Trainer


def settings(**more) -> dict:
    """The demo's training (four photos a step at its rate), at a constant rate so that it
    overfits within a test's time; checkpoints every 125 steps."""
    keys = {**DEMO_SETTINGS, "train.lr_schedule": "constant", "train.compile": "off",
            "train.checkpoint_every": 125, "sample.every": 0, "train.validate": True}
    keys.update({k.replace("_", ".", 1): v for k, v in more.items()})
    return {k.replace(".", "_", 1): v for k, v in keys.items()}


def test_held_out_photos_show_the_subject_learned_then_memorised(demo_workspace):
    ws = demo_workspace(**settings(train_steps=1000, train_validation_photos=3,
                                   train_keep_checkpoints=2))
    measured: list[tuple[int, float]] = []
    logs: list[str] = []
    trainer = Trainer(ws, device="cpu", on_validation=lambda s, v: measured.append((s, v)),
                      log=logs.append)
    trainer.run()
    held = {e.sha256 for e in trainer.split.measured}
    assert len(held) == 3 and not held & {e.sha256 for e in trainer.examples}
    assert len({e.sha256 for e in trainer.examples}) == 13  # 16 sample photos, 3 held out

    assert [s for s, _ in measured] == list(range(0, 1001, 125))  # the base, then each one
    base = measured[0][1]
    best_step, best = min(measured[1:], key=lambda p: p[1])
    # Seen here: 0.808 for the base model, 0.574 at step 375, 0.650 at step 1000.
    assert best < 0.8 * base, measured  # the subject, learned from other photos of it
    assert measured[-1][1] > 1.08 * best, measured  # then its photos, memorised
    assert best_step < 1000

    # The best is kept beside the newest two, each records its own value for the Train
    # pane's list, and the run ends by naming it.
    kept = all_checkpoints(ws.checkpoints)
    assert [info.step for info in kept] == [best_step, 875, 1000]
    assert all(recorded_validation(info.path) == pytest.approx(dict(measured)[info.step])
               for info in kept)
    label = f"run-001/step-{best_step:06d}"
    assert f"validation loss was lowest at step {best_step}" in logs[-1]
    assert f"--lora {label}" in logs[-1]


def test_measuring_changes_nothing_about_the_training(demo_workspace):
    """The same run with validation on and off: the same losses, the same LoRA file."""
    runs = []
    for name, validate in (("on", True), ("off", False)):
        ws = demo_workspace(name, **settings(train_steps=30, train_checkpoint_every=10,
                                             train_validate=validate))
        seen: list = []
        result = Trainer(ws, device="cpu",
                         on_validation=lambda s, v, seen=seen: seen.append(s)).run()
        runs.append((result.losses, lora_file(result.lora_path), seen))
    (losses_on, lora_on, seen_on), (losses_off, lora_off, seen_off) = runs
    assert seen_on == [0, 10, 20, 30] and seen_off == []
    assert losses_on == losses_off
    # The same weights and header (safetensors orders a header's keys as it likes).
    assert lora_on == lora_off


def lora_file(path) -> tuple[dict, dict]:
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        return {k: f.get_tensor(k).tolist() for k in f.keys()}, f.metadata()


def test_holding_out_every_photo_is_refused_before_loading(demo_workspace):
    ws = demo_workspace(train_validation_photos=16, train_validate=True)
    with pytest.raises(TrainingError, match="hold out every one of the 16 usable photos"):
        Trainer(ws, device="cpu").prepare()


def test_a_resumed_run_measures_the_photos_it_started_with(demo_workspace):
    """Photos arrive and go between a run's stop and its resume (the watched folder's
    auto-continue does exactly this): the run goes on measuring the held-out photos it started
    with, those still there, so its curve compares like with like; a newcomer trains, even one
    a fresh draw would hold out."""
    from PIL import Image

    from lorabooth.core.train.checkpoint import MEASURED_KEY, latest_checkpoint
    from lorabooth.core.train.validation import _rank

    ws = demo_workspace(**settings(train_steps=40, train_checkpoint_every=10,
                                   train_validation_photos=2))
    first = Trainer(ws, device="cpu")
    first.should_stop = lambda: first.step >= 20
    first.run()
    held = [e.sha256 for e in first.split.measured]
    seed = ws.config().train.seed
    photos = ws.config().photos_dir(ws.root)
    # A new photo that ranks ahead of both: a fresh draw would hold it out and train on one
    # of the photos this run has measured as unseen.
    source = Image.open(first.split.measured[0].photo).convert("RGB")
    for shade in range(256):
        source.putpixel((0, 0), (shade, 0, 0))
        source.save(photos / "newcomer.png")
        new = hashlib.sha256((photos / "newcomer.png").read_bytes()).hexdigest()
        if _rank(new, seed) < min(_rank(h, seed) for h in held):
            break
    else:
        pytest.fail("no variant ranked first")
    (photos / "newcomer.txt").write_text("a photo of zorb\n")
    gone = next(e.photo for e in first.split.measured if e.sha256 == held[1])
    gone.unlink()

    logs: list[str] = []
    again = Trainer(ws, device="cpu", log=logs.append)
    result = again.run(resume=True)
    assert result.run == "run-001" and result.step == 40
    assert [e.sha256 for e in again.split.measured] == [held[0]]
    assert new in {e.sha256 for e in again.examples}
    assert held[0] not in {e.sha256 for e in again.examples}
    assert "1 of the 2 held-out photos run-001 started with are left" in logs
    meta = json.loads((latest_checkpoint(ws.checkpoints / "run-001").path
                       / "meta.json").read_text())
    assert meta[MEASURED_KEY] == {"sha256": [held[0]], "held_out": True}

    fresh = Trainer(ws, device="cpu")  # a new run draws again: the newcomer is held out
    fresh.prepare()
    assert new in {e.sha256 for e in fresh.split.measured}


@pytest.mark.parametrize("record", [
    None, [], "x", {"sha256": ["0" * 64]}, {"sha256": ["0" * 64], "held_out": 1},
    {"sha256": ["../../etc"], "held_out": True}, {"sha256": [], "held_out": True},
    {"sha256": ["0" * 64] * 65, "held_out": False}, {"sha256": "0" * 64, "held_out": True},
])
def test_a_forged_record_of_measured_photos_is_ignored(record):
    from lorabooth.core.train.validation import kept_of

    assert kept_of(record, "run-001") is None
    assert kept_of({"sha256": ["0" * 64], "held_out": False}, "run-001") is not None
