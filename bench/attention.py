"""lorabooth's bf16 CPU attention (torch's flash forward, lorabooth's backward:
core/kernels) against torch's scaled_dot_product_attention, forward + backward, at the shapes
a training meets: the mid-size bench model at 256 and 512 px (4 heads of 64; 512 text tokens
plus the image's), and FLUX.1 at 1024 px (24 heads of 128, 4,608 tokens). Also each one's
gradient error against float64.

    python -m bench.attention
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from bench._common import report
from lorabooth.core.kernels import cpu_attention

SHAPES = [("mid-size, 256 px", 4, 768, 64), ("mid-size, 512 px", 4, 1536, 64),
          ("FLUX.1, 1024 px", 24, 4608, 128)]


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def gradient_error(attention, q, k, v, grad) -> float:
    """The largest relative error (Frobenius) of dQ, dK and dV against float64."""
    exact = [x.detach().double().requires_grad_() for x in (q, k, v)]
    F.scaled_dot_product_attention(*exact).backward(grad.double())
    ours = [x.detach().clone().requires_grad_() for x in (q, k, v)]
    attention(*ours).backward(grad)
    return max(float((o.grad.double() - e.grad).norm() / e.grad.norm())
               for o, e in zip(ours, exact, strict=True))


def torchs(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


def ours(q, k, v):
    return cpu_attention.cpu_attention(q, k, v, q.shape[-1] ** -0.5)[0]


def row(name: str, heads: int, length: int, dim: int) -> dict[str, object]:
    gen = torch.Generator().manual_seed(0)
    # As diffusers' attention gets them: [B, S, H, D] tensors seen as [B, H, S, D].
    q, k, v, grad = (torch.randn(1, length, heads, dim, generator=gen).bfloat16()
                     for _ in range(4))
    q, k = 2 * q, 2 * k  # sharper scores, as a trained model's
    leaves = [x.requires_grad_() for x in (q, k, v)]
    q, k, v, grad = (x.transpose(1, 2) for x in (*leaves, grad))
    repeat = 3 if length > 4000 else 20

    def step(attention) -> None:
        for leaf in leaves:
            leaf.grad = None
        attention(q, k, v).backward(grad)

    baseline = median_ms(lambda: step(torchs), repeat)
    mine = median_ms(lambda: step(ours), repeat)
    return {"shape": f"{name} ({heads}x{length}x{dim})", "lorabooth_ms": mine,
            "torch_ms": baseline, "ratio": mine / baseline,
            "grad_error": gradient_error(ours, q, k, v, grad),
            "torch_grad_error": gradient_error(torchs, q, k, v, grad)}


def main() -> None:
    why_not = cpu_attention.available()
    if why_not is not None:
        raise SystemExit(f"the kernel cannot run here: {why_not}")
    rows = [row(*shape) for shape in SHAPES]
    report("attention", rows, {"device": "cpu", "threads": torch.get_num_threads(),
                               "what": "forward + backward, bf16, median ms"})


if __name__ == "__main__":
    main()
