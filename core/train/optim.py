"""Optimizers and learning-rate schedules."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from . import TrainingError

PRODIGY_LR = 1.0  # Prodigy finds its own step size; lr scales it, and 1.0 is its default


def make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float,
                   log: Callable[[str], None] = lambda text: None, fused: bool = False):
    """The optimizer `name` over `params`; Prodigy ignores train.learning_rate (it wants
    ~1.0, far above any AdamW rate) and says so. `fused`: AdamW as torch's one-kernel update
    (on a card: it skips a non-finite step there, see pending.py; on the 2-core CPU whole runs
    were slower with it, 0.195 s a step against 0.180)."""
    if name == "adamw":
        return _keeping_its_kernel(torch.optim.AdamW(
            params, lr=lr, betas=(0.9, 0.999), weight_decay=1e-4, eps=1e-8, fused=fused or None))
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, relative_step=False, scale_parameter=False,
                         warmup_init=False)
    if name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise TrainingError("optimizer adamw8bit needs bitsandbytes: "
                                "pip install 'lorabooth[lowvram]'") from None
        return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=1e-4)
    if name == "prodigy":
        try:
            from prodigyopt import Prodigy
        except ImportError:
            raise TrainingError("optimizer prodigy needs prodigyopt: pip install prodigyopt") \
                from None
        log(f"prodigy picks its own step size: lr {PRODIGY_LR:g} (train.learning_rate is "
            "for the other optimizers)")
        return Prodigy(params, lr=PRODIGY_LR, weight_decay=1e-4, safeguard_warmup=True)
    raise TrainingError(f"unknown optimizer {name!r}")


def _keeping_its_kernel(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """`optimizer`, made to keep its own kernel when a checkpoint's state is loaded: torch
    restores the saved groups' `fused` and `foreach` too, so a run resumed on a card from a
    CPU run's checkpoint (or from one written before AdamW ran fused there) would lose the
    fused kernel, and with it the on-card NaN guard its steps rely on (the other kernels
    refuse `found_inf`). The step counts move to where this kernel keeps them."""
    flags = [{key: group.get(key) for key in ("fused", "foreach")}
             for group in optimizer.param_groups]

    def restore(loaded: torch.optim.Optimizer) -> None:
        for group, mine in zip(loaded.param_groups, flags, strict=True):
            group.update(mine)
            for param in group["params"]:
                step = loaded.state.get(param, {}).get("step")
                if isinstance(step, torch.Tensor):
                    device = param.device if mine["fused"] else torch.device("cpu")
                    loaded.state[param]["step"] = step.to(device, torch.float32)

    optimizer.register_load_state_dict_post_hook(restore)
    return optimizer


def lr_lambda(warmup: int, total: int, schedule: str) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0
    return factor
