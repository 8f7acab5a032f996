"""lorabooth's own small JSON records (a checkpoint's meta.json, the promotion record, the
compile measurements) read back from a workspace someone else could have written: a forged one
is treated as absent, never a crash, a hang or a number that is not one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lorabooth.core.fsutil import NotRegular, read_json
from lorabooth.core.train.checkpoint import recorded_loss

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
