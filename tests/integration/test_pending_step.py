"""A step's numbers read a step late: where the optimizer skips a non-finite update on the
device itself (torch's fused AdamW, which training uses on a CUDA card), the next step is
queued before a step's loss and gradient norm are read, so the card never waits for the host.
On the CPU the same code runs with the fused AdamW put in by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lorabooth.core.train import TrainingError
from lorabooth.core.train.optim import make_optimizer
from lorabooth.core.train.trainer import Trainer


def prepared(trainer: Trainer, fused: bool) -> Trainer:
    trainer.prepare()
    trainer.optimizer = make_optimizer("adamw", trainer.params,
                                       trainer.config.train.learning_rate, fused=fused)
    return trainer


def test_numbers_read_a_step_late_are_each_step_s_own_and_train_the_same_lora(
        demo_workspace):
    settings = {"train_checkpoint_every": 6, "sample_every": 0, "train_compile": "off"}
    seen: list[tuple[int, int]] = []  # (the step reported, steps queued by then)
    late = prepared(Trainer(demo_workspace("late", **settings), device="cpu",
                            on_step=lambda m: seen.append((m.step, late.step))), fused=True)
    at_once = prepared(Trainer(demo_workspace("now", **settings), device="cpu"), fused=False)
    assert late.guarded and not at_once.guarded
    result, reference = late.run(steps=12), at_once.run(steps=12)

    assert [step for step, _ in seen] == list(range(1, 13))
    # The next step was queued before each step was read, except where a checkpoint (6, 12)
    # needed that step's weights on disk first.
    assert [queued - step for step, queued in seen] == [1, 1, 1, 1, 1, 0] * 2
    # Each step's own loss: one read from the wrong step would differ by far more than the
    # two AdamW kernels' rounding.
    assert np.allclose(result.losses, reference.losses, rtol=1e-4), (
        result.losses, reference.losses)
    for mine, theirs in zip(late.params, at_once.params, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)


def test_a_non_finite_step_read_late_is_skipped_on_the_device_and_stops_the_run(
        demo_workspace):
    ws = demo_workspace(train_checkpoint_every=5, sample_every=0, train_compile="off")
    trainer = prepared(Trainer(ws, device="cpu"), fused=True)
    trainer.run(steps=5)
    good = (ws.checkpoints / "run-001" / "step-000005" / "state.pt").read_bytes()
    before = [p.detach().clone() for p in trainer.params]
    for latent in trainer.latents:  # a damaged cache entry: NaN in the data
        latent.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"loss became nan .* at step 6"):
        trainer.run(steps=10, run="run-001")
    # Step 7 was queued before step 6 was read; the optimizer skipped both updates itself.
    assert trainer.step == 7
    for param, old in zip(trainer.params, before, strict=True):
        assert torch.equal(param, old)
    assert all(float(s["step"]) == 5 for s in trainer.optimizer.state.values())
    assert (ws.checkpoints / "run-001" / "step-000005" / "state.pt").read_bytes() == good
    assert not (ws.checkpoints / "run-001" / "step-000010").exists()


def test_a_checkpoint_from_an_unfused_run_resumes_with_the_fused_guard(demo_workspace):
    """A checkpoint's optimizer state carries the kernel of the machine that wrote it (a CPU
    run, or a card before AdamW ran fused): resumed where AdamW is fused, the on-device NaN
    guard must still have its fused kernel (torch's other AdamW refuses `found_inf`)."""
    ws = demo_workspace(train_checkpoint_every=4, sample_every=0, train_compile="off")
    prepared(Trainer(ws, device="cpu"), fused=False).run(steps=4)
    seen: list[tuple[int, int]] = []
    resumed = prepared(Trainer(ws, device="cpu",
                               on_step=lambda m: seen.append((m.step, resumed.step))),
                       fused=True)
    result = resumed.run(steps=8, resume=True)
    assert result.step == 8 and resumed.guarded
    assert all(group["fused"] for group in resumed.optimizer.param_groups)
    assert [queued - step for step, queued in seen] == [1, 1, 1, 0]
