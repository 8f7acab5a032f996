"""lorabooth's own small JSON records (a checkpoint's meta.json, the promotion record, the
compile measurements) read back from a workspace someone else could have written: a forged one
is treated as absent, never a crash, a hang or a number that is not one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lorabooth.core.fsutil import NotRegular, read_json
from lorabooth.core.train.checkpoint import recorded_loss, recorded_total

DEEP = "[" * 100_000 + "]" * 100_000  # past the JSON parser's recursion limit


def test_read_json_refuses_fifos_huge_files_and_deep_nesting(tmp_path: Path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(NotRegular):
        read_json(fifo)  # opening it would wait for a writer forever
    huge = tmp_path / "huge.json"
    huge.write_text("[" + "0," * 600_000 + "0]")
    with pytest.raises(NotRegular, match="too large for a record"):
        read_json(huge)
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_json(deep)
    ok = tmp_path / "ok.json"
    ok.write_text(json.dumps({"loss": 0.25}))
    assert read_json(ok) == {"loss": 0.25}


@pytest.mark.parametrize("text", [DEEP, "[1, 2]", '"a string"', '{"loss": "0.1"}',
                                  '{"loss": NaN}', '{"loss": 1e400}', '{"loss": true}',
                                  "not json", '{"loss": [0.1]}'])
def test_a_checkpoint_loss_that_is_not_a_number_reads_as_none(tmp_path: Path, text: str):
    (tmp_path / "meta.json").write_text(text)
    assert recorded_loss(tmp_path) is None


def test_a_checkpoint_loss_reads_back(tmp_path: Path):
    (tmp_path / "meta.json").write_text(json.dumps({"step": 250, "loss": 0.125}))
    assert recorded_loss(tmp_path) == 0.125


def _run_with_checkpoint(run: Path, step: int, meta: str) -> None:
    folder = run / f"step-{step:06d}"
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(b"")
    (folder / "meta.json").write_text(meta)


@pytest.mark.parametrize("total", ['"300"', "true", "1e300", "-5", "250.5", "100", "NaN",
                                   "2000000", "[300]"])
def test_a_forged_run_total_is_no_total(tmp_path: Path, total: str):
    """What a resume with no --steps aims at comes from the checkpoint: a total that is not a
    whole step count from this checkpoint's step to train.steps's limit is none."""
    _run_with_checkpoint(tmp_path, 250, f'{{"step": 250, "total": {total}}}')
    assert recorded_total(tmp_path) is None


def test_a_run_total_comes_from_its_newest_checkpoint_that_records_one(tmp_path: Path):
    _run_with_checkpoint(tmp_path, 250, json.dumps({"step": 250, "total": 600}))
    _run_with_checkpoint(tmp_path, 500, DEEP)
    assert recorded_total(tmp_path) == 600
    _run_with_checkpoint(tmp_path, 750, json.dumps({"step": 750, "total": 900}))
    assert recorded_total(tmp_path) == 900
