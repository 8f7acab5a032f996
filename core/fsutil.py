"""Files written atomically (a reader, or a crash, sees the old file or the new one, never
half) and read defensively (never a FIFO, never more than a limit, forged JSON refused)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISFIFO, S_ISREG
from typing import IO, Any


def _read_umask() -> int:
    # Read once at import: os.umask can only be read by setting it, which races with threads.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (POSIX needs the directory itself synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) do not open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs) -> Iterator[IO]:
    """Open a temp file beside `path`; on a clean exit fsync it and rename it over `path`.

    On an exception the temp file is removed and `path` is untouched, so a full disk or a
    kill leaves the previous version in place.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if target.exists():
            # Keep the user's permission bits on files they own (captions, the config).
            with contextlib.suppress(OSError):
                os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.filename is None:
            exc.filename = str(target)  # a write that failed names no file: say which
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    # newline="" writes the text's own line endings unchanged.
    with atomic_open(path, "w", encoding=encoding, newline="") as handle:
        handle.write(text)


class NotRegular(OSError):
    """A name that looks like a file of ours (a photo, a record) but is a FIFO, a device, or
    too large to be one."""


def read_regular_file(path: Path, limit: int, what: str = "a photo"
                      ) -> tuple[bytes, os.stat_result]:
    """The bytes of a regular file of at most `limit` bytes. A FIFO or a device is never
    opened (opening a FIFO waits for a writer forever), and at most `limit` + 1 bytes are read
    (a link to /dev/zero or a growing file cannot exhaust memory)."""
    stat = os.stat(path)
    if not S_ISREG(stat.st_mode):
        kind = "a FIFO" if S_ISFIFO(stat.st_mode) else "a device or other special file"
        raise NotRegular(f"not a regular file ({kind}): skipped")
    if stat.st_size > limit:
        raise NotRegular(f"too large for {what} ({byte_size(stat.st_size)}; the limit "
                         f"is {byte_size(limit)})")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        if not S_ISREG(os.fstat(handle.fileno()).st_mode):  # swapped after the stat
            raise NotRegular("not a regular file: skipped")
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise NotRegular(f"too large for {what} (over {byte_size(limit)})")
    return data, stat


def byte_size(count: int) -> str:
    """A size in the unit that shows it best: 900 bytes, 64 KiB, 1.5 MiB, 2 GiB."""
    if count < 1024:
        return f"{count} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        count /= 1024
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}".replace(".0 ", " ")
    raise AssertionError("unreachable")


def json_number(value: Any) -> float | None:
    """A number read from a record of ours, or None: JSON's true is not 1, and NaN or
    Infinity (which Python's json reads) are no measurement."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def read_json(path: Path, limit: int = 2**20) -> Any:
    """A small JSON file of ours (a record, a checkpoint's meta), read as read_regular_file
    reads. ValueError for anything that is not JSON, including a forged file of brackets
    nested deeper than the parser recurses; OSError when it cannot be read."""
    data, _ = read_regular_file(path, limit, "a record")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError(f"{path}: nested too deeply to be a record of ours") from None
