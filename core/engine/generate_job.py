"""A `generate` job: its recipes rendered on the owner's warm pipeline; and a queued prompt
rendered between two training steps on the model being trained, the LoRA as it is now."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..store import CANCELLED, DONE, FAILED, QUEUED, Job, Store
from .failures import explain_failure

if TYPE_CHECKING:
    from ..generate.recipe import Recipe
    from ..models.owner import ModelOwner
    from ..train.trainer import Trainer
    from ..workspace import Workspace
    from .loop import Engine


def image_saved(engine: Host, job_id: int) -> Callable[[int, Path, Recipe], None]:
    def on_image(index: int, path: Path, recipe: Recipe) -> None:
        engine.store.add_output(job_id, path, "image", json.loads(recipe.to_json()))
        engine.store.update_job(job_id, step=index + 1)
    return on_image


def denoise_hook(engine: Host, job_id: int) -> Callable[[int, int], bool]:
    def on_step(step: int, total: int) -> bool:
        return engine.between_steps(job_id) is not None
    return on_step


def run(engine: Engine, job: Job) -> str:
    from ..generate.generator import Cancelled, plan_for, run_request
    from ..generate.request import complete_request, request_from_params
    from ..models.autocompile import for_generation
    from ..models.resolve import resolve_model

    request = complete_request(engine.ws, request_from_params(job.params))
    base = request.recipe
    recipes = request.expand()
    for recipe in recipes:
        recipe.check()
    # An interrupted job resumes at the image it reached: those already saved are kept.
    done = [Path(o.path) for o in engine.store.outputs(job.id) if o.kind == "image"]
    engine.store.update_job(job.id, total=len(recipes), step=len(done))
    source = resolve_model(base.model)
    plan = plan_for(engine.ws, source, recipes)
    fresh = not engine.model.resident(source, None, plan.quantize)
    generator = engine.model.generator(source, plan)
    compiled = for_generation(generator.pipe.transformer,
                              engine.ws.config(check_photos=False).generate.compile,
                              generator.device, source.spec)
    if fresh:
        engine.model_loaded(base.model, generator.device)
        engine.event(f"generation: {plan.reason}; {compiled}")
    try:
        paths = run_request(generator, engine.ws, recipes, job.id, image_saved(engine, job.id),
                            on_denoise_step=denoise_hook(engine, job.id), done=done)
    except Cancelled:
        return engine.ended(None)
    engine.store.update_job(job.id, result={"images": [str(p) for p in paths]})
    return DONE


def fits_training(job: Job, model: str) -> bool:
    """Plain text-to-image on `model`, the one being trained, with the workspace LoRA or none,
    can share the trainer's pipeline."""
    from ..generate.request import request_from_params

    try:
        request = request_from_params(job.params)
    except (KeyError, TypeError, ValueError):
        return False
    recipe = request.recipe
    return (recipe.model in ("", model) and not recipe.init_image
            and not request.sweep  # other checkpoints' LoRAs wait for the model to be free
            and all(lora.name in ("", "workspace") for lora in recipe.loras))


class Host(Protocol):
    """Who trains and renders between steps: the engine, or a training in a terminal."""

    ws: Workspace
    store: Store
    model: ModelOwner
    stamp: dict  # params a job it takes is marked with (a terminal's pid)

    def event(self, message: str, level: str = "info", job: int | None = None) -> None: ...

    def between_steps(self, job_id: int) -> str | None: ...


def between_training_steps(engine: Host, trainer: Trainer) -> None:
    """Run one queued prompt on the model being trained, with the LoRA as it is now: in eval
    mode, without gradients, the RNGs restored, so the loss curve is unchanged. `engine` is
    whoever trains: the engine, or a training in a terminal."""
    import torch

    from ..generate.generator import Cancelled, run_request
    from ..generate.request import complete_recipe, request_from_params

    store = engine.store
    if store.setting("queue_paused") == "1":
        return
    job = next((j for j in store.jobs((QUEUED,))
                if j.kind == "generate" and fits_training(j, trainer.config.model)), None)
    # Stamped with who renders it, so a host that dies mid-render leaves a job others requeue.
    if job is None or not store.take(job.id, {**job.params, **engine.stamp}):
        return
    request = request_from_params(job.params)
    # No LoRA asked for renders the base: the live adapter at scale 0.
    scale = next((lora.scale for lora in request.recipe.loras), 0.0)
    base = replace(request.recipe, loras=(), model=trainer.config.model)
    recipes = replace(request, recipe=complete_recipe(engine.ws, base)).expand()
    # One that a stopped training gave back resumes at the image it reached.
    done = [Path(o.path) for o in store.outputs(job.id) if o.kind == "image"]
    store.update_job(job.id, total=len(recipes), step=len(done))
    engine.event(f"job {job.id} (generate) runs at training step {trainer.step}", job=job.id)
    transformer = trainer.pipe.transformer
    transformer.eval()
    try:
        with torch.random.fork_rng(devices=[]), lora_scale(transformer, scale):
            generator = engine.model.training_generator(trainer)
            paths = run_request(generator, engine.ws, recipes, job.id,
                                image_saved(engine, job.id),
                                on_denoise_step=denoise_hook(engine, job.id),
                                training_step=trainer.step, done=done)
    except Cancelled:
        if store.control(job.id) == "cancel":
            store.update_job(job.id, state=CANCELLED, finished=time.time(), control=None)
        else:  # the training stopped (Ctrl-C, the engine shutting down): not the prompt
            store.update_job(job.id, state=QUEUED, control=None, params=job.params)
            engine.event(f"job {job.id} goes back to the queue: the training rendering it "
                         "stopped", job=job.id)
        return
    except Exception as exc:
        message = explain_failure(exc)
        store.update_job(job.id, state=FAILED, error=message, finished=time.time(),
                         control=None)
        engine.event(f"job {job.id} failed: {message}", "error", job.id)
        return
    finally:
        transformer.train()
    store.update_job(job.id, state=DONE, finished=time.time(), control=None,
                     result={"images": [str(p) for p in paths],
                             "training_step": trainer.step})
    engine.event(f"job {job.id} done at training step {trainer.step}", job=job.id)


@contextlib.contextmanager
def lora_scale(transformer, scale: float):
    """Use the LoRA being trained at `scale`, then put it back at 1."""
    if scale == 1.0:
        yield
        return
    from ..train.lora import ADAPTER

    transformer.set_adapters([ADAPTER], [scale])
    try:
        yield
    finally:
        transformer.set_adapters([ADAPTER], [1.0])
