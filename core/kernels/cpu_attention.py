"""Attention on a CPU in bf16 with a faster backward pass (`attention_backward.cpp`).

Training on a CPU in bf16 (`train.memory = "bf16"`, on CPUs with bf16 dot products) spent a
third of each step in ATen's flash-attention backward. Here the forward is ATen's own flash
kernel (it returns the softmax's log-sum-exp), and the backward is lorabooth's: the same
arithmetic with float32 accumulation, reading diffusers' layout in place; forward and backward
0.57-0.70x torch's time at 768 to 4,608 tokens on a 2-core Sapphire Rapids, and closer to
float64's gradients (`bench/README.md`).

Both are torch custom ops, so `torch.compile` calls them as they are. `install()` routes
diffusers' native attention backend through them for the calls they fit (a CPU, bf16, no mask,
no dropout, gradients wanted); every other call goes to diffusers' own function unchanged.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import time
from pathlib import Path

import torch

from ..models.resolve import cache_root

SOURCE = Path(__file__).with_name("attention_backward.cpp")
NAME = "lorabooth_attention_backward"
FLAGS = ["-O3", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
         "-mavx512bf16", "-mfma", "-DCPU_CAPABILITY_AVX512", "-DCPU_CAPABILITY=AVX512"]


def _key_compile_caches() -> None:
    """Make torch.compile's on-disk caches key on these ops' code. Their graphs are cached by
    op name, not by what the op promises (its fake's strides): a graph compiled by an earlier
    lorabooth would be read back after an upgrade and fail on the new op's layout."""
    from torch.compiler import config

    digest = hashlib.sha256(Path(__file__).read_bytes() + SOURCE.read_bytes()).hexdigest()
    mine = f"lorabooth-ops-{digest[:16]}"
    tag = config.cache_key_tag
    if mine not in tag.split("+"):
        config.cache_key_tag = f"{tag}+{mine}" if tag else mine


_key_compile_caches()


class KernelUnavailable(RuntimeError):
    """The kernel cannot run here (no AVX512-BF16, no compiler or ninja, a failed build)."""


@functools.cache
def _built():
    """The compiled kernel, or why there is none: asked once a process (a failed build is not
    retried at every attention call)."""
    try:
        return _build()
    except KernelUnavailable as exc:
        return exc


def _extension():
    built = _built()
    if isinstance(built, KernelUnavailable):
        raise built
    return built


def _source_digest() -> str:
    """What a built kernel depends on besides torch: its source and compiler flags."""
    return hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode()).hexdigest()[:16]


def _folder() -> Path:
    # A folder per source: torch's builder, finding a changed source (an upgrade) in a folder,
    # builds it under a new name (..._v1.so) that needs_building() would not know to look for.
    return cache_root() / "kernels" / f"torch-{torch.__version__}-{_source_digest()}"


def needs_building() -> bool:
    """Whether the first use will compile the kernel (about half a minute: worth saying)."""
    return (_built.cache_info().currsize == 0 and _cpu_has_bf16()
            and not (_folder() / f"{NAME}.so").is_file())


def _cpu_has_bf16() -> bool:
    return (torch.backends.cpu.get_cpu_capability() == "AVX512"
            and torch.cpu._is_avx512_bf16_supported())


# A build takes ~25 s on 2 cores; a lock this old is no build in progress.
STALE_LOCK_S = 600


def _clear_stale_lock(lock: Path) -> None:
    """torch's builder takes a lock file in the build folder even to load a built kernel, and
    waits on one it finds for ever: a build killed mid-way (kill -9, the OOM killer, a hung-up
    SSH session) would leave every later bf16 training on this machine waiting at its start."""
    with contextlib.suppress(OSError):
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            lock.unlink()


def _build():
    """The kernel built once per machine and torch version (~25 s), loaded from lorabooth's
    cache after that."""
    if not _cpu_has_bf16():
        raise KernelUnavailable("this CPU has no AVX512-BF16 dot products")
    from torch.utils import cpp_extension

    try:
        import ninja  # the pip package: torch's builder runs the `ninja` it finds on PATH

        if ninja.BIN_DIR not in os.environ.get("PATH", "").split(os.pathsep):
            os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")
    except ImportError:
        pass
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    _clear_stale_lock(folder / "lock")
    try:
        module = cpp_extension.load(
            NAME, [str(SOURCE)], build_directory=str(folder),
            extra_cflags=FLAGS, extra_ldflags=["-fopenmp"], verbose=False)
    except Exception as exc:  # any failure leaves torch's kernel, which works
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        first = next((line for line in lines if "error:" in line), lines[0])  # the compiler's
        raise KernelUnavailable(f"the kernel did not build: {first.strip()[:300]}") from None
    if not module.has_bf16_ukernel():
        raise KernelUnavailable("oneDNN has no bf16 micro-kernel for this CPU")
    return module


