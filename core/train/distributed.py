"""Training on several GPUs: the processes `accelerate launch` (or torchrun) starts run the same
Trainer; this module is the little it needs to know about the others.

With one process (the engine, `lorabooth train`) nothing here does anything, so one code path
serves both. With several, accelerate wraps the transformer in DDP (gradients are averaged), each
process takes its own share of the batches, and only the first writes files and reports.
"""

from __future__ import annotations

import os

import torch


class Team:
    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.accelerator = None
        if self.world > 1:
            from accelerate import Accelerator

            self.accelerator = Accelerator()
            self.world = self.accelerator.num_processes
            self.rank = self.accelerator.process_index

    @property
    def local_world(self) -> int:
        """The processes on this machine (torchrun and accelerate set LOCAL_WORLD_SIZE): each
        loads its own copy of the models into this machine's RAM."""
        try:
            return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        except ValueError:
            return 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, default: torch.device) -> torch.device:
        return self.accelerator.device if self.accelerator is not None else default

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model to call forward on: DDP-wrapped when there are several processes."""
        return self.accelerator.prepare_model(model) if self.accelerator is not None else model

    def mean(self, value: float) -> float:
        if self.accelerator is None:
            return value
        tensor = torch.tensor([value], device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, "mean"))

    def any(self, flag: bool) -> bool:
        """True on every process when it is true on any: all stop at the same step."""
        if self.accelerator is None:
            return flag
        tensor = torch.tensor([1.0 if flag else 0.0], device=self.accelerator.device)
        return float(self.accelerator.reduce(tensor, "sum")) > 0

    def wait(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
