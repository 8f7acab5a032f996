"""Exit codes and the error the commands raise for bad input.

Kept apart from cli.py: run as `python -m lorabooth.core.cli`, that module is `__main__`, and a
class defined there would not be the one the commands import.
"""

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""


def describe_os_error(exc: OSError) -> str:
    """A file-system failure in words a person can act on."""
    import errno

    where = exc.filename or "a file"
    if exc.errno == errno.EROFS:
        return f"cannot write {where}: the disk is read-only; move the workspace somewhere " \
               "writable"
    if exc.errno == errno.ENOSPC:
        return f"cannot write {where}: the disk is full; free some space and retry"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write {where}: permission denied"
    return f"{where}: {exc.strerror or exc}"
