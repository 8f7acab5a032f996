"""One readable line for a failed job, with what to do about it, chosen by the error's type."""

from __future__ import annotations

import sys

from ..errors import LoraboothError, describe_os_error


def is_out_of_memory(exc: BaseException) -> bool:
    # torch is only asked about when a job has imported it already.
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def explain_failure(exc: BaseException) -> str:
    """One line for the job's error column and the event log."""
    if isinstance(exc, LoraboothError):
        return str(exc).replace("\n", " ")
    if isinstance(exc, OSError):
        return describe_os_error(exc)
    if is_out_of_memory(exc):
        return ("the GPU ran out of memory: lower train.resolution, train.batch_size or "
                "train.rank, or close other programs using the GPU")
    return f"{type(exc).__name__}: {exc}"
