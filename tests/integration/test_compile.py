"""Compiled training compiles once: after every bucket shape has been seen and a prompt has
been rendered between steps, further steps and renders run the compiled code without a single
new compile; a LoRA scale change compiles once (the scale becomes a dynamic value) and later
scales reuse that (counted with dynamo's own counters, not timed)."""

from __future__ import annotations

from lorabooth.core.engine.generate_job import lora_scale
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

    def render(scale: float) -> None:  # as the engine renders a queued prompt between steps
        embeds, pooled = trainer.prompt_embeds("a photo of zorb")
        trainer.pipe.transformer.eval()
        with torch.no_grad(), lora_scale(trainer.pipe.transformer, scale):
            trainer.pipe(prompt_embeds=embeds[None], pooled_prompt_embeds=pooled[None],
                         height=128, width=128, num_inference_steps=2)
        trainer.pipe.transformer.train()

    render(0.5)
    after_one_scale = counters["stats"]["unique_graphs"]
    for scale in (0.7, 1.3, 1.0):
        render(scale)
    trainer.train_step()
    assert counters["stats"]["unique_graphs"] == after_one_scale


def test_each_size_compiles_a_static_graph_of_its_own(demo_model, monkeypatch):
    """A second bucket or render size gets its own graph with fixed sizes, not a recompile with
    a symbolic sequence length that then serves every size (slower kernels: 0.241 against
    0.131 s a 512 px step on an H200). Counted: a new size is a new graph; a size seen
    before, or a LoRA scale moved a third time, compiles nothing."""
    import torch
    import torch._dynamo
    from diffusers import FluxTransformer2DModel
    from torch._dynamo.utils import counters

    from lorabooth.core.models import compile as compile_module
    from lorabooth.core.models.compile import compile_in_place
    from lorabooth.core.train.lora import ADAPTER, add_lora, target_modules

    transformer = FluxTransformer2DModel.from_pretrained(demo_model, subfolder="transformer")
    add_lora(transformer, 4, 4, target_modules(transformer, "attention"))
    torch._dynamo.reset()
    counters.clear()
    # The GPU's policy (a CPU keeps only its first size static: compiles cost more there).
    monkeypatch.setattr(compile_module, "STATIC_SHAPES_CPU", compile_module.STATIC_SHAPES)
    assert compile_in_place(transformer, "blocks")
    dims = transformer.config

    def run(side: int) -> None:
        tokens = (side // 16) ** 2
        ids = torch.zeros(tokens, 3)
        with torch.no_grad():
            transformer(hidden_states=torch.randn(1, tokens, dims.in_channels),
                        encoder_hidden_states=torch.randn(1, 8, dims.joint_attention_dim),
                        pooled_projections=torch.randn(1, dims.pooled_projection_dim),
                        timestep=torch.tensor([0.5]), img_ids=ids, txt_ids=torch.zeros(8, 3),
                        guidance=torch.tensor([1.0]) if dims.guidance_embeds else None)

    graphs = []
    for side in (64, 96, 128, 96, 64):
        run(side)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] < graphs[1] < graphs[2], graphs  # three sizes, three graphs
    assert graphs[2] == graphs[3] == graphs[4], graphs  # sizes seen before: nothing new
    for scale in (0.5, 0.7, 1.3):
        transformer.set_adapters([ADAPTER], [scale])
        run(64)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[5] - graphs[4] <= 2 and graphs[5] == graphs[-1]  # the scale: once

    # Past STATIC_SHAPES sizes, one graph with a symbolic size serves every size after.
    monkeypatch.setattr(compile_module, "STATIC_SHAPES_CPU", 3)
    for side in (160, 192, 224):
        run(side)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[-3] > graphs[-4] and graphs[-1] == graphs[-2] == graphs[-3], graphs


