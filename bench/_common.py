"""Shared bits of the benchmarks: timing, the results table and the JSON record."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of `repeat` runs, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def machine() -> dict[str, object]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "machine": platform.machine()}


def report(name: str, rows: list[dict[str, object]], extra: dict[str, object]) -> Path:
    """Print `rows` as a table and write them with `extra` to bench/results/NAME.json."""
    columns = list(rows[0])
    widths = [max(len(str(c)), *(len(_fmt(r[c])) for r in rows)) for c in columns]
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in rows:
        print("  ".join(_fmt(r[c]).ljust(w) for c, w in zip(columns, widths, strict=True)))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **extra,
                                "rows": rows}, indent=2) + "\n")
    print(f"\nwritten to {path}")
    return path


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


class FullSteps:
    """How many denoising steps computed every block under the first-block step cache: the
    cache's own decision, counted as it is made. (A hook on the last block's attention saw no
    call once the blocks were compiled: the H100 and H200 counted 0 of 28 full steps.) The
    count is process-wide while it is in place: one render at a time, as in the benches."""

    def __init__(self) -> None:
        from diffusers.hooks import first_block_cache

        self.count = 0
        self._cls = first_block_cache.FBCHeadBlockHook
        self._decide = decide = self._cls._should_compute_remaining_blocks

        def counted(hook, residual):
            computed = decide(hook, residual)
            self.count += bool(computed)
            return computed

        self._cls._should_compute_remaining_blocks = counted

    def remove(self) -> None:
        self._cls._should_compute_remaining_blocks = self._decide