def available() -> str | None:
    """None when the kernel can be used here, else why not."""
    built = _built()
    return str(built) if isinstance(built, KernelUnavailable) else None


def _like_flash(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Empty tensors laid out as cpu_attention returns them (out and log-sum-exp [B, H, S(, D)]
    over memory ordered [B, S, H(, D)]), so a compiled graph plans for the strides it really
    gets."""
    b, h, s, d = q.shape
    out = q.new_empty((b, s, h, d)).transpose(1, 2)
    lse = q.new_empty((b, s, h), dtype=torch.float32).transpose(1, 2)
    return out, lse


@torch.library.custom_op("lorabooth::cpu_attention", mutates_args=())
def cpu_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, scale=scale)
    # ATen lays the output out as the query is; the fake below promises one layout, diffusers'
    # (its [B, S, H, D] permuted), which costs nothing for the calls install() routes here.
    return out.transpose(1, 2).contiguous().transpose(1, 2), lse


@cpu_attention.register_fake
def _(q, k, v, scale):
    return _like_flash(q)


def _dense_rows(x: torch.Tensor) -> torch.Tensor:
    """`x` as the kernel reads it: any strides, but each row of D values dense."""
    return x if x.stride(-1) == 1 and (x.shape[2] == 1 or x.stride(2) >= x.shape[3]) \
        else x.contiguous()


@torch.library.custom_op("lorabooth::cpu_attention_backward", mutates_args=())
def cpu_attention_backward(grad: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                           v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                           scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # The kernel reads the strided views in place and writes diffusers' layout: the copies a
    # contiguous interface would need were a quarter of the call's time.
    dq, dk, dv = _extension().attention_backward(
        *(_dense_rows(x) for x in (grad, q, k, v, out)), lse.float(), scale)
    return dq, dk, dv


@cpu_attention_backward.register_fake
def _(grad, q, k, v, out, lse, scale):
    return _like_flash(q)[0], _like_flash(k)[0], _like_flash(v)[0]


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse)
    ctx.scale = scale


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    dq, dk, dv = cpu_attention_backward(grad_out, q, k, v, out, lse, ctx.scale)
    return dq, dk, dv, None


cpu_attention.register_autograd(_backward, setup_context=_setup_context)


def fits(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask, dropout_p: float,
         is_causal: bool, enable_gqa: bool) -> bool:
    """Whether a call of diffusers' native attention ([B, S, H, D] tensors) is one this path
    computes: bf16 on a CPU, plain softmax attention, gradients wanted, an even head size."""
    return (query.device.type == "cpu" and query.dtype == torch.bfloat16
            and key.dtype == value.dtype == torch.bfloat16
            and attn_mask is None and not dropout_p and not is_causal and not enable_gqa
            and query.dim() == 4 and query.shape[-1] % 2 == 0
            and key.shape[2] == query.shape[2] == value.shape[2]
            and torch.is_grad_enabled()
            and (query.requires_grad or key.requires_grad or value.requires_grad))


def install() -> str:
    """Route diffusers' native attention through these ops where they fit; what was done, in
    words. Idempotent; the kernel is built here (once per machine) so that a failure shows
    before training, as a line in the log, and training goes on with torch's kernels."""
    why_not = available()
    if why_not is not None:
        return f"attention backward: torch's ({why_not})"
    from diffusers.models import attention_dispatch as dispatch

    registry = getattr(dispatch, "_AttentionBackendRegistry", None)
    name = getattr(getattr(dispatch, "AttentionBackendName", None), "NATIVE", None)
    native = getattr(registry, "_backends", {}).get(name)
    if native is None:
        return "attention backward: torch's (this diffusers has no native attention backend)"
    if not getattr(native, "lorabooth", False):
        registry._backends[name] = _routed(native)
    return "attention backward: lorabooth's bf16 CPU kernel"


def _routed(native):
    @functools.wraps(native)
    def attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
                  scale=None, enable_gqa=False, return_lse=False, _parallel_config=None):
        if (not return_lse and _parallel_config is None
                and fits(query, key, value, attn_mask, dropout_p, is_causal, enable_gqa)):
            q, k, v = (x.permute(0, 2, 1, 3) for x in (query, key, value))
            out, _ = cpu_attention(q, k, v, query.shape[-1] ** -0.5 if scale is None else scale)
            return out.permute(0, 2, 1, 3)
        return native(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p,
                      is_causal=is_causal, scale=scale, enable_gqa=enable_gqa,
                      return_lse=return_lse, _parallel_config=_parallel_config)

    attention.lorabooth = True
    return attention
