"""The whole-pipeline memory plan: what a person with each card gets for FLUX.1-dev, counted from
the real configs on the meta device, and checked against what an H200 measured."""

from __future__ import annotations

import json

import pytest

from lorabooth.core.memory import MemoryPlanError, card_gib, plan_generation, plan_training
from lorabooth.core.models.shipped import component_params, shipped_folder
from lorabooth.core.models.sizes import model_size
from tests.support import REPO

DEV = shipped_folder("flux-dev")


@pytest.fixture(scope="module")
def dev():
    return model_size(DEV, rank=16, targets="attention")


def test_the_shipped_configs_have_the_real_models_sizes():
    counts = component_params(DEV)
    assert counts["transformer"] == pytest.approx(11.90e9, rel=0.005)
    assert counts["text_encoder_2"] == pytest.approx(4.76e9, rel=0.005)  # T5-XXL encoder
    assert counts["text_encoder"] == pytest.approx(123e6, rel=0.01)  # CLIP-L text
    assert counts["vae"] == pytest.approx(83.8e6, rel=0.01)
    schnell = component_params(shipped_folder("black-forest-labs/FLUX.1-schnell"))
    assert schnell["transformer"] < counts["transformer"]  # no guidance embedder


def train(dev, gb, px, mode="auto", bnb=False):
    return plan_training(mode, dev, px, device="cuda", available_gib=card_gib(gb),
                         have_bitsandbytes=bnb)


def generate(dev, gb, px, mode="auto", bnb=False):
    return plan_generation(mode, dev, px, device="cuda", available_gib=card_gib(gb),
                           have_bitsandbytes=bnb)


def shape(plan) -> tuple[str | None, bool | str]:
    return plan.quantize, plan.encoders_on_gpu if plan.job == "train" else plan.placement


# (card GB, px) -> (weight storage, text encoders stay on the GPU), without bitsandbytes.
TRAINING = {
    (16, 512): ("fp8", False), (16, 1024): ("fp8", False),
    (24, 512): ("fp8", True), (24, 1024): ("fp8", False),
    (32, 512): (None, False), (32, 1024): (None, False),
    (48, 512): (None, True), (48, 1024): (None, True),
    (80, 512): (None, True), (80, 1024): (None, True),
}
NO_CHECKPOINTING = {(48, 512), (80, 512), (80, 1024)}
# (card GB, px) -> (weight storage, placement): "stream" keeps every model but T5 on the GPU
# (T5 streams from CPU memory a layer at a time), where model offload would move the
# transformer for every image; offload is left for cards where even that does not fit.
GENERATION = {
    (16, 1024): ("fp8", "stream"), (24, 1024): ("fp8", "stream"), (32, 1024): (None, "stream"),
    (48, 1024): (None, "all"), (80, 1024): (None, "all"),
    (24, 512): ("fp8", "all"), (32, 512): (None, "stream"), (48, 512): (None, "all"),
}


@pytest.mark.parametrize("card, px", sorted(TRAINING))
def test_training_plan_per_card(dev, card, px):
    plan = train(dev, card, px)
    assert shape(plan) == TRAINING[card, px]
    assert plan.peak_gib <= card_gib(card)
    assert plan.dtype == "bfloat16"
    # Without checkpointing a step does a third less arithmetic (0.79 -> 0.58 s at 1024 px on
    # an H200) and keeps every activation: only where bf16 weights, every model and those fit.
    assert plan.gradient_checkpointing is ((card, px) not in NO_CHECKPOINTING)
    assert ("no gradient checkpointing" in plan.reason) is ((card, px) in NO_CHECKPOINTING)
    assert f"at {px} px" in plan.reason


@pytest.mark.parametrize("card, px", sorted(GENERATION))
def test_generation_plan_per_card(dev, card, px):
    plan = generate(dev, card, px)
    assert shape(plan) == GENERATION[card, px]
    assert plan.peak_gib <= card_gib(card)


