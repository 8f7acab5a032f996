"""fp8 matmuls for generation (`generate.compile = "blocks-fp8"`): torchao's float8 layers swapped
into the blocks keep the transformer the same function within fp8's rounding with the LoRA still
acting; a CPU says why it stays bf16; a model swapped for generation is not trained on. The fp8
arithmetic is emulated on the CPU (the same layers and casts, multiplied in high precision); the
speed is the GPU bench's to measure."""

from __future__ import annotations

import torch

from lorabooth.core.models.compile import apply, uncompile
from lorabooth.core.models.fp8 import use_fp8_matmuls, uses_fp8_matmuls
from lorabooth.core.models.owner import ModelOwner
from lorabooth.core.models.resolve import resolve_model
from lorabooth.core.train.lora import ADAPTER, add_lora, target_modules


def demo_inputs(transformer, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    dims = transformer.config
    return dict(hidden_states=torch.randn(1, 64, dims.in_channels, generator=g),
                encoder_hidden_states=torch.randn(1, 8, dims.joint_attention_dim, generator=g),
                pooled_projections=torch.randn(1, dims.pooled_projection_dim, generator=g),
                timestep=torch.tensor([0.6]), img_ids=torch.zeros(64, 3),
                txt_ids=torch.zeros(8, 3),
                guidance=torch.tensor([3.5]) if dims.guidance_embeds else None)


def test_fp8_layers_keep_the_function_and_the_lora_acts(demo_model):
    from diffusers import FluxTransformer2DModel

    transformer = FluxTransformer2DModel.from_pretrained(demo_model, subfolder="transformer")
    add_lora(transformer, 4, 4, target_modules(transformer, "attention"))
    for name, param in transformer.named_parameters():  # a LoRA that does something
        if "lora_B" in name:
            param.data.normal_(0, 0.2, generator=torch.Generator().manual_seed(len(name)))

    def out(scale: float) -> torch.Tensor:
        transformer.set_adapters([ADAPTER], [scale])
        with torch.no_grad():
            return transformer(**demo_inputs(transformer)).sample

    bf16_on = out(1.0)
    swapped = use_fp8_matmuls(transformer, emulate=True)
    assert swapped > 20 and uses_fp8_matmuls(transformer)
    kinds = {type(m).__name__ for n, m in transformer.named_modules()
             if n.endswith(".base_layer") or n.endswith(".ff.net.2")}
    assert kinds == {"Float8Linear"}, kinds
    # The LoRA's own layers and the AdaLN modulation stay as they were.
    assert not any(type(m).__name__ == "Float8Linear" for n, m in transformer.named_modules()
                   if "lora_" in n or ".norm" in n)
    fp8_on, fp8_off = out(1.0), out(0.0)

    def gap(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a - b).norm() / b.norm()).item()

    assert 0 < gap(fp8_on, bf16_on) < 0.1  # fp8 rounding: changed, but the same function
    assert gap(fp8_on, fp8_off) > 5 * gap(fp8_on, bf16_on)  # the LoRA still acts, at its scale


def test_fp8_on_a_cpu_says_why_it_stays_bf16(demo_pipe):
    line = apply(demo_pipe.transformer, "blocks-fp8", torch.device("cpu"))
    assert "fp8 matmuls need a CUDA card" in line and "bf16 matmuls" in line
    assert not uses_fp8_matmuls(demo_pipe.transformer)


def test_a_model_swapped_for_fp8_generation_is_reloaded_for_training(demo_model):
    source = resolve_model("demo")
    owner = ModelOwner()
    owner.generator(source)
    pipe, loaded = owner.borrow_for_training(source, torch.float32, "cpu", None)
    assert not loaded  # the resident model is reused as it is
    owner.give_back(lambda pipe: None)
    use_fp8_matmuls(owner.pipe.transformer, emulate=True)
    pipe, loaded = owner.borrow_for_training(source, torch.float32, "cpu", None)
    assert loaded and not uses_fp8_matmuls(pipe.transformer)
    assert not any(type(m).__name__ == "Float8Linear" for m in pipe.transformer.modules())


def test_fp8_with_cuda_graphs_on_a_cpu_says_why_it_is_neither(demo_pipe):
    uncompile(demo_pipe.transformer)  # an earlier test's blocks
    line = apply(demo_pipe.transformer, "blocks-fp8-cudagraphs", torch.device("cpu"))
    assert "bf16 matmuls" in line and "without CUDA graphs" in line, line
    assert line.startswith("compile: repeated blocks;"), line
    assert not uses_fp8_matmuls(demo_pipe.transformer)
    uncompile(demo_pipe.transformer)
