"""System RAM as the out-of-memory killer counts it: /proc/meminfo, or a container's cgroup limit
where there is one (rented GPU machines are mostly containers, whose /proc/meminfo shows the
host's memory). The cgroup files are laid out as the kernel lays them out, in a temporary
folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorabooth.core import system_memory
from lorabooth.core.system_memory import cgroup_memory

GIB = 2**30


def write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".", 1)).write_text(text)


def membership(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "self-cgroup"
    path.write_text(text)
    return path


def test_a_v2_container_is_limited_to_its_own_memory(tmp_path):
    root = tmp_path / "cgroup"
    write(root, cgroup_controllers="cpu memory", memory_max=f"{32 * GIB}\n",
          memory_current=f"{10 * GIB}\n", memory_stat=f"anon {6 * GIB}\nfile {4 * GIB}\n")
    # 32 - 10 used, 4 of which is page cache the group gives back before anything is killed
    assert cgroup_memory(root, membership(tmp_path, "0::/\n")) == (32.0, 26.0)


def test_the_tightest_level_of_a_v2_hierarchy_counts(tmp_path):
    root = tmp_path / "cgroup"
    write(root, cgroup_controllers="memory")
    write(root / "user.slice", memory_max="max\n", memory_current=f"{50 * GIB}\n")
    write(root / "user.slice" / "lorabooth.scope", memory_max=f"{8 * GIB}\n",
          memory_current=f"{1 * GIB}\n", memory_stat="file 0\n")
    where = membership(tmp_path, "0::/user.slice/lorabooth.scope\n")
    assert cgroup_memory(root, where) == (8.0, 7.0)
    write(root / "user.slice", memory_max=f"{4 * GIB}\n", memory_current=f"{3 * GIB}\n")
    assert cgroup_memory(root, where) == (4.0, 1.0)  # the parent has less left


def test_v1_reads_the_hierarchical_limit_and_an_unlimited_group_is_none(tmp_path):
    root = tmp_path / "cgroup"
    # Docker's view: the group's path names the host's folder; inside, the mount is the group.
    write(root / "memory", memory_usage_in_bytes=f"{6 * GIB}\n",
          memory_limit_in_bytes=f"{2**63 - 4096}\n",
          memory_stat=f"cache {2 * GIB}\nhierarchical_memory_limit {16 * GIB}\n"
                      f"total_cache {2 * GIB}\n")
    where = membership(tmp_path, "5:devices:/docker/abc\n4:memory:/docker/abc\n0::/\n")
    assert cgroup_memory(root, where) == (16.0, 12.0)
    write(root / "memory", memory_stat=f"hierarchical_memory_limit {2**63 - 4096}\n")
    assert cgroup_memory(root, where) is None


@pytest.mark.parametrize("files", [{"memory_max": "garbage"}, {"memory_max": ""}, {}])
def test_unreadable_cgroup_files_mean_no_limit_known(tmp_path, files):
    root = tmp_path / "cgroup"
    write(root, cgroup_controllers="memory", memory_current="5", **files)
    assert cgroup_memory(root, membership(tmp_path, "0::/\n")) is None
    assert cgroup_memory(root, tmp_path / "missing") is None


def test_the_plan_uses_the_container_limit_when_it_is_tighter(monkeypatch):
    free = system_memory.system_memory()
    assert free is not None and free > 0.5  # this machine's /proc/meminfo
    monkeypatch.setattr(system_memory, "cgroup_memory", lambda: (32.0, 0.5))
    assert system_memory.system_memory() == 0.5
    monkeypatch.setattr(system_memory, "cgroup_memory", lambda: (4096.0, 4000.0))
    assert system_memory.system_memory() == pytest.approx(free, abs=1.0)
