"""train.compile = "auto" decides from what was measured on this device: when a compile pays
for itself over the rest of a run, and what a kept measurement may hold (a hand-edited or
forged file is read as no measurement, never as a crash)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from lorabooth.core.models.autocompile import Measured, pays, read_records, write_record


def test_a_compile_pays_only_when_the_rest_of_the_run_earns_it_back():
    # 0.34 s eager, 0.29 s compiled (the mid-size model on a CPU), 32 s to compile cold.
    assert pays(1000, 0.34, 0.05, 32.0)
    assert not pays(500, 0.34, 0.05, 32.0)  # 25 s saved for 32 s spent
    assert pays(500, 0.34, 0.05, 4.0)  # the compile comes from the disk cache
    assert not pays(100000, 0.34, 0.005, 1.0)  # 1.5% faster: within the noise
    assert not pays(100000, 0.34, -0.02, 1.0)  # compiled is slower


def test_measurements_are_kept_and_forged_ones_ignored(tmp_path):
    path = tmp_path / "compile-measured.json"
    write_record("cpu | demo | 128px x1", Measured(0.03, 0.02, 21.5), path)
    write_record("cuda H200 | flux-dev | 1024px x1", Measured(0.58, 0.43, 30.0), path)
    records = read_records(path)
    assert records["cpu | demo | 128px x1"].compiled_s == 0.02
    assert records["cuda H200 | flux-dev | 1024px x1"].gain_s() == 0.58 - 0.43
    assert records["cpu | demo | 128px x1"].when  # dated

    raw = json.loads(path.read_text())
    raw["nan"] = {"eager_s": float("nan")}
    raw["negative"] = {"eager_s": -1}
    raw["text"] = {"eager_s": "0.3"}
    raw["bool"] = {"eager_s": True}
    raw["list"] = [1, 2]
    raw["huge"] = {"eager_s": 1e300}
    raw["odd compiled"] = {"eager_s": 0.5, "compiled_s": "fast", "compile_s": float("inf")}
    path.write_text(json.dumps(raw))
    records = read_records(path)
    assert set(records) == {"cpu | demo | 128px x1", "cuda H200 | flux-dev | 1024px x1",
                            "odd compiled"}
    assert records["odd compiled"].compiled_s is None and records["odd compiled"].compile_s is None

    for broken in (b"\xff\xfe not json", b"[1, 2, 3]", b""):
        path.write_bytes(broken)
        assert read_records(path) == {}
    write_record("cpu | demo | 128px x1", Measured(0.03), path)  # over a broken file
    assert read_records(path)["cpu | demo | 128px x1"].compiled_s is None

    path.unlink()
    os.mkfifo(path)  # opening a FIFO would wait for a writer forever
    assert read_records(path) == {}
    write_record("cpu | demo | 128px x1", Measured(0.03), path)  # replaces it
    assert path.is_file() and read_records(path)


def test_a_record_that_cannot_be_written_leaves_the_run_going():
    import torch

    from lorabooth.core.models.autocompile import AutoCompile

    said: list[str] = []
    unwritable = Path("/proc/lorabooth-nowhere/compile-measured.json")
    auto = AutoCompile(torch.nn.Linear(2, 2), torch.device("cpu"), "cpu | demo | 128px x1",
                       said.append, record=unwritable)
    auto._keep(Measured(0.03))
    assert said and "could not be kept" in said[0] and "measures again" in said[0]
