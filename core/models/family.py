"""What differs between the Flux families once weights are loaded: how a photo becomes the
latent the transformer learns, how a caption becomes its text input, how latents become tokens
and back, and what a pipeline call with cached text takes. The trainer, the encoder cache, the
samples and the generator speak through one of these, so they hold no family's layout.

FLUX.1 (dev, schnell, Krea): a 16-channel VAE latent, shifted and scaled, packed as 2x2
patches into 64-channel tokens with (0, row, col) ids; T5 sequence embeddings plus CLIP's
pooled embedding; guidance embedded in the transformer.

FLUX.2 [klein]: a 32-channel VAE latent patchified 2x2 into 128 channels and normalised by the
VAE's batch-norm statistics, one token per patch with (t, row, col, layer) ids; Qwen3's hidden
states of three layers side by side, no pooled embedding; true CFG on the base models (as
diffusers' `Flux2KleinPipeline` and `train_dreambooth_lora_flux2_klein.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..train import flow

if TYPE_CHECKING:
    from .registry import BaseModel

NO_POOLED = torch.zeros(0)  # FLUX.2 has no pooled text embedding; kept so caches stay alike


class Flux1:
    name = "flux1"
    big_text_encoder = "text_encoder_2"  # T5-XXL; CLIP is the small one
    img2img_pipeline: str | None = "FluxImg2ImgPipeline"
    inpaint_pipeline = "FluxInpaintPipeline"

    @staticmethod
    def latent(vae, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 16, H/8, W/8): the VAE's mode, shifted and scaled as Flux expects."""
        mode = vae.encode(pixels).latent_dist.mode()
        return (mode - vae.config.shift_factor) * vae.config.scaling_factor

    @staticmethod
    def tokens(h: int, w: int) -> int:
        return (h // 2) * (w // 2)

    @staticmethod
    def text(pipe, caption: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(T5 sequence embeddings, CLIP pooled embedding), each encoder where it lives
        (during training T5 may wait on the CPU while CLIP stays on the GPU)."""
        with torch.no_grad():
            pooled = pipe._get_clip_prompt_embeds(prompt=caption,
                                                  device=pipe.text_encoder.device)
            embeds = pipe._get_t5_prompt_embeds(prompt=caption, max_sequence_length=max_length,
                                                device=pipe.text_encoder_2.device)
        return embeds[0], pooled[0]

    @staticmethod
    def predict(model, noisy: torch.Tensor, sigmas: torch.Tensor, embeds: torch.Tensor,
                pooled: torch.Tensor, guidance: torch.Tensor | None,
                dtype: torch.dtype) -> torch.Tensor:
        """The velocity the transformer predicts for latents `noisy` (B, C, h, w)."""
        _, _, h, w = noisy.shape
        dev = noisy.device
        pred = model(hidden_states=flow.pack(noisy).to(dtype), timestep=sigmas.to(dev, dtype),
                     guidance=guidance, pooled_projections=pooled.to(dev, dtype),
                     encoder_hidden_states=embeds.to(dev, dtype),
                     txt_ids=flow.text_ids(embeds.shape[1], dev, dtype),
                     img_ids=flow.image_ids(h, w, dev, dtype), return_dict=False)[0]
        return flow.unpack(pred.float(), h, w)

    @staticmethod
    def pipe_text(embeds: torch.Tensor, pooled: torch.Tensor,
                  negative: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device,
                  dtype: torch.dtype) -> dict:
        """A pipeline call's text inputs from cached embeddings (one prompt)."""
        return {"prompt_embeds": embeds[None].to(device, dtype),
                "pooled_prompt_embeds": pooled[None].to(device, dtype)}


class Flux2:
    name = "flux2"
    big_text_encoder = "text_encoder"  # Qwen3, the only one
    img2img_pipeline: str | None = None  # inpainting with a white mask does it
    inpaint_pipeline = "Flux2KleinInpaintPipeline"
    TEXT_LAYERS = (9, 18, 27)  # diffusers' Flux2KleinPipeline default

    @staticmethod
    def latent(vae, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 4C, H/16, W/16): the VAE's mode, patchified 2x2 and normalised by the VAE's
        batch-norm statistics (`Flux2KleinPipeline._encode_vae_image`)."""
        from diffusers import Flux2KleinPipeline

        mode = vae.encode(pixels).latent_dist.mode()
        patches = Flux2KleinPipeline._patchify_latents(mode)
        mean = vae.bn.running_mean.view(1, -1, 1, 1).to(patches)
        std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
        return (patches - mean) / std.to(patches)

    @staticmethod
    def tokens(h: int, w: int) -> int:
        return h * w

    @staticmethod
    def text(pipe, caption: str, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(Qwen3's hidden states of layers 9, 18 and 27 side by side, no pooled embedding)."""
        with torch.no_grad():
            embeds = pipe._get_qwen3_prompt_embeds(
                pipe.text_encoder, pipe.tokenizer, caption, dtype=torch.float32,
                device=pipe.text_encoder.device, max_sequence_length=max_length,
                hidden_states_layers=Flux2.TEXT_LAYERS)
        return embeds[0], NO_POOLED

    @staticmethod
    def ids(noisy: torch.Tensor, text_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers import Flux2KleinPipeline

        b = noisy.shape[0]
        img = Flux2KleinPipeline._prepare_latent_ids(noisy).to(noisy.device)
        txt = Flux2KleinPipeline._prepare_text_ids(
            torch.empty(b, text_length, 1)).to(noisy.device)
        return img, txt

    @staticmethod
    def predict(model, noisy: torch.Tensor, sigmas: torch.Tensor, embeds: torch.Tensor,
                pooled: torch.Tensor, guidance: torch.Tensor | None,
                dtype: torch.dtype) -> torch.Tensor:
        b, c, h, w = noisy.shape
        dev = noisy.device
        img_ids, txt_ids = Flux2.ids(noisy, embeds.shape[1])
        tokens = noisy.reshape(b, c, h * w).permute(0, 2, 1)  # `_pack_latents`
        pred = model(hidden_states=tokens.to(dtype), timestep=sigmas.to(dev, dtype),
                     guidance=guidance, encoder_hidden_states=embeds.to(dev, dtype),
                     txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]
        return pred[:, :h * w].float().permute(0, 2, 1).reshape(b, c, h, w)

    @staticmethod
    def pipe_text(embeds: torch.Tensor, pooled: torch.Tensor,
                  negative: tuple[torch.Tensor, torch.Tensor] | None, device: torch.device,
                  dtype: torch.dtype) -> dict:
        """With true CFG the pipeline would encode the empty negative prompt itself, with a text
        encoder that may be parked: it is handed over from the cache too."""
        kwargs = {"prompt_embeds": embeds[None].to(device, dtype),
                  "text_encoder_out_layers": Flux2.TEXT_LAYERS}
        if negative is not None:
            kwargs["negative_prompt_embeds"] = negative[0][None].to(device, dtype)
        return kwargs


Family = type[Flux1] | type[Flux2]
FAMILIES: dict[str, Family] = {"flux1": Flux1, "flux2": Flux2}


def family_of(model: BaseModel) -> Family:
    return FAMILIES[model.family]
