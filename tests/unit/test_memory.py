"""memory = "auto": what a person with each card gets, and what they are told."""

from __future__ import annotations

import pytest

from lorabooth.core.train.memory import FLUX_PARAMS, MemoryPlanError, plan_memory


def test_big_card_trains_the_bf16_base():
    plan = plan_memory("auto", "cuda", 79.0, FLUX_PARAMS, 1024, have_bitsandbytes=False)
    assert (plan.dtype, plan.quantize) == ("bfloat16", None)
    assert "79 GB free" in plan.reason


def test_24_gb_card_gets_nf4_and_is_told_why():
    plan = plan_memory("auto", "cuda", 23.0, FLUX_PARAMS, 1024, have_bitsandbytes=True)
    assert plan.quantize == "nf4"
    assert "only 23 GB is free" in plan.reason


def test_24_gb_card_without_the_extra_is_told_what_to_install():
    with pytest.raises(MemoryPlanError, match=r"pip install 'lorabooth\[lowvram\]'"):
        plan_memory("auto", "cuda", 23.0, FLUX_PARAMS, 1024, have_bitsandbytes=False)


def test_tiny_card_is_told_to_lower_the_resolution():
    with pytest.raises(MemoryPlanError, match=r"lower train\.resolution"):
        plan_memory("auto", "cuda", 6.0, FLUX_PARAMS, 1024, have_bitsandbytes=True)


def test_cpu_runs_float32_and_refuses_nf4():
    assert plan_memory("auto", "cpu", None, 1e6, 256, False).dtype == "float32"
    with pytest.raises(MemoryPlanError, match="needs a CUDA GPU"):
        plan_memory("nf4", "cpu", None, 1e6, 256, True)


def test_old_gpus_without_bf16_use_float16():
    plan = plan_memory("auto", "cuda", 79.0, FLUX_PARAMS, 512, False, bf16_supported=False)
    assert plan.dtype == "float16"
