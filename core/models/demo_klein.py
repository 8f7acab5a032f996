"""The built-in tiny `demo-klein` model: FLUX.2 [klein]'s real classes (Flux2Transformer2DModel,
AutoencoderKLFlux2, Qwen3ForCausalLM, Qwen2TokenizerFast) with tiny random weights, built in
code, saved once as an ordinary diffusers folder and loaded back with
`Flux2KleinPipeline.from_pretrained`, so every klein path runs on a CPU exactly as on the real
model.

Its Qwen3 has 28 layers (tiny ones) so that the pipeline's own text recipe, the hidden states
of layers 9, 18 and 27 side by side, runs unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .demo import _DEMO_WORDS, build_once
from .load import quiet_libraries
from .registry import DEMO_T5_LENGTH

if TYPE_CHECKING:
    from diffusers import Flux2KleinPipeline
    from transformers import Qwen2TokenizerFast

DEMO_KLEIN_SEED = 20260126
QWEN_HIDDEN = 32
QWEN_LAYERS = 28  # the pipeline reads hidden states 9, 18 and 27
# Qwen3's chat template, cut to what the pipeline uses: one user turn, the assistant's turn
# opened, thinking left out.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n\n</think>\n\n{% endif %}"
)


def ensure_demo_klein_model(target: Path) -> Path:
    """The demo's folder, built on first use."""
    return build_once(target, build_demo_klein_pipeline)


def build_demo_klein_pipeline() -> Flux2KleinPipeline:
    """A klein base pipeline (true CFG, not distilled) of the real classes with tiny weights
    from a fixed seed."""
    quiet_libraries()
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = demo_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(DEMO_KLEIN_SEED)
        # 8 latent channels, patchified 2x2 into the transformer's 32 (the real VAE: 32 and 128).
        vae = AutoencoderKLFlux2(
            in_channels=3, out_channels=3, latent_channels=8,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(16, 16, 32, 32), layers_per_block=1, norm_num_groups=8,
            sample_size=64, use_quant_conv=False, use_post_quant_conv=False,
        )
        transformer = Flux2Transformer2DModel(
            patch_size=1, in_channels=32, num_layers=2, num_single_layers=2,
            attention_head_dim=16, num_attention_heads=4, joint_attention_dim=3 * QWEN_HIDDEN,
            timestep_guidance_channels=64, axes_dims_rope=(4, 4, 4, 4), guidance_embeds=False,
        )
        text_encoder = Qwen3ForCausalLM(Qwen3Config(
            vocab_size=len(tokenizer), hidden_size=QWEN_HIDDEN, intermediate_size=64,
            num_hidden_layers=QWEN_LAYERS, num_attention_heads=2, num_key_value_heads=2,
            head_dim=16, max_position_embeddings=4 * DEMO_T5_LENGTH, tie_word_embeddings=True,
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        ))
    # klein's scheduler: the pipeline passes its own resolution-dependent mu.
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
        time_shift_type="exponential")
    return Flux2KleinPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                              tokenizer=tokenizer, transformer=transformer, is_distilled=False)


def demo_qwen_tokenizer() -> Qwen2TokenizerFast:
    """A byte-level BPE trained in code on the demo's words, with Qwen's chat tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2TokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(_DEMO_WORDS[i:] + _DEMO_WORDS[:i]) for i in range(0, len(_DEMO_WORDS), 7)]
    tok.train_from_iterator([*corpus, "user assistant think"], trainer=trainer)
    return Qwen2TokenizerFast(
        tokenizer_object=tok, model_max_length=DEMO_T5_LENGTH, chat_template=CHAT_TEMPLATE,
        eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None,
        additional_special_tokens=specials[1:])
