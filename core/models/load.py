"""Loading a resolved Flux folder into memory: precision, device, an optional NF4 transformer,
and the facts the header and the memory plan need (parameter count, device name)."""

from __future__ import annotations

import logging
import os
import re
import warnings
from typing import TYPE_CHECKING

from .resolve import ModelSource

if TYPE_CHECKING:
    import torch
    from diffusers import DiffusionPipeline


def load_pipeline(source: ModelSource, dtype: torch.dtype | None = None,
                  device: str | torch.device | None = None,
                  quantize: str | None = None, placement: str = "all") -> DiffusionPipeline:
    """The model's pipeline class (FluxPipeline, Flux2KleinPipeline) from_pretrained on the
    resolved folder, loaded straight into `dtype`
    (low_cpu_mem_usage: weights stream to their place, never twice in system RAM).

    `quantize`: None; "fp8" (the transformer's weights stored in float8 and cast layer by layer
    to `dtype` as it runs, diffusers' layerwise casting: half the memory of bf16, no extra
    library); "nf4" (4-bit through bitsandbytes, QLoRA-style).
    `placement`: "all" (every model on `device`); "caching" (the transformer waits on the CPU
    until the photos and captions are encoded; the trainer brings it over); "lean" (T5 too
    stays in CPU memory and streams to the GPU a layer at a time to encode the captions:
    stream.py); "stream" (generation: T5 so, every other model on `device`); "offload"
    (diffusers' model CPU offload: each model on the GPU only while it runs)."""
    from .registry import require_supported

    require_supported(source.model)
    quiet_libraries()
    import diffusers
    import torch

    pipeline_class = getattr(diffusers, source.model.pipeline)  # FluxPipeline, Flux2Klein...

    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        from ..allocator import keep_freed_memory

        keep_freed_memory()  # every step's activations reuse the last step's pages
    use_safe_attention(device)
    dtype = dtype or default_dtype(device)
    extra = {}
    if quantize == "nf4":
        extra["transformer"] = _load_nf4_transformer(source, dtype, pipeline_class)
    with warnings.catch_warnings():
        # Newer diffusers renamed torch_dtype to dtype; the old name works in every release.
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        pipe = pipeline_class.from_pretrained(source.path, torch_dtype=dtype,
                                              local_files_only=True, **extra)
    pipe.set_progress_bar_config(disable=True)
    # fp8: cast as the transformer is placed (place_transformer), not here: its bf16 weights
    # stay the page cache's until then, where a float8 copy made now would take 11 GiB of
    # system RAM the system cannot drop (FLUX.1-dev), as long as it waits on the CPU.
    pipe.lorabooth_offload = place(pipe, device, placement, quantize)
    return pipe


# Kept in their own precision: the small embedders and the final layer. diffusers' own list for
# Flux (always added by enable_layerwise_casting) keeps every module named *norm*, which takes in
# the AdaLN modulation Linears (norm1.linear and friends: 3.2B of the 11.9B parameters), so the
# hooks are applied directly, with this list alone.
FP8_KEEP = ("pos_embed", r"^x_embedder$", r"^context_embedder$", r"^time_text_embed",
            r"^norm_out", r"^proj_out$")


def _fp8_layers() -> tuple[type, ...]:
    import torch

    nn = torch.nn
    return (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
            nn.ConvTranspose3d, nn.Linear, nn.Embedding)


def store_in_fp8(transformer, compute_dtype, device=None) -> None:
    """Weights kept in float8 (e4m3), each layer's cast to `compute_dtype` while it runs
    (diffusers' layerwise casting hooks; kohya's fp8_base does the same): half the memory of
    bf16, no extra library. With `device`, each layer moves there first and is cast there, one
    at a time: FLUX.1-dev's 23.8 GiB of bf16 weights never sit on a 24 GB card at once, and no
    float8 copy is made in system RAM.

    The layers are those diffusers' `apply_layerwise_casting` picks (its layer types; a layer
    is kept when its name or a parent's matches FP8_KEEP), hooked one by one with its public
    `apply_layerwise_casting_hook`; tests/unit/test_memory.py checks both pick the same."""
    import torch
    from diffusers.hooks import apply_layerwise_casting_hook

    layers = _fp8_layers()
    for name, module in transformer.named_modules():
        if next(module.children(), None) is not None:
            continue  # layers only: their parents move and cast with them
        if device is not None:
            module.to(device)
        if isinstance(module, layers) and not fp8_kept(name):
            apply_layerwise_casting_hook(module, torch.float8_e4m3fn, compute_dtype,
                                         non_blocking=False)
    if device is not None:
        transformer.to(device)  # any tensor held by a module that has children


def fp8_kept(name: str) -> bool:
    """Whether the layer `name` (or a module holding it) stays in its own precision."""
    parts = name.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(re.search(pattern, prefix) for pattern in FP8_KEEP for prefix in prefixes)