def test_auto_measures_this_device_then_decides_from_the_measurement(demo_workspace,
                                                                      monkeypatch):
    """A device never measured: the first steps run eager and are timed, the blocks are
    compiled and timed, and the run keeps whichever was faster; the measurement is kept, and
    the next run decides from it before its first step. (The priors are set so that a short
    CPU run tries; by default a CPU run this short would not.)"""
    from lorabooth.core.models import autocompile

    monkeypatch.setattr(autocompile, "RECORD", "compile-measured-this-test.json")
    monkeypatch.setattr(autocompile, "PRIORS", {"cpu": (0.9, 0.0), "cuda": (0.9, 0.0)})
    monkeypatch.setattr(autocompile, "SAMPLES", 3)
    settings = dict(train_compile="auto", train_resolution=[128], sample_every=0,
                    train_checkpoint_every=1000)
    said: list[str] = []
    trainer = Trainer(demo_workspace("first", **settings), device="cpu", log=said.append)
    trainer.run(steps=12)
    assert any("times the first steps eager" in line for line in said), said
    assert any(line.startswith("compile: repeated blocks") and "trying it" in line
               for line in said), said
    decided = [line for line in said if "kept for later runs" in line]
    assert len(decided) == 1, said
    kept = decided[0].startswith("compile: auto keeps")
    assert kept == trainer.pipe.transformer._lorabooth_compiled
    (record,) = autocompile.read_records().values()
    assert record.eager_s > 0 and record.compiled_s > 0 and record.compile_s > 0

    again: list[str] = []
    second = Trainer(demo_workspace("second", **settings), device="cpu", log=again.append)
    second.run(steps=4)
    assert not any("times the first steps" in line for line in again), again
    (line,) = [line for line in again if line.startswith("compile:")]
    assert "measured on this device" in line
    pays = record.gain_s() is not None and autocompile.pays(4, record.eager_s, record.gain_s(),
                                                             record.compile_s)
    assert line.startswith("compile: repeated blocks") == pays


def test_generation_auto_follows_what_training_measured_here(demo_model, monkeypatch):
    import torch
    from diffusers import FluxTransformer2DModel

    from lorabooth.core.models import autocompile

    monkeypatch.setattr(autocompile, "RECORD", "compile-measured-generation-test.json")
    cpu = torch.device("cpu")

    def fresh():
        return FluxTransformer2DModel.from_pretrained(demo_model, subfolder="transformer")

    assert autocompile.for_generation(fresh(), "auto", cpu, "demo").startswith(
        "compile: off (auto: no gain")  # nothing measured: the CPU's default
    # What bf16 weights measured says nothing of float32 ones (and the reverse).
    bf16 = autocompile.record_key(cpu, "demo", 128, 1, torch.bfloat16)
    autocompile.write_record(bf16, autocompile.Measured(0.030, 0.020, 12.0))
    assert autocompile.for_generation(fresh(), "auto", cpu, "demo").startswith(
        "compile: off (auto: no gain")
    key = autocompile.record_key(cpu, "demo", 128, 1, torch.float32)
    autocompile.write_record(key, autocompile.Measured(0.030, 0.033, 12.0))
    slower = fresh()
    line = autocompile.for_generation(slower, "auto", cpu, "demo")
    assert line == "compile: off (auto: a training step compiled took 1.10x its eager time " \
                   "on this device)"
    assert not getattr(slower, "_lorabooth_compiled", False)
    autocompile.write_record(key, autocompile.Measured(0.030, 0.024, 12.0))
    faster = fresh()
    line = autocompile.for_generation(faster, "auto", cpu, "demo")
    assert line.startswith("compile: repeated blocks") and "0.80x" in line
    assert faster._lorabooth_compiled
    other = autocompile.for_generation(fresh(), "auto", cpu, "flux-dev")  # not measured
    assert other.startswith("compile: off (auto: no gain")


def test_cuda_graphs_are_asked_for_only_on_a_card_without_checkpointing(demo_model,
                                                                         monkeypatch):
    """train.compile = "blocks-cudagraphs" compiles each block with inductor's CUDA graphs
    (mode reduce-overhead) on a CUDA card when training does not recompute the blocks; a CPU,
    or checkpointing, gets the plain blocks and a line that says why. (The graphs themselves
    run on a card only: the GPU bench measured them, run 13.)"""
    import torch
    from diffusers import FluxTransformer2DModel

    from lorabooth.core.models.compile import apply, compiled_regions, uncompile, with_cudagraphs

    transformer = FluxTransformer2DModel.from_pretrained(demo_model, subfolder="transformer")
    asked: list[dict] = []
    real_compile = torch.compile

    def compile_spy(fn, **options):
        asked.append(options)
        return real_compile(fn, **options)

    monkeypatch.setattr(torch, "compile", compile_spy)
    blocks = len(compiled_regions(transformer))
    cases = [(torch.device("cpu"), False, "CUDA graphs need a CUDA card"),
             (torch.device("cuda"), True, "not with gradient checkpointing"),
             (torch.device("cuda"), False, "replayed as CUDA graphs")]
    for device, checkpointing, said in cases:
        asked.clear()
        line = apply(transformer, "blocks-cudagraphs", device, checkpointing=checkpointing)
        assert said in line, line
        graphs = said == "replayed as CUDA graphs"
        assert len(asked) == blocks
        assert all((o.get("mode") == "reduce-overhead") == graphs for o in asked), asked
        assert with_cudagraphs(transformer) == graphs
        uncompile(transformer)


