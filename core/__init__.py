"""lorabooth's engine side: config, dataset, models, training, generation, the store.

Nothing in this package imports Textual; torch and diffusers are imported lazily by the modules
that need them, so the CLI and the UI start fast.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lorabooth")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
