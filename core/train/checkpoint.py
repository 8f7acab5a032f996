"""Resumable training checkpoints: one folder per step, written whole or not at all, inside
the folder of the run that wrote them.

Runs have an identity: `checkpoints/run-001/step-000250`. A new run gets a new folder and
never resumes from another run's checkpoints; a resume or a continue names its run. Old runs
stay listed and promotable.

A checkpoint folder holds the LoRA as a loadable file, and `state.pt` with everything a resume
needs to continue the same run: float32 LoRA weights, optimizer and scheduler state, the RNG
states and the step (the data order is a function of the seed and the step). It is written
into a temp folder and renamed into place, so a kill mid-write leaves the previous checkpoint
as the latest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..config import MAX_STEPS
from ..errors import LoraboothError, UsageError
from ..fsutil import atomic_write_bytes, atomic_write_text, fsync_dir, json_number, read_json
from ..workspace import LORA_FILE, Workspace

# torch is imported inside the functions that save and load state: listing and promoting
# checkpoints is what the UI does, and the UI never imports torch.

STEP_DIR = re.compile(r"^step-(\d{6,})$")
RUN_DIR = re.compile(r"^run-(\d{3,})$")
STATE_FILE = "state.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int

    @property
    def run(self) -> str:
        return self.path.parent.name

    @property
    def label(self) -> str:
        """`run-002/step-000250`: how lists and `--lora` name it."""
        return f"{self.run}/{self.path.name}"


def runs(root: Path) -> list[Path]:
    """The run folders under the workspace's checkpoints folder, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if RUN_DIR.match(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(RUN_DIR.match(p.name).group(1)))


def new_run(root: Path) -> Path:
    """A fresh, empty run folder (its number one above every run so far)."""
    root.mkdir(parents=True, exist_ok=True)
    number = int(RUN_DIR.match(runs(root)[-1].name).group(1)) + 1 if runs(root) else 1
    while True:
        path = root / f"run-{number:03d}"
        try:
            path.mkdir()  # exclusive: two runs started at once get two folders
            fsync_dir(root)
            return path
        except FileExistsError:
            number += 1


def latest_run(root: Path) -> Path | None:
    found = runs(root)
    return found[-1] if found else None


def all_checkpoints(root: Path) -> list[CheckpointInfo]:
    """Every run's checkpoints: runs oldest first, steps in order within each."""
    return [info for run in runs(root) for info in list_checkpoints(run)]


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def step_label(folder: str) -> str:
    """A step folder's name as people read it: "step-000750" is "step-750" (cut in the middle
    at 80 columns, the padded name read "step-0…000" for every step)."""
    return re.sub(r"^step-0*(?=\d)", "step-", folder)


MEASURED_KEY = "measured_photos"  # in meta.json: the photos the validation loss measures


def _recorded(folder: Path, key: str) -> float | None:
    """A number a checkpoint's meta.json records, or None when it records none a person could
    read as one (a forged or damaged file: not JSON, not a table, not a finite number)."""
    try:
        return json_number(read_json(folder / META_FILE).get(key))
    except (OSError, ValueError, AttributeError):
        return None


def recorded_loss(folder: Path) -> float | None:
    return _recorded(folder, "loss")


def recorded_validation(folder: Path) -> float | None:
    """The checkpoint's validation loss (train.validate), None where it was not measured."""
    return _recorded(folder, "validation")


def recorded_measures(run: Path) -> object:
    """What the newest of a run's checkpoints that records one says it measured its
    validation loss on (validation.kept_of reads it), or None."""
    for info in reversed(list_checkpoints(run)):
        try:
            found = read_json(info.path / META_FILE).get(MEASURED_KEY)
        except (OSError, ValueError, AttributeError):
            continue
        if found is not None:
            return found
    return None


def recorded_total(run: Path) -> int | None:
    """The step a run was training to, as its newest checkpoint records it (a resume with no
    step count given aims there, so a run started with --steps 300 does not run on to the
    config's count, its schedule stretched), or None when no checkpoint records one a person
    could have asked for."""
    for info in reversed(list_checkpoints(run)):
        total = _recorded(info.path, "total")
        if total is not None and total == int(total) and info.step <= total <= MAX_STEPS:
            return int(total)
    return None


def list_checkpoints(root: Path) -> list[CheckpointInfo]:
    """Complete checkpoints under `root`, oldest first."""
    found = []
    if not root.is_dir():
        return found
    for entry in root.iterdir():
        match = STEP_DIR.match(entry.name)
        if match and (entry / META_FILE).is_file() and (entry / STATE_FILE).is_file():
            found.append(CheckpointInfo(entry, int(match.group(1))))
    return sorted(found, key=lambda c: c.step)


