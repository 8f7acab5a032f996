"""The import contract: core/ never imports Textual (cli/open.py alone opens the UI, lazily),
tui/ never imports the ML stack, and the UI and the CLI start without it."""

from __future__ import annotations

import ast
import subprocess
import sys

from support import REPO

HEAVY = ("torch", "diffusers", "peft", "transformers", "accelerate")


def imports_in(path) -> set[str]:
    """Absolute names of every module `path` imports, at any depth (lazy imports included)."""
    package = ["lorabooth", path.relative_to(REPO).parts[0],
               *path.relative_to(REPO).parts[1:-1]]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_core_never_imports_textual_but_through_cli_open():
    offenders = {}
    for path in sorted((REPO / "core").rglob("*.py")):
        bad = {n for n in imports_in(path) if n.split(".")[0] == "textual"
               or n.startswith("lorabooth.tui")}
        if bad and path != REPO / "core" / "cli" / "open.py":
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}
    assert "lorabooth.tui.app" in imports_in(REPO / "core" / "cli" / "open.py")


def test_tui_never_imports_the_ml_stack():
    offenders = {}
    for path in sorted((REPO / "tui").rglob("*.py")):
        bad = {n for n in imports_in(path) if n.split(".")[0] in HEAVY}
        if bad:
            offenders[str(path.relative_to(REPO))] = sorted(bad)
    assert offenders == {}


def test_the_contract_check_sees_lazy_imports():
    # A function-level import counts: the check above would catch one.
    assert "torch" in imports_in(REPO / "core" / "models" / "owner.py")


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
