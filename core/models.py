"""Where Flux weights come from: the built-in tiny `demo` model, a local diffusers folder, or a
repo id already in the local Hugging Face cache. Nothing here downloads anything.

The demo model is made of the real diffusers and transformers classes with tiny random weights,
built from configs in code, saved once as an ordinary diffusers folder and loaded back with
`FluxPipeline.from_pretrained` exactly like real weights, so every code path is exercised.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from platformdirs import user_cache_path

if TYPE_CHECKING:
    import torch
    from diffusers import FluxPipeline
    from transformers import PreTrainedTokenizerFast

DEMO = "demo"
# Bump when the demo model's configs or weights change, so old caches are rebuilt, not reused.
DEMO_VERSION = 1
DEMO_SEED = 20240801
KNOWN_REPOS = {
    "flux-dev": "black-forest-labs/FLUX.1-dev",
    "flux-schnell": "black-forest-labs/FLUX.1-schnell",
}
REQUIRED_PARTS = ("model_index.json", "transformer", "vae", "text_encoder", "text_encoder_2",
                  "tokenizer", "tokenizer_2", "scheduler")

# The demo's text lengths: short, so a CPU step is cheap; the real models use 77 and 512.
DEMO_CLIP_LENGTH = 77
DEMO_T5_LENGTH = 32


class ModelNotFound(Exception):
    """The weights asked for are not on this machine. str() tells where we looked and how to
    get them; the CLI prints it and exits 2."""


@dataclass(frozen=True)
class ModelSource:
    spec: str  # what the user wrote: "demo", a path or a repo id
    path: Path  # a diffusers folder on disk
    is_demo: bool = False

    @property
    def max_sequence_length(self) -> int:
        return DEMO_T5_LENGTH if self.is_demo else 512


def cache_root() -> Path:
    """lorabooth's own cache (the demo model); LORABOOTH_CACHE overrides it."""
    override = os.environ.get("LORABOOTH_CACHE")
    return Path(override).expanduser() if override else user_cache_path("lorabooth")


def demo_model_path() -> Path:
    return cache_root() / "models" / f"flux-demo-v{DEMO_VERSION}"


# ---------------------------------------------------------------------------------------------
# resolving a model spec


def resolve_model(spec: str, *, build_demo: bool = True) -> ModelSource:
    """Turn the config's `model` value into a diffusers folder on disk, or raise ModelNotFound."""
    spec = spec.strip()
    if spec == DEMO:
        path = ensure_demo_model() if build_demo else demo_model_path()
        return ModelSource(spec, path, is_demo=True)
    if spec.lower() in KNOWN_REPOS:
        return ModelSource(spec, _find_in_hf_cache(KNOWN_REPOS[spec.lower()]))
    local = Path(spec).expanduser()
    # "org/name" that is not a folder here is a Hugging Face repo id; anything else a path.
    if local.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        return ModelSource(spec, _check_folder(local.resolve()))
    return ModelSource(spec, _find_in_hf_cache(spec))


def _check_folder(path: Path) -> Path:
    if not path.is_dir():
        raise ModelNotFound(f"Model folder {path} does not exist.\n" + _download_help())
    missing = [part for part in REQUIRED_PARTS if not (path / part).exists()]
    if missing:
        raise ModelNotFound(
            f"{path} is not a complete diffusers Flux folder: missing {', '.join(missing)}.\n"
            "A diffusers folder holds model_index.json and one sub-folder per component.\n"
            + _download_help())
    return path


def _find_in_hf_cache(repo_id: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, ValueError, OSError):
        raise ModelNotFound(
            f"Model weights for {repo_id} were not found on this machine.\n"
            f"Looked in the Hugging Face cache: {constants.HF_HUB_CACHE}\n"
            "(set HF_HOME or HF_HUB_CACHE if yours lives elsewhere).\n"
            + _download_help(repo_id)) from None
    return _check_folder(path)


def _download_help(repo_id: str = KNOWN_REPOS["flux-dev"]) -> str:
    return (
        "To get them: accept the licence on the model's Hugging Face page, then run\n"
        f"  hf auth login && hf download {repo_id}\n"
        'or set model = "/path/to/a/diffusers/folder" in lorabooth.toml.\n'
        'To try lorabooth without weights, use model = "demo".'
    )


# ---------------------------------------------------------------------------------------------
# loading


def load_pipeline(source: ModelSource, dtype: torch.dtype | None = None,
                  device: str | torch.device | None = None,
                  quantize: str | None = None) -> FluxPipeline:
    """FluxPipeline.from_pretrained on the resolved folder, loaded straight into `dtype`
    (low_cpu_mem_usage: weights stream to their place, never twice in system RAM). With
    `quantize="nf4"` the transformer loads 4-bit through bitsandbytes (QLoRA-style)."""
    _quiet_libraries()
    import torch
    from diffusers import FluxPipeline

    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    extra = {}
    if quantize == "nf4":
        extra["transformer"] = _load_nf4_transformer(source, dtype)
    with warnings.catch_warnings():
        # Newer diffusers renamed torch_dtype to dtype; the old name works in every release.
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        pipe = FluxPipeline.from_pretrained(source.path, torch_dtype=dtype,
                                            local_files_only=True, **extra)
    pipe.set_progress_bar_config(disable=True)
    if quantize:
        # bitsandbytes placed the 4-bit transformer on the GPU already; move the rest.
        for name in ("vae", "text_encoder", "text_encoder_2"):
            getattr(pipe, name).to(device)
        return pipe
    return pipe.to(device)


