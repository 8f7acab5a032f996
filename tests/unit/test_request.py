"""The one request builder (CLI and Queue pane), the one trigger substitution, and settings that
are all checked before any is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import copy_sample_photos

from lorabooth.core.config import ConfigError, set_config_values
from lorabooth.core.dataset.captions import effective_caption, substitute_trigger
from lorabooth.core.dataset.report import build_report
from lorabooth.core.dataset.scan import ScanOptions, scan_folder
from lorabooth.core.errors import EXIT_USAGE, LoraboothError
from lorabooth.core.generate.recipe import LoraRef, RecipeError
from lorabooth.core.generate.request import Asked, build_request, split_preset
from lorabooth.core.train.samples import sample_prompts
from lorabooth.core.workspace import Workspace, init_workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    photos = copy_sample_photos(tmp_path / "photos")
    return init_workspace(tmp_path / "ws", photos, model="demo", trigger="zorb")


def test_both_trigger_spellings_work_everywhere(ws: Workspace, tmp_path: Path):
    assert substitute_trigger("{trigger} and [trigger]", "zorb") == "zorb and zorb"
    assert effective_caption("[trigger] at night", "zorb") == "zorb at night"
    set_config_values(ws.root, {"sample.prompts": ["[trigger] on a boat", "{trigger} skiing"]})
    assert sample_prompts(ws.config()) == ["zorb on a boat", "zorb skiing"]
    # Preserving a class, the samples show it too: the first prompt with the class instead.
    set_config_values(ws.root, {"train.preserve_class": "plush toy"})
    assert sample_prompts(ws.config()) == ["zorb on a boat", "zorb skiing",
                                           "plush toy on a boat"]
    set_config_values(ws.root, {"train.preserve_class": ""})
    photos = tmp_path / "bare"
    photos.mkdir()
    for jpg in sorted((ws.root.parent / "photos").glob("*.jpg"))[:3]:
        (photos / jpg.name).write_bytes(jpg.read_bytes())  # no captions: the template is used
    options = ScanOptions(resolution=256, trigger="zorb", template="[trigger], a photo")
    advice = " ".join(build_report(scan_folder(photos, options), options).advice)
    assert "'zorb, a photo'" in advice and "[trigger]" not in advice
    request = build_request(ws, ws.config(), Asked("[trigger] in the rain"), training=False)
    assert request.recipe.prompt == "zorb in the rain"


def test_a_seed_not_given_is_zero(ws: Workspace):
    request = build_request(ws, ws.config(), Asked("zorb"), training=False)
    assert request.recipe.seed == 0
    assert build_request(ws, ws.config(), Asked("zorb", seed=7), training=False).recipe.seed == 7


def test_the_workspace_lora_is_attached_when_it_exists_or_training_runs(ws: Workspace):
    config = ws.config()
    assert build_request(ws, config, Asked("zorb"), training=False).recipe.loras == ()
    during = build_request(ws, config, Asked("zorb", lora_scale=0.5), training=True)
    assert during.recipe.loras == (LoraRef("workspace", 0.5),)
    ws.loras.mkdir(parents=True, exist_ok=True)
    ws.lora_path.write_bytes(b"")
    after = build_request(ws, config, Asked("zorb"), training=False)
    assert after.recipe.loras == (LoraRef("workspace", config.generate.lora_scale),)
    none = build_request(ws, config, Asked("zorb", loras=()), training=True)
    assert none.recipe.loras == ()  # --no-lora


def test_presets_by_prefix_and_bad_requests(ws: Workspace):
    presets = ws.config().generate.presets
    assert split_preset("portrait: smiling", presets) == ("portrait", "smiling")
    assert split_preset("a photo: of zorb", presets) == (None, "a photo: of zorb")
    with pytest.raises(RecipeError) as caught:
        build_request(ws, ws.config(), Asked("zorb", width=100), training=False)
    assert isinstance(caught.value, LoraboothError) and caught.value.exit_code == EXIT_USAGE


def test_settings_are_all_checked_before_any_is_written(ws: Workspace):
    before = ws.config_path.read_bytes()
    with pytest.raises(ConfigError) as caught:
        set_config_values(ws.root, {"train.rank": 140, "train.learning_rate": "x"})
    assert "train.learning_rate" in str(caught.value)
    assert ws.config_path.read_bytes() == before  # rank = 140 was not written either


def test_a_typed_start_image_is_found_with_its_strength(ws: Workspace, tmp_path: Path):
    """The Queue pane's start-image box: a photo's bare name, optionally a strength after it;
    a file whose own name ends in a number is that file; a missing file or a FIFO is refused
    before anything is queued."""
    import os

    from lorabooth.core.generate.request import typed_start

    config = ws.config()
    photos = config.photos_dir(ws.root)
    assert typed_start(ws, config, "") == ("", 0.8)
    assert typed_start(ws, config, "01_studio.jpg") == (str(photos / "01_studio.jpg"), 0.8)
    assert typed_start(ws, config, " 01_studio.jpg 0.55 ") == (str(photos / "01_studio.jpg"),
                                                               0.55)
    odd = photos / "take 2"
    odd.write_bytes((photos / "01_studio.jpg").read_bytes())
    assert typed_start(ws, config, "take 2") == (str(odd), 0.8)
    start, strength = typed_start(ws, config, "01_studio.jpg 7")
    with pytest.raises(RecipeError, match=r"strength 7\.0 must be above 0 and at most 1"):
        build_request(ws, config, Asked("zorb", init_image=start, strength=strength),
                      training=False)
    with pytest.raises(RecipeError, match=r"start image .*nope\.jpg: no such file"):
        build_request(ws, config, Asked("zorb", init_image=typed_start(ws, config,
                                                                       "nope.jpg")[0]),
                      training=False)
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(RecipeError, match=r"mask .*not a regular file"):
        build_request(ws, config, Asked("zorb", init_image=start, mask=str(fifo)),
                      training=False)
    request = build_request(ws, config, Asked("zorb", init_image=start, strength=0.55),
                            training=False)
    assert (request.recipe.init_image, request.recipe.strength) == (start, 0.55)


def test_a_lora_that_is_not_one_is_refused_when_queued_from_its_header(ws: Workspace,
                                                                      tmp_path: Path):
    """A LoRA file is checked when the prompt is queued, not when the engine reaches it: a
    forged header (a huge length, not JSON, a tensor past the end of the file) or a
    safetensors file with no LoRA weight in it is refused with the reason; a real LoRA file
    (kohya's names too) is taken."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    from lorabooth.core.generate.request import complete_recipe

    def header_file(name: str, header: bytes, body: bytes = b"") -> Path:
        path = tmp_path / name
        path.write_bytes(len(header).to_bytes(8, "little") + header + body)
        return path

    weights = {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight":
               np.zeros((4, 8), np.float32)}
    save_file(weights, tmp_path / "kohya.safetensors")
    save_file({"latents": np.zeros((4, 8), np.float32)}, tmp_path / "latents.safetensors")
    huge = tmp_path / "huge.safetensors"
    huge.write_bytes((2**62).to_bytes(8, "little") + b"{}")
    outside = {"x.lora_A.weight": {"dtype": "F32", "shape": [4], "data_offsets": [0, 10**9]}}
    cases = {
        header_file("text.safetensors", b"this is not json"): "header is not JSON",
        huge: "no header where one begins",
        header_file("list.safetensors", b"[1, 2]"): "not a table of tensors",
        header_file("outside.safetensors", json.dumps(outside).encode(), b"\0" * 16):
            "lies outside the file",
        tmp_path / "latents.safetensors": "not a LoRA",
    }
    for path, reason in cases.items():
        request = build_request(ws, ws.config(), Asked("zorb", loras=[LoraRef(str(path), 1.0)]),
                                training=False)
        with pytest.raises(RecipeError, match=reason):
            complete_recipe(ws, request.recipe)
    request = build_request(ws, ws.config(), Asked(
        "zorb", loras=[LoraRef(str(tmp_path / "kohya.safetensors"), 1.0)]), training=False)
    assert complete_recipe(ws, request.recipe).loras[0].sha256


def test_the_loras_box_reads_back_what_an_image_was_made_with():
    """loras_as_typed writes what typed_loras reads: an image's LoRAs go back into the box."""
    from lorabooth.core.generate.request import loras_as_typed, typed_loras

    both = [("step-750", 0.8), ("style.safetensors", 0.5)]
    assert loras_as_typed(both) == "step-750:0.8 style.safetensors:0.5"
    assert [(r.name, r.scale) for r in typed_loras(loras_as_typed(both))[0]] == both
    assert typed_loras(loras_as_typed([("workspace", 0.8)])) == (None, 0.8)
    assert typed_loras(loras_as_typed([])) == ((), None)
    assert loras_as_typed([("my style.safetensors", 1.0)]) is None  # the box would split it


def fake_checkpoints(ws: Workspace, run: str, steps: list[int]) -> None:
    """Checkpoint folders as training leaves them, each with a LoRA file (a header is all a
    request reads)."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    from lorabooth.core.workspace import LORA_FILE

    for step in steps:
        folder = ws.checkpoints / run / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"")
        (folder / "meta.json").write_text(json.dumps({"step": step}))
        save_file({"transformer.x.lora_A.weight": np.full((2, 2), step, np.float32)},
                  folder / LORA_FILE)


def test_the_loras_box_compares_a_runs_checkpoints(ws: Workspace):
    """`checkpoints` in the LoRAs box (or `run-NNN/checkpoints:SCALE`): one image per
    checkpoint of the run, stacked before the LoRAs typed beside it, in place of the
    workspace's own; it survives the trip through the store, and a forged one does not."""
    from lorabooth.core.generate.request import (
        request_from_params,
        request_to_params,
        typed_loras,
        typed_sweep,
    )

    with pytest.raises(RecipeError, match="no checkpoints to compare yet: train first"):
        typed_sweep(ws, "checkpoints")
    fake_checkpoints(ws, "run-001", [100, 200])
    fake_checkpoints(ws, "run-002", [50, 100, 150])
    stack, sweep = typed_sweep(ws, "checkpoints")
    assert stack == "" and [(r.name, r.scale) for r in sweep] == [
        ("run-002/step-000050", 1.0), ("run-002/step-000100", 1.0), ("run-002/step-000150", 1.0)]
    stack, sweep = typed_sweep(ws, "style.safetensors:0.5, Run-001/Checkpoints:0.8")
    assert stack == "style.safetensors:0.5"
    assert [(r.name, r.scale) for r in sweep] == [("run-001/step-000100", 0.8),
                                                  ("run-001/step-000200", 0.8)]
    with pytest.raises(RecipeError, match="scale after ':' must be a number"):
        typed_sweep(ws, "checkpoints:lots")
    ws.loras.mkdir(parents=True, exist_ok=True)
    ws.lora_path.write_bytes(b"")  # the workspace's LoRA exists, and is not stacked
    loras, _ = typed_loras("")
    request = build_request(ws, ws.config(), Asked("zorb {a|b}", loras=loras, count=2,
                                                   sweep=sweep), training=True)
    assert request.recipe.loras == () and request.size() == 8
    made = [(r.prompt, r.loras[0].name, r.seed) for r in request.expand()]
    assert made[:4] == [("zorb a", "run-001/step-000100", 0), ("zorb a", "run-001/step-000100", 1),
                        ("zorb a", "run-001/step-000200", 0), ("zorb a", "run-001/step-000200", 1)]
    again = request_from_params(request_to_params(request))
    assert again.sweep == request.sweep and again.expand() == request.expand()
    for forged in (["run-001/step-000100"], [["x", True]], [["x", float("nan")]], "x",
                   [["", 1.0]], [["x", 1.0, 2]]):
        with pytest.raises(RecipeError, match="must be a list of"):
            request_from_params({**request_to_params(request), "sweep": forged})
    too_many = Asked("{" + "|".join(map(str, range(600))) + "}", loras=(), sweep=sweep)
    with pytest.raises(RecipeError, match=r"1,200 images .* x LoRAs 2 x scales 1"):
        build_request(ws, ws.config(), too_many, training=False)
