"""A checkpoint folder on disk through a re-save of its own step."""

from __future__ import annotations

import os
import types
from pathlib import Path

import pytest

from lorabooth.core.train import checkpoint
from lorabooth.core.train.checkpoint import (
    latest_checkpoint,
    read_state,
    recorded_total,
    write_checkpoint,
)

LORA = "pytorch_lora_weights.safetensors"


def _save(run: Path, total: int, lora: bytes):
    return write_checkpoint(run, 250, {"step": 250, "total": total}, {LORA: lora},
                            {"step": 250, "total": total})


class Killed(BaseException):
    """What a kill -9 mid-save amounts to for the files: the save goes no further."""


@pytest.mark.parametrize("moves_before_kill", [0, 1, 2])
def test_a_kill_while_resaving_a_step_leaves_that_steps_checkpoint_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moves_before_kill: int):
    """A stop right after a checkpoint saves the same step again; a kill during that save
    must leave a loadable checkpoint of the step (it used to delete the old folder first)."""
    _save(tmp_path, 300, b"old lora")
    moves = []

    def move(src, dst):
        if Path(dst).parent == tmp_path / "step-000250" or Path(dst).name == "step-000250":
            if len(moves) == moves_before_kill:
                raise Killed
            moves.append(dst)
        os.replace(src, dst)

    fake_os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os)
                                       if not name.startswith("__")})
    fake_os.rename = fake_os.replace = move
    monkeypatch.setattr(checkpoint, "os", fake_os)
    with pytest.raises(Killed):
        _save(tmp_path, 600, b"new lora")
    monkeypatch.undo()

    info = latest_checkpoint(tmp_path)
    assert info is not None and info.step == 250
    assert read_state(info)["step"] == 250
    assert recorded_total(tmp_path) in (300, 600)
    assert (info.path / LORA).read_bytes() in (b"old lora", b"new lora")
    assert not list(tmp_path.glob(".step-*")), "the half-written copy is cleaned away"


def test_a_resave_replaces_the_steps_files(tmp_path: Path):
    _save(tmp_path, 300, b"old lora")
    info = _save(tmp_path, 600, b"new lora")
    assert (info.path / LORA).read_bytes() == b"new lora"
    assert read_state(info)["total"] == 600 and recorded_total(tmp_path) == 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000250"]
