"""`lorabooth check`: scan a photo folder and print the files, a summary and the report."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from ..config import ConfigError, load_config
from ..dataset import OK, SKIPPED, WARN
from ..errors import EXIT_OK, EXIT_USAGE, UsageError
from ..models.resolve import cache_root
from ..safetext import plain
from ..workspace import Workspace
from .args import whole
from .console import console

if TYPE_CHECKING:  # numpy and Pillow load with the scan: opening the UI does not wait for them
    from ..dataset.report import DatasetReport
    from ..dataset.scan import ScanOptions, ScanResult

STATUS_STYLE = {OK: ("✓", "green"), WARN: ("!", "yellow"), SKIPPED: ("✗", "red")}


def find_workspace(photos: Path) -> Workspace | None:
    """The workspace whose photos folder this is: the folder itself or its parent."""
    for candidate in (photos, photos.parent):
        ws = Workspace.at(candidate)
        if not ws.exists():
            continue
        try:
            if ws.config(check_photos=False).photos_dir(ws.root) == photos:
                return ws
        except ConfigError:
            return None
    return None


def given_workspace(folder: Path) -> tuple[Workspace, Path] | None:
    """The workspace `folder` is, with its photos folder (a user types the path they open the
    UI with; checking it as photos would find none), or None. A workspace whose settings are
    broken raises ConfigError, which says what is wrong with them: checking its folder as a
    folder of photos would answer "no usable photos"."""
    ws = Workspace.at(folder)
    if not ws.exists():
        return None
    return ws, ws.config(check_photos=False).photos_dir(ws.root)


def cache_dir_for(photos: Path, ws: Workspace | None) -> Path:
    if ws is not None:
        return ws.cache
    key = hashlib.sha256(str(photos).encode()).hexdigest()[:16]
    return cache_root() / "folders" / key


def options_for(ws: Workspace | None, resolution: int | None,
                trigger: str | None) -> ScanOptions:
    from ..dataset.scan import ScanOptions

    config = None
    if ws is not None:
        try:
            config = load_config(ws.root, check_photos=False)
        except ConfigError:
            config = None
    default_res = min(config.train.resolution) if config else 512
    default_trigger = config.trigger if config else ""
    return ScanOptions(resolution=resolution or default_res, trigger=trigger or default_trigger)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("photos", metavar="PHOTOS_DIR",
                   help="a photo folder, or a workspace (then its photos)")
    p.add_argument("--json", action="store_true", help="one JSON record per file")
    p.add_argument("--recursive", action="store_true", help="include sub-folders")
    p.add_argument("--resolution", type=whole(64, 2048), default=None,
                   help="smallest training resolution (default: the workspace's, else 512)")
    p.add_argument("--trigger", default=None, help="trigger word (default: the workspace's)")


def run(args: argparse.Namespace) -> int:
    return run_check(Path(args.photos), as_json=args.json, recursive=args.recursive,
                     resolution=args.resolution, trigger=args.trigger)


def run_check(photos: Path, *, as_json: bool, recursive: bool, resolution: int | None,
              trigger: str | None) -> int:
    photos = photos.expanduser().resolve()
    if not photos.is_dir():
        raise UsageError(f"{photos}: no such folder")
    given = given_workspace(photos)
    if given is not None and given[1] != photos:
        # its photos live elsewhere: those, with its settings and its cache
        ws, photos = given
        if not photos.is_dir():
            raise UsageError(f"{ws.root} is a workspace whose photos folder {photos} is "
                             "missing")
        console(stderr=True).print(plain(f"checking {photos}, the photos of this workspace",
                                         "dim"))
    else:
        ws = find_workspace(photos)
    from ..dataset.report import build_report
    from ..dataset.scan import ScanOptions

    options = options_for(ws, resolution, trigger)
    options = ScanOptions(options.resolution, options.trigger, options.template, recursive)
    out = console()
    scan = _scan_with_progress(photos, options, cache_dir_for(photos, ws), as_json)
    report = build_report(scan, options)
    if as_json:
        print(json.dumps([r.public() for r in scan.records], indent=1, ensure_ascii=False))
    else:
        print_scan(out, scan, report)
    return EXIT_OK if scan.usable() else EXIT_USAGE


def _scan_with_progress(photos: Path, options: ScanOptions, cache: Path,
                        quiet: bool) -> ScanResult:
    from ..dataset.scan import scan_folder

    if quiet or not sys.stderr.isatty():
        return scan_folder(photos, options, cache)
    from rich.progress import Progress

    with Progress(console=console(stderr=True), transient=True) as progress:
        task = progress.add_task("reading photos", total=None)

        def step(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        return scan_folder(photos, options, cache, progress=step)


def print_scan(out: Console, scan: ScanResult, report: DatasetReport) -> None:
    for record in scan.records:
        mark, style = STATUS_STYLE[record.status]
        line = plain(f"{mark} ", style) + plain(record.path)
        if record.width:
            line.append_text(plain(f"  {record.width}x{record.height}", "dim"))
        out.print(line)
        for reason in record.reasons:
            out.print(plain(f"    {reason}", style if record.status != OK else "dim"))
    for note in scan.notes:
        out.print(plain(f"note: {note}", "yellow"))
    c = report.counts
    out.print()
    out.print(plain(f"{report.total} files: {c[OK]} ok, {c[WARN]} with warnings, "
                    f"{c[SKIPPED]} skipped", "bold"))
    if report.short_side:
        s = report.short_side
        out.print(plain(f"short side   {s.low:.0f} / {s.median:.0f} / {s.high:.0f} px "
                        "(min / median / max)"))
        o = report.orientation
        out.print(plain(f"orientation  {o['portrait']} portrait, {o['landscape']} landscape, "
                        f"{o['square']} square"))
        b = report.brightness
        out.print(plain(f"brightness   {b.low:.0%} / {b.median:.0%} / {b.high:.0%}"))
        usable = len(scan.usable())
        out.print(plain(f"captions     {report.captions_from_sidecar} of {usable} from "
                        ".txt files"))
        out.print(plain(f"backgrounds  at most {len(report.same_background)} alike; palettes "
                        f"at most {len(report.same_palette)} alike"))
    if report.advice:
        out.print()
        for advice in report.advice:
            out.print(plain("• ", "cyan") + plain(advice))
