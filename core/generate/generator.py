"""Making images: a FluxPipeline kept warm, LoRAs stacked with per-LoRA scales, img2img and
inpainting through pipelines that share the loaded modules, and PNGs that carry their recipe.

Switching LoRAs or scales never reloads the base model: each LoRA file is loaded once as a
named adapter and `set_adapters` picks the ones a recipe uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..models.resolve import ModelSource
from ..workspace import Workspace
from .images import job_sheet, save_image
from .recipe import LoraRef, Recipe, RecipeError


class Generator:
    """A warm pipeline for one base model, and the LoRAs loaded into it so far."""

    def __init__(self, source: ModelSource, pipe, encode: Callable[[str], dict] | None = None,
                 precision: Callable[[], AbstractContextManager] = nullcontext):
        """`pipe` is lent by the model owner; with `encode` (a trainer's `pipe_text`: a
        prompt's text inputs from its cache) the pipeline's own LoRA is used as it is, in the
        trainer's `precision`."""
        self.source = source
        self.pipe = pipe
        self.encode = encode
        self.precision = precision
        self.device = self.pipe.transformer.device
        self.adapters: dict[str, str] = {}  # file sha256 -> adapter name
        self._img2img = None
        self._inpaint = None

    # -- LoRAs ------------------------------------------------------------------------------

    def use_loras(self, loras: tuple[LoraRef, ...]) -> None:
        for lora in loras:
            if lora.sha256 not in self.adapters:
                self._check_family(lora)
                name = f"lora_{lora.sha256[:12]}"
                self._load_lora(lora, name)
                self.adapters[lora.sha256] = name
        if not loras:
            if self.adapters:
                self.pipe.disable_lora()
            return
        self.pipe.enable_lora()
        self.pipe.set_adapters([self.adapters[lora.sha256] for lora in loras],
                               [lora.scale for lora in loras])

    def _check_family(self, lora: LoraRef) -> None:
        """A FLUX.2 LoRA on a FLUX.1 model (or the reverse) names no layer there: say so,
        rather than render the base and call it the LoRA's image."""
        from safetensors import safe_open

        from ..train.comfy_flux2 import is_flux2_layout

        try:
            with safe_open(lora.path, framework="pt") as handle:
                modules = [key.rsplit(".lora_", 1)[0] for key in handle.keys()]
        except Exception as exc:  # any damage: refuse in words
            raise RecipeError(f"LoRA {lora.name}: cannot read {lora.path} ({exc})") from None
        family = "flux2" if is_flux2_layout(modules) else "flux1"
        if family != self.source.model.family:
            words = {"flux1": "FLUX.1", "flux2": "FLUX.2 [klein]"}
            raise RecipeError(f"LoRA {lora.name} was trained on {words[family]}; "
                              f"{self.source.model.title} cannot use it")

    def _load_lora(self, lora: LoraRef, name: str) -> None:
        """Load one LoRA as adapter `name`, or refuse it in words and leave the pipeline as it
        was: a warm engine keeps rendering everyone else's prompts after a bad file."""
        from ..train.lora import adapter_is_finite, delete_adapter

        components = [getattr(self.pipe, c, None) for c in ("transformer", "text_encoder")]
        components = [c for c in components if c is not None]
        try:
            with diffusers_silent():  # it logs the failure we are about to put in words
                self.pipe.load_lora_weights(lora.path, adapter_name=name)
            self._full_precision_lora(name, lora.path)
            if not all(adapter_is_finite(c, name) for c in components):
                raise RecipeError(f"LoRA {lora.name} holds weights that are not numbers "
                                  "(NaN or infinity): it was saved from a training that "
                                  "diverged, or it is damaged")
        except Exception as exc:
            for component in components:
                delete_adapter(component, name)
            if isinstance(exc, RecipeError):
                raise
            raise RecipeError(f"LoRA {lora.name} does not fit {self.source.model.title}: "
                              f"{unfit_reason(exc)}") from None

    def _full_precision_lora(self, name: str, path: str) -> None:
        """Over a transformer stored in fp8 the loaded LoRA came in fp8 too: put it back in the
        compute precision and reload its weights from the file."""
        from safetensors.torch import load_file

        from ..models.load import stored_in_fp8
        from ..train.lora import adapter_to, set_lora_weights

        transformer = self.pipe.transformer
        if not stored_in_fp8(transformer):
            return
        adapter_to(transformer, name, self.pipe.vae.dtype)
        state = {k: v for k, v in load_file(path).items() if k.startswith("transformer.")}
        set_lora_weights({"transformer": transformer}, state, adapter=name)

    # -- images -----------------------------------------------------------------------------

    def render(self, recipe: Recipe,
               on_denoise_step: Callable[[int, int], bool] | None = None) -> Image.Image:
        """One image. `on_denoise_step(i, total)` may return True to cancel."""
        recipe.check()
        generator = torch.Generator("cpu").manual_seed(recipe.seed)
        kwargs = dict(width=recipe.width, height=recipe.height,
                      num_inference_steps=recipe.steps, guidance_scale=recipe.guidance,
                      generator=generator, max_sequence_length=self.source.max_sequence_length)
        if self.encode is None:
            self.use_loras(recipe.loras)
            kwargs["prompt"] = recipe.prompt
        else:
            kwargs.update(self.encode(recipe.prompt))
        if on_denoise_step is not None:
            kwargs["callback_on_step_end"] = _step_callback(on_denoise_step, recipe.steps)
        if recipe.step_cache and self.source.model.family == "flux2":
            from .request import STEP_CACHE_FLUX2

            raise RecipeError(STEP_CACHE_FLUX2)
        pipe = self.pipe
        if recipe.refs:
            if self.source.model.family != "flux2":
                raise RecipeError(f"reference images need FLUX.2 [klein]; "
                                  f"{self.source.model.title} cannot edit with them")
            kwargs["image"] = [_load_rgb(path) for path in recipe.refs]
        if recipe.init_image:
            if recipe.refs:  # klein's inpainting pipeline takes them beside the start image
                kwargs["image_reference"] = kwargs["image"]
            kwargs["image"] = _load_rgb(recipe.init_image)
            kwargs["strength"] = recipe.strength
            if recipe.mask:
                kwargs["mask_image"] = _load_rgb(recipe.mask).convert("L")
                pipe = self._inpaint_pipe()
            elif self.family.img2img_pipeline is None:
                # FLUX.2 [klein] has no img2img pipeline: a white mask repaints every pixel,
                # starting from the start image noised to `strength`, which is img2img.
                kwargs["mask_image"] = Image.new("L", kwargs["image"].size, 255)
                pipe = self._inpaint_pipe()
            else:
                pipe = self._img2img_pipe()
            if self.family.img2img_pipeline is None:
                # Its inpainting pipeline keeps the start image's size: make it the recipe's.
                size = (recipe.width, recipe.height)
                kwargs["image"] = kwargs["image"].resize(size, Image.Resampling.LANCZOS)
                kwargs["mask_image"] = kwargs["mask_image"].resize(size, Image.Resampling.NEAREST)
        kwargs["output_type"] = "np"
        with torch.no_grad(), self.precision(), step_cache(self.pipe.transformer,
                                                            recipe.step_cache):
            pixels = pipe(**kwargs).images[0]
        return picture(pixels, recipe)

    @property
    def family(self):
        from ..models.family import family_of

        return family_of(self.source.model)

    def _img2img_pipe(self):
        if self._img2img is None:
            self._img2img = self._sibling(self.family.img2img_pipeline)
        return self._img2img

    def _inpaint_pipe(self):
        if self._inpaint is None:
            self._inpaint = self._sibling(self.family.inpaint_pipeline)
        return self._inpaint

    def _sibling(self, name: str):
        """Another diffusers pipeline sharing this one's loaded modules."""
        import diffusers

        pipe = getattr(diffusers, name).from_pipe(self.pipe)
        pipe.set_progress_bar_config(disable=True)
        return pipe


@contextmanager
def diffusers_silent() -> Iterator[None]:
    from diffusers.utils import logging as dlogging

    level = dlogging.get_verbosity()
    dlogging.set_verbosity(dlogging.CRITICAL + 1)
    try:
        yield
    finally:
        dlogging.set_verbosity(level)


def unfit_reason(exc: Exception) -> str:
    """Why diffusers or peft could not load a LoRA, in words (theirs name internals)."""
    text = str(exc)
    if "size mismatch" in text:
        return "its layers have other sizes than this model's (was it made for another model?)"
    if "not found in the base model" in text:
        return "none of its layers is in this model (was it made for another model?)"
    if isinstance(exc, KeyError):
        return f"it is incomplete or in a layout lorabooth cannot read (no {exc.args[0]!r})"
    line = next((line for line in text.splitlines() if line.strip()), type(exc).__name__)
    return line.strip()[:300]


def picture(pixels: np.ndarray, recipe: Recipe) -> Image.Image:
    """A pipeline's float output as an image, refused when the model produced no numbers:
    diffusers would save it as a black picture."""
    from diffusers.image_processor import VaeImageProcessor

    if not np.isfinite(pixels).all():
        loras = ", ".join(f"{lora.name} at scale {lora.scale:g}" for lora in recipe.loras)
        why = (f"the LoRA ({loras}) drives the model out of range; try a smaller scale"
               if loras else "the model's weights or the precision overflowed")
        raise RecipeError(f"the image came out as NaN (not a number), so it was not saved: "
                          f"{why}")
    return VaeImageProcessor.numpy_to_pil(pixels)[0]


def plan_for(ws: Workspace, source: ModelSource, recipes: Sequence[Recipe]):
    """The memory plan for rendering `recipes` here (precision, fp8/NF4 storage, offload),
    sized for the largest image and the most reference images."""
    from ..models.load import default_device
    from ..models.sizes import generation_plan

    side = max(max(r.width, r.height) for r in recipes)
    return generation_plan(ws.config(check_photos=False), source.path, side,
                           context_tokens(source, recipes), default_device())


def context_tokens(source: ModelSource, recipes: Sequence[Recipe]) -> int:
    """Tokens the transformer attends to beside the image's own: the prompt's, and each
    reference image's, counted at the 1 MP to which klein's pipeline scales a larger one
    (4,096 tokens: four references take four times a 1024 px image's)."""
    from ..memory import image_tokens

    return source.max_sequence_length + max(len(r.refs) for r in recipes) * image_tokens(1024)


@contextmanager
def step_cache(transformer: torch.nn.Module, threshold: float) -> Iterator[None]:
    """diffusers' first-block cache on `transformer` for one render, and gone after it: the
    same transformer trains between renders, and its next render starts from no cached step."""
    if threshold <= 0:
        yield
        return
    from diffusers.hooks import FirstBlockCacheConfig

    transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        # FLUX.1's img2img and inpainting pipelines call the transformer outside any cache
        # context, which the cache's state needs; the others set their own per step.
        with transformer.cache_context("render"):
            yield
    finally:
        transformer.disable_cache()


class Cancelled(Exception):
    pass


def _step_callback(report: Callable[[int, int], bool], total: int):
    def callback(pipe, step: int, timestep, kwargs):
        if report(step + 1, total):
            raise Cancelled
        return kwargs
    return callback


def _load_rgb(path: str) -> Image.Image:
    """An init image, mask or reference, upright and RGB; a FIFO, a device, a bomb or a broken
    file is a RecipeError that names it (never a hang)."""
    from ..dataset.files import MAX_FILE_BYTES, open_image
    from ..fsutil import read_regular_file

    try:
        data, _ = read_regular_file(Path(path), MAX_FILE_BYTES)
        return open_image(data)
    except (OSError, ValueError) as exc:
        raise RecipeError(f"cannot read image {path}: {exc}") from None


def run_request(generator: Generator, ws: Workspace, request_recipes: list[Recipe],
                job_id: int | None, on_image: Callable[[int, Path, Recipe], None],
                on_denoise_step: Callable[[int, int], bool] | None = None,
                training_step: int | None = None, done: Sequence[Path] = ()) -> list[Path]:
    """Render and save the recipes of a request after the `done` ones (saved by an earlier,
    interrupted try); a contact sheet of them all when there are several."""
    folder = ws.outputs / "images"
    paths = list(done)
    # Saved inline: a writer thread overlapping the next render was slower on a small CPU
    # (it competes with torch's own threads), and on a GPU the save is noise next to a render.
    for index, recipe in enumerate(request_recipes):
        if index < len(done):
            continue
        if training_step is not None:
            recipe = replace(recipe, training_step=training_step)
        image = generator.render(recipe, on_denoise_step)
        path = save_image(image, recipe, folder, job_id, index)
        paths.append(path)
        on_image(index, path, recipe)
    if len(paths) > 1:
        name = paths[0].name.replace("-00.png", "-sheet.png")
        job_sheet(paths, folder / "sheets" / name, request_recipes)
    return paths
