"""fp8 matmuls (`compile = "blocks-fp8"`): torchao's float8 layers swapped into the blocks keep
the transformer the same function within fp8's rounding, and a LoRA still learns through them.
The fp8 arithmetic is emulated on the CPU (the same layers and casts, multiplied in high
precision); the speed is the GPU bench's to measure."""

from __future__ import annotations

import torch

from lorabooth.core.models.compile import apply
from lorabooth.core.models.fp8 import use_fp8_matmuls, uses_fp8_matmuls
from lorabooth.core.train.trainer import Trainer


def demo_inputs(transformer, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    dims = transformer.config
    return dict(hidden_states=torch.randn(1, 64, dims.in_channels, generator=g),
                encoder_hidden_states=torch.randn(1, 8, dims.joint_attention_dim, generator=g),
                pooled_projections=torch.randn(1, dims.pooled_projection_dim, generator=g),
                timestep=torch.tensor([0.6]), img_ids=torch.zeros(64, 3),
                txt_ids=torch.zeros(8, 3),
                guidance=torch.tensor([3.5]) if dims.guidance_embeds else None)


def test_fp8_layers_keep_the_function_and_the_lora_learns(demo_workspace):
    ws = demo_workspace(train_compile="off", train_checkpoint_every=1000,
                        train_resolution=[64], train_targets="all-linear")
    trainer = Trainer(ws, device="cpu", log=lambda line: None)
    trainer.prepare()
    transformer = trainer.pipe.transformer
    with torch.no_grad():
        before = transformer(**demo_inputs(transformer)).sample
    swapped = use_fp8_matmuls(transformer, emulate=True)
    kinds = {type(m).__name__ for n, m in transformer.named_modules()
             if n.endswith("base_layer") and ".norm" not in n}
    assert swapped > 20 and kinds == {"Float8Linear"}, (swapped, kinds)
    assert uses_fp8_matmuls(transformer)
    # The LoRA's own layers and the AdaLN modulation stay as they were.
    assert not any(type(m).__name__ == "Float8Linear" for n, m in transformer.named_modules()
                   if "lora_" in n or ".norm" in n)
    with torch.no_grad():
        after = transformer(**demo_inputs(transformer)).sample
    error = ((after - before).norm() / before.norm()).item()
    assert 0 < error < 0.1, error  # fp8 rounding: changed, but the same function

    losses = trainer.run(steps=60).losses
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.9 * first, (first, last)
    trained = [p for n, p in transformer.named_parameters() if "lora_B" in n]
    assert trained and all(p.abs().sum() > 0 for p in trained)


def test_fp8_on_a_cpu_says_why_it_stays_bf16(demo_pipe):
    line = apply(demo_pipe.transformer, "blocks-fp8", torch.device("cpu"))
    assert "fp8 matmuls need a CUDA card" in line and "bf16 matmuls" in line
    assert not uses_fp8_matmuls(demo_pipe.transformer)
