"""The `lorabooth` command line: `main` (the parser and exit codes), `console` (output and
progress views), `args` (bounded argument types), one module per command, and `open`, the
only place the command line imports the UI."""

from .main import main

__all__ = ["main"]
