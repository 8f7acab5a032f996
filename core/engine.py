"""The engine: the process that owns the GPU and runs the workspace's jobs, one at a time.

It is started detached (its own session, stdio to `.lorabooth/engine.log`) so it outlives the
UI and the SSH link. An exclusive lock on `.lorabooth/engine.lock` makes a second engine refuse;
the kernel drops the lock when a process dies, so a stale lock is simply taken over. It imports
torch only when a job needs it. SIGTERM finishes the step, checkpoints, marks the job to
resume, and exits 0; after a kill -9 the next start resumes the job from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import describe_os_error
from .store import CANCELLED, DONE, FAILED, PAUSED, QUEUED, RUNNING, Job, Store, StoreError
from .workspace import Workspace

LOCK_FILE = "engine.lock"
LOG_FILE = "engine.log"
LOG_ROTATE_BYTES = 5 * 2**20
IDLE_POLL = 0.05  # seconds between looks at the queue when idle: the pick-up latency
HEARTBEAT = 1.0


class EngineRunning(Exception):
    def __init__(self, pid: int | None):
        self.pid = pid
        super().__init__(f"an engine already runs for this workspace (pid {pid})")


# ---------------------------------------------------------------------------------------------
# the lock


class EngineLock:
    def __init__(self, ws: Workspace):
        self.path = ws.state / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise EngineRunning(read_lock_pid(self.path)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            self.fd = None


def read_lock_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip() or 0) or None
    except (OSError, ValueError):
        return None


def running_pid(ws: Workspace) -> int | None:
    """The pid of the engine holding the workspace's lock, or None when none does."""
    path = ws.state / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return read_lock_pid(path) or -1
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# starting, stopping, status (called by the CLI and the UI)


def _rotate_log(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_suffix(".log.1"))


def start_detached(ws: Workspace, wait: float = 20.0) -> tuple[int, bool]:
    """Start the engine in its own session. Returns (pid, started_now)."""
    pid = running_pid(ws)
    if pid:
        return pid, False
    ws.state.mkdir(parents=True, exist_ok=True)
    log = ws.state / LOG_FILE
    _rotate_log(log)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "lorabooth.core.engine", str(ws.root)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
            close_fds=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pid = running_pid(ws)
        if pid:
            return pid, pid == proc.pid
        if proc.poll() is not None:
            pid = running_pid(ws)
            if pid:  # lost a race with another start: that engine runs
                return pid, False
            raise RuntimeError(f"the engine exited at once (code {proc.returncode}); "
                               f"see {log}")
        time.sleep(0.02)
    raise RuntimeError(f"the engine did not start within {wait:.0f} s; see {log}")


def stop(ws: Workspace, wait: float = 60.0) -> int | None:
    """SIGTERM the engine and wait for it to checkpoint and exit. Returns its pid."""
    pid = running_pid(ws)
    if not pid or pid < 0:
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and running_pid(ws):
        time.sleep(0.05)
    return pid


@dataclass
class Status:
    pid: int | None
    state: str  # running (a job), idle, stopped
    job: Job | None
    step: int | None

    def public(self) -> dict:
        return {"pid": self.pid, "state": self.state,
                "job": self.job.public() if self.job else None, "step": self.step}


def status(ws: Workspace, store: Store | None = None) -> Status:
    store = store or Store(ws.db_path)
    pid = running_pid(ws)
    if not pid:
        return Status(None, "stopped", None, None)
    row = store.engine()
    job = store.job(row.job) if row and row.job else None
    state = "running" if job and job.state in (RUNNING, PAUSED) else "idle"
    return Status(pid, state, job, job.step if job else None)


# ---------------------------------------------------------------------------------------------
# the engine process


class Stop(Exception):
    """Raised inside a job when the engine is asked to shut down."""


