"""A program in a pseudo-terminal of a fixed size, and the bytes it writes to it: what a
user over SSH pays for. Used by `bench/tui.py` and by the test that keeps the idle UI quiet.

Counting bytes is not a timing: an idle screen that redraws nothing writes nothing, however
fast or slow the machine is.
"""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import termios
import time


class PtyProgram:
    """`argv` run in a pty of `columns` x `rows`; its output is read and counted."""

    def __init__(self, argv: list[str], env: dict[str, str], columns: int, rows: int):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the pty is its terminal
            try:
                os.execvpe(argv[0], argv, {**os.environ, **env})
            finally:
                os._exit(127)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.screen = bytearray()  # everything written, for `wait_for`
        self.total = 0

    def _pump(self, seconds: float) -> int:
        """Read for `seconds`; return the bytes read."""
        end = time.monotonic() + seconds
        got = 0
        while (left := end - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:  # the program is gone
                break
            if not chunk:
                break
            got += len(chunk)
            self.screen += chunk
            del self.screen[:-200_000]
        self.total += got
        return got

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Read until `text` has been written (e.g. the first full frame)."""
        end = time.monotonic() + timeout
        needle = text.encode()
        while needle not in self.screen:
            if time.monotonic() > end:
                raise TimeoutError(f"{text!r} never written; last output: "
                                   f"{bytes(self.screen[-400:])!r}")
            self._pump(0.005)  # short reads: the time it was written is what a caller reads

    def settle(self, seconds: float) -> None:
        self._pump(seconds)

    def count(self, seconds: float) -> int:
        """Bytes written over the next `seconds`."""
        return self._pump(seconds)

    def send(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def close(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            self._pump(0.05)  # a full pty would block its exit
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)

    def __enter__(self) -> PtyProgram:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
