"""The UI must start in a fraction of a second: it may never pull in the ML stack."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "diffusers", "peft", "transformers", "accelerate")


def imported_modules(statement: str) -> set[str]:
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                            capture_output=True, text=True, check=True)
    names = set()
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_tui_imports_no_ml_library():
    names = imported_modules("import lorabooth.tui.app")
    assert "textual" in names  # the measurement itself works
    assert not names & set(HEAVY)


def test_cli_entry_point_imports_no_ml_library():
    names = imported_modules("import lorabooth.core.cli")
    assert not names & set(HEAVY)
