"""Training teaches: a LoRA overfit on one photo renders that photo, where the base model does
not. "The loss falls" cannot tell a working trainer from a wrong sign, a LoRA saved but never
applied, or a training/inference mismatch; this can, and the last test breaks the trainer in
each of those ways on purpose to show the check notices.

(A remapped noise level is not among them: a LoRA that memorises one photo reaches it from any
level, so this check cannot see it; the flow tests in tests/unit check the schedule itself.)

The metric and its helpers live in bench/learn.py (which also times how soon it passes): the
mean squared error, in pixels scaled to [0, 1], between a render of the photo's own caption
(fixed seed, `lorabooth generate`'s path) and the photo as training saw it. The demo VAE alone
reconstructs that photo at about 0.007; the base model draws something else."""

from __future__ import annotations

import pytest

from bench.learn import STEPS, Renderer, caption, mse, passes, workspace

RENDER = Renderer()


def trained(root, **settings):
    from lorabooth.core.train.trainer import Trainer

    ws = workspace(root, **settings)
    Trainer(ws, device="cpu").run()
    return ws


@pytest.fixture(scope="module")
def overfit(tmp_path_factory, demo_model):
    ws = trained(tmp_path_factory.mktemp("learn") / "ws")
    return ws, mse(RENDER(ws, None), ws), mse(RENDER(ws, 1.0), ws)


def test_the_lora_renders_the_photo_it_learned_and_the_base_does_not(overfit):
    _, base, learned = overfit
    assert passes(learned, base), (learned, base)


def test_lora_scale_zero_is_the_base_and_half_lands_between(overfit):
    ws, base, learned = overfit
    assert abs(RENDER(ws, 0.0) - RENDER(ws, None)).max() <= 2 / 255
    half = mse(RENDER(ws, 0.5), ws)
    assert learned < half < base, (learned, half, base)


def test_a_resumed_run_learns_as_much_as_an_uninterrupted_one(overfit, tmp_path):
    from lorabooth.core.train.trainer import Trainer

    _, _, learned = overfit
    split = workspace(tmp_path / "split")
    seen = {"step": 0}
    Trainer(split, device="cpu", on_step=lambda m: seen.update(step=m.step),
            should_stop=lambda: seen["step"] >= STEPS // 2 + 7).run()
    Trainer(split, device="cpu").run(resume=True)
    assert mse(RENDER(split, 1.0), split) == pytest.approx(learned, abs=1e-4)


def flipped_target(x0, noise):
    return x0 - noise


def packed_transposed(pack):
    return lambda latents: pack(latents.transpose(2, 3))


def unpacked_transposed(unpack):
    return lambda tokens, h, w: unpack(tokens, w, h).transpose(2, 3)


@pytest.mark.parametrize("broken", ["flipped target sign", "LoRA not applied",
                                    "packing differs from the pipeline's"])
def test_the_metric_catches_a_broken_trainer(broken, overfit, tmp_path, monkeypatch):
    """Each way a trainer can look healthy (the loss falls) and teach nothing, done on purpose:
    the LoRA must then fail the check the working trainer passes."""
    from lorabooth.core.generate.generator import Generator
    from lorabooth.core.train import flow

    _, base, _ = overfit
    if broken == "flipped target sign":
        monkeypatch.setattr(flow, "velocity_target", flipped_target)
    elif broken.startswith("packing"):  # consistent in training, not what inference does
        monkeypatch.setattr(flow, "pack", packed_transposed(flow.pack))
        monkeypatch.setattr(flow, "unpack", unpacked_transposed(flow.unpack))
    ws = trained(tmp_path / "ws")
    monkeypatch.undo()
    render = RENDER
    if broken == "LoRA not applied":
        render = Renderer()  # a fresh pipeline: no adapter left enabled by an earlier render
        monkeypatch.setattr(Generator, "use_loras", lambda self, loras: None)
    learned = mse(render(ws, 1.0), ws)
    assert not passes(learned, base), (broken, learned, base)


def test_preserving_the_class_keeps_the_subject_off_it_and_still_learns(overfit, tmp_path):
    """Differential output preservation (train.preserve_class). Trained plainly, the LoRA also
    draws the subject for the caption that names its class instead of the trigger: every plush
    toy becomes this one, as every person in a poster gets the trained face. Preserving the
    class, that caption renders as the base model renders it, while the trigger still renders
    the photo."""
    from lorabooth.core.dataset.captions import class_caption

    plain, base, _ = overfit
    prompt = class_caption(caption(plain), "zorb", "plush toy")
    assert "zorb" not in prompt and "plush toy" in prompt
    bled = mse(RENDER(plain, 1.0, prompt=prompt), plain, RENDER(plain, None, prompt=prompt))
    ws = trained(tmp_path / "ws", **{"train.preserve_class": "plush toy"})
    kept = mse(RENDER(ws, 1.0, prompt=prompt), ws, RENDER(ws, None, prompt=prompt))
    assert bled > 0.05, bled  # without preservation the class takes the subject's look
    assert kept < bled / 10, (kept, bled)
    learned = mse(RENDER(ws, 1.0), ws)
    assert passes(learned, base), (learned, base)
