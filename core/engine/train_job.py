"""A `train` job: the Trainer on the engine's model, with metrics, samples and outputs written
to the store, and prompts queued meanwhile rendered between steps."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..store import DONE, Job, Store, StoreError
from . import generate_job

if TYPE_CHECKING:
    from ..train.trainer import StepMetrics, Trainer
    from .loop import Engine


class RunRecorder:
    """What a training reports, written to the store under its job: each step's numbers, each
    validation measure, each sample with its recipe. The engine's jobs and a training in a
    terminal (terminal_job.py) record the same rows, so the UI shows both alike."""

    def __init__(self, store: Store, job_id: int):
        self.store, self.job_id = store, job_id
        self.trainer: Trainer | None = None

    def on_step(self, m: StepMetrics) -> None:
        self.store.add_metric(self.job_id, m.step, loss=m.loss, lr=m.lr, grad_norm=m.grad_norm,
                              seconds=m.seconds, images_per_s=m.images_per_s,
                              memory_gb=m.gpu_memory_gb)
        self.store.update_job(self.job_id, step=m.step)

    def on_validation(self, step: int, loss: float) -> None:
        self.store.add_validation(self.job_id, step, loss)

    def on_sample(self, step: int, paths: list[Path]) -> None:
        """Each sample with what made it, so the UI can show it, reuse its prompt, re-make it."""
        from ..train.samples import sample_recipe

        trainer = self.trainer
        for index, path in enumerate(paths):
            recipe = {"step": step} if trainer is None else sample_recipe(trainer, step, index)
            self.store.add_output(self.job_id, path, "sample", recipe)


class TrainJob(RunRecorder):
    """One engine training job's callbacks: what the Trainer reports goes to the store; between
    steps the engine's controls are obeyed and a queued prompt may render."""

    def __init__(self, engine: Engine, job: Job):
        super().__init__(engine.store, job.id)
        self.engine, self.job = engine, job
        self.verdict: str | None = None  # "cancel" or "stop" once the job must end

    def should_stop(self) -> bool:
        self.verdict = self.engine.between_steps(self.job.id)
        if self.verdict is None:
            generate_job.between_training_steps(self.engine, self.trainer)
        return self.verdict is not None

    def log(self, text: str) -> None:
        self.engine.event(text, job=self.job.id)


def settle_run(engine: Engine, job: Job, configured: int) -> Job:
    """Fix, and store in the job, which run it trains and to which step, before the first step:
    a resume after a crash then continues this run, aiming at the same total. A new job gets
    a new run; a resume or a continue takes the run it names, else the latest; a continued run
    trains `steps` more from where that run ended."""
    from ..train.checkpoint import latest_run, list_checkpoints, new_run, recorded_total

    params = dict(job.params)
    root = engine.ws.checkpoints
    if not params.get("run"):
        latest = latest_run(root) if params.get("resume") else None
        params["run"] = (latest or new_run(root)).name
    # A resume given no count aims where its run aimed (a continue's count is steps more).
    aimed = (recorded_total(root / params["run"])
             if params.get("resume") and not params.get("continue") else None)
    steps = int(params.get("steps") or aimed or configured)
    if params.get("continue"):
        done = list_checkpoints(root / params["run"])
        steps += done[-1].step if done else 0
        params["continue"] = False
    params["steps"] = steps
    engine.store.update_job(job.id, params=params, total=steps)
    return replace(job, params=params)


def run(engine: Engine, job: Job) -> str:
    from ..train.state import choose_run
    from ..train.trainer import Trainer  # torch is imported here, when a GPU job starts

    config = engine.ws.config()
    job = settle_run(engine, job, config.train.steps)
    hooks = TrainJob(engine, job)
    trainer = Trainer(engine.ws, config, on_step=hooks.on_step, should_stop=hooks.should_stop,
                      log=hooks.log, on_sample=hooks.on_sample, owner=engine.model,
                      on_validation=hooks.on_validation)
    hooks.trainer = trainer
    try:
        # A resumed run measures the photos it measured before (its name checked first).
        trainer.prepare(choose_run(engine.ws.checkpoints, trainer.team, True, job.params["run"])
                        if job.params.get("resume") else None)
        if trainer.loaded_model:
            engine.model_loaded(trainer.source.spec, trainer.device)
        result = trainer.run(steps=job.params["steps"], resume=bool(job.params.get("resume")),
                             run=job.params["run"])
    except StoreError as exc:  # the database's disk filled while the run wrote its numbers
        stopped = trainer.where_it_stopped()
        if not stopped:
            raise
        raise StoreError(f"{exc}. {stopped}") from None
    finally:
        trainer.release()  # the model stays loaded, ready for the next job
    if result.stopped:
        return engine.ended(hooks.verdict)
    engine.store.add_output(job.id, result.lora_path, "lora", {"step": result.step})
    engine.store.update_job(job.id, result={"lora": str(result.lora_path), "step": result.step,
                                            "run": result.run})
    return DONE
