"""Exit codes and the error the commands raise for bad input.

Kept apart from cli.py: run as `python -m lorabooth.core.cli`, that module is `__main__`, and a
class defined there would not be the one the commands import.
"""

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input from the user: printed without a traceback, exit code 2."""
