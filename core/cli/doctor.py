"""`lorabooth doctor`: what this machine offers lorabooth, and what to fix first.

Each check is a small function returning Check rows, so the report reads the same as a table
on a terminal, as plain lines when piped, and as JSON for scripts.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass

from .. import version
from ..errors import EXIT_FAILURE, EXIT_OK
from ..models.registry import DEMOS, MODELS
from ..models.resolve import ModelNotFound, demo_model_path, resolve_model
from ..safetext import plain
from .console import console

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"


@dataclass(frozen=True)
class Check:
    section: str
    name: str
    status: str
    value: str
    advice: str = ""


def _pkg(name: str) -> str | None:
    import importlib.metadata  # ~15 ms: every command would pay it at its start

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_python() -> list[Check]:
    ok = sys.version_info >= (3, 11)
    return [
        Check("system", "lorabooth", INFO, version()),
        Check("system", "python", OK if ok else FAIL, platform.python_version(),
              "" if ok else "lorabooth needs Python 3.11 or newer"),
        Check("system", "platform", INFO, f"{platform.system()} {platform.machine()}"),
        Check("system", "cpu cores", INFO, str(os.cpu_count() or "?")),
        *check_ram(),
    ]


def check_ram() -> list[Check]:
    """System RAM: the big models wait or stream from it (lorabooth plan says how much)."""
    from ..system_memory import cgroup_memory, meminfo

    fields = meminfo()
    if "MemAvailable" not in fields:
        return []
    swap = fields.get("SwapTotal", 0.0)
    value = (f"{fields['MemTotal']:.1f} GiB ({fields['MemAvailable']:.1f} GiB available)"
             + (f", swap {swap:.1f} GiB" if swap else ", no swap"))
    limited = cgroup_memory()
    if limited is not None:  # a container: its limit is what the out-of-memory killer enforces
        value += f"; this container may use {limited[0]:.1f} GiB ({limited[1]:.1f} available)"
    return [Check("system", "memory", INFO, value)]


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError as exc:
        return [Check("gpu", "torch", FAIL, f"not importable ({exc})",
                      "install torch: pip install torch (CUDA build) or torch==X+cpu")]
    rows = [Check("gpu", "torch", OK, torch.__version__)]
    if not torch.cuda.is_available():
        built = torch.version.cuda
        advice = ("this torch has CUDA support but sees no GPU: check nvidia-smi and drivers"
                  if built else "CPU-only torch: fine for the demo; on a GPU box install a "
                                "CUDA build of torch")
        rows.append(Check("gpu", "CUDA", WARN, f"not available (torch built for CUDA "
                                               f"{built or 'none'})", advice))
        from ..models.sizes import cpu_has_bf16

        bf16 = ("native here: AMX or AVX512-BF16" if cpu_has_bf16() else
                "emulated here: slower")
        rows.append(Check("gpu", "training device", INFO,
                          f'cpu, float32; bf16 with memory = "bf16" ({bf16})'))
        return rows
    rows.append(Check("gpu", "CUDA", OK, f"{torch.version.cuda}, "
                                         f"{torch.cuda.device_count()} device(s)"))
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        free, total = torch.cuda.mem_get_info(index)
        rows.append(Check("gpu", f"GPU {index}", OK, f"{props.name}, {total / 2**30:.1f} GiB "
                                                      f"({free / 2**30:.1f} GiB free), "
                                                      f"sm_{props.major}{props.minor}"))
    bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
    rows.append(Check("gpu", "bf16", OK if bf16 else WARN, "supported" if bf16 else "no",
                      "" if bf16 else "this GPU trains in float16, with loss scaling"))
    return rows


def check_packages() -> list[Check]:
    rows = []
    for name in ("diffusers", "peft", "transformers", "accelerate", "textual", "pillow"):
        found = _pkg(name)
        rows.append(Check("packages", name, OK if found else FAIL, found or "missing",
                          "" if found else f"pip install {name}"))
    extras = {"pillow-heif": "heic", "bitsandbytes": "lowvram", "nvidia-ml-py": "gpu-stats",
              "torchao": "fp8"}
    for name, extra in extras.items():
        found = _pkg(name)
        rows.append(Check("packages", name, OK if found else INFO, found or "not installed",
                          "" if found else f"optional: pip install 'lorabooth[{extra}]'"))
    return rows


def check_models() -> list[Check]:
    rows = []
    for name in DEMOS:
        demo = demo_model_path(name)
        rows.append(Check("models", name, OK, f"built at {demo}"
                          if (demo / "model_index.json").is_file()
                          else f"built on first use at {demo}"))
    for model in MODELS:
        if model.repo is None:
            continue
        label = f"{model.name} ({model.title})"
        try:
            source = resolve_model(model.repo, build_demo=False)
            rows.append(Check("models", label, OK, str(source.path)))
        except ModelNotFound:
            rows.append(Check("models", label, INFO, f"{model.repo} not in the local Hugging "
                              "Face cache", f"hf download {model.repo} (after accepting its "
                              "licence)"))
    return rows


def check_terminal() -> list[Check]:
    env = os.environ
    colorterm = env.get("COLORTERM", "")
    term = env.get("TERM", "")
    if colorterm in ("truecolor", "24bit"):
        colours = "truecolor"
    elif "256" in term:
        colours = "256 colours"
    else:
        colours = f"basic ({term or 'TERM unset'})"
    advice = ""
    if env.get("SSH_CONNECTION") and not colorterm:
        advice = "over SSH COLORTERM is not forwarded by default: export COLORTERM=truecolor"
    rows = [Check("terminal", "colours", WARN if colours.startswith("basic") else OK, colours,
                  advice)]
    program = env.get("TERM_PROGRAM", "")
    if env.get("KITTY_WINDOW_ID") or "kitty" in term or program in ("WezTerm", "ghostty"):
        images = "kitty graphics protocol"
    elif program in ("iTerm.app", "mlterm") or "sixel" in term:
        images = "sixel"
    else:
        images = "half-cell blocks (works everywhere)"
    tmux_note = ("inside tmux: set -g allow-passthrough on for kitty/sixel images"
                 if env.get("TMUX") else "")
    rows.append(Check("terminal", "images", INFO, images, tmux_note))
    size = shutil.get_terminal_size(fallback=(0, 0))
    if size.columns:
        small = size.columns < 80 or size.lines < 24
        rows.append(Check("terminal", "size", WARN if small else OK,
                          f"{size.columns}x{size.lines}",
                          "lorabooth needs at least 80x24" if small else ""))
    return rows


def run_checks() -> list[Check]:
    return [*check_python(), *check_torch(), *check_packages(), *check_models(),
            *check_terminal()]


def as_json(checks: list[Check]) -> list[dict[str, str]]:
    return [asdict(c) for c in checks]


def add_arguments(p) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args) -> int:
    checks = run_checks()
    if args.json:
        print(json.dumps(as_json(checks), indent=2))
    else:
        print_checks(checks)
    return EXIT_FAILURE if any(c.status == FAIL for c in checks) else EXIT_OK


def print_checks(checks: list[Check]) -> None:
    out = console()
    marks = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "bold red"),
             "info": ("·", "dim")}
    if not out.is_terminal:
        for c in checks:
            tail = f"  ({c.advice})" if c.advice else ""
            out.print(plain(f"{c.section:9} {c.name:28} {c.status:5} {c.value}{tail}"))
        return
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    for _ in range(4):
        table.add_column()
    section = ""
    for c in checks:
        mark, style = marks[c.status]
        value = plain(c.value)
        if c.advice:
            value.append_text(plain(f"\n{c.advice}", "italic dim"))
        table.add_row(plain(c.section if c.section != section else "", "bold"),
                      plain(mark, style), plain(c.name), value)
        section = c.section
    out.print(table)