def test_a_model_compiled_by_an_earlier_job_is_said_as_it_is(demo_model, tmp_path):
    """The engine keeps a compiled model between jobs: a later job asking for another mode is
    told what the model runs (not what it asked for), and CUDA graphs an earlier job compiled
    are dropped when training recomputes the blocks (checkpointing)."""
    import torch
    from diffusers import FluxTransformer2DModel

    from lorabooth.core.models.compile import apply, with_cudagraphs

    transformer = FluxTransformer2DModel.from_pretrained(demo_model, subfolder="transformer")
    cuda = torch.device("cuda")
    assert "replayed as CUDA graphs" in apply(transformer, "blocks-cudagraphs", cuda)
    line = apply(transformer, "blocks", cuda)
    assert line == "compile: repeated blocks replayed as CUDA graphs (compiled already)", line
    line = apply(transformer, "blocks-cudagraphs", cuda, checkpointing=True)
    assert "not with gradient checkpointing" in line and "compiled already" not in line, line
    assert not with_cudagraphs(transformer) and transformer._lorabooth_compiled
    # train.compile = "auto" over graphs an earlier run compiled, this run checkpointing.
    from lorabooth.core.models.autocompile import AutoCompile

    apply(transformer, "blocks-cudagraphs", cuda)
    said: list[str] = []
    AutoCompile(transformer, cuda, "key", said.append, record=tmp_path / "compile.json",
                checkpointing=True).start(0, 100)
    assert said and "CUDA graphs" not in said[0], said
    assert not with_cudagraphs(transformer) and transformer._lorabooth_compiled


def test_cuda_graph_blocks_mark_one_step_per_transformer_call(demo_pipe, monkeypatch):
    """The blocks share one compiled function, so under CUDA graph trees a render (no backward
    pending) would begin a new generation at every block and free the outputs the next block
    reads (the error of bench/results/gpu.json, run 28). Compiled for CUDA graphs, each call of
    the transformer without gradients marks exactly one step, the blocks inside it none;
    uncompiled, none. The graphs run on a card only, so here torch.compile hands back the
    plain forward."""
    import torch

    from lorabooth.core.models.compile import compile_in_place, uncompile

    transformer = demo_pipe.transformer
    monkeypatch.setattr(torch, "compile", lambda fn, **options: fn)
    marks: list[int] = []
    calls: list[int] = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    counted = transformer.register_forward_pre_hook(lambda *a: calls.append(1))

    def render() -> None:
        with torch.no_grad():
            demo_pipe(prompt="a photo of zorb", height=64, width=64, num_inference_steps=3,
                      guidance_scale=1.0, generator=torch.Generator().manual_seed(0))

    uncompile(transformer)  # an earlier test's blocks
    try:
        assert compile_in_place(transformer, "blocks-cudagraphs")
        render()
        assert len(calls) == 3 and len(marks) == 3, (calls, marks)
        # A training forward marks nothing itself: the trainer marks once per optimizer step,
        # since with gradient accumulation one micro-batch's gradients outlive its graphs.
        latents = torch.randn(1, 16, transformer.config.in_channels)
        transformer(hidden_states=latents, timestep=torch.ones(1),
                    encoder_hidden_states=torch.randn(1, 8, transformer.config.joint_attention_dim),
                    pooled_projections=torch.randn(1, transformer.config.pooled_projection_dim),
                    guidance=torch.ones(1), txt_ids=torch.zeros(8, 3), img_ids=torch.zeros(16, 3))
        assert len(calls) == 4 and len(marks) == 3, (calls, marks)
        uncompile(transformer)
        render()
        assert len(calls) == 7 and len(marks) == 3, (calls, marks)
    finally:
        counted.remove()
        uncompile(transformer)
