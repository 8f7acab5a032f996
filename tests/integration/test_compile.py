"""Compiled training compiles once: after every bucket shape has been seen and a prompt has
been rendered between steps, further steps and renders run the compiled code without a single
new compile (counted with dynamo's own counters, not timed)."""

from __future__ import annotations

from lorabooth.core.train.trainer import Trainer


def test_compiled_training_compiles_once_for_every_bucket_and_a_render(demo_workspace):
    import torch._dynamo
    from torch._dynamo.utils import counters

    # Two resolutions: every photo trains at 128 and at 192 px, two bucket shapes at least.
    ws = demo_workspace(train_compile="blocks", train_resolution=[128, 192], sample_every=8,
                        sample_steps=2, train_checkpoint_every=1000)
    torch._dynamo.reset()
    counters.clear()
    said: list[str] = []
    seen: dict[int, tuple[int, int]] = {}

    def on_step(metrics) -> None:
        seen[metrics.step] = (counters["stats"]["unique_graphs"], counters["frames"]["total"])

    trainer = Trainer(ws, device="cpu", on_step=on_step, log=said.append,
                      on_sample=lambda step, paths: None)
    trainer.run(steps=49)
    shapes = {(e.bucket.width, e.bucket.height) for e in trainer.examples}
    assert len(shapes) >= 2, shapes
    assert any(line.startswith("compile: repeated blocks") for line in said)
    warm, end = seen[40], seen[49]
    # Steps 41-49 (both shapes again, and the samples rendered after step 48) compiled
    # nothing new.
    assert end == warm, (warm, end)
    assert warm[0] > 0  # it did compile: the count is of compiled graphs
