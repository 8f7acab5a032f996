"""`train.compile = "auto"`, decided by measurement on this kind of device.

Whether compiling pays depends on the device, the model and the run's length: on an H200 the
compiled blocks take a FLUX.1-dev step to 0.74x for ~30 s of compiling; on a 2-core CPU to
0.92x for ~32 s; and a short run never earns its compile back. So a run on a device and model
never measured trains its first steps eager, times them, and compiles only when the rest of the
run could pay for it by the priors below; the steps after the compile are timed too, and if the
compiled step is not faster the model goes back to eager. What was measured is kept in the user
cache (the eager and compiled step, the compile time), and later runs decide from it in one line
before their first step, no eager probe needed.

Several processes (`accelerate launch`) must agree, so they use the device's prior instead.
Generation's `auto` follows what training measured for the model on this kind of device (the
same blocks, forward only), else the device's default (`for_generation`).
"""

from __future__ import annotations

import json
import platform
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..fsutil import atomic_write_text, json_number, read_json
from .compile import WHAT, apply, not_compilable, uncompile
from .resolve import cache_root

# What compiling the repeated blocks gains and costs before this device has been measured:
# (fraction of an eager step saved, seconds to compile cold), from bench/results.
PRIORS = {"cuda": (0.25, 40.0), "cpu": (0.08, 35.0)}
SAMPLES = 5  # steps timed eager, and compiled after the compiling step
FASTER = 0.97  # a compiled step must be this fraction of an eager one or better
RECORD = "compile-measured.json"


@dataclass
class Measured:
    eager_s: float
    compiled_s: float | None = None  # None: measured eager only, the run too short to try
    compile_s: float | None = None  # the latest compile's cost (a warm disk cache costs less)
    when: str = ""

    def gain_s(self) -> float | None:
        return None if self.compiled_s is None else self.eager_s - self.compiled_s


def device_kind(device) -> str:
    import torch

    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return f"{device.type} {platform.machine()} x{torch.get_num_threads()}"


def _model_on_device(device, model: str, dtype) -> str:
    import torch

    # A torch release compiles differently, and bf16 weights time unlike float32 ones: each
    # measures afresh.
    precision = str(dtype).removeprefix("torch.")
    return f"{device_kind(device)} | torch {torch.__version__} | {model} | {precision} |"


def record_key(device, model: str, resolution: int, batch: int, dtype) -> str:
    return f"{_model_on_device(device, model, dtype)} {resolution}px x{batch}"


def _positive(value) -> float | None:
    number = json_number(value)
    return number if number is not None and 0 < number < 1e6 else None


def read_records(path: Path | None = None) -> dict[str, Measured]:
    """The measurements kept so far; a file that is not ours (or broken) counts as none."""
    path = path or cache_root() / RECORD
    try:  # never a FIFO (it would wait for a writer) nor a huge file
        raw = read_json(path)
    except (OSError, ValueError):
        return {}
    records = {}
    for key, entry in raw.items() if isinstance(raw, dict) else ():
        if not isinstance(entry, dict) or _positive(entry.get("eager_s")) is None:
            continue
        records[str(key)] = Measured(_positive(entry["eager_s"]),
                                     _positive(entry.get("compiled_s")),
                                     _positive(entry.get("compile_s")),
                                     str(entry.get("when", ""))[:40])
    return records


def write_record(key: str, measured: Measured, path: Path | None = None) -> None:
    path = path or cache_root() / RECORD
    records = read_records(path)
    measured.when = datetime.now(UTC).isoformat(timespec="seconds")
    records[key] = measured
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({k: asdict(v) for k, v in records.items()}, indent=1))


def pays(steps_left: int, eager_s: float, gain_s: float, compile_s: float) -> bool:
    """Whether compiling now saves time over the rest of the run."""
    return gain_s > (1 - FASTER) * eager_s and steps_left * gain_s > compile_s