@pytest.mark.parametrize("px", [512, 1024])
def test_a_12_gb_card_needs_nf4_and_is_told_how(dev, px):
    with pytest.raises(MemoryPlanError, match=r"pip install 'lorabooth\[lowvram\]'"):
        train(dev, 12, px)
    with pytest.raises(MemoryPlanError, match=r"pip install 'lorabooth\[lowvram\]'"):
        generate(dev, 12, px)
    assert shape(generate(dev, 12, px, bnb=True)) == ("nf4", "stream")
    if px == 1024:  # NF4 trains at 1024 px on an H200 capped to 16 GB with 11.4 GiB at peak
        with pytest.raises(MemoryPlanError, match=r"lower train\.resolution"):
            train(dev, 12, px, bnb=True)
        px = 768
    assert shape(train(dev, 12, px, bnb=True)) == ("nf4", False)
    # An NF4 transformer is on the GPU from its load (bitsandbytes places it), so T5, 8.9 GiB,
    # has no room beside it while the photos are cached: it encodes the captions on the CPU,
    # once. (Counted without the transformer, a 16 GB card ran out of memory there on an H200.)
    plan = train(dev, 12, px, bnb=True)
    assert plan.text_on_gpu is False
    caching = next(p for p in plan.phases if p.name == "caching")
    assert "transformer" in caching.resident and caching.gib <= card_gib(12)
    assert not train(dev, 16, px, mode="nf4", bnb=True).text_on_gpu


def test_a_24_gb_card_trains_and_generates_at_1024(dev):
    assert train(dev, 24, 1024).peak_gib <= card_gib(24)
    assert generate(dev, 24, 1024).peak_gib <= card_gib(24)


def test_a_32_gb_card_no_longer_loads_every_model_beside_the_bf16_transformer(dev):
    """It was told bf16 fits and then ran out of memory in pipe.to(device): T5 must wait."""
    plan = train(dev, 32, 1024)
    assert plan.quantize is None and not plan.encoders_on_gpu
    caching = plan.phases[0]
    assert "transformer" not in caching.resident


def test_the_estimates_cover_what_an_h200_measured(dev):
    """The full-size bf16 training and generation peaks from bench/results/gpu.json: the plan
    is at or above them, and within 3 GiB (calibrated, not a blind margin)."""
    rows = {}
    for run in json.loads((REPO / "bench" / "results" / "gpu.json").read_text())["runs"]:
        for row in run["rows"]:
            rows.setdefault(row["phase"], row)
    for px in (512, 1024):
        measured = rows[f"train-{px}"]["train_peak_gib"]
        estimate = plan_training("bf16", dev, px, device="cuda", available_gib=None,
                                 checkpointing="on").phases[1].gib
        estimate -= dev.encoders_gib("bf16")  # the bench parked T5 and CLIP
        assert measured <= estimate <= measured + 3, (px, measured, estimate)
        # Without checkpointing (the encoders stayed on the GPU in these runs).
        measured = rows[f"train-{px}-nockpt"]["train_peak_gib"]
        estimate = plan_training("bf16", dev, px, device="cuda", available_gib=None,
                                 checkpointing="off").phases[1].gib
        assert measured <= estimate <= measured + 3, (px, measured, estimate)
    measured = rows["generate-1024"]["peak_gib"]
    estimate = generate(dev, 80, 1024, mode="bf16").peak_gib
    assert measured <= estimate <= measured + 3


def test_the_klein_estimates_cover_what_an_h200_measured():
    """FLUX.2 [klein] 4B's training peaks (its encoders on the GPU): without checkpointing
    its 25 blocks keep far less than FLUX.1's 57, and a plan by width alone asked 42 GiB for
    the 30.5 measured, checkpointing a 40 GB card that had room to spare."""
    klein = model_size(shipped_folder("klein-4b-base"), rank=16, targets="attention")
    assert (klein.family, klein.blocks) == ("flux2", 25)
    run = next(r for r in json.loads((REPO / "bench" / "results" / "gpu.json").read_text())
               ["runs"] if r.get("model") == "klein-4b-base")
    rows = {row["phase"]: row for row in run["rows"]}
    for phase, px, checkpointing in (("train-512", 512, "on"), ("train-1024", 1024, "on"),
                                     ("train-1024-nockpt", 1024, "off")):
        measured = rows[phase]["train_peak_gib"]
        estimate = plan_training("bf16", klein, px, device="cuda", available_gib=None,
                                 checkpointing=checkpointing).phases[1].gib
        assert measured <= estimate <= measured + 3, (phase, measured, estimate)
    assert not plan_training("auto", klein, 1024, device="cuda", available_gib=card_gib(40),
                             checkpointing="auto").gradient_checkpointing


