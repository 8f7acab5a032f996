"""lorabooth's bf16 CPU attention backward (core/kernels): gradients as close to float64's as
torch's own kernel at every shape a training meets (odd lengths, batches, head sizes), the
same through torch.compile, and really used when a LoRA trains in bf16 on a CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lorabooth.core.kernels import cpu_attention
from lorabooth.core.train.trainer import Trainer


@pytest.fixture(autouse=True)
def kernel(lorabooth_cache):
    """Built (once a session, into the tests' cache) or the test is skipped, saying why."""
    why_not = cpu_attention.available()
    if why_not is not None:
        pytest.skip(f"the kernel cannot run here: {why_not}")


def _inputs(batch: int, heads: int, length: int, dim: int, seed: int = 0,
            keys: int | None = None, diffusers_layout: bool = False):
    """query, key, value, grad_out; in diffusers' layout they are [B, S, H, D] tensors
    permuted to [B, H, S, D], as the routed attention receives them."""
    gen = torch.Generator().manual_seed(seed)
    lengths = (length, keys or length, keys or length, length)
    tensors = [torch.randn(batch, n, heads, dim, generator=gen).transpose(1, 2) for n in lengths]
    if not diffusers_layout:
        tensors = [x.contiguous() for x in tensors]
    q, k, v, grad = tensors
    # Sharper attention than unit scores (a trained model's), where rounding shows.
    return [x.bfloat16() for x in (2 * q, 2 * k, v, grad)]


def _relative_errors(grads, reference) -> list[float]:
    return [float((g.double() - r).norm() / r.norm())
            for g, r in zip(grads, reference, strict=True)]


@pytest.mark.parametrize(("batch", "heads", "length", "dim", "keys", "diffusers_layout"), [
    (1, 4, 768, 64, None, True),   # the mid-size bench model at 256 px, as diffusers calls it
    (2, 3, 777, 64, None, False),  # odd lengths: rows padded to pairs and cut off again
    (1, 2, 101, 128, None, True),  # FLUX.1's head size, a partial last block
    (1, 4, 9, 16, None, False),    # shorter than one block
    (1, 2, 200, 80, None, True),   # a head size over one 64-column pack
    (2, 2, 130, 64, 77, True),     # fewer keys than queries, an odd number of them
])
def test_gradients_are_as_close_to_float64_as_torchs(batch, heads, length, dim, keys,
                                                     diffusers_layout):
    q, k, v, grad = _inputs(batch, heads, length, dim, keys=keys,
                            diffusers_layout=diffusers_layout)
    exact = [x.double().requires_grad_() for x in (q, k, v)]
    F.scaled_dot_product_attention(*exact).backward(grad.double())
    reference = [x.grad for x in exact]

    ours = [x.clone().requires_grad_() for x in (q, k, v)]
    out, _ = cpu_attention.cpu_attention(*ours, dim ** -0.5)
    out.backward(grad)
    torchs = [x.clone().requires_grad_() for x in (q, k, v)]
    expected = F.scaled_dot_product_attention(*torchs)
    expected.backward(grad)

    assert torch.equal(out, expected)  # the forward is torch's flash kernel itself
    for mine, theirs in zip(_relative_errors([x.grad for x in ours], reference),
                            _relative_errors([x.grad for x in torchs], reference), strict=True):
        assert mine < 0.01 and mine <= 1.1 * theirs, (mine, theirs)


def test_compiled_calls_give_the_eager_gradients_without_graph_breaks():
    from torch._dynamo.utils import counters

    def loss(q, k, v):
        out, _ = cpu_attention.cpu_attention(q, k, v, 0.125)
        return (out.float() ** 2).sum()

    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(loss, fullgraph=True)
    for length in (256, 258):  # a second bucket
        inputs = _inputs(1, 2, length, 64)[:3]
        eager = [x.clone().requires_grad_() for x in inputs]
        loss(*eager).backward()
        traced = [x.clone().requires_grad_() for x in inputs]
        compiled(*traced).backward()
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(eager, traced, strict=True))
    assert not counters["graph_break"]


def test_a_bf16_cpu_training_routes_diffusers_attention_through_the_kernel(demo_workspace,
                                                                          monkeypatch):
    """The trainer says which backward it uses, and every attention of the step goes through
    it; generation (no gradients) stays on diffusers' own path."""
    calls = []
    real = cpu_attention._extension
    monkeypatch.setattr(cpu_attention, "_extension", lambda: calls.append(1) or real())
    logs: list[str] = []
    trainer = Trainer(demo_workspace(train_memory="bf16", train_checkpoint_every=1000),
                      device="cpu", log=logs.append)
    trainer.prepare()
    assert "attention backward: lorabooth's bf16 CPU kernel" in logs
    transformer = trainer.pipe.transformer
    blocks = len(transformer.transformer_blocks) + len(transformer.single_transformer_blocks)
    calls.clear()
    trainer.run(steps=2)
    assert len(calls) == 2 * blocks
    pipe = trainer.pipe
    trainer.release()  # the pipeline back to its owner, for generation
    calls.clear()
    with torch.no_grad():
        pipe("zorb", num_inference_steps=2, height=64, width=64, guidance_scale=3.5)
    assert not calls


