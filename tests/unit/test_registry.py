"""The model registry: names, aliases and repo ids find the same entry; a typo in the
workspace's `model` is caught with the closest name; a folder of weights is recognised from
its own configs; FLUX.2 [klein] is known but refused, in words, until lorabooth runs it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lorabooth.core.config import MODEL_HELP, ConfigError, parse_config, render_config
from lorabooth.core.models.registry import (
    MODELS,
    ModelNotSupported,
    generation_defaults,
    known,
    model_of_folder,
    require_supported,
    require_trainable,
    suggest,
)
from lorabooth.core.models.shipped import CONFIGS


def test_names_aliases_and_repo_ids_find_one_entry():
    assert known("flux-dev") is known("black-forest-labs/flux.1-dev") is known("FLUX1-DEV")
    assert known("krea").repo == "black-forest-labs/FLUX.1-Krea-dev"
    assert known("black-forest-labs/FLUX.2-klein-base-4B").name == "klein-4b-base"
    assert known("someone/else") is None
    assert {m.name for m in MODELS} >= {"flux-dev", "flux-schnell", "flux-krea", "klein-4b",
                                        "klein-4b-base", "klein-9b", "klein-9b-base", "demo"}


def test_each_entry_says_how_it_generates():
    dev, schnell, krea = known("flux-dev"), known("flux-schnell"), known("flux-krea")
    base, distilled = known("klein-4b-base"), known("klein-4b")
    assert dev.embeds_guidance and not schnell.embeds_guidance and krea.embeds_guidance
    assert (base.guidance_mode, base.steps) == ("cfg", 50)  # base: true CFG, many steps
    assert (distilled.guidance_mode, distilled.steps) == ("none", 4)
    assert distilled.distilled and not base.distilled
    assert generation_defaults("flux-krea", 28, 3.5) == (28, 4.5)
    assert generation_defaults("klein-4b", 28, 3.5) == (4, 1.0)


@pytest.mark.parametrize(("typo", "meant"), [("flux-deev", "flux-dev"), ("klien-4b", "klein-4b"),
                                             ("flux-kreaa", "flux-krea")])
def test_a_typo_in_the_workspace_model_is_caught_with_the_closest_name(typo, meant):
    with pytest.raises(ConfigError) as caught:
        parse_config(render_config("photos", typo, "zorb"))
    assert f"did you mean {meant!r}" in str(caught.value)


def test_registry_names_folders_and_repo_ids_are_accepted(tmp_path: Path):
    for model in ("flux-krea", "klein-9b-base", "demo", "someone/my-flux", "./weights"):
        assert parse_config(render_config("photos", model, "zorb")).model == model
    assert all(m.name in MODEL_HELP for m in MODELS)
    assert suggest("zzzzzz") is None


def test_a_folder_is_known_by_its_configs_not_its_name(tmp_path: Path):
    klein = tmp_path / "renamed"
    shutil.copytree(CONFIGS / "flux2-klein-4b", klein)
    assert model_of_folder(klein, str(klein)).family == "flux2"
    index = json.loads((klein / "model_index.json").read_text())
    (klein / "model_index.json").write_text(json.dumps({**index, "is_distilled": False}))
    assert model_of_folder(klein, str(klein)).name == "klein-4b-base"
    dev = tmp_path / "schnell-looking-name"
    shutil.copytree(CONFIGS / "flux1-dev", dev)
    assert model_of_folder(dev, str(dev)).name == "flux-dev"  # it embeds guidance: dev
    assert model_of_folder(dev, "flux-krea").name == "flux-krea"  # same architecture


def test_distilled_klein_is_refused_for_training_with_its_base_named():
    """A LoRA trained on a step-distilled model undoes the distillation: the refusal names the
    base to train on, before any weights are read."""
    with pytest.raises(ModelNotSupported) as caught:
        require_trainable(known("klein-4b"))
    assert "klein-4b-base" in str(caught.value) and "FLUX.2 [klein] 4B" in str(caught.value)
    with pytest.raises(ModelNotSupported, match="no CLIP"):
        require_trainable(known("klein-4b-base"), text_encoder_lora=True)
    for name in ("klein-4b-base", "klein-9b-base", "flux-dev", "flux-krea", "demo-klein"):
        require_supported(known(name))
        require_trainable(known(name))
