"""The `lorabooth` command line: `main` (the parser and exit codes), `console` (output and
progress views), one module per command, and `open`, the only import of the UI."""

from .main import main

__all__ = ["main"]