def test_float32_training_keeps_torchs_attention(demo_workspace):
    logs: list[str] = []
    trainer = Trainer(demo_workspace(train_checkpoint_every=1000), device="cpu",
                      log=logs.append)
    trainer.prepare()
    assert not any(line.startswith("attention backward") for line in logs)


def test_a_lock_left_by_a_killed_build_does_not_hang_the_next_training(lorabooth_cache):
    """torch's builder waits for ever on a lock file it finds; one left by a build killed
    mid-way (kill -9 during the first training's half minute of compiling) is cleared."""
    import os
    import subprocess
    import sys
    import time

    lock = cpu_attention._folder() / "lock"
    lock.write_text("")
    an_hour_ago = time.time() - 3600
    os.utime(lock, (an_hour_ago, an_hour_ago))
    result = subprocess.run(
        [sys.executable, "-c", "from lorabooth.core.kernels import cpu_attention as c; "
         "print(c.available())"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "LORABOOTH_CACHE": str(lorabooth_cache)})
    assert result.stdout.strip() == "None", result.stderr[-2000:]
    assert not lock.exists()


def test_a_kernel_that_does_not_build_leaves_torchs_attention_and_says_why(tmp_path,
                                                                           monkeypatch):
    broken = tmp_path / "broken.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(cpu_attention, "SOURCE", broken)
    monkeypatch.setattr(cpu_attention, "NAME", "lorabooth_broken_kernel")
    cpu_attention._built.cache_clear()
    try:
        line = cpu_attention.install()
        assert line.startswith("attention backward: torch's (the kernel did not build: ")
        assert "error: " in line  # the compiler's own words
    finally:
        cpu_attention._built.cache_clear()


def test_the_kernel_refuses_shapes_it_would_read_past():
    """The C++ walks raw pointers by the query's and the key's sizes and strides: a value
    shorter than the key, or rows that are not dense, are refused, not read past their end."""
    q, k, v, grad = _inputs(1, 2, 8, 64, diffusers_layout=True)
    out, lse = cpu_attention.cpu_attention(q, k, v, 0.125)
    module = cpu_attention._extension()
    with pytest.raises(RuntimeError, match="does not match"):
        module.attention_backward(grad, q, k, v[:, :, :6], out, lse, 0.125)
    with pytest.raises(RuntimeError, match="dense rows"):
        columns = v.transpose(2, 3).contiguous().transpose(2, 3)  # same shape, D not dense
        module.attention_backward(grad, q, k, columns, out, lse, 0.125)
    with pytest.raises(RuntimeError, match="lse"):
        module.attention_backward(grad, q, k, v, out, lse[:, :, :4], 0.125)
    grads = cpu_attention.cpu_attention_backward(grad, q, k, v, out, lse, 0.125)
    assert [x.shape for x in grads] == [q.shape, k.shape, v.shape]
    # laid out as diffusers' [B, S, H, D], so that nothing downstream copies them again
    assert all(x.transpose(1, 2).is_contiguous() for x in grads)


def test_compile_caches_are_keyed_on_the_ops_code(tmp_path, monkeypatch):
    """torch.compile caches graphs by op name: after an upgrade that changes what an op returns,
    a graph compiled by the old lorabooth must not be read back (it fails on the new layout)."""
    from torch.compiler import config

    before = config.cache_key_tag
    assert "lorabooth-ops-" in before
    changed = tmp_path / "attention_backward.cpp"
    changed.write_text(cpu_attention.SOURCE.read_text() + "\n// an upgrade\n")
    monkeypatch.setattr(cpu_attention, "SOURCE", changed)
    monkeypatch.setattr(config, "cache_key_tag", "")
    cpu_attention._key_compile_caches()
    assert config.cache_key_tag.startswith("lorabooth-ops-")
    assert config.cache_key_tag not in before.split("+")


def test_an_upgraded_kernel_source_is_said_to_need_building(tmp_path, monkeypatch):
    """After an upgrade the first bf16 training builds the new kernel (half a minute) and the
    log says so, rather than looking like a hang."""
    assert not cpu_attention.needs_building()  # built by the fixture
    changed = tmp_path / "attention_backward.cpp"
    changed.write_text(cpu_attention.SOURCE.read_text() + "\n// an upgrade\n")
    monkeypatch.setattr(cpu_attention, "SOURCE", changed)
    cpu_attention._built.cache_clear()
    try:
        assert cpu_attention.needs_building()
    finally:
        cpu_attention._built.cache_clear()
