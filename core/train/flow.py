"""The rectified-flow objective Flux was trained with, one small function per idea.

A clean latent x0 and noise e are mixed at noise level s in (0, 1): x_s = (1 - s) x0 + s e.
The transformer predicts the velocity e - x0; the loss is the mean squared error.
"""

from __future__ import annotations

import math

import torch

# Flux-dev's scheduler: the shift grows from 0.5 at 256 image tokens to 1.15 at 4096.
BASE_SHIFT, MAX_SHIFT, BASE_SEQ, MAX_SEQ = 0.5, 1.15, 256, 4096
KOHYA_SHIFT = 3.1582  # kohya's discrete_flow_shift default for "shift"


def resolution_shift(image_tokens: int) -> float:
    """mu for a given number of packed image tokens (linear, as in Flux's sampler)."""
    slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ - BASE_SEQ)
    return image_tokens * slope + (BASE_SHIFT - slope * BASE_SEQ)


def sample_sigmas(kind: str, batch: int, generator: torch.Generator, image_tokens: int,
                  logit_mean: float = 0.0, logit_std: float = 1.0) -> torch.Tensor:
    """Noise levels in (0, 1), drawn on the CPU so every device sees the same numbers.

    - sigmoid: sigmoid of a standard normal, weighting the middle levels (ai-toolkit,
      SimpleTuner default);
    - logit_normal: the same with a chosen mean and spread (SD3 paper);
    - uniform: every level alike;
    - shift: kohya's `shift`: sigmoid, then a fixed shift towards noise (3.1582);
    - flux_shift: kohya's `flux_shift`: sigmoid, then the resolution's mu, as Flux samples.
    """
    if kind == "uniform":
        return torch.rand(batch, generator=generator).clamp(1e-5, 1 - 1e-5)
    if kind not in ("sigmoid", "logit_normal", "shift", "flux_shift"):
        raise ValueError(f"unknown timestep sampling {kind!r}")
    if kind == "logit_normal":
        normal = logit_mean + logit_std * torch.randn(batch, generator=generator)
    else:
        normal = torch.randn(batch, generator=generator)
    sigmas = torch.sigmoid(normal)
    if kind == "shift":
        return (sigmas * KOHYA_SHIFT) / (1 + (KOHYA_SHIFT - 1) * sigmas)
    if kind == "flux_shift":
        mu = math.exp(resolution_shift(image_tokens))
        return mu / (mu + (1 / sigmas - 1))
    return sigmas


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    s = sigmas.view(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
    return (1 - s) * x0 + s * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H/2 * W/2, C * 4): Flux sees 2x2 latent patches as tokens."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The inverse of `pack` for latents of height `h` and width `w`."""
    b, _, d = tokens.shape
    c = d // 4
    x = tokens.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def image_ids(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Position ids (0, row, col) of the packed tokens of an h x w latent."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] = torch.arange(h // 2)[:, None]
    ids[..., 2] = torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3).to(device=device, dtype=dtype)


def text_ids(length: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(length, 3, device=device, dtype=dtype)
