"""Exit codes, the one base class of every error a user can fix, and file-system failures in
words.

Every error that means "you can do something about this" derives from `LoraboothError` and
carries its exit code, so the CLI prints it without a traceback and the engine records it as a
job's readable failure, both by type, never by a class name as a string.
"""

from __future__ import annotations

import errno

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class LoraboothError(Exception):
    """A failure the user can act on: `str()` says what happened and what to do."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(LoraboothError):
    """Bad input from the user: a wrong argument, a missing file, a folder that is no
    workspace."""

    exit_code = EXIT_USAGE


def describe_os_error(exc: OSError) -> str:
    """A file-system failure in words a person can act on: the one wording of a full disk, a
    read-only disk and a refused permission."""
    where = exc.filename or "a file"
    if exc.errno == errno.EROFS:
        return f"cannot write {where}: the disk is read-only; move the workspace somewhere " \
               "writable"
    if exc.errno == errno.ENOSPC:
        return f"cannot write {where}: the disk is full; free some space and retry"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write {where}: permission denied"
    return f"{where}: {exc.strerror or exc}"