class Engine:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self.store = Store(ws.db_path)
        self.lock = EngineLock(ws)
        self.stopping = False
        self.current: Job | None = None
        self.watcher = None
        self.generator = None  # a warm pipeline (Generator), kept between jobs
        self.new_photos = 0
        self.dataset_primed = False  # the watcher's first report is the folder as it was

    def log(self, text: str) -> None:
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)

    def event(self, message: str, level: str = "info", job: int | None = None) -> None:
        self.log(f"{level}: {message}")
        with contextlib.suppress(StoreError):
            self.store.event(message, level, job, kind="engine")

    def on_sigterm(self, signum, frame) -> None:
        self.stopping = True

    def run(self) -> int:
        self.lock.acquire()
        signal.signal(signal.SIGTERM, self.on_sigterm)
        signal.signal(signal.SIGINT, self.on_sigterm)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the terminal that started us may go
        self.store.set_engine(pid=os.getpid(), state="idle", job=None, started=time.time())
        self.event(f"engine started (pid {os.getpid()})")
        self.recover()
        self.watch_photos()
        last_beat = 0.0
        try:
            while not self.stopping:
                job = None if self.store.setting("queue_paused") == "1" \
                    else self.store.next_queued()
                if job is None:
                    if time.monotonic() - last_beat > HEARTBEAT:
                        self.store.set_engine(state="idle", job=None)
                        last_beat = time.monotonic()
                    time.sleep(IDLE_POLL)
                    continue
                try:
                    self.run_job(job)
                except StoreError as exc:
                    # The database itself failed (full or read-only disk): say so and keep
                    # running, so the user can fix it and carry on.
                    self.log(f"error: {exc}")
                    time.sleep(1.0)
        finally:
            if self.watcher is not None:
                self.watcher.stop()
            with contextlib.suppress(StoreError):
                self.store.set_engine(state="stopped", job=None, pid=None)
            self.event("engine stopped")
            self.lock.release()
        return 0

    def watch_photos(self) -> None:
        """Watch the photo folder; every change is a `dataset` event for the UI."""
        from .config import ConfigError
        from .dataset import ScanOptions
        from .watch import FolderWatcher

        try:
            config = self.ws.config(check_photos=False)
        except ConfigError as exc:
            self.event(f"not watching the photos: {exc}", "warning")
            return
        options = ScanOptions(resolution=min(config.train.resolution), trigger=config.trigger)
        self.watcher = FolderWatcher(config.photos_dir(self.ws.root), self.on_dataset_change,
                                     options, self.ws.cache)
        self.watcher.start()

    def on_dataset_change(self, change) -> None:
        """Runs on the watcher's thread; the store gives it its own connection."""
        parts = []
        for verb, names in (("added", change.added), ("removed", change.removed),
                            ("changed", change.changed)):
            if names:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more"
                                                if len(names) > 5 else "")
                parts.append(f"{len(names)} {verb}: {shown}")
        usable = len(change.scan.usable())
        self.store.event(f"photos: {'; '.join(parts)} ({usable} usable)", "info",
                         kind="dataset")
        if self.dataset_primed:
            self.maybe_continue_training(len(change.added))
        self.dataset_primed = True

    def maybe_continue_training(self, added: int) -> None:
        from .config import ConfigError

        try:
            every = self.ws.config(check_photos=False).train.auto_continue_after
        except ConfigError:
            return
        if not every:
            return
        self.new_photos += added
        if self.new_photos >= every and not self.store.jobs(("queued", "running", "paused")):
            self.new_photos = 0
            job = self.store.add_job("train", {"resume": True, "continue": True})
            self.event(f"{every}+ new photos arrived: queued job {job} to continue training")

    def recover(self) -> None:
        """Jobs left running or paused by an engine that died are queued again; training
        resumes from its last checkpoint."""
        for job in self.store.jobs((RUNNING, PAUSED)):
            params = {**job.params, "resume": True}
            self.store.update_job(job.id, state=QUEUED, control=None, params=params)
            self.event(f"job {job.id} ({job.kind}) was interrupted at step {job.step}; "
                       "it will resume from its last checkpoint", "warning", job.id)

    def run_job(self, job: Job) -> None:
        self.current = job
        self.store.update_job(job.id, state=RUNNING, started=time.time(), error=None)
        self.store.set_engine(state="running", job=job.id)
        self.event(f"job {job.id} ({job.kind}) started", job=job.id)
        try:
            runner = {"train": self.run_train, "generate": self.run_generate}.get(job.kind)
            if runner is None:
                raise ValueError(f"unknown job kind {job.kind!r}")
            outcome = runner(job)
        except Stop:
            self.store.update_job(job.id, state=QUEUED, control=None,
                                  params={**job.params, "resume": True})
            self.event(f"job {job.id} will resume when the engine starts again", job=job.id)
        except Exception as exc:
            message = explain_failure(exc)
            self.log(traceback.format_exc())
            self.store.update_job(job.id, state=FAILED, error=message, finished=time.time(),
                                  control=None)
            self.event(f"job {job.id} failed: {message}", "error", job.id)
        else:
            self.store.update_job(job.id, state=outcome, finished=time.time(), control=None)
            self.event(f"job {job.id} {outcome}", job=job.id)
        finally:
            self.current = None
            self.store.set_engine(state="idle", job=None)

    # -- the per-step check every job makes -------------------------------------------------

    def checkpoint_hook(self, job_id: int) -> str | None:
        """Between two steps: obey pause (wait here, model in memory), cancel and shutdown.
        Returns "cancel" or "stop" when the job must end, None to carry on."""
        paused = False
        while True:
            if self.stopping:
                return "stop"
            control = self.store.control(job_id)
            if control == "cancel":
                return "cancel"
            if control == "pause":
                if not paused:
                    self.store.update_job(job_id, state=PAUSED)
                    self.event(f"job {job_id} paused", job=job_id)
                    paused = True
                time.sleep(IDLE_POLL)
                continue
            if paused:
                self.store.update_job(job_id, state=RUNNING)
                self.event(f"job {job_id} resumed", job=job_id)
            return None

    # -- training -----------------------------------------------------------------------------

    def run_train(self, job: Job) -> str:
        from .train import Trainer  # torch is imported here, when a GPU job starts

        config = self.ws.config()
        steps = int(job.params.get("steps") or config.train.steps)
        if job.params.get("continue"):
            # A continued run trains `steps` more from where the last one ended; the total is
            # fixed now so that a resume after a crash aims at the same step.
            from .checkpoint import latest_checkpoint

            last = latest_checkpoint(self.ws.checkpoints)
            steps += last.step if last else 0
            job = replace(job, params={**job.params, "steps": steps, "continue": False})
            self.store.update_job(job.id, params=job.params)
        self.store.update_job(job.id, total=steps)
        verdict: dict[str, str | None] = {"end": None}

        def on_step(m) -> None:
            self.store.add_metric(job.id, m.step, loss=m.loss, lr=m.lr, grad_norm=m.grad_norm,
                                  seconds=m.seconds, images_per_s=m.images_per_s,
                                  memory_gb=m.gpu_memory_gb)
            self.store.update_job(job.id, step=m.step)

        def on_sample(step: int, paths: list[Path]) -> None:
            for path in paths:
                self.store.add_output(job.id, path, "sample", {"step": step})

        def between_steps() -> bool:
            verdict["end"] = self.checkpoint_hook(job.id)
            if verdict["end"] is None:
                self.generate_between_steps(trainer)
            return verdict["end"] is not None

        # One copy of the model in memory: the warm generation pipeline trains, and comes back.
        warm = self.generator.pipe if self.generator is not None and \
            self.generator.source.spec == config.model else None
        self.drop_generator()
        trainer = Trainer(self.ws, config, on_step=on_step, should_stop=between_steps,
                          log=lambda text: self.event(text, job=job.id), on_sample=on_sample,
                          pipe=warm)
        try:
            return self._train(job, trainer, steps, verdict)
        finally:
            if trainer.pipe is not None:
                from .generate import Generator

                self.generator = Generator(trainer.source, pipe=trainer.release())

    def _train(self, job: Job, trainer, steps: int, verdict: dict) -> str:
        if trainer.pipe is None:
            trainer.prepare()
            if trainer.loaded_model:
                self._loaded(trainer.source.spec, trainer.device)
        result = trainer.run(steps=steps, resume=bool(job.params.get("resume")))
        if result.stopped:
            if verdict["end"] == "stop":
                raise Stop
            return CANCELLED
        self.store.add_output(job.id, result.lora_path, "lora", {"step": result.step})
        self.store.update_job(job.id, result={"lora": str(result.lora_path),
                                              "step": result.step})
        return DONE

    # -- generation ---------------------------------------------------------------------------

    def drop_generator(self) -> None:
        if self.generator is not None:
            self.generator = None
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def run_generate(self, job: Job) -> str:
        from .generate import Cancelled, complete_recipe, open_generator, run_request
        from .recipe import request_from_params

        request = request_from_params(job.params)
        base = complete_recipe(self.ws, request.recipe)
        recipes = replace(request, recipe=base).expand()
        for recipe in recipes:
            recipe.check()
        self.store.update_job(job.id, total=len(recipes), step=0)
        if self.generator is None or self.generator.source.spec != base.model:
            self.drop_generator()
            self.generator = open_generator(base.model)
            self._loaded(base.model, self.generator.device)
        try:
            paths = run_request(self.generator, self.ws, recipes, job.id,
                                self._image_saved(job.id),
                                on_denoise_step=self._denoise_hook(job.id))
        except Cancelled:
            if self.stopping:
                raise Stop from None
            return CANCELLED
        self.store.update_job(job.id, result={"images": [str(p) for p in paths]})
        return DONE

    def _loaded(self, model: str, device) -> None:
        from .models import describe_device

        self.store.set_engine(device=describe_device(device))
        self.event(f"model {model} loaded on {describe_device(device)}")

    def _image_saved(self, job_id: int):
        def on_image(index: int, path: Path, recipe) -> None:
            self.store.add_output(job_id, path, "image", json.loads(recipe.to_json()))
            self.store.update_job(job_id, step=index + 1)
        return on_image

    def _denoise_hook(self, job_id: int):
        def on_step(step: int, total: int) -> bool:
            return self.checkpoint_hook(job_id) is not None
        return on_step

    def generate_between_steps(self, trainer) -> None:
        """Run one queued prompt on the model being trained, with the LoRA as it is now: in
        eval mode, without gradients, the RNGs restored, so the loss curve is unchanged."""
        import torch

        from .generate import Cancelled, Generator, complete_recipe, run_request
        from .recipe import request_from_params

        if self.store.setting("queue_paused") == "1":
            return
        job = next((j for j in self.store.jobs((QUEUED,))
                    if j.kind == "generate" and self._fits_training(j, trainer)), None)
        if job is None:
            return
        request = request_from_params(job.params)
        base = replace(request.recipe, loras=(), model=trainer.config.model)
        scale = next((lora.scale for lora in request.recipe.loras), 1.0)
        recipes = replace(request, recipe=complete_recipe(self.ws, base)).expand()
        self.store.update_job(job.id, state=RUNNING, started=time.time(), total=len(recipes))
        self.event(f"job {job.id} (generate) runs at training step {trainer.step}", job=job.id)
        transformer = trainer.pipe.transformer
        transformer.eval()
        try:
            with torch.random.fork_rng(devices=[]), _lora_scale(transformer, scale):
                generator = Generator(trainer.source, pipe=trainer.pipe,
                                      encode=trainer.encoder.text)
                paths = run_request(generator, self.ws, recipes, job.id,
                                    self._image_saved(job.id),
                                    on_denoise_step=self._denoise_hook(job.id),
                                    training_step=trainer.step)
        except Cancelled:
            self.store.update_job(job.id, state=CANCELLED, finished=time.time(), control=None)
            return
        except Exception as exc:
            self.store.update_job(job.id, state=FAILED, error=explain_failure(exc),
                                  finished=time.time(), control=None)
            self.event(f"job {job.id} failed: {explain_failure(exc)}", "error", job.id)
            return
        finally:
            transformer.train()
        self.store.update_job(job.id, state=DONE, finished=time.time(), control=None,
                              result={"images": [str(p) for p in paths],
                                      "training_step": trainer.step})
        self.event(f"job {job.id} done at training step {trainer.step}", job=job.id)

    def _fits_training(self, job: Job, trainer) -> bool:
        """Plain text-to-image on the workspace's model and LoRA can share the trainer's."""
        from .recipe import request_from_params

        try:
            recipe = request_from_params(job.params).recipe
        except (KeyError, TypeError, ValueError):
            return False
        return (recipe.model in ("", trainer.config.model) and not recipe.init_image
                and all(lora.name in ("", "workspace") for lora in recipe.loras))


