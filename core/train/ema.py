"""An exponential moving average of the LoRA's weights, warmed up as diffusers' `EMAModel` is:
the decay grows as min(decay, (1 + step) / (10 + step)), so early averages follow the weights
instead of staying near the no-op adapter the run started from."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch


def warmed_decay(decay: float, step: int) -> float:
    return min(decay, (1 + step) / (10 + step))


class Ema:
    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float):
        self.decay = decay
        # On the parameters' device: lerp_ with CUDA parameters needs CUDA averages.
        self.averages = [p.detach().float().clone() for p in params]

    def update(self, params: Sequence[torch.nn.Parameter], step: int) -> None:
        """Fold in the weights after optimizer step number `step` (0-based)."""
        weight = 1 - warmed_decay(self.decay, step)
        with torch.no_grad():
            for average, param in zip(self.averages, params, strict=True):
                average.lerp_(param.detach().float(), weight)

    def load(self, saved: Sequence[torch.Tensor], params: Sequence[torch.nn.Parameter]) -> None:
        self.averages = [average.to(param.device, torch.float32).clone()
                         for average, param in zip(saved, params, strict=True)]

    @contextlib.contextmanager
    def swapped_in(self, params: Sequence[torch.nn.Parameter]) -> Iterator[None]:
        """The averages in place of the live weights, for saving or sampling; then back."""
        live = [p.detach().clone() for p in params]
        with torch.no_grad():
            for param, average in zip(params, self.averages, strict=True):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, saved in zip(params, live, strict=True):
                    param.copy_(saved)
