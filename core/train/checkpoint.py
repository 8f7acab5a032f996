"""Resumable training checkpoints: one folder per step, written whole or not at all.

A checkpoint folder holds the LoRA as a loadable file, and `state.pt` with everything a resume
needs to continue the same run: float32 LoRA weights, optimizer and scheduler state, the RNG
states and the step (the data order is a function of the seed and the step). It is written
into a temp folder and renamed into place, so a kill mid-write leaves the previous checkpoint
as the latest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..fsutil import atomic_write_bytes, atomic_write_text, fsync_dir
from ..workspace import LORA_FILE, Workspace

# torch is imported inside the functions that save and load state: listing and promoting
# checkpoints is what the UI does, and the UI never imports torch.

STEP_DIR = re.compile(r"^step-(\d{6,})$")
STATE_FILE = "state.pt"
META_FILE = "meta.json"


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    step: int


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


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
        if final.exists():  # re-saving the same step (a stop right after a checkpoint)
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return CheckpointInfo(final, step)


def read_state(info: CheckpointInfo) -> dict:
    import torch

    return torch.load(info.path / STATE_FILE, map_location="cpu", weights_only=False)


def prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints; remove leftovers of interrupted writes."""
    for info in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(info.path, ignore_errors=True)
    for entry in root.glob(".step-*.tmp"):
        with contextlib.suppress(OSError):
            shutil.rmtree(entry)


def promote(ws: Workspace, step: int) -> Path:
    """Make the LoRA of checkpoint `step` the workspace's LoRA."""
    found = {c.step: c for c in list_checkpoints(ws.checkpoints)}
    if step not in found:
        steps = ", ".join(map(str, sorted(found))) or "none"
        raise UsageError(f"no checkpoint at step {step}; there are: {steps}")
    target = ws.lora_path
    atomic_write_bytes(target, (found[step].path / LORA_FILE).read_bytes())
    comfyui_copy(target)
    return target


def comfyui_copy(lora: Path) -> Path:
    """Beside a LoRA file, the same weights for ComfyUI: ComfyUI reads the diffusers keys but
    not the header, so the strength needs a `<module>.alpha` tensor per module. diffusers reads
    this copy too, at the same strength (it refuses alpha tensors *and* the header's adapter
    config together, so the copy drops the latter).

    The file is edited at the byte level (safetensors is a JSON header and a flat buffer), so
    it works for bf16 weights and without torch, as the UI needs when it promotes."""
    import json
    import struct

    data = lora.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    body = bytearray(data[8 + size:])
    metadata = dict(header.pop("__metadata__", {}))
    config = json.loads(metadata.pop("lora_adapter_metadata", "{}"))
    alpha = config.get("transformer.lora_alpha", config.get("lora_alpha"))
    if alpha is not None:
        modules = sorted({key.rsplit(".lora_", 1)[0] for key in header if ".lora_" in key})
        for module in modules:
            header[f"{module}.alpha"] = {"dtype": "F32", "shape": [],
                                         "data_offsets": [len(body), len(body) + 4]}
            body += struct.pack("<f", float(alpha))
    header["__metadata__"] = metadata
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)  # the buffer starts 8-byte aligned
    target = lora.with_name(lora.name.replace(".safetensors", ".comfyui.safetensors"))
    atomic_write_bytes(target, len(encoded).to_bytes(8, "little") + encoded + bytes(body))
    return target