def _load_nf4_transformer(source: ModelSource, dtype):
    from diffusers import BitsAndBytesConfig, FluxTransformer2DModel

    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_compute_dtype=dtype)
    return FluxTransformer2DModel.from_pretrained(
        source.path, subfolder="transformer", quantization_config=config, torch_dtype=dtype,
        local_files_only=True)


def transformer_params(source: ModelSource) -> float:
    """The transformer's parameter count, from its files' sizes and stored dtype."""
    import json

    files = sorted((source.path / "transformer").glob("*.safetensors"))
    if not files:
        return 0.0
    with open(files[0], "rb") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
    dtypes = [v["dtype"] for k, v in header.items() if k != "__metadata__"]
    width = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1}.get(dtypes[0] if dtypes else "", 2)
    return sum(f.stat().st_size for f in files) / width


def describe_device(device: torch.device) -> str:
    """What the header shows: the GPU's name and memory, or "cpu"."""
    import torch

    if device.type != "cuda":
        return "cpu"
    props = torch.cuda.get_device_properties(device)
    return f"{props.name} · {props.total_memory / 2**30:.0f} GiB"


def default_device() -> torch.device:
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs that support it, fp32 elsewhere (CPU bf16 matmuls are slow and lossy)."""
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cuda":
        return torch.float16
    return torch.float32


def _quiet_libraries() -> None:
    # The libraries' own progress bars and advice would garble our progress display. The
    # environment variables reach messages printed while the libraries are first imported.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    from diffusers.utils import logging as dlogging
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as tlogging

    disable_progress_bars()
    dlogging.disable_progress_bar()
    dlogging.set_verbosity_error()
    tlogging.disable_progress_bar()
    tlogging.set_verbosity_error()


# ---------------------------------------------------------------------------------------------
# the demo model


def ensure_demo_model() -> Path:
    """The demo model's folder, built on first use. Concurrent first uses are safe: each
    builds into its own temp folder and the first rename wins."""
    target = demo_model_path()
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        build_demo_pipeline().save_pretrained(tmp, safe_serialization=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model_index.json").is_file():
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return target


def build_demo_pipeline() -> FluxPipeline:
    """A Flux pipeline of the real classes with tiny random weights from a fixed seed."""
    _quiet_libraries()
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok = demo_tokenizer("clip")
    t5_tok = demo_tokenizer("t5")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEMO_SEED)
        transformer = FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
            attention_head_dim=16, num_attention_heads=4, joint_attention_dim=64,
            pooled_projection_dim=64, guidance_embeds=True, axes_dims_rope=(4, 6, 6),
        )
        # Four blocks give the real 8x downsampling; 16 latent channels as in Flux's VAE.
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=16,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8,
            sample_size=64, scaling_factor=0.3611, shift_factor=0.1159,
            use_quant_conv=False, use_post_quant_conv=False,
        )
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=clip_tok.vocab_size, hidden_size=64, intermediate_size=128,
            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=DEMO_CLIP_LENGTH,
            projection_dim=64, bos_token_id=clip_tok.bos_token_id,
            eos_token_id=clip_tok.eos_token_id, pad_token_id=clip_tok.pad_token_id,
        ))
        text_encoder_2 = T5EncoderModel(T5Config(
            vocab_size=t5_tok.vocab_size, d_model=64, d_kv=16, d_ff=128, num_layers=2,
            num_heads=4, relative_attention_num_buckets=8, relative_attention_max_distance=32,
            feed_forward_proj="gated-gelu", pad_token_id=t5_tok.pad_token_id,
            eos_token_id=t5_tok.eos_token_id, decoder_start_token_id=t5_tok.pad_token_id,
        ))
    # Flux-dev's scheduler settings: resolution-dependent shift of the sigmas.
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
        max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
    )
    return FluxPipeline(
        scheduler=scheduler, vae=vae, text_encoder=text_encoder, tokenizer=clip_tok,
        text_encoder_2=text_encoder_2, tokenizer_2=t5_tok, transformer=transformer,
    )


_DEMO_WORDS = """
a an the of in on at with and by for to from as is photo portrait picture poster shot close up
closeup full body half studio soft hard light lighting shadow sunlight golden hour night day
indoors outdoors background wall street cafe beach forest city park room window mountain sky
red orange yellow green blue purple pink black white gray brown teal gold silver dark bright
wearing shirt jacket hat scarf glasses dress suit hoodie coat sweater cap helmet costume
smiling laughing serious looking left right up down front side view angle from above below
sitting standing walking running holding cup book flower camera phone sign title text bold
film cinematic dramatic candid professional bokeh sharp blurry detailed high quality realistic
person man woman child cat dog robot toy mascot character creature figure object product
bottle shoe bag watch astronaut knight chef pilot painter explorer wizard superhero
""".split()


def demo_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in code (so any text, emoji included, encodes), with
    CLIP-style (`<|startoftext|> ... <|endoftext|>`) or T5-style (`... </s>`) special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "clip":
        specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                    "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
        order = ["<|startoftext|>", "<|endoftext|>"]
        max_length = DEMO_CLIP_LENGTH
    else:
        specials = {"eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
        order = ["<pad>", "</s>", "<unk>"]
        max_length = DEMO_T5_LENGTH
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=order, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [" ".join(_DEMO_WORDS[i:] + _DEMO_WORDS[:i]) for i in range(0, len(_DEMO_WORDS), 7)]
    tok.train_from_iterator(corpus, trainer=trainer)
    ids = {t: tok.token_to_id(t) for t in order}
    if kind == "clip":
        tok.post_processor = processors.TemplateProcessing(
            single="<|startoftext|> $A <|endoftext|>",
            special_tokens=[(t, ids[t]) for t in order],
        )
    else:
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", ids["</s>"])],
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length, **specials)