def test_checkpointing_on_and_off_are_obeyed_whatever_fits(dev):
    assert train_with(dev, 141, 512, "on").gradient_checkpointing
    with pytest.raises(MemoryPlanError, match=r'train\.checkpointing = "off" keeps every'):
        train_with(dev, 24, 1024, "off")  # fp8, T5 on the CPU: still over a 24 GB card
    off = train_with(dev, 24, 1024, "off", mode="fp8")
    assert not off.gradient_checkpointing and "more than is available" in off.reason


def train_with(dev, gb, px, checkpointing, mode="auto"):
    return plan_training(mode, dev, px, device="cuda", available_gib=card_gib(gb),
                         checkpointing=checkpointing)


def test_a_mode_the_user_chose_runs_as_asked_and_says_when_it_may_not_fit(dev):
    plan = train(dev, 24, 1024, mode="bf16")
    assert plan.quantize is None
    assert "more than is available" in plan.reason


def test_cpu_runs_float32_and_refuses_gpu_only_modes(dev):
    assert plan_training("auto", dev, 256, device="cpu", available_gib=None).dtype == "float32"
    for mode in ("nf4", "fp8"):
        with pytest.raises(MemoryPlanError, match="needs a CUDA GPU"):
            plan_training(mode, dev, 256, device="cpu", available_gib=None)


def test_cpu_trains_and_generates_in_bf16_when_asked(dev):
    """bf16 on a CPU is the user's choice (slower than float32 for the tiny demo): no
    checkpointing there, and a CPU without bf16 dot products is told it will be emulated."""
    for job in (plan_training, plan_generation):
        native = job("bf16", dev, 256, device="cpu", available_gib=None, bf16_supported=True)
        assert native.dtype == "bfloat16" and native.quantize is None
        assert "natively" in native.reason
        emulated = job("bf16", dev, 256, device="cpu", available_gib=None,
                       bf16_supported=False)
        assert emulated.dtype == "bfloat16" and "emulated" in emulated.reason
        assert job("auto", dev, 256, device="cpu", available_gib=None,
                   bf16_supported=True).dtype == "float32"
    plan = plan_training("bf16", dev, 256, device="cpu", available_gib=None)
    assert not plan.gradient_checkpointing


def test_old_gpus_without_bf16_use_float16(dev):
    plan = plan_training("auto", dev, 512, device="cuda", available_gib=79.0,
                         bf16_supported=False)
    assert plan.dtype == "float16"


def test_a_resident_model_counts_as_available(monkeypatch):
    """A second run plans with the first run's model reused or freed, not on top of it."""
    import torch

    from lorabooth.core.models import sizes

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 60 * 2**30)
    assert sizes.card_memory(torch.device("cuda"))[0] == pytest.approx(62.0)


def test_fp8_storage_halves_the_real_transformer():
    """Layerwise casting with lorabooth's keep-list: the AdaLN modulation Linears go to fp8 too
    (diffusers' own list would keep 3.2B parameters in bf16), as the plan counts."""
    import torch

    from lorabooth.core.models.load import store_in_fp8
    from lorabooth.core.models.shipped import build_component

    with torch.device("meta"):
        transformer = build_component(DEV, "transformer").to(torch.bfloat16)
    store_in_fp8(transformer, torch.bfloat16)
    stored = sum(p.numel() * p.element_size() for p in transformer.parameters()) / 2**30
    planned = model_size(DEV).gib("transformer", "fp8")
    assert stored == pytest.approx(planned, rel=0.02)
    assert transformer.transformer_blocks[0].norm1.linear.weight.dtype == torch.float8_e4m3fn


@pytest.mark.parametrize("model", ["flux-dev", "klein-4b"])
def test_fp8_casts_the_layers_diffusers_would(model):
    """store_in_fp8 hooks layer by layer (to move each to the GPU and cast it there); it must
    pick exactly the layers diffusers' own apply_layerwise_casting picks with the same keep
    list, on FLUX.1's and FLUX.2's real architectures."""
    import torch
    from diffusers.hooks import apply_layerwise_casting

    from lorabooth.core.models.load import FP8_KEEP, store_in_fp8
    from lorabooth.core.models.shipped import build_component

    def cast(apply) -> set[str]:
        with torch.device("meta"):
            transformer = build_component(shipped_folder(model), "transformer")
        apply(transformer.to(torch.bfloat16))
        return {n for n, p in transformer.named_parameters() if p.dtype == torch.float8_e4m3fn}

    ours = cast(lambda t: store_in_fp8(t, torch.bfloat16, torch.device("meta")))
    theirs = cast(lambda t: apply_layerwise_casting(t, torch.float8_e4m3fn, torch.bfloat16,
                                                    skip_modules_pattern=FP8_KEEP))
    assert ours == theirs and len(ours) > 100


