"""lorabooth's engine side: config, dataset, models, training, generation, the store.

Nothing in this package imports Textual; torch and diffusers are imported lazily by the modules
that need them, so the CLI and the UI start fast.
"""

from __future__ import annotations

from functools import cache


@cache
def version() -> str:
    """lorabooth's version. Called where it is used, never imported as `__version__` at the top
    of a module: that import runs this at once, and the CLI and the UI start without it."""
    # importlib.metadata costs ~15 ms to import: only pay it when a version is asked for.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lorabooth")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0.0.0+source"


def __getattr__(name: str) -> str:
    if name == "__version__":
        return version()
    raise AttributeError(name)