def latest_checkpoint(root: Path) -> CheckpointInfo | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def write_checkpoint(root: Path, step: int, state: dict, files: dict[str, bytes],
                     meta: dict) -> CheckpointInfo:
    """Write `state` (torch.save), extra `files` and `meta` as the checkpoint of `step`."""
    root.mkdir(parents=True, exist_ok=True)
    import torch

    tmp = Path(tempfile.mkdtemp(prefix=f".{step_dir_name(step)}.", suffix=".tmp", dir=root))
    try:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write_bytes(tmp / STATE_FILE, buffer.getvalue())
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=2, sort_keys=True) + "\n")
        final = root / step_dir_name(step)
        if final.is_dir():
            _replace_files(tmp, final)
        else:
            os.rename(tmp, final)
        fsync_dir(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CheckpointInfo(final, step)


def _replace_files(new: Path, old: Path) -> None:
    """Re-saving a step that has a checkpoint (a stop right after one): its files are replaced
    one by one, each atomically, so a kill at any moment leaves a whole checkpoint of that step
    (removing the old folder and renaming the new one in left none between the two)."""
    names = sorted((p.name for p in new.iterdir()), key=lambda name: name == META_FILE)
    for name in names:  # meta.json last: it is what makes a folder a checkpoint
        os.replace(new / name, old / name)
    for stale in set(p.name for p in old.iterdir()) - set(names):
        with contextlib.suppress(OSError):
            (old / stale).unlink()
    fsync_dir(old)


class CheckpointUnreadable(LoraboothError):
    """A checkpoint that cannot (or must not) be loaded: damaged, or not plain data."""


def read_state(info: CheckpointInfo) -> dict:
    """The saved state, loaded as plain tensors and numbers: weights_only refuses any pickle
    that would construct other objects or run code."""
    import pickle

    import torch

    try:
        state = torch.load(info.path / STATE_FILE, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointUnreadable(f"{info.label} cannot be loaded safely: {first}") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointUnreadable(f"{info.label} is not a lorabooth checkpoint")
    return state


def prune(root: Path, keep: int, protect: Path | None = None) -> None:
    """Keep the newest `keep` checkpoints, `protect` (the promoted one) and the run's best by
    validation loss (held-out photos often peak early: the one to promote) whatever their
    age; remove leftovers of interrupted writes."""
    saved = list_checkpoints(root)
    kept = {info.path.resolve() for info in saved[-keep:]} if keep > 0 else set()
    best = lowest_validation(validations_of(saved))
    kept |= {p.resolve() for p in (protect, best[0].path if best else None) if p is not None}
    for info in saved:
        if info.path.resolve() not in kept:
            shutil.rmtree(info.path, ignore_errors=True)
    for entry in root.glob(".step-*.tmp"):
        with contextlib.suppress(OSError):
            shutil.rmtree(entry)


def validations_of(saved: list[CheckpointInfo]) -> list[tuple[CheckpointInfo, float | None]]:
    """Each checkpoint with its recorded validation loss (None: not measured)."""
    return [(info, recorded_validation(info.path)) for info in saved]


def lowest_validation(pairs: Iterable[tuple[CheckpointInfo, float | None]]
                      ) -> tuple[CheckpointInfo, float] | None:
    """Of (checkpoint, validation loss) pairs, oldest first, the one of lowest loss (the
    earliest of equals); None when none was measured."""
    found = [(info, value) for info, value in pairs if value is not None]
    return min(found, key=lambda pair: pair[1]) if found else None


def run_checkpoints(ws: Workspace, run: str | None = None) -> list[CheckpointInfo]:
    """The checkpoints of `run` (every run's when None), as all_checkpoints orders them."""
    return [c for c in all_checkpoints(ws.checkpoints) if run is None or c.run == run]


def find_checkpoint(ws: Workspace, step: int, run: str | None = None) -> CheckpointInfo:
    """The checkpoint at `step` of `run`, or of the newest run that has that step."""
    found = run_checkpoints(ws, run)
    match = [c for c in found if c.step == step]
    if not match:
        where = f" in {run}" if run else ""
        there = ", ".join(c.label for c in found[-8:]) or "none"
        raise UsageError(f"no checkpoint at step {step}{where}; there are: {there}")
    return match[-1]


def promote(ws: Workspace, step: int, run: str | None = None) -> Path:
    """Make the LoRA of checkpoint `step` (of `run`, default the newest run with that step)
    the workspace's LoRA."""
    info = find_checkpoint(ws, step, run)
    target = ws.lora_path
    data = (info.path / LORA_FILE).read_bytes()
    atomic_write_bytes(target, data)
    comfyui_copy(target)
    atomic_write_text(promoted_file(ws), json.dumps(
        {"run": info.run, "step": info.step, "sha256": hashlib.sha256(data).hexdigest()}))
    return target


@dataclass(frozen=True)
class Promoted:
    """The checkpoint a person chose as the workspace's LoRA, while it still is."""

    run: str
    step: int

    @property
    def label(self) -> str:
        return f"{self.run}/{step_dir_name(self.step)}"


def promoted_file(ws: Workspace) -> Path:
    return ws.loras / "promoted.json"


def promoted(ws: Workspace, *, verify: bool = True) -> Promoted | None:
    """The promoted checkpoint, if the workspace's LoRA is still its file (`verify` hashes the
    file to make sure: the trainer does; the UI, which must not stall on a large file, trusts
    the record, which every writer of the workspace's LoRA keeps true)."""
    try:
        record = read_json(promoted_file(ws))
        if verify and hashlib.sha256(ws.lora_path.read_bytes()).hexdigest() != record["sha256"]:
            return None
        return Promoted(str(record["run"]), int(record["step"]))
    except (OSError, ValueError, KeyError, TypeError, OverflowError):  # a forged record
        return None


def forget_promotion(ws: Workspace) -> None:
    """The workspace's LoRA is now something else (a run's end replaced a stale promotion)."""
    with contextlib.suppress(FileNotFoundError):
        promoted_file(ws).unlink()


def comfyui_copy(lora: Path) -> Path:
    """Beside a LoRA file, the same weights for ComfyUI. FLUX.1: ComfyUI reads the diffusers
    keys but not the header, so the strength needs a `<module>.alpha` tensor per module.
    diffusers reads this copy too, at the same strength (it refuses alpha tensors *and* the
    header's adapter config together, so the copy drops the latter). FLUX.2: ComfyUI has no
    diffusers mapping for klein's fused single blocks, so the copy is in BFL's own names
    (core/train/comfy_flux2.py).

    The file is edited at the byte level (safetensors is a JSON header and a flat buffer), so
    it works for bf16 weights and without torch, as the UI needs when it promotes."""
    import struct

    from safetensors.numpy import save  # numpy, not torch: the UI writes this copy too

    from .comfy_flux2 import is_flux2_layout, to_bfl

    data = lora.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    body = bytearray(data[8 + size:])
    metadata = dict(header.pop("__metadata__", {}))
    config = json.loads(metadata.pop("lora_adapter_metadata", "{}"))
    alpha = config.get("transformer.lora_alpha", config.get("lora_alpha"))
    target = lora.with_name(lora.name.replace(".safetensors", ".comfyui.safetensors"))
    modules = [key.rsplit(".lora_", 1)[0] for key in header if ".lora_" in key]
    if is_flux2_layout(modules):
        # FLUX.2: BFL's names, the strength baked in (ComfyUI and ai-toolkit's layout).
        tensors = {key: _as_float32(info, body) for key, info in header.items()
                   if ".lora_" in key}
        atomic_write_bytes(target, save(to_bfl(tensors, alpha), metadata=metadata))
        return target
    if alpha is not None:
        for module in sorted(set(modules)):
            header[f"{module}.alpha"] = {"dtype": "F32", "shape": [],
                                         "data_offsets": [len(body), len(body) + 4]}
            body += struct.pack("<f", float(alpha))
    header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the buffer starts 8-byte aligned
    atomic_write_bytes(target, len(encoded).to_bytes(8, "little") + encoded + bytes(body))
    return target


def _as_float32(info: dict, body: bytes | bytearray):
    """One tensor of a safetensors buffer as float32 numpy (bf16 widened bit-exactly)."""
    import numpy as np

    start, end = info["data_offsets"]
    raw = bytes(body[start:end])
    kinds = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    if info["dtype"] not in kinds:
        raise ValueError(f"unexpected LoRA tensor type {info['dtype']}")
    values = np.frombuffer(raw, dtype=kinds[info["dtype"]]).reshape(info["shape"])
    if info["dtype"] == "BF16":
        return (values.astype(np.uint32) << 16).view(np.float32)
    return values.astype(np.float32)