@contextlib.contextmanager
def _lora_scale(transformer, scale: float):
    """Use the LoRA being trained at `scale`, then put it back at 1."""
    if scale == 1.0:
        yield
        return
    from .lora import ADAPTER

    transformer.set_adapters([ADAPTER], [scale])
    try:
        yield
    finally:
        transformer.set_adapters([ADAPTER], [1.0])


def explain_failure(exc: BaseException) -> str:
    """One readable line for a failed job, with what to do about it."""
    name = type(exc).__name__
    if name == "OutOfMemoryError" or "out of memory" in str(exc).lower():
        return ("the GPU ran out of memory: lower train.resolution, train.batch_size or "
                "train.rank, or close other programs using the GPU")
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"the disk is full ({exc.filename or 'writing'}): free some space and retry"
    if isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return describe_os_error(exc)
    from .config import ConfigError
    from .models import ModelNotFound

    if isinstance(exc, ModelNotFound | ConfigError):
        return str(exc).replace("\n", " ")
    if type(exc).__name__ in ("TrainingError", "RecipeError"):
        return str(exc)
    return f"{name}: {exc}"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lorabooth.core.engine WORKSPACE", file=sys.stderr)
        return 2
    ws = Workspace.at(args[0])
    try:
        return Engine(ws).run()
    except EngineRunning as exc:
        print(f"lorabooth engine: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"lorabooth engine: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
