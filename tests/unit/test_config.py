from __future__ import annotations

from pathlib import Path

import pytest

from lorabooth.core.config import (
    Config,
    ConfigError,
    load_config,
    parse_config,
    render_config,
    set_config_value,
)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return [str(p) for p in info.value.problems]


def test_rendered_default_config_parses_to_the_defaults():
    config = parse_config(render_config(photos="photos", model="demo", trigger="ohwx"))
    assert config.train == Config().train
    assert config.sample == Config().sample
    assert config.model == "demo"


def test_person_lora_defaults():
    train = Config().train
    assert (train.rank, train.alpha, train.learning_rate, train.batch_size) == (16, 16.0, 1e-4, 1)
    assert 500 <= train.steps <= 3000


def test_wrong_type_names_key_value_and_what_is_allowed():
    (message,) = problems('[train]\nrank = "sixteen"\n')
    assert message == 'train.rank: "sixteen" is not an integer; allowed: 1 to 256'


def test_unknown_key_suggests_the_near_one():
    (message,) = problems("[train]\nlearning_rat = 0.0001\n")
    assert message.startswith("train.learning_rat: unknown key; did you mean train.learning_rate?")


def test_out_of_range_and_choices_are_reported_together():
    found = problems('trigger = "two words"\n[train]\nrank = 0\noptimizer = "sgd"\n'
                     "resolution = [512, 700]\n")
    assert "trigger: \"two words\" must be one word, without spaces" in found
    assert "train.rank: 0 is out of range; allowed: 1 to 256" in found
    assert "train.optimizer: \"sgd\" is not one of: adamw, adamw8bit, prodigy, adafactor" in found
    assert "train.resolution: 700 (in [512, 700]) is not a multiple of 64" in found
    assert len(found) == 4


def test_the_preserved_class_must_not_be_the_trigger_and_stays_short():
    assert problems('trigger = "ohwx"\n[train]\npreserve_class = "ohwx man"\n') == [
        'train.preserve_class: "ohwx man" holds the trigger word; name the class of your '
        "subject (person, woman, man, dog)"]
    assert problems('[train]\npreserve_class = "[trigger]"\n')[0].endswith(
        "holds the trigger word; name the class of your subject (person, woman, man, dog)")
    assert problems('[train]\npreserve_class = "   "\n') == [
        "train.preserve_class: is only spaces; leave it empty to turn preservation off"]
    assert problems('[train]\npreserve_class = "' + "x" * 101 + '"\n') == [
        "train.preserve_class: is 101 characters long; at most 100"]
    train = parse_config('[train]\npreserve_class = "young woman"\n').train
    assert (train.preserve_class, train.preserve_weight) == ("young woman", 1.0)


def test_bool_is_not_an_integer():
    assert problems("[train]\nsteps = true\n") == [
        "train.steps: true is not an integer; allowed: 1 to 1000000"]


def test_section_given_as_value():
    assert problems("train = 3\n") == ["train: must be a table [train], not 3"]


def test_invalid_toml_says_where():
    (message,) = problems("[train\nrank = 3\n")
    assert message.startswith("not valid TOML")
    assert "line 1" in message


def test_a_key_given_twice_is_a_config_error_not_a_crash():
    """Hand-edited files repeat keys (a second `model =` under [generate]): tomlkit raises
    KeyAlreadyPresent, not a ParseError; it is told like any other TOML mistake."""
    (message,) = problems('[generate]\nmodel = ""\nmodel = "flux-dev"\n')
    assert message.startswith("not valid TOML") and '"model"' in message


def test_missing_photos_folder_reads_well(tmp_path: Path):
    (tmp_path / "lorabooth.toml").write_text('photos = "pics"\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    text = str(info.value)
    assert str(tmp_path / "pics") in text
    assert "does not exist" in text and "point photos at the folder" in text


def test_missing_config_file_says_how_to_make_one(tmp_path: Path):
    with pytest.raises(ConfigError, match="lorabooth init"):
        load_config(tmp_path)


def test_set_value_keeps_comments_and_order(tmp_path: Path):
    text = ('# my notes about this run\nphotos = "."\n\n[train]\n'
            "# faces peak early\nsteps = 800  # tried 1500, overfit\nrank = 8\n")
    (tmp_path / "lorabooth.toml").write_text(text)
    config = set_config_value(tmp_path, "train.steps", 600)
    assert config.train.steps == 600
    written = (tmp_path / "lorabooth.toml").read_text()
    assert written == text.replace("steps = 800", "steps = 600")


def test_set_value_rejects_bad_values_and_leaves_the_file(tmp_path: Path):
    (tmp_path / "lorabooth.toml").write_text("[train]\nrank = 8\n")
    with pytest.raises(ConfigError, match=r"train\.rank: 999 is out of range"):
        set_config_value(tmp_path, "train.rank", 999)
    assert (tmp_path / "lorabooth.toml").read_text() == "[train]\nrank = 8\n"


def test_setting_a_value_in_a_broken_file_says_so_and_writes_nothing(tmp_path: Path):
    from lorabooth.core.config import ConfigError, set_config_values

    broken = '[generate]\nmodel = ""\nmodel = "flux-dev"\n'
    (tmp_path / "lorabooth.toml").write_text(broken)
    with pytest.raises(ConfigError, match="not valid TOML"):
        set_config_values(tmp_path, {"train.rank": 8})
    assert (tmp_path / "lorabooth.toml").read_text() == broken
