"""The engine: the process that owns the GPU and runs a workspace's jobs one at a time.

`lock` keeps it single, `client` starts, stops and asks after it (the CLI and the UI call
only this), `loop` is the process's job loop, `train_job` and `generate_job` are its two kinds
of work, `controls` the pause and cancel they obey, `terminal_job` a training in a terminal
recorded as a job, `failures` words a failed job, and `python -m lorabooth.core.engine` runs
it.
Importing this package pulls in no torch.
"""

from .client import (
    UNRESPONSIVE,
    EngineStartFailed,
    EngineStopFailed,
    Status,
    interrupted_text,
    start_detached,
    status,
    stop,
    wait_for_job,
)
from .lock import EngineRunning, running_pid

__all__ = ["UNRESPONSIVE", "EngineRunning", "EngineStartFailed", "EngineStopFailed", "Status",
           "interrupted_text", "running_pid", "start_detached", "status", "stop", "wait_for_job"]