@pytest.mark.parametrize(("free", "reserved", "said"), [(79.5, 0.0, False), (2.0, 76.9, False),
                                                        (30.0, 0.0, True), (2.0, 40.0, True)])
def test_memory_other_processes_hold_is_said_with_the_plan(monkeypatch, free, reserved, said):
    """A plan that picks NF4 on an 80 GB card because another process (often a second
    engine) holds half of it says so, and what frees it; this process's own model does not
    count as someone else's."""
    import torch

    from lorabooth.core.config import Config
    from lorabooth.core.models import sizes

    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda device=None: (free * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: reserved * 2**30)
    cuda = torch.device("cuda")
    for plan in (sizes.training_plan(Config(), DEV, 512, cuda, bnb=True, bf16=True),
                 sizes.generation_plan(Config(), DEV, 1024, 512, cuda, bnb=True, bf16=True)):
        held = 80 - free - reserved
        assert plan.available_gib == pytest.approx(free + reserved)
        assert ("other processes hold" in plan.reason) is said, plan.reason
        if said:
            assert f"hold {held:.1f} of this card's 80 GiB" in plan.reason
            assert "lorabooth engine WORKSPACE stop" in plan.reason
    # Where nothing fits, the refusal says it too.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 0)
    with pytest.raises(MemoryPlanError, match=r"other processes hold 76\.0 of this card"):
        sizes.training_plan(Config(), DEV, 512, cuda, bnb=True, bf16=True)


def test_reference_images_are_planned_as_the_tokens_they_add():
    """Each klein reference joins the sequence (up to 4,096 tokens at 1 MP): four of them at
    1024 px need ~3 GiB more than the image alone, enough on a 20 GB card to send the text
    encoder back to CPU memory (streamed from there a layer at a time)."""
    from types import SimpleNamespace

    from lorabooth.core.generate.generator import context_tokens
    from lorabooth.core.generate.recipe import Recipe

    klein = model_size(shipped_folder("klein-4b"), rank=16, targets="attention")
    source = SimpleNamespace(max_sequence_length=512)
    alone = [Recipe("zorb", width=1024, height=1024)]
    edits = [*alone, Recipe("zorb", width=1024, height=1024, refs=("/a.jpg",) * 4)]
    assert context_tokens(source, alone) == 512
    assert context_tokens(source, edits) == 512 + 4 * 4096

    def plan(recipes, gb):
        return plan_generation("auto", klein, 1024, device="cuda", text_tokens=context_tokens(
            source, recipes), available_gib=None if gb is None else card_gib(gb))

    assert plan(alone, None).peak_gib + 2.5 <= plan(edits, None).peak_gib
    assert plan(alone, 20).placement == "all"
    assert plan(edits, 20).placement == "stream", plan(edits, 20).reason


def test_an_nf4_plan_covers_what_a_capped_h200_measured(dev):
    """NF4 training at 1024 px on a simulated 16 GB card peaked at 11.4 GiB where the plan said
    10.4: a 12 GB card told it fits would run out of memory. The plans of that run, training
    and generation, must be at or above their measured peaks (and within 3 GiB)."""
    run = next(r for r in json.loads((REPO / "bench" / "results" / "gpu.json").read_text())
               ["runs"] if any(row["phase"] == "capped-1024-16-nf4" and "error" not in row
                               for row in r["rows"]))
    row = next(row for row in run["rows"] if row["phase"] == "capped-1024-16-nf4")
    plan = plan_training("nf4", dev, 1024, device="cuda", available_gib=row["cap_gib"],
                         have_bitsandbytes=True)
    assert plan.quantize == "nf4" and not plan.text_on_gpu  # as the run planned it
    assert row["train_peak_gib"] <= plan.peak_gib <= row["train_peak_gib"] + 3
    made = plan_generation("nf4", dev, 1024, device="cuda", available_gib=row["cap_gib"],
                           have_bitsandbytes=True)
    assert row["generate_peak_gib"] <= made.peak_gib <= row["generate_peak_gib"] + 3


