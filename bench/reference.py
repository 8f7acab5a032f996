"""Run diffusers' own `train_dreambooth_lora_flux.py` unchanged, as the baseline of bench.train.

The script imports torchvision for five PIL transforms (resize, crops, flip, to-tensor and
normalise). Where no torchvision wheel matches the pinned torch (this CPU-only machine), this
runner gives it a minimal stand-in for exactly those, registered only after transformers and
diffusers have looked for a real torchvision (so they do not take the stand-in for one):

    python -m bench.reference PATH/TO/train_dreambooth_lora_flux.py --the-script's-arguments

Get the script from the diffusers release you have installed:
https://github.com/huggingface/diffusers/blob/v<version>/examples/dreambooth/train_dreambooth_lora_flux.py
"""

from __future__ import annotations

import random
import runpy
import sys
import types

import numpy as np
import torch
from PIL import Image


class InterpolationMode:
    BILINEAR = Image.Resampling.BILINEAR


class Resize:
    """The shorter side to `size`, as torchvision does for an int size."""

    def __init__(self, size: int, interpolation=InterpolationMode.BILINEAR):
        self.size, self.interpolation = size, interpolation

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        scale = self.size / min(w, h)
        return image.resize((max(1, round(w * scale)), max(1, round(h * scale))),
                            self.interpolation)


def crop(image: Image.Image, top: int, left: int, height: int, width: int) -> Image.Image:
    return image.crop((left, top, left + width, top + height))


class CenterCrop:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        top, left = round((h - self.size) / 2), round((w - self.size) / 2)
        return crop(image, top, left, self.size, self.size)


class RandomCrop(CenterCrop):
    @staticmethod
    def get_params(image: Image.Image, output_size: tuple[int, int]) -> tuple[int, int, int, int]:
        w, h = image.size
        th, tw = output_size
        return random.randint(0, h - th), random.randint(0, w - tw), th, tw

    def __call__(self, image: Image.Image) -> Image.Image:
        return crop(image, *self.get_params(image, (self.size, self.size)))


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image: Image.Image) -> Image.Image:
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if random.random() < self.p \
            else image


class ToTensor:
    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.asarray(image, dtype=np.float32) / 255.0
        return torch.from_numpy(array.copy()).permute(2, 0, 1)


class Normalize:
    def __init__(self, mean, std):
        self.mean, self.std = mean[0], std[0]

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        return (tensor - self.mean) / self.std


class Compose:
    def __init__(self, steps):
        self.steps = steps

    def __call__(self, value):
        for step in self.steps:
            value = step(value)
        return value


def install_torchvision_standin() -> None:
    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    for thing in (InterpolationMode, Resize, CenterCrop, RandomCrop, RandomHorizontalFlip,
                  ToTensor, Normalize, Compose):
        setattr(transforms, thing.__name__, thing)
    functional.crop = crop
    transforms.functional = functional
    package.transforms = transforms
    sys.modules.update({"torchvision": package, "torchvision.transforms": transforms,
                        "torchvision.transforms.functional": functional})


def main() -> None:
    script, *arguments = sys.argv[1:]
    import diffusers  # noqa: F401 - each notes now that no real torchvision is installed
    import transformers  # noqa: F401

    try:
        import torchvision  # noqa: F401
    except ImportError:
        install_torchvision_standin()
    sys.argv = [script, *arguments]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
