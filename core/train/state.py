"""What a checkpoint holds of a training run and how it is put back, and which run a training
writes to. A resume continues the same loss curve: LoRA weights, optimizer, schedule, loss
scaler, EMA, every RNG and the step are saved and restored."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import TrainingError
from .checkpoint import RUN_DIR, latest_run, new_run
from .data import dataset_fingerprint
from .distributed import Team
from .lora import lora_state_dict, set_lora_weights

if TYPE_CHECKING:
    from .trainer import Trainer


def choose_run(root: Path, team: Team, resume: bool, run: str | None) -> Path:
    """The run folder a training writes to: the named run, else the latest run on a resume,
    else a new one. Several processes agree on it (the first one decides)."""
    if run is not None:
        if not RUN_DIR.match(run):
            raise TrainingError(f"{run!r} is not a run name (run-001, run-002, ...)")
        chosen = root / run
        chosen.mkdir(parents=True, exist_ok=True)
        return chosen
    if resume and (latest := latest_run(root)) is not None:
        return latest
    if team.main:
        chosen = new_run(root)
        team.wait()
        return chosen
    team.wait()
    return latest_run(root)


def state_of(trainer: Trainer) -> dict:
    """Plain tensors, numbers and strings only: it loads with weights_only."""
    return {
        "step": trainer.step,
        "lora": lora_state_dict(trainer.components),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "generator": trainer.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "fingerprint": dataset_fingerprint(trainer.examples),
        "ema": trainer.ema.averages if trainer.ema else None,
        "scaler": trainer.scaler.state_dict(),
        "preserve_class": trainer.config.train.preserved,
    }


def restore(trainer: Trainer, state: dict) -> None:
    if state["fingerprint"] != dataset_fingerprint(trainer.examples):
        trainer.log("the photos or captions changed since this checkpoint; resuming anyway")
    before, now = state.get("preserve_class", ""), trainer.config.train.preserved
    if before != now:
        said = {"": "without preserving a class"}
        trainer.log(f"this run trained {said.get(before, f'preserving {before!r}')}; it goes "
                    f"on {said.get(now, f'preserving {now!r}')} (train.preserve_class)")
    set_lora_weights(trainer.components, state["lora"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.generator.set_state(state["generator"])
    team = trainer.team
    if team.rank:  # the checkpoint holds the first process's draws; others re-seed
        trainer.generator.manual_seed(trainer.config.train.seed + team.rank
                                      + 1_000_003 * state["step"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if trainer.ema is not None and state.get("ema") is not None:
        trainer.ema.load(state["ema"], trainer.params)
    if state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.step = state["step"]
