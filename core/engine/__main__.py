"""`python -m lorabooth.core.engine WORKSPACE`: the engine process, as `start_detached` runs it."""

from __future__ import annotations

import sys

from ..models.load import quiet_library_logs
from ..store import StoreError
from ..workspace import Workspace
from .lock import EngineRunning
from .loop import Engine


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m lorabooth.core.engine WORKSPACE", file=sys.stderr)
        return 2
    quiet_library_logs()
    ws = Workspace.at(args[0])
    try:
        return Engine(ws).run()
    except EngineRunning as exc:
        print(f"lorabooth engine: {exc}", file=sys.stderr)
        return 1
    except StoreError as exc:
        print(f"lorabooth engine: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
