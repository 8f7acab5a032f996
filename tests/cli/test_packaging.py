"""The installed package, not only the source tree: a wheel must hold every module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from support import REPO

TOP = {"core": "lorabooth.core", "tui": "lorabooth.tui", "themes": "lorabooth.themes",
       "sample_photos": "lorabooth.sample_photos"}


def test_every_source_folder_is_a_listed_package():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    for folder, package in TOP.items():
        for sub in [REPO / folder, *(p for p in (REPO / folder).rglob("*") if p.is_dir())]:
            if "__pycache__" in sub.parts or not list(sub.glob("*.py")):
                continue
            name = ".".join([package, *sub.relative_to(REPO / folder).parts])
            assert (sub / "__init__.py").is_file(), f"{sub} has no __init__.py"
            assert name in listed, f"{name} is missing from [tool.setuptools] packages"


def test_a_built_wheel_runs_the_ui_import(tmp_path: Path):
    # Built from a clean copy: setuptools would reuse a stale build/ folder in the checkout.
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist"), str(source)], check=True,
                   capture_output=True)
    wheel = next((tmp_path / "dist").glob("lorabooth-*.whl"))
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)
    # -S: no site, so the editable install's .pth finder cannot fill in what the wheel
    # lacks; the dependencies still come from site-packages, named on PYTHONPATH.
    site_packages = sysconfig.get_paths()["purelib"]
    result = subprocess.run(
        [sys.executable, "-S", "-c", "import lorabooth.tui.app as a, lorabooth.core.train as t, "
         "lorabooth.sample_photos as s, lorabooth.core.kernels.cpu_attention as k; "
         "print(a.__file__); print(len(list(s.SAMPLE_PHOTOS_DIR.glob('*.jpg')))); "
         "print(k.SOURCE.is_file())"],
        capture_output=True, text=True,
        env={"PYTHONPATH": f"{target}{os.pathsep}{site_packages}", "PATH": ""},
        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path, photos, kernel_source = result.stdout.split()
    assert path.startswith(str(target))
    assert int(photos) == 16
    assert kernel_source == "True"  # the C++ the kernel is compiled from on first use


def test_the_model_stack_floors_are_versions_that_ran_on_a_gpu():
    """torch, diffusers, transformers and peft below what the GPU benchmark ran (recorded in
    bench/results/gpu.json) would be a promise nobody checked; the other floors are the
    versions CI installed when they were set."""
    import json
    import re

    from packaging.version import Version

    ran = json.loads((REPO / "bench" / "results" / "gpu.json").read_text())
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = dict(re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", d).groups() for d in deps)
    for name in ("torch", "diffusers", "transformers", "peft"):
        assert Version(floors[name]) >= Version(ran[name].split("+")[0]), name
