"""GPU name, memory and utilisation for the header, through nvidia-ml-py when it is installed
(the `gpu-stats` extra). Read in the store worker, never on the UI thread; no torch."""

from __future__ import annotations

_state: dict[str, object] = {"ready": None}


def gpu_line() -> str | None:
    """'NVIDIA H100 · 41/80 GiB · 97%' for GPU 0, or None without NVML or a GPU."""
    if _state["ready"] is False:
        return None
    try:
        import pynvml

        if not _state["ready"]:
            pynvml.nvmlInit()
            _state["ready"] = True
            _state["handle"] = pynvml.nvmlDeviceGetHandleByIndex(0)
        handle = _state["handle"]
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else name
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        busy = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu
    except Exception:  # no library, no driver, no GPU: the header shows the engine's device
        _state["ready"] = False
        return None
    return f"{name} · {memory.used / 2**30:.0f}/{memory.total / 2**30:.0f} GiB · {busy}%"
