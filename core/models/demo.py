"""The built-in tiny `demo` model: the real diffusers and transformers classes with tiny weights,
built from configs in code, saved once as an ordinary diffusers folder in the user cache and
loaded back with `FluxPipeline.from_pretrained` exactly like real weights, so every code path
runs on a CPU in seconds."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .load import quiet_libraries
from .registry import DEMO_CLIP_LENGTH, DEMO_T5_LENGTH
from .resolve import demo_model_path

if TYPE_CHECKING:
    from collections.abc import Callable

    from diffusers import DiffusionPipeline, FluxPipeline
    from transformers import PreTrainedTokenizerFast

DEMO_SEED = 20240801
# Two double and two single blocks of width 128 (1.9M parameters): at width 64 the demo could
# not draw the subject even fine-tuned whole; at 128 it can, and a LoRA step on 128 px still
# takes ~0.03 s on a 2-core CPU.
DEMO_TRANSFORMER = dict(
    patch_size=1, in_channels=64, num_layers=2, num_single_layers=2, attention_head_dim=32,
    num_attention_heads=4, joint_attention_dim=64, pooled_projection_dim=64,
    guidance_embeds=True, axes_dims_rope=(8, 12, 12),
)


def ensure_demo_model() -> Path:
    """The demo model's folder, built on first use."""
    return build_once(demo_model_path(), build_demo_pipeline)


def build_once(target: Path, build: Callable[[], DiffusionPipeline]) -> Path:
    """`target`, a diffusers folder saved from `build()` unless it is there already.
    Concurrent first uses are safe: each builds into its own temp folder and the first rename
    wins."""
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        build().save_pretrained(tmp, safe_serialization=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model_index.json").is_file():
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    return target


def demo_vae(shift: float = 0.1159, scale: float = 0.3611):
    """The demo's AutoencoderKL: four blocks give the real 8x downsampling; 16 latent channels
    as in Flux's VAE."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=16,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8,
        sample_size=64, scaling_factor=scale, shift_factor=shift,
        use_quant_conv=False, use_post_quant_conv=False,
    )


def trained_demo_vae():
    """The demo VAE with the weights shipped in `demo_weights/` (see demo_train.py): it
    reconstructs pictures, so samples and generations show what the model learned."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .demo_train import VAE_FILE

    with safe_open(str(VAE_FILE), framework="pt") as handle:
        meta = handle.metadata() or {}
    vae = demo_vae(float(meta["shift_factor"]), float(meta["scaling_factor"]))
    vae.load_state_dict(load_file(VAE_FILE))
    return vae


def build_demo_pipeline(pretrained_transformer: bool = True) -> FluxPipeline:
    """A Flux pipeline of the real classes with tiny weights: the VAE and the transformer
    trained by demo_train.py and shipped, the text encoders random from a fixed seed (they
    only need to tell prompts apart)."""
    quiet_libraries()
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok = demo_tokenizer("clip")
    t5_tok = demo_tokenizer("t5")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEMO_SEED)
        transformer = FluxTransformer2DModel(**DEMO_TRANSFORMER)
        if pretrained_transformer:
            from safetensors.torch import load_file

            from .demo_train import TRANSFORMER_FILE

            transformer.load_state_dict(load_file(TRANSFORMER_FILE))
        vae = trained_demo_vae()
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
    # Built, not loaded, they would be in training mode: T5's dropout would then encode a
    # caption differently at every call (from_pretrained puts models in eval mode; this must
    # too, or what demo_train.py pre-trains on is not what the demo later encodes).
    for module in (transformer, vae, text_encoder, text_encoder_2):
        module.eval()
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
