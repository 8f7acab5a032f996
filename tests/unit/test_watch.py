"""The folder watcher: photos copied in slowly or in a burst, renamed, deleted, and the folder
itself deleted and re-created; the dataset matches the folder within 2 s each time."""

from __future__ import annotations

import io
import shutil
import threading
import time
from pathlib import Path

from PIL import Image
from support import REPO

from lorabooth.core.dataset.scan import ScanOptions
from lorabooth.core.watch import DatasetChange, FolderWatcher

SAMPLES = REPO / "sample_photos"
DEADLINE = 2.0


class Recorder:
    def __init__(self):
        self.changes: list[DatasetChange] = []
        self.lock = threading.Lock()

    def __call__(self, change: DatasetChange) -> None:
        with self.lock:
            self.changes.append(change)

    @property
    def paths(self) -> set[str]:
        with self.lock:
            return {r.path for r in self.changes[-1].scan.records} if self.changes else set()

    def statuses(self) -> dict[str, str]:
        with self.lock:
            return {r.path: r.status for r in self.changes[-1].scan.records}


def wait_for(condition, timeout: float = DEADLINE) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not within {timeout} s")


def jpeg_bytes(index: int, size: int = 96) -> bytes:
    img = Image.open(SAMPLES / "01_studio.jpg").convert("RGB").resize((size, size))
    img.putpixel((index % size, (index // size) % size), (index % 255, 0, 0))
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def test_watcher_follows_the_folder(tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SAMPLES / "01_studio.jpg", folder / "a.jpg")
    recorder = Recorder()
    watcher = FolderWatcher(folder, recorder, ScanOptions(resolution=64), tmp_path / "cache",
                            settle=0.4)
    with watcher:
        wait_for(lambda: recorder.paths == {"a.jpg"})

        # A slow copy, as scp writes it: under its final name, in chunks.
        data = (SAMPLES / "02_beach_scarf.jpg").read_bytes()
        with open(folder / "slow.jpg", "wb") as handle:
            for start in range(0, len(data), len(data) // 6):
                handle.write(data[start:start + len(data) // 6])
                handle.flush()
                time.sleep(0.15)
                assert "slow.jpg" not in recorder.paths or \
                    recorder.statuses()["slow.jpg"] == "ok"
        wait_for(lambda: "slow.jpg" in recorder.paths)
        assert recorder.statuses()["slow.jpg"] == "ok"  # never seen half-written

        # A burst of 500 files lands as one batch.
        before = len(recorder.changes)
        burst = tmp_path / "burst"
        burst.mkdir()
        for i in range(500):
            (burst / f"b{i:03}.jpg").write_bytes(jpeg_bytes(i))
        for path in burst.iterdir():
            path.rename(folder / path.name)
        wait_for(lambda: len(recorder.paths) == 502, timeout=DEADLINE + 8)
        assert len(recorder.changes) - before <= 3

        # Rename and delete.
        (folder / "a.jpg").rename(folder / "renamed.jpg")
        for i in range(100):
            (folder / f"b{i:03}.jpg").unlink()
        wait_for(lambda: "renamed.jpg" in recorder.paths and "a.jpg" not in recorder.paths
                 and len(recorder.paths) == 402)

        # The whole folder deleted and made again.
        shutil.rmtree(folder)
        wait_for(lambda: recorder.paths == set())
        folder.mkdir()
        shutil.copy(SAMPLES / "03_forest_beanie.jpg", folder / "back.jpg")
        wait_for(lambda: recorder.paths == {"back.jpg"})


def test_caption_edit_is_noticed(tmp_path: Path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SAMPLES / "01_studio.jpg", folder / "a.jpg")
    recorder = Recorder()
    with FolderWatcher(folder, recorder, ScanOptions(resolution=64, trigger="zorb"),
                       settle=0.2, poll=0.3):
        wait_for(lambda: recorder.paths == {"a.jpg"})
        (folder / "a.txt").write_text("zorb on the moon")

        def captioned() -> bool:
            with recorder.lock:
                return recorder.changes[-1].scan.records[0].caption == "zorb on the moon"

        wait_for(captioned)
