"""A recipe read back from a PNG or a queued job: every field checked, forged ones refused in
words, reference images (FLUX.2 [klein] editing) included."""

from __future__ import annotations

import json

import pytest

from lorabooth.core.generate.recipe import MAX_REFS, Recipe, RecipeError


def test_references_round_trip_through_json():
    recipe = Recipe("zorb in a jacket", width=64, height=64, refs=("/a/me.jpg", "/b/jacket.png"))
    again = Recipe.from_dict(json.loads(recipe.to_json()))
    assert again == recipe and again.refs == ("/a/me.jpg", "/b/jacket.png")
    assert Recipe.from_dict({"prompt": "old recipe, no refs key"}).refs == ()


@pytest.mark.parametrize("refs, words", [
    ("/a/me.jpg", "not a list of file paths"),
    ([1, 2], "not a list of file paths"),
    (["/x.jpg"] * (MAX_REFS + 1), f"at most {MAX_REFS}"),
])
def test_forged_references_are_refused_in_words(refs, words):
    with pytest.raises(RecipeError, match=words):
        Recipe.from_dict({"prompt": "zorb", "refs": refs})


def test_references_and_an_init_image_combine_as_klein_edits():
    Recipe("zorb", refs=("/a.jpg",), init_image="/b.jpg", mask="/m.png").check()


@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan"), float("inf"), True, "0.1"])
def test_a_forged_step_cache_is_refused_in_words(value):
    data = json.loads(Recipe("zorb").to_json()) | {"step_cache": value}
    with pytest.raises(RecipeError, match=r"step.cache"):
        Recipe.from_dict(data)


def test_a_recipe_from_before_the_step_cache_computes_every_step():
    data = json.loads(Recipe("zorb").to_json())
    del data["step_cache"]
    assert Recipe.from_dict(data).step_cache == 0.0


def test_a_pasted_novel_is_refused_as_a_prompt_with_its_length():
    """The text encoder reads ~2,000 characters; a prompt of 80,000 is refused in words (it
    was queued, and would have been kept whole in every image's recipe)."""
    with pytest.raises(RecipeError, match="a prompt of 80,000 characters: at most 10,000"):
        Recipe("x" * 80_000).check()
    Recipe("zorb " * 400).check()  # a long but real prompt is fine


def test_a_full_disk_leaves_no_empty_image_behind(tmp_path, monkeypatch):
    """The name is claimed before the PNG is written: a write that fails gives it back, so
    the gallery never lists an empty file, and the next image takes the name."""
    import errno

    from PIL import Image

    from lorabooth.core.generate import images

    picture = Image.new("RGB", (16, 16), (200, 30, 30))
    recipe = Recipe("zorb", width=64, height=64)

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with monkeypatch.context() as patch:
        patch.setattr(images, "atomic_write_bytes", full)
        with pytest.raises(OSError):
            images.save_image(picture, recipe, tmp_path, 7, 0)
    assert list(tmp_path.iterdir()) == []
    saved = images.save_image(picture, recipe, tmp_path, 7, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [saved.name, saved.with_suffix(".json").name])
    assert "-2" not in saved.name
