"""Encoding photos and captions once: VAE latents per photo and bucket, text embeddings per
caption, cached on disk under `.lorabooth/cache` and keyed by content and settings, so a
changed caption or photo re-encodes only itself."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save

from ..dataset.buckets import Bucket, crop_to_bucket
from ..dataset.files import MAX_FILE_BYTES, open_image
from ..fsutil import atomic_write_bytes, read_regular_file
from ..models.family import Family, Flux1

ENCODE_VERSION = 1


@dataclass
class EncodeStats:
    latents_encoded: int = 0
    latents_cached: int = 0
    texts_encoded: int = 0
    texts_cached: int = 0


def model_fingerprint(pipe) -> str:
    """Changes when the VAE or text encoders would encode differently."""
    from ..models.load import big_text_encoder

    text = getattr(pipe, big_text_encoder(pipe))
    parts = [json.dumps(dict(pipe.vae.config), sort_keys=True, default=str),
             json.dumps(text.config.to_dict(), sort_keys=True, default=str),
             str(getattr(pipe, "name_or_path", "") or pipe.config.get("_name_or_path", ""))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _key(*parts: object) -> str:
    return hashlib.sha256("\x00".join(map(str, (ENCODE_VERSION, *parts))).encode()).hexdigest()


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        return load_file(path)
    except Exception:  # missing, or half-written by a killed run: encode again
        return None


class Encoder:
    """Latents and text embeddings through the pipeline's VAE and text encoders."""

    def __init__(self, pipe, cache_dir: Path, max_sequence_length: int, family: Family = Flux1):
        self.pipe = pipe
        self.family = family
        self.cache_dir = cache_dir
        self.max_sequence_length = max_sequence_length
        self.fingerprint = model_fingerprint(pipe)
        self.stats = EncodeStats()

    def latent(self, photo: Path, sha256: str, bucket: Bucket) -> torch.Tensor:
        """The latent the transformer learns (the family's: FLUX.1's scaled, shifted
        (16, H/8, W/8), FLUX.2's normalised patches (128, H/16, W/16)) of `photo` cropped to
        `bucket`."""
        path = self.cache_dir / "latents" / f"{_key(self.fingerprint, sha256, bucket)}.safetensors"
        cached = _load(path)
        if cached is not None:
            self.stats.latents_cached += 1
            return cached["latent"]
        # Never a FIFO (a photo swapped for one after the scan would hang the run).
        image = crop_to_bucket(open_image(read_regular_file(photo, MAX_FILE_BYTES)[0]), bucket)
        vae = self.pipe.vae
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None]
        pixels = (pixels.float() / 127.5 - 1).to(vae.device, vae.dtype)
        with torch.no_grad():
            # The mode, not a sample: the cached latent is the same on every run and resume.
            latent = self.family.latent(vae, pixels)[0].float().cpu().contiguous()
        atomic_write_bytes(path, save({"latent": latent}))
        self.stats.latents_encoded += 1
        return latent

    def text(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(sequence embeddings, pooled embedding: FLUX.1's T5 and CLIP, FLUX.2's Qwen3 and an
        empty tensor) of a caption, from the cache."""
        path = self.cache_dir / "text" / (
            f"{_key(self.fingerprint, self.max_sequence_length, caption)}.safetensors")
        cached = _load(path)
        if cached is not None:
            self.stats.texts_cached += 1
            return cached["prompt_embeds"], cached["pooled"]
        prompt_embeds, pooled = self.encode(caption)
        atomic_write_bytes(path, save({"prompt_embeds": prompt_embeds, "pooled": pooled}))
        self.stats.texts_encoded += 1
        return prompt_embeds, pooled

    def too_long(self, captions: list[str]) -> dict[str, int]:
        """Captions longer than the text encoder reads (`max_sequence_length` tokens of T5, or
        of Qwen3 on FLUX.2), with their lengths: training never sees their ends, and nothing
        says so but diffusers' log line, which a run in the engine does not show."""
        from ..models.load import big_text_encoder

        name = "tokenizer_2" if big_text_encoder(self.pipe) == "text_encoder_2" else "tokenizer"
        tokenizer = getattr(self.pipe, name, None)
        if tokenizer is None:
            return {}
        lengths = {c: len(tokenizer(c, add_special_tokens=True).input_ids) for c in captions}
        return {c: n for c, n in lengths.items() if n > self.max_sequence_length}

    def encode(self, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The same, computed now, in float32 on the CPU."""
        embeds, pooled = self.family.text(self.pipe, caption, self.max_sequence_length)
        return embeds.float().cpu().contiguous(), pooled.float().cpu().contiguous()
