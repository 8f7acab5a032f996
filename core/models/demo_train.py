"""Training the demo model, so that the tiny demo shows real pictures and real learning: with
random weights the VAE decodes any latent to coloured noise and the transformer denoises
nothing, and then nothing a newcomer sees can show that a LoRA learned the subject.

1. The VAE

The VAE is the demo's own AutoencoderKL (the real diffusers class, 0.27M parameters), trained
here by reconstruction on procedurally drawn scenes (gradients, ellipses, boxes, stripes in
random colours) and on random crops of the sample photos. Latents are then shifted and scaled
to zero mean and unit spread (the role of Flux's `shift_factor` and `scaling_factor`).
2. The transformer (the real FluxTransformer2DModel, 1.9M parameters), pre-trained with
lorabooth's own flow-matching code on captioned drawn scenes ("a red circle and a blue square
on a yellow background") and never on the subject: the base draws plausible simple pictures,
and what a LoRA adds (the teal plush) shows.

The weights ship with the package (`demo_weights/`, about 5 MB), so a fresh install builds the
demo offline in seconds; this module is how they were made:

    python -m lorabooth.core.models.demo_train --vae-steps 2500     # the VAE, then a transformer
    python -m lorabooth.core.models.demo_train --steps 4000 --batch 16   # the transformer alone

The shipped VAE is the first command's; the shipped transformer the second's (about 7 minutes
on a 2-core CPU). Two lessons from the first shipped transformer (width 64): the text encoders
were built in training mode, so T5's dropout gave every encoding of a caption a different
embedding, and the transformer was pre-trained on embeddings the demo never produces again;
and at width 64 the model could not draw the subject even when fine-tuned whole on the photos.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

WEIGHTS = Path(__file__).resolve().parent / "demo_weights"
VAE_FILE = WEIGHTS / "vae.safetensors"
SIZE = 64  # training crops; the VAE is convolutional and works at any multiple of 8
KL_WEIGHT = 1e-6


def drawn_scene(rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    """A random simple picture: a two-colour gradient and a few flat shapes."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    if rng.random() < 0.5:
        t = t.transpose(1, 0, 2)
    base = (a * (1 - t) + b * t) * np.ones((size, size, 1))
    image = Image.fromarray(base.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 5)):
        x0, y0 = rng.integers(-size // 4, size, 2)
        w, h = rng.integers(size // 8, size // 2 + 1, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = rng.integers(0, 3)
        box = (int(x0), int(y0), int(x0 + w), int(y0 + h))
        if shape == 0:
            draw.ellipse(box, fill=colour)
        elif shape == 1:
            draw.rectangle(box, fill=colour)
        else:
            for i in range(0, int(w), 4):
                draw.line((box[0] + i, box[1], box[0] + i, box[3]), fill=colour, width=2)
    return image


def photo_crop(rng: np.random.Generator, photos: list[Image.Image],
               size: int = SIZE) -> Image.Image:
    """A random crop of a sample photo at a random scale."""
    photo = photos[rng.integers(len(photos))]
    scale = rng.uniform(size / min(photo.size), 1.0)
    w, h = (max(size, int(d * scale)) for d in photo.size)
    small = photo.resize((w, h), Image.BICUBIC)
    x, y = rng.integers(0, w - size + 1), rng.integers(0, h - size + 1)
    return small.crop((int(x), int(y), int(x) + size, int(y) + size))


def to_tensor(images: list[Image.Image]) -> torch.Tensor:
    array = np.stack([np.asarray(i.convert("RGB"), dtype=np.float32) for i in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1


def sample_photos() -> list[Image.Image]:
    from .. import __file__ as core_init

    folder = Path(core_init).resolve().parent.parent / "sample_photos"
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("*.jpg"))]


def batch(rng: np.random.Generator, photos: list[Image.Image], size: int) -> torch.Tensor:
    return to_tensor([photo_crop(rng, photos) if photos and i % 2 else drawn_scene(rng)
                      for i in range(size)])


def train_vae(vae, steps: int, seed: int = 0, log=print) -> float:
    """Reconstruction (L1 + MSE) with a whisper of KL; returns the last loss."""
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    photos = sample_photos()
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps,
                                                   pct_start=0.05)
    start, loss = time.monotonic(), torch.tensor(0.0)
    for step in range(steps):
        pixels = batch(rng, photos, 16)
        dist = vae.encode(pixels).latent_dist
        recon = vae.decode(dist.sample()).sample
        loss = ((recon - pixels).abs().mean() + ((recon - pixels) ** 2).mean()
                + KL_WEIGHT * dist.kl().mean())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 250 == 0 or step == steps - 1:
            log(f"vae step {step}/{steps} loss {loss.item():.4f} "
                f"({time.monotonic() - start:.0f} s)", flush=True)
    vae.eval()
    return float(loss.detach())


@torch.no_grad()
def latent_statistics(vae, seed: int = 1) -> tuple[float, float]:
    """(shift, scale) that bring the VAE's latents to zero mean and unit spread."""
    rng = np.random.default_rng(seed)
    pixels = batch(rng, sample_photos(), 64)
    latents = vae.encode(pixels).latent_dist.mode()
    return float(latents.mean()), float(1 / latents.std())


# -- the transformer ------------------------------------------------------------------------

COLOURS = {"red": (215, 45, 40), "orange": (240, 140, 30), "yellow": (235, 215, 50),
           "green": (50, 160, 60), "blue": (40, 80, 215), "purple": (135, 60, 185),
           "pink": (240, 135, 180), "black": (25, 25, 25), "white": (238, 238, 238),
           "gray": (128, 128, 128), "brown": (120, 80, 40)}
SHAPES = ("circle", "square", "stripes")
TRANSFORMER_FILE = WEIGHTS / "transformer.safetensors"
PRETRAIN_SIZE = 128


def captioned_scene(rng: np.random.Generator, size: int = PRETRAIN_SIZE
                    ) -> tuple[Image.Image, str]:
    """A background colour and one or two shapes, and the caption that says so."""
    names = list(COLOURS)
    background = names[rng.integers(len(names))]
    jitter = rng.integers(-12, 13, 3)
    base = np.clip(np.array(COLOURS[background]) + jitter, 0, 255)
    image = Image.new("RGB", (size, size), tuple(int(c) for c in base))
    draw = ImageDraw.Draw(image)
    parts = []
    for _ in range(rng.integers(1, 3)):
        colour = names[rng.integers(len(names))]
        while colour == background:
            colour = names[rng.integers(len(names))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        w = int(rng.integers(size // 4, size // 2 + 1))
        x, y = (int(v) for v in rng.integers(0, size - w, 2))
        fill = COLOURS[colour]
        if shape == "circle":
            draw.ellipse((x, y, x + w, y + w), fill=fill)
        elif shape == "square":
            draw.rectangle((x, y, x + w, y + w), fill=fill)
        else:
            for i in range(0, w, 6):
                draw.rectangle((x + i, y, x + i + 2, y + w), fill=fill)
        parts.append(f"a {colour} {shape}")
    return image, f"{' and '.join(parts)} on a {background} background"


@torch.no_grad()
def scene_dataset(pipe, count: int, seed: int = 2):
    """Latents and text embeddings of `count` captioned scenes, encoded once."""
    from ..train.encode import Encoder

    rng = np.random.default_rng(seed)
    scenes = [captioned_scene(rng) for _ in range(count)]
    vae = pipe.vae
    latents = []
    for start in range(0, count, 64):
        pixels = to_tensor([image for image, _ in scenes[start:start + 64]])
        dist = vae.encode(pixels).latent_dist
        latents.append((dist.mode() - vae.config.shift_factor) * vae.config.scaling_factor)
    encoder = Encoder(pipe, Path("/nonexistent"), pipe.tokenizer_2.model_max_length)
    texts = {}
    for _, text in scenes:
        if text not in texts:
            prompt, pooled = encoder.encode(text)
            texts[text] = (prompt, pooled)
    embeds = torch.stack([texts[t][0] for _, t in scenes])
    pooled = torch.stack([texts[t][1] for _, t in scenes])
    return torch.cat(latents), embeds, pooled


def train_transformer(pipe, steps: int, count: int = 3000, seed: int = 3, log=print,
                      lr: float = 1e-3, batch_size: int = 16) -> float:
    """Every weight of the transformer, flow matching on the scenes (AdamW, one cycle)."""
    from ..train import flow

    x0_all, embeds_all, pooled_all = scene_dataset(pipe, count)
    transformer = pipe.transformer
    transformer.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps,
                                                   pct_start=0.05)
    generator = torch.Generator().manual_seed(seed)
    b, (h, w) = batch_size, x0_all.shape[2:]
    img_ids = flow.image_ids(h, w, torch.device("cpu"), torch.float32)
    txt_ids = flow.text_ids(embeds_all.shape[1], torch.device("cpu"), torch.float32)
    start, losses = time.monotonic(), []
    for step in range(steps):
        index = torch.randint(len(x0_all), (b,), generator=generator)
        x0, embeds, pooled = x0_all[index], embeds_all[index], pooled_all[index]
        sigmas = flow.sample_sigmas("sigmoid", b, generator, (h // 2) * (w // 2))
        noise = torch.randn(x0.shape, generator=generator)
        guidance = 1 + 4 * torch.rand(b, generator=generator)
        pred = transformer(hidden_states=flow.pack(flow.noisy_latents(x0, noise, sigmas)),
                           timestep=sigmas, guidance=guidance, pooled_projections=pooled,
                           encoder_hidden_states=embeds, txt_ids=txt_ids, img_ids=img_ids,
                           return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(flow.unpack(pred, h, w),
                                            flow.velocity_target(x0, noise))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % 250 == 0 or step == steps - 1:
            log(f"transformer step {step}/{steps} loss {np.mean(losses[-250:]):.4f} "
                f"({time.monotonic() - start:.0f} s)", flush=True)
    transformer.eval().requires_grad_(False)
    return float(np.mean(losses[-250:]))


def main() -> None:
    from safetensors.torch import save_file

    from .demo import build_demo_pipeline, demo_vae

    parser = argparse.ArgumentParser(description="train the demo model's VAE and transformer")
    parser.add_argument("--vae-steps", type=int, default=0, help="0: keep the shipped VAE")
    parser.add_argument("--steps", type=int, default=6000, help="transformer steps")
    parser.add_argument("--more", action="store_true",
                        help="continue from the shipped transformer (at half the rate)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    WEIGHTS.mkdir(exist_ok=True)
    if args.vae_steps:
        vae = demo_vae()
        train_vae(vae, args.vae_steps)
        shift, scale = latent_statistics(vae)
        save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, VAE_FILE,
                  metadata={"shift_factor": repr(shift), "scaling_factor": repr(scale),
                            "steps": str(args.vae_steps)})
        print(f"wrote {VAE_FILE} (shift {shift:.4f}, scale {scale:.4f})", flush=True)
    pipe = build_demo_pipeline(pretrained_transformer=args.more)
    before = 0
    if args.more:
        from safetensors import safe_open

        with safe_open(str(TRANSFORMER_FILE), framework="pt") as handle:
            before = int((handle.metadata() or {}).get("steps", 0))
    train_transformer(pipe, args.steps, count=6000 if args.more else 3000, seed=args.seed,
                      lr=5e-4 if args.more else 1e-3, batch_size=args.batch)
    # Stored in float16 (half the size; the weights are small and well inside its range).
    state = {k: v.half().contiguous() for k, v in pipe.transformer.state_dict().items()}
    save_file(state, TRANSFORMER_FILE, metadata={"steps": str(before + args.steps)})
    print(f"wrote {TRANSFORMER_FILE}", flush=True)


if __name__ == "__main__":
    main()
