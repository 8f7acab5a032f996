"""Planning system RAM: what a lorabooth process needs in CPU memory, phase by phase, besides
its own code (Python, torch and the CUDA libraries: memory.HOST_BASE_GIB).

What counts is memory the kernel cannot drop. safetensors maps a model's files, and weights
loaded in the files' own precision stay the page cache's until they move to the GPU: the kernel
drops those pages under pressure and reads them again, so loading FLUX.1-dev in bf16 does not
need 33 GiB free. Measured here with `load_pipeline` on a 0.91 GiB bf16 pipeline (a 0.53 GiB
transformer, a 0.38 GiB T5), as anonymous memory added:
- bf16 from bf16 files: +0.02 GiB;
- fp8 storage cast on the CPU: +0.28 GiB, the float8 copy of the transformer (0.26; FLUX.1-dev's
  11.1 GiB), which is why the transformer is cast as it moves to the GPU instead, a layer at a
  time (load.store_in_fp8), and only a transformer under model offload keeps a float8 copy;
- float32 or float16: +1.84 or +1.03 GiB, every weight converted.
After loading, what is held in CPU memory: the large text encoder pinned there to stream to the
GPU (a page-locked copy, which also cannot be swapped), the transformer waiting while the
captions encode (where it was converted), every model under diffusers' model CPU offload
(each returns to the CPU after it runs), and on a CPU, everything, activations included.

The users of other trainers meet this as a process killed without a word while loading or
quantising (fluxgym #417, #247); a plan that says so first, and a refusal before loading that
names what would fit, is the answer here.
"""

from __future__ import annotations

from pathlib import Path

from .memory import (
    GIB,
    HOST_BASE_GIB,
    LORA_STATE_BYTES,
    MemoryPlanError,
    ModelSize,
    Phase,
    Plan,
    render_activations,
    train_activations,
)

SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}


def host_phases(size: ModelSize, plan: Plan, on_cpu: bool, files: str = "bf16", batch: int = 1,
                text_tokens: int = 512) -> list[Phase]:
    """The CPU memory each phase of `plan` adds (on a GPU machine, or `on_cpu`), the weights
    stored in `files` precision."""
    if on_cpu:
        return _cpu_phases(size, plan, files, batch, text_tokens)
    half = SHORT[plan.dtype]
    big = size.text_encoder_name
    nf4 = plan.quantize == "nf4"  # bitsandbytes quantises it straight onto the GPU
    converted = 0.0 if half == files else (
        size.encoders_gib(half) + size.gib("vae", half)
        + (0.0 if nf4 else size.gib("transformer", half)))
    # The transformer as it waits on the CPU: the files' pages until it is placed (an fp8
    # one is cast as it moves to the GPU: load.store_in_fp8), its own copy once converted.
    waiting = 0.0 if nf4 or half == files else size.gib("transformer", half)
    pinned = size.gib("text_encoder_2", half)
    loading = Phase("loading", converted,
                    _words((f"weights converted from {files} to {half}", converted)))
    if plan.job == "generate":
        if plan.placement == "offload":
            stored = (size.encoders_gib(half) + size.gib("vae", half)
                      + size.gib("transformer", plan.quantize or half))
            return [loading, Phase("generation", stored, "every model, between its turns")]
        held = pinned if plan.placement == "stream" else 0.0
        return [loading, Phase("generation", held, _words((f"{big} pinned", held)))]
    transformer_waits = not plan.encoders_on_gpu and not nf4
    caching_pinned = 0.0 if plan.text_on_gpu else pinned
    waits = waiting if transformer_waits else 0.0
    training_pinned = 0.0 if plan.encoders_on_gpu else pinned
    # After caching, T5 leaves the GPU (pinned in CPU memory) before the transformer comes
    # over: for a moment both are in CPU memory.
    parked = pinned if transformer_waits else 0.0
    return [
        loading,
        Phase("caching", caching_pinned + waits,
              _words((f"{big} pinned", caching_pinned), ("transformer waiting", waits))),
        Phase("parking", parked + waits,
              _words((f"{big} pinned", parked), ("transformer waiting", waits))),
        Phase("training", training_pinned, _words((f"{big} pinned", training_pinned))),
    ]


def _cpu_phases(size: ModelSize, plan: Plan, files: str, batch: int,
                text_tokens: int) -> list[Phase]:
    """On a CPU every weight is resident and every activation is kept (no checkpointing);
    float32 doubles bf16's bytes, for the activations as for the weights."""
    precision = SHORT[plan.dtype]
    weights = (size.gib("transformer", precision) + size.encoders_gib(precision)
               + size.gib("vae", precision))
    converted = 0.0 if precision == files else weights
    loading = Phase("loading", converted, _words((f"weights converted from {files} to "
                                                  f"{precision}", converted)))
    widen = 2.0 if precision == "fp32" else 1.0
    if plan.job == "generate":
        return [loading, Phase("generation", weights + widen * render_activations(
            size, plan.resolution, text_tokens), "every model, one render")]
    lora = size.lora_params * LORA_STATE_BYTES / GIB
    activations = widen * train_activations(size, plan.resolution, batch, text_tokens,
                                            checkpointing=False)
    return [loading, Phase("training", weights + lora + activations,
                           "every model, the LoRA, every activation")]


def _words(*parts: tuple[str, float]) -> str:
    held = [(name, gib) for name, gib in parts if gib >= 0.05]
    if len(held) == 1:
        return held[0][0]
    return ", ".join(f"{name} {gib:.1f}" for name, gib in held) or \
        "nothing beyond the page cache"


