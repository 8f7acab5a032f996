"""`lorabooth plan`: what lorabooth would do on this card (or a named one, or the usual sizes)
for the workspace's training and generation: precision, weight storage, where the text encoders
live, offload, the estimated peak of each phase, and why. For FLUX.1-dev and schnell it needs no
weights (their configs ship with lorabooth), so it answers before a 34 GB download."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from ..config import Config
from ..errors import EXIT_OK, UsageError
from ..memory import MemoryPlanError, Plan, card_gib
from ..models.registry import DEMO
from ..safetext import plain
from ..workspace import require_workspace
from .args import number
from .console import console

USUAL_CARDS = (12, 16, 24, 32, 48, 80)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workspace", nargs="?", default=".", help="workspace folder (default .)")
    parser.add_argument("--gpu-memory", type=number(1, 4096), metavar="GB", action="append",
                        help="plan for a card of this many GB (repeatable); default: this "
                             "machine's GPU, or 12, 16, 24, 32, 48 and 80 GB without one")
    parser.add_argument("--host-memory", type=number(1, 65536), metavar="GB",
                        help="plan for a machine with this many GB of system RAM free "
                             "(default: what this machine has available, swap included)")
    parser.add_argument("--json", action="store_true", help="print the plans as JSON")


def run(args: argparse.Namespace) -> int:
    ws = require_workspace(args.workspace)
    config = ws.config(check_photos=False)
    # Images may be made with another model than the one trained on (generate.model).
    configs = {"train": model_configs(config.model),
               "generate": model_configs(config.image_model)}
    cards, crowded = cards_to_plan(args.gpu_memory)
    host = host_to_plan(args.host_memory)
    plans = [plan_row(config, *configs[job], label, available, job, resolution, named,
                      host=host)
             for label, available, named in cards
             for job, resolution in jobs(config)]
    # Without a GPU, what this machine itself would do (float32, or bf16 when asked) too.
    here = [] if args.gpu_memory or has_gpu() else [
        plan_row(config, *configs[job], "this CPU", None, job, resolution, False, "cpu", host)
        for job, resolution in jobs(config)]
    if args.json:
        print(json.dumps({"model": config.model, "host_memory_gib": host, "plans": plans,
                          "this_cpu": here}, indent=2))
        return EXIT_OK
    out = console()
    out.print(plain(f"memory plan for {config.model}"
                    f" (train.memory = {config.train.memory}, "
                    f"generate.memory = {config.generate.memory})", "bold"))
    out.print(table(plans))
    out.print(plain("GPU, RAM: estimated peak GiB of the card's memory and of system RAM; "
                    + host_words(host, args.host_memory is not None), "dim"))
    if crowded:
        out.print(plain(f"{crowded[0].upper()}{crowded[1:]}.", "yellow"))
    for row in here:
        out.print(plain(f"on this machine (no GPU), {row['job']} {row['resolution']} px: "
                        f"{row['reason']}", "" if row["plan"] else "red"))
    if len(cards) > 1:
        out.print(plain("why, phase by phase: lorabooth plan --gpu-memory GB (or --json)", "dim"))
        return EXIT_OK
    for row in plans:
        out.print(plain(f"{row['job']} {row['resolution']} px: {row['reason']}",
                        "" if row["fits"] else "red"))
        for phase in (row["plan"] or {}).get("phases", []):
            out.print(plain(f"  {phase['name']}: ~{phase['gib']:.1f} GiB ({phase['resident']})",
                            "dim"))
        if row["plan"]:
            out.print(plain(f"  {host_phase_words(row['plan'])}", "dim"))
    return EXIT_OK


def host_phase_words(plan: dict) -> str:
    """System RAM by phase, those that add to the process's own (weights the page cache
    holds do not: the system may drop them)."""
    from ..memory import HOST_BASE_GIB

    adds = [f"{p['name']} +{p['gib']:.1f} ({p['resident']})" for p in plan["host"]
            if p["gib"] >= 0.05]
    own = f"system RAM: ~{HOST_BASE_GIB:.1f} GiB of its own"
    return own + ("; " + "; ".join(adds) if adds else ", no weights beyond the page cache")


def host_to_plan(asked: float | None) -> float | None:
    """GiB of system RAM to plan with: as asked, else this machine's available memory and swap
    (None where it cannot be read)."""
    if asked is not None:
        return float(asked)
    from ..system_memory import system_memory

    return system_memory()


def host_words(host: float | None, asked: bool) -> str:
    if host is None:
        return "system RAM here is not known (--host-memory GB plans for an amount)"
    where = "as asked" if asked else "available on this machine, swap included"
    return f"system RAM: {host:.1f} GiB {where}"


def model_configs(spec: str) -> tuple[Path, int]:
    """A folder with the model's configs, and its T5 length: shipped for the models lorabooth
    knows (short names and repo ids alike), else the model's own folder (the weights are not
    read)."""
    from ..models.registry import model_of_folder
    from ..models.resolve import ModelNotFound, resolve_model
    from ..models.shipped import shipped_folder

    known = shipped_folder(spec)
    if known is not None:
        return known, model_of_folder(known, spec).text_length
    try:
        source = resolve_model(spec, build_demo=spec.strip() == DEMO)
    except ModelNotFound as exc:
        raise UsageError(
            f"{exc}\nlorabooth plan knows the registry's models without their weights "
            "(lorabooth doctor lists them); for another model it reads the configs in its "
            "folder.") from None
    return source.path, source.max_sequence_length


def cards_to_plan(asked: list[float] | None) -> tuple[list[tuple[str, float, bool]], str]:
    """(label, GiB available, a named card rather than this machine's GPU) for each card, and
    what other processes hold on this machine's GPU ("" unless it is planned), from one query
    of it."""
    if asked:
        return [(f"{gb:g} GB", card_gib(gb), True) for gb in asked], ""
    from ..models.load import default_device, describe_device

    device = default_device()
    if device.type == "cuda":
        from ..models.sizes import card_memory

        available, crowded = card_memory(device)
        return [(f"this GPU ({describe_device(device)})", available, False)], crowded
    return [(f"{gb} GB", card_gib(gb), True) for gb in USUAL_CARDS], ""


def jobs(config: Config) -> list[tuple[str, int]]:
    generate = max(config.generate.width, config.generate.height)
    return [("train", r) for r in sorted(set(config.train.resolution))] + [
        ("generate", generate)]


def has_gpu() -> bool:
    from ..models.load import default_device

    return default_device().type == "cuda"


def plan_row(config: Config, folder: Path, text_tokens: int, card: str, available: float,
             job: str, resolution: int, named: bool = True, kind: str = "cuda",
             host: float | None = None) -> dict:
    """One job's plan on one card (or on this CPU) and a machine with `host` GiB of system
    RAM; a named card is taken to have native bf16."""
    import dataclasses

    import torch

    from ..models.sizes import generation_plan, training_plan

    device = torch.device(kind)
    row = {"card": card, "available_gib": None if available is None else round(available, 1),
           "job": job, "resolution": resolution}
    try:
        if job == "train":
            one = dataclasses.replace(config.train, resolution=[resolution])
            plan = training_plan(dataclasses.replace(config, train=one), folder, text_tokens,
                                 device, available=available, bf16=True if named else None,
                                 host=host)
        else:
            plan = generation_plan(config, folder, resolution, text_tokens, device,
                                   available=available, bf16=True if named else None,
                                   host=host)
    except MemoryPlanError as exc:
        return {**row, "fits": False, "host_fits": None, "reason": str(exc), "plan": None}
    fits = available is None or plan.peak_gib <= available
    reason = plan.reason
    if not plan.host_fits:
        reason += (f"; system RAM: needs ~{plan.host_peak_gib:.1f} GiB, "
                   f"{plan.host_available_gib:.1f} available")
    return {**row, "fits": fits, "host_fits": plan.host_fits, "reason": reason,
            "plan": plan.to_dict(), "weights": weights(plan), "placement": placement(plan)}


def weights(plan: Plan) -> str:
    short = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}[plan.dtype]
    return {"fp8": f"fp8 > {short}", "nf4": f"NF4 > {short}"}.get(plan.quantize or "", short)


def placement(plan: Plan) -> str:
    if plan.job == "generate":
        return {"all": "all on GPU", "stream": f"{plan.text_encoder} streamed",
                "offload": "model offload"}[plan.placement]
    where = "all on GPU" if plan.encoders_on_gpu else f"{plan.text_encoder} streamed"
    return where if plan.gradient_checkpointing else where + ", no ckpt"


def table(rows: list[dict]) -> Table:
    """One row per card and job, in 80 columns (a phone's SSH client is no wider)."""
    grid = Table(box=None, pad_edge=False, padding=(0, 1), header_style="bold")
    numbers = ("GPU", "RAM")
    for name in ("card", "job", "weights", "placement", *numbers, ""):
        grid.add_column(name, justify="right" if name in numbers else "left", no_wrap=True)
    for row in rows:
        plan = row["plan"]
        job = f"{row['job']} {row['resolution']}"
        if plan is None:
            grid.add_row(plain(row["card"]), job, "-", "-", "-", "-",
                         plain("does not fit", "red"))
            continue
        verdict = (plain("too big", "red") if not row["fits"] else
                   plain("RAM short", "red") if not row["host_fits"] else plain("fits", "green"))
        grid.add_row(plain(row["card"]), job, row["weights"], row["placement"],
                     f"{plan['peak_gib']:.1f}", f"{plan['host_peak_gib']:.1f}", verdict)
    return grid