class AutoCompile:
    """The state of one run's decision; `start` before the first step, `after_step` after
    each. `log` receives the one line that says what was chosen, and why."""

    def __init__(self, transformer, device, key: str, log: Callable[[str], None],
                 shared: bool = False, record: Path | None = None,
                 checkpointing: bool = False) -> None:
        self.transformer, self.device, self.key = transformer, device, key
        self.checkpointing = checkpointing  # CUDA graphs an earlier job compiled are dropped
        self.log, self.shared, self.path = log, shared, record
        self.prior_gain, self.prior_compile = PRIORS.get(device.type, PRIORS["cpu"])
        self.total = 0
        self.eager: list[float] = []
        self.compiled: list[float] = []
        self.compile_step: float | None = None
        self.state = "done"

    def _apply(self, mode: str) -> str:
        return apply(self.transformer, mode, self.device, checkpointing=self.checkpointing)

    def _prior_pays(self, steps_left: int, eager_s: float) -> bool:
        """Whether a compile would pay by the device's priors (it has not been measured)."""
        return pays(steps_left, eager_s, self.prior_gain * eager_s, self.prior_compile)

    def start(self, step: int, total: int) -> None:
        """Before step `step` + 1 of a run of `total` steps."""
        self.total = total
        if getattr(self.transformer, "_lorabooth_compiled", False) or \
                not_compilable(self.transformer):  # compiled by an earlier job, or fp8 / NF4
            self.log(self._apply("blocks"))
            return
        known = None if self.shared else read_records(self.path).get(self.key)
        steps_left = self.total - step
        if self.shared:
            mode = "blocks" if self.device.type == "cuda" else "off"
            line = self._apply(mode)
            self.log(f"{line} (auto, several processes: the {self.device.type} default)")
        elif known is not None and known.compiled_s is not None:
            compile_s = known.compile_s or self.prior_compile
            measured = (f"measured on this device: {known.compiled_s:.3g} s a step compiled, "
                        f"{known.eager_s:.3g} s eager, {compile_s:.0f} s to compile")
            if pays(steps_left, known.eager_s, known.gain_s(), compile_s):
                self.log(f"{self._apply('blocks')} (auto, {measured})")
                self.state = "timing-compiled"  # the compile cost is re-measured (disk cache)
                self.eager = [known.eager_s]
            else:
                self.log(f"compile: off (auto, {measured}: no gain over {steps_left} steps)")
        elif known is not None and not self._prior_pays(steps_left, known.eager_s):
            self.log(f"compile: off (auto: {steps_left} steps of ~{known.eager_s:.3g} s could "
                     "not pay for a compile)")
        else:
            self.state = "timing-eager"
            self.log("compile: auto times the first steps eager, then tries the repeated "
                     f"blocks compiled if the run is long enough to pay ({self.device.type} "
                     "not measured yet)")

    @property
    def measuring(self) -> bool:
        """Whether steps are being timed (each must be read as it ends, not a step late)."""
        return self.state in ("timing-eager", "timing-compiled")

    def after_step(self, step: int, seconds: float) -> None:
        if self.state == "timing-eager":
            self._eager_step(step, seconds)
        elif self.state == "timing-compiled":
            self._compiled_step(seconds)

    def _eager_step(self, step: int, seconds: float) -> None:
        if step == 1:
            return  # the first step warms caches and allocators
        self.eager.append(seconds)
        if len(self.eager) < SAMPLES:
            return
        eager_s = statistics.median(self.eager)
        steps_left = self.total - step
        if not self._prior_pays(steps_left, eager_s):
            self._keep(Measured(eager_s))
            self.log(f"compile: off (auto: {steps_left} steps left at {eager_s:.3g} s could "
                     "not pay for a compile)")
            self.state = "done"
            return
        line = self._apply("blocks")
        self.log(f"{line} (auto: trying it, {eager_s:.3g} s a step eager)")
        self.eager = [eager_s]
        self.state = "timing-compiled"

    def _keep(self, measured: Measured) -> None:
        try:
            write_record(self.key, measured, self.path)
        except OSError as exc:  # a full disk or a read-only cache: the run goes on
            self.log(f"compile: the measurement could not be kept ({exc.strerror or exc}); "
                     "the next run measures again")

    def _compiled_step(self, seconds: float) -> None:
        if self.compile_step is None:
            self.compile_step = seconds
            return
        self.compiled.append(seconds)
        if len(self.compiled) < SAMPLES:
            return
        eager_s, compiled_s = self.eager[0], statistics.median(self.compiled)
        measured = Measured(eager_s, compiled_s, max(self.compile_step - compiled_s, 0.001))
        self._keep(measured)
        said = (f"{compiled_s:.3g} s a step compiled against {eager_s:.3g} s eager, "
                f"{measured.compile_s:.0f} s to compile; kept for later runs")
        if compiled_s < FASTER * eager_s:
            self.log(f"compile: auto keeps {WHAT['blocks']} ({said})")
        else:
            uncompile(self.transformer)
            self.log(f"compile: off (auto: {said})")
        self.state = "done"


def for_generation(transformer, mode: str, device, model: str) -> str:
    """Compile for generation as `mode` says; `auto` follows what training measured for this
    model on this kind of device (the same blocks, forward only), else the device's default.
    The one line that says what was done."""
    if mode != "auto" or not_compilable(transformer):
        return apply(transformer, mode, device)
    prefix = _model_on_device(device, model, transformer.dtype)
    known = [m for key, m in read_records().items()
             if key.startswith(prefix) and m.compiled_s is not None]
    if not known:
        return apply(transformer, mode, device)
    ratio = statistics.median(m.compiled_s / m.eager_s for m in known)
    measured = f"a training step compiled took {ratio:.2f}x its eager time on this device"
    if ratio < FASTER:
        return f"{apply(transformer, 'blocks', device)} (auto: {measured})"
    if getattr(transformer, "_lorabooth_compiled", False):
        return apply(transformer, "blocks", device)  # compiled already by a training job
    return f"compile: off (auto: {measured})"