def place_transformer(transformer, device, quantize: str | None) -> None:
    """The transformer onto `device`: one to be stored in fp8 and not cast yet is cast there a
    layer at a time (store_in_fp8)."""
    if quantize == "fp8" and not stored_in_fp8(transformer):
        store_in_fp8(transformer, transformer.dtype, device)
    else:
        transformer.to(device)


def big_text_encoder(pipe) -> str:
    """The pipeline's large text encoder, the one a plan may leave on the CPU: FLUX.1's T5-XXL
    (`text_encoder_2`; CLIP is small), FLUX.2's Qwen3 (`text_encoder`, its only one)."""
    return "text_encoder_2" if getattr(pipe, "text_encoder_2", None) is not None \
        else "text_encoder"


def stored_in_fp8(model) -> bool:
    import torch

    return any(p.dtype == torch.float8_e4m3fn for p in model.parameters())


def place(pipe, device, placement: str, quantize: str | None = None) -> bool:
    """Put the pipeline's models where `placement` says (see load_pipeline). Returns whether
    model offload is on (it is only on a GPU)."""
    from .stream import stop_streaming, stream_from_cpu

    big = big_text_encoder(pipe)
    streams = placement in ("lean", "stream")
    if not streams:  # placed whole again (or offloaded): the hooks would undo it
        stop_streaming(getattr(pipe, big))
    if placement == "offload" and device.type == "cuda":
        if quantize == "fp8" and not stored_in_fp8(pipe.transformer):
            store_in_fp8(pipe.transformer, pipe.transformer.dtype)  # it waits in CPU memory
        pipe.enable_model_cpu_offload(device=device)
        return True
    for name in ("vae", "text_encoder", "text_encoder_2", "transformer"):
        if getattr(pipe, name, None) is None:
            continue  # FLUX.2 has one text encoder
        if name == "transformer" and (quantize == "nf4" or placement in ("caching", "lean")):
            continue  # bitsandbytes placed it already; or it waits for the encoding to end
        if name == big and streams:
            if device.type == "cuda":
                stream_from_cpu(getattr(pipe, name), device)
            continue
        if name == "transformer":
            place_transformer(pipe.transformer, device, quantize)
            continue
        getattr(pipe, name).to(device)
    return False


def _load_nf4_transformer(source: ModelSource, dtype, pipeline_class):
    import inspect

    from diffusers import BitsAndBytesConfig

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_compute_dtype=dtype)
    transformer_class = inspect.signature(pipeline_class).parameters["transformer"].annotation
    if isinstance(transformer_class, str):  # postponed annotations: look the name up
        import diffusers

        transformer_class = getattr(diffusers, transformer_class)
    return transformer_class.from_pretrained(
        source.path, subfolder="transformer", quantization_config=config, torch_dtype=dtype,
        local_files_only=True)


def describe_device(device: torch.device) -> str:
    """What the header shows: the GPU's name and memory, or "cpu"."""
    import torch

    if device.type != "cuda":
        return "cpu"
    props = torch.cuda.get_device_properties(device)
    return f"{props.name} · {props.total_memory / 2**30:.0f} GiB"


def use_safe_attention(device: torch.device) -> None:
    """Keep torch's scaled-dot-product attention off cuDNN's fused kernel on CUDA: on an H200
    (torch 2.11, CUDA 13) its backward pass failed on Flux's attention at 512 px
    (`mha_graph.execute(...).is_good()`, then an illegal memory access that kills the process's
    CUDA context), in a bare diffusers step as in lorabooth's trainer. Flash and
    memory-efficient attention remain, and are as fast for these shapes."""
    import torch

    if device.type == "cuda":
        torch.backends.cuda.enable_cudnn_sdp(False)


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it, fp32 elsewhere (a CPU trains in bf16 only when asked:
    see memory.cpu_plan)."""
    import torch

    # Emulated bf16 (T4, V100, Turing) is slow: those cards get float16 with loss scaling.
    if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.float32


def quiet_library_logs() -> None:
    """Before the libraries are imported (the CLI does it first): the environment variables
    reach messages printed while they load. torchao (the fp8 extra) and bitsandbytes (lowvram),
    imported by diffusers when installed, warn of kernels built for another torch or missing
    optional packages (none used here), and torch of a deprecation torchao triggers."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in ("torchao", "bitsandbytes", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_libraries() -> None:
    # The libraries' own progress bars and advice would garble our progress display.
    quiet_library_logs()
    from diffusers.utils import logging as dlogging
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as tlogging

    disable_progress_bars()
    dlogging.disable_progress_bar()
    dlogging.set_verbosity_error()
    tlogging.disable_progress_bar()
    tlogging.set_verbosity_error()
