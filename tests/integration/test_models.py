from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lorabooth.core.models.resolve import ModelNotFound, resolve_model


def test_demo_model_is_an_ordinary_diffusers_folder(demo_model: Path):
    index = json.loads((demo_model / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    assert index["transformer"] == ["diffusers", "FluxTransformer2DModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["text_encoder_2"] == ["transformers", "T5EncoderModel"]
    # transformers 5 saves PreTrainedTokenizerFast under its new name, TokenizersBackend.
    assert index["tokenizer_2"][1] in ("PreTrainedTokenizerFast", "TokenizersBackend")
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    assert list((demo_model / "transformer").glob("*.safetensors"))


def test_demo_loads_through_from_pretrained(demo_model: Path):
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(demo_model)
    assert pipe.vae.config.latent_channels == 16
    assert pipe.transformer.config.in_channels == 64
    assert pipe.transformer.config.guidance_embeds


def test_demo_generates_a_deterministic_image(demo_pipe):
    def render(seed: int) -> np.ndarray:
        image = demo_pipe("photo of zorb, studio portrait", height=64, width=64,
                          num_inference_steps=4, max_sequence_length=32,
                          generator=torch.Generator().manual_seed(seed)).images[0]
        assert image.size == (64, 64)
        return np.asarray(image)

    first, again, other = render(1), render(1), render(2)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert first.std() > 1  # an image, not a flat fill


def test_tokenizers_encode_any_text(demo_pipe):
    ids = demo_pipe.tokenizer_2("zorb 🐙 «ünïcode» [bold]\x1b[31m").input_ids
    assert ids[-1] == demo_pipe.tokenizer_2.eos_token_id
    assert demo_pipe.tokenizer_2.unk_token_id not in ids


def test_missing_repo_says_where_it_looked_and_how_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFound) as info:
        resolve_model("black-forest-labs/FLUX.1-dev")
    text = str(info.value)
    assert str(tmp_path) in text
    assert "hf download black-forest-labs/FLUX.1-dev" in text
    assert 'model = "demo"' in text


def test_found_in_local_hf_cache(tmp_path, monkeypatch, demo_model: Path):
    import shutil

    import huggingface_hub.constants as constants

    snapshot = tmp_path / "models--black-forest-labs--FLUX.1-schnell" / "snapshots" / "abc123"
    shutil.copytree(demo_model, snapshot)
    refs = tmp_path / "models--black-forest-labs--FLUX.1-schnell" / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    source = resolve_model("flux-schnell")
    assert source.path == snapshot
    assert not source.is_demo


def test_incomplete_folder_lists_what_is_missing(tmp_path: Path):
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "transformer").mkdir()
    with pytest.raises(ModelNotFound, match="missing vae, text_encoder"):
        resolve_model(str(tmp_path))


def test_the_owner_frees_the_resident_model_before_loading_another(demo_model, monkeypatch):
    """One copy at a time: another precision (or model) is loaded only after the resident
    pipeline is dropped; the same one is lent again without a load."""
    import lorabooth.core.models.owner as owner_module
    from lorabooth.core.models.owner import ModelOwner

    owner = ModelOwner()
    source = resolve_model("demo")
    first = owner.generator(source).pipe
    resident_at_load = []
    real_load = owner_module.load_pipeline

    def load(*args, **kwargs):
        resident_at_load.append(owner.pipe)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(owner_module, "load_pipeline", load)
    pipe, loaded = owner.borrow_for_training(source, torch.float32, "cpu", None)
    assert pipe is first and not loaded and resident_at_load == []  # lent, not reloaded
    owner.give_back(lambda p: None)
    pipe, loaded = owner.borrow_for_training(source, torch.float64, "cpu", None)
    assert loaded and pipe is not first
    assert resident_at_load == [None]  # the float32 copy was gone before the load
    assert owner.generator(source).pipe is pipe  # generation takes what is resident


def test_the_family_comes_from_the_weights_config_not_the_name(demo_model, demo_pipe, tmp_path,
                                                               demo_workspace):
    """A folder of schnell weights under any name is schnell: T5 length 256 (as kohya), no
    guidance, and training on it warns that it undoes the distillation."""
    import json
    import shutil

    from lorabooth.core.config import set_config_value
    from lorabooth.core.models.registry import known
    from lorabooth.core.train.trainer import Trainer

    folder = tmp_path / "my-flux"
    shutil.copytree(demo_model, folder)
    config_path = folder / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    assert config["guidance_embeds"] is True
    assert resolve_model(str(folder)).model.embeds_guidance
    config_path.write_text(json.dumps({**config, "guidance_embeds": False}))
    source = resolve_model(str(folder))
    assert source.model == known("flux-schnell") and source.max_sequence_length == 256
    ws = demo_workspace()
    set_config_value(ws.root, "model", str(folder))
    logs: list[str] = []
    Trainer(ws, device="cpu", log=logs.append).run(steps=2)
    assert any("undoes its few-step distillation" in line for line in logs)


def test_the_parameter_count_needs_only_the_configs(demo_model, demo_pipe, tmp_path):
    """The planner counts from the configs on the meta device, with or without weights."""
    from lorabooth.core.models.shipped import component_params

    counts = component_params(demo_model)
    for name in ("transformer", "text_encoder_2", "text_encoder", "vae"):
        module = getattr(demo_pipe, name)
        assert counts[name] == sum(p.numel() for p in module.parameters()), name
    bare = tmp_path / "bare"
    for name in ("transformer", "text_encoder_2", "text_encoder", "vae"):
        (bare / name).mkdir(parents=True)
        (bare / name / "config.json").write_bytes((demo_model / name / "config.json").read_bytes())
    assert component_params(bare) == counts  # no safetensors there: was 0 before