# -- system RAM -------------------------------------------------------------------------------

def host(plan) -> dict[str, float]:
    return {p.name: round(p.gib, 1) for p in plan.host}


def test_system_ram_counts_only_what_the_page_cache_does_not_hold(dev):
    """bf16 weights from bf16 files stay the page cache's (the system may drop them): an 80 GB
    card adds nothing to lorabooth's own RAM; the fp8 plans hold the transformer's float8
    copy while it waits, and T5 pinned to stream from CPU memory."""
    from lorabooth.core.memory import HOST_BASE_GIB, Plan
    from lorabooth.core.system_memory import host_phases

    def phases(plan: Plan) -> dict[str, float]:
        return {p.name: round(p.gib, 1) for p in host_phases(dev, plan, on_cpu=False)}

    big = train(dev, 80, 1024)
    assert max(phases(big).values()) == 0.0
    fp8 = dev.gib("transformer", "fp8")
    t5 = dev.gib("text_encoder_2", "bf16")
    assert fp8 == pytest.approx(11.1, abs=0.1) and t5 == pytest.approx(8.9, abs=0.1)
    small = phases(train(dev, 24, 1024))  # fp8, T5 streamed
    # The transformer waits in the files' pages and is cast as it moves to the card: RAM holds
    # T5 pinned, never a float8 copy beside it (that was 21 GiB at the park).
    assert small == {"loading": 0.0, "caching": 0.0, "parking": round(t5, 1),
                     "training": round(t5, 1)}
    streamed = phases(generate(dev, 32, 1024))  # bf16, T5 streamed
    assert streamed == {"loading": 0.0, "generation": round(t5, 1)}
    offload = plan_generation("bf16", dev, 1024, device="cuda", available_gib=10.0)
    assert offload.placement == "offload"
    # every model waits in CPU memory between its turns
    assert phases(offload)["generation"] == pytest.approx(dev.gib("transformer", "bf16") + t5,
                                                          abs=0.5)
    # A card without bf16 converts every weight from the files' bf16 as it loads.
    fp16 = phases(plan_training("auto", dev, 512, device="cuda", available_gib=79.0,
                                bf16_supported=False))
    assert fp16["loading"] == pytest.approx(dev.gib("transformer", "fp16") + t5, abs=0.5)
    assert HOST_BASE_GIB >= 1.0


def test_training_flux_dev_on_this_cpu_is_refused_before_loading(dev):
    """On a CPU every weight and activation lives in system RAM: FLUX.1-dev in float32 needs
    far more than a 24 GiB machine has, and is refused with the phase that would not fit,
    rather than killed by the system mid-load; a model already resident counts as free."""
    import dataclasses

    from lorabooth.core.system_memory import host_phases, require_system_memory

    plan = plan_training("auto", dev, 512, device="cpu", available_gib=None)
    plan = dataclasses.replace(plan, host=host_phases(dev, plan, on_cpu=True),
                               host_available_gib=24.0)
    assert host(plan)["loading"] == pytest.approx(4 * (11.9 + 4.76 + 0.12 + 0.08) / 1.074,
                                                  abs=1.0)  # every weight converted to fp32
    with pytest.raises(MemoryPlanError, match=r"needs ~\d+\.\d GiB of system RAM .*"
                                              r"\(training: every model.*24\.0 GiB is avail"):
        require_system_memory(plan)
    require_system_memory(plan, held=200.0)  # the resident model's memory is freed first
    tight = dataclasses.replace(plan, host_available_gib=host(plan)["loading"] + 1)
    with pytest.raises(MemoryPlanError):
        require_system_memory(tight)
    big_step = max(host(plan).values())
    enough = dataclasses.replace(plan, host_available_gib=big_step + 1)
    require_system_memory(enough)
    # Several GPUs train in one process each, every one with its own copy in this RAM.
    with pytest.raises(MemoryPlanError, match=r"system RAM \(2 processes, one per GPU\)"):
        require_system_memory(enough, processes=2)
