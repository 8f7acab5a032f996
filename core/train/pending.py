"""A training step's numbers (its loss and gradient norm) read without stalling the card.

Reading a CUDA tensor as a Python number waits for every kernel queued before it, and so does
a plain copy of a CPU tensor to the card (torch synchronises the stream after it). A step that
read its loss and gradient norm so, for the live curve and the NaN guard, left the card idle
while the host ran the optimizer's and the next step's Python: on an H100 a 512 px step with
its blocks replayed as CUDA graphs took 0.154 s for 0.114 s of kernels (bench/results/gpu.json,
run 13). Where the optimizer can skip a non-finite step on the card itself (torch's fused
AdamW reads a `found_inf` tensor, as GradScaler hands it one), a step's numbers are copied to
the host as the step is queued and read after the next step is queued, so the card always has
a step to run; the batch reaches the card through pinned memory, without a sync either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def upload(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; to a CUDA card through pinned memory, without waiting for the
    kernels already queued there."""
    if device.type != "cuda" or tensor.device == device:
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def guards_on_device(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` can skip an update on the card when told a step is not finite:
    torch's fused Adam and AdamW take a `found_inf` tensor (each group runs the kernel its
    own flags name, which a loaded state sets: see optim.py)."""
    return (isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW))
            and all(group.get("fused") for group in optimizer.param_groups))


def step_guarded(optimizer: torch.optim.Optimizer, numbers: torch.Tensor) -> None:
    """The optimizer's update, skipped on the card when any of `numbers` is not finite (the
    contract GradScaler uses with fused optimizers: a float 1.0 in `found_inf` skips it, and
    the step counts stay as they were)."""
    optimizer.found_inf = (~torch.isfinite(numbers).all()).float()
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf


@dataclass
class PendingStep:
    """A queued step: its loss and gradient norm on their way to the host."""

    step: int  # steps done once this one is, 1-based
    lr: float
    images: int
    values: torch.Tensor  # [loss, grad norm]: on the host, or filling from the card
    started: float  # time.perf_counter() as the step began
    ready: torch.cuda.Event | None = None
    _read: tuple[float, float] | None = None

    @classmethod
    def of(cls, step: int, lr: float, images: int, numbers: torch.Tensor,
           started: float) -> PendingStep:
        """`numbers` ([loss, grad norm], float32) copied towards the host without a wait."""
        if numbers.device.type != "cuda":
            return cls(step, lr, images, numbers.detach(), started)
        host = torch.empty(numbers.shape, dtype=numbers.dtype, pin_memory=True)
        host.copy_(numbers, non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()
        return cls(step, lr, images, host, started, ready)

    def read(self) -> tuple[float, float]:
        """The loss and the gradient norm, waiting for this step's kernels only."""
        if self._read is None:
            if self.ready is not None:
                self.ready.synchronize()
            loss, grad_norm = self.values.tolist()
            self._read = (loss, grad_norm)
        return self._read
