"""Every error a user can fix is a LoraboothError with its exit code; the CLI and the engine
dispatch on that type."""

from __future__ import annotations

import errno

import pytest
from support import run_cli

from lorabooth.core.config import ConfigError, ConfigProblem
from lorabooth.core.engine.client import EngineStartFailed
from lorabooth.core.engine.failures import explain_failure
from lorabooth.core.engine.lock import EngineRunning
from lorabooth.core.errors import EXIT_FAILURE, EXIT_USAGE, LoraboothError, UsageError
from lorabooth.core.generate.recipe import RecipeError
from lorabooth.core.memory import MemoryPlanError
from lorabooth.core.models.resolve import ModelNotFound
from lorabooth.core.store import StoreError
from lorabooth.core.train import TrainingError
from lorabooth.core.workspace import WorkspaceExists


@pytest.mark.parametrize("error, code", [
    (UsageError("x"), EXIT_USAGE), (ConfigError([ConfigProblem("k", "bad")]), EXIT_USAGE),
    (ModelNotFound("x"), EXIT_USAGE), (RecipeError("x"), EXIT_USAGE),
    (WorkspaceExists("x"), EXIT_USAGE), (StoreError("x"), EXIT_FAILURE),
    (TrainingError("x"), EXIT_FAILURE), (MemoryPlanError("x"), EXIT_FAILURE),
    (EngineRunning(12), EXIT_FAILURE), (EngineStartFailed("x"), EXIT_FAILURE),
])
def test_user_errors_carry_their_exit_code(error: LoraboothError, code: int):
    assert isinstance(error, LoraboothError) and error.exit_code == code


def test_a_failed_job_is_worded_by_type():
    assert explain_failure(TrainingError("no usable photos in x")) == "no usable photos in x"
    full = OSError(errno.ENOSPC, "No space left on device", "/ws/a.png")
    assert "the disk is full" in explain_failure(full)
    assert explain_failure(ValueError("odd")) == "ValueError: odd"


def test_the_cli_exits_with_the_error_code(tmp_path):
    result = run_cli("engine", str(tmp_path), "status")
    assert result.returncode == EXIT_USAGE
    assert "is not a lorabooth workspace" in result.stderr and "Traceback" not in result.stderr