def require_system_memory(plan: Plan, held: float = 0.0, loading: bool = True,
                          processes: int = 1) -> None:
    """Refuse a job whose system RAM would run out, before anything is loaded: the kernel's
    out-of-memory killer would end the engine without a word, mid-load. `held`: GiB of CPU
    memory the resident model holds (freed or reused: it counts as available); `loading`:
    False when the resident model is reused, so the loading phase does not happen;
    `processes`: the training processes on this machine (one per GPU), each with its own."""
    if plan.host_available_gib is None:
        return
    phases = [p for p in plan.host if loading or p.name != "loading"]
    need = max((p.gib for p in phases), default=0.0) * processes
    have = plan.host_available_gib + held * processes
    if need <= have:
        return
    worst = max(phases, key=lambda p: p.gib)
    job = "training" if plan.job == "train" else "generating"
    each = f" ({processes} processes, one per GPU)" if processes > 1 else ""
    raise MemoryPlanError(
        f"{job} at {plan.resolution} px needs "
        f"~{need:.1f} GiB of system RAM{each} beyond lorabooth's own ~{HOST_BASE_GIB:.1f} "
        f"({worst.name}: {worst.resident}), and {have:.1f} GiB is available here (free memory "
        "and swap): the system would end the engine mid-way. Close other programs, add swap, "
        "or use a machine with more RAM; `lorabooth plan` shows every phase")


def system_ram_words(plan: Plan) -> str:
    """The log's words for the system RAM the job adds (none when it adds little)."""
    worst = max(plan.host, key=lambda p: p.gib, default=None)
    if worst is None or worst.gib < 0.5:
        return ""
    free = "" if plan.host_available_gib is None else \
        f" of {plan.host_available_gib:.1f} GiB available"
    return f"; ~{worst.gib:.1f} GiB of system RAM at {worst.name} ({worst.resident}){free}"


def system_memory() -> float | None:
    """GiB of system RAM a new allocation can have here: the kernel's estimate of what is
    available without swapping (page cache it may drop included) and free swap, or less where
    this process's container is limited (cgroup_memory); None where /proc/meminfo is not there
    to say (not Linux)."""
    fields = meminfo()
    if "MemAvailable" not in fields:
        return None
    here = fields["MemAvailable"] + fields.get("SwapFree", 0.0)
    limited = cgroup_memory()
    return here if limited is None else min(here, limited[1])


def meminfo() -> dict[str, float]:
    """/proc/meminfo's memory and swap figures, in GiB; empty where it cannot be read."""
    fields = {}
    try:
        with open("/proc/meminfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                name, _, rest = line.partition(":")
                if name in ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree"):
                    fields[name] = int(rest.split()[0]) * 1024 / 2**30  # kB
    except (OSError, ValueError, IndexError):
        return {}
    return fields


CGROUPS = Path("/sys/fs/cgroup")
UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a number near 2**63


def cgroup_memory(root: Path = CGROUPS, membership: Path = Path("/proc/self/cgroup")
                  ) -> tuple[float, float] | None:
    """(limit, available) in GiB of the memory cgroup this process runs in, where one limits
    it, else None. Rented GPU machines are mostly containers: /proc/meminfo there shows the
    host's memory (hundreds of GiB), and the container's limit is what the out-of-memory killer
    enforces. Available is the limit less the usage, plus the group's page cache (charged to
    it, and reclaimed before anything is killed); the tightest level of the hierarchy counts.
    cgroup v2 (memory.max) and v1 (the memory controller's hierarchical limit)."""
    try:
        lines = membership.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and controllers == "" and (root / "cgroup.controllers").exists():
            return _tightest(_v2_level(d) for d in _levels(root, path))
        if "memory" in controllers.split(","):
            mount = root / "memory"
            inside = mount / path.lstrip("/")
            return _tightest([_v1_level(inside if inside.is_dir() else mount)])
    return None


def _levels(root: Path, path: str) -> list[Path]:
    """The cgroup's folder and each one above it, up to the mount (a container sees its own
    group at the mount's root)."""
    folder = root / path.lstrip("/")
    if not folder.is_dir():
        folder = root
    levels = [folder]
    while levels[-1] != root and root in levels[-1].parents:
        levels.append(levels[-1].parent)
    return levels


def _v2_level(folder: Path) -> tuple[int, int] | None:
    limit = _read(folder / "memory.max")
    if limit is None or limit >= UNLIMITED:
        return None
    usage = _read(folder / "memory.current")
    if usage is None:
        return None
    return limit, limit - usage + _stats(folder / "memory.stat").get("file", 0)


def _v1_level(folder: Path) -> tuple[int, int] | None:
    stats = _stats(folder / "memory.stat")
    limit = stats.get("hierarchical_memory_limit") or _read(folder / "memory.limit_in_bytes")
    if not limit or limit >= UNLIMITED:
        return None
    usage = _read(folder / "memory.usage_in_bytes")
    if usage is None:
        return None
    return limit, limit - usage + stats.get("total_cache", 0)


def _tightest(levels) -> tuple[float, float] | None:
    found = [level for level in levels if level is not None]
    if not found:
        return None
    limit, available = min(found, key=lambda level: level[1])
    return limit / 2**30, max(0, available) / 2**30


def _read(path: Path) -> int | None:
    """A cgroup file's number; None for "max", a missing file or anything else."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")[:64].strip()
        return int(text)
    except (OSError, ValueError):
        return None


def _stats(path: Path) -> dict[str, int]:
    """A cgroup memory.stat file's counters; empty where it cannot be read."""
    stats = {}
    try:
        with path.open(encoding="ascii", errors="replace") as handle:
            for line in handle:
                name, _, value = line.partition(" ")
                stats[name] = int(value.strip() or 0)
    except (OSError, ValueError):
        return {}
    return stats
