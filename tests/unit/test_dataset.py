"""Every kind of file a phone folder holds, each with the status and reason a person reads."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter
from support import REPO, copy_sample_photos

from lorabooth.core.dataset.buckets import Bucket, bucket_sizes, crop_to_bucket, nearest_bucket
from lorabooth.core.dataset.captions import effective_caption, read_caption, write_caption
from lorabooth.core.dataset.files import list_photos, open_image
from lorabooth.core.dataset.report import build_report
from lorabooth.core.dataset.scan import ScanOptions, scan_folder

SAMPLES = REPO / "sample_photos"
OPTIONS = ScanOptions(resolution=512, trigger="zorb")


def sample(name: str = "01_studio.jpg") -> Image.Image:
    return Image.open(SAMPLES / name).convert("RGB")


def upright_marker() -> Image.Image:
    """A 600x800 portrait photo, red at the top, blue at the bottom."""
    img = sample("03_forest_beanie.jpg").resize((600, 800))
    ImageDraw.Draw(img).rectangle([0, 0, 600, 100], fill=(255, 0, 0))
    ImageDraw.Draw(img).rectangle([0, 700, 600, 800], fill=(0, 0, 255))
    return img


def png_bomb() -> bytes:
    """A tiny PNG whose header claims 40000x40000 pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", 40000, 40000, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 5001)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("zoo")
    base = sample()
    base.save(folder / "ok.jpg", quality=90)
    (folder / "ok.txt").write_text("photo of zorb in a studio\n")
    shutil.copy(folder / "ok.jpg", folder / "ok_copy.jpg")
    sample().resize((700, 700)).save(folder / "ok_resaved.jpg", quality=60)
    # EXIF orientation 6: the pixels are stored rotated; viewers turn them upright.
    exif = Image.Exif()
    exif[0x0112] = 6
    upright_marker().rotate(90, expand=True).save(folder / "rotated.jpg", exif=exif)
    rgba = sample("02_beach_scarf.jpg").convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 0).point(lambda _: 0))
    ImageDraw.Draw(rgba).ellipse([200, 100, 600, 500], fill=(200, 30, 30, 255))
    rgba.save(folder / "alpha.png")
    sample("04_city_glasses.jpg").convert("P", palette=Image.Palette.ADAPTIVE).save(
        folder / "palette.png")
    sample("06_room_bowtie.jpg").convert("L").save(folder / "gray.png")
    gray16 = (np.asarray(sample("07_park.jpg").convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(gray16).save(folder / "sixteen.png")
    sample("08_pastel_scarf.jpg").convert("CMYK").save(folder / "cmyk.jpg")
    sample("10_beach_glasses.jpg").save(folder / "scan.tiff")
    sample("11_city_headphones.jpg").save(folder / "old.bmp")
    sample("12_forest.jpg").save(folder / "web.webp")
    frames = [sample("13_room_scarf.jpg"), sample("14_night_beanie.jpg")]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    data = (folder / "ok.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.jpg").write_text("this is not a picture")
    (folder / "empty.png").write_bytes(b"")
    sample().resize((180, 240)).save(folder / "tiny.jpg")
    sample().resize((2000, 400)).save(folder / "banner.jpg")
    (folder / "bomb.png").write_bytes(png_bomb())
    sample("15_park_bowtie.jpg").filter(ImageFilter.GaussianBlur(14)).save(folder / "blurry.jpg")
    ImageEnhance.Brightness(sample("16_pastel.jpg")).enhance(0.08).save(folder / "dark.jpg")
    ImageEnhance.Brightness(sample("01_studio.jpg")).enhance(2.5).save(folder / "blown.jpg")
    (folder / "iphone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + b"\x00" * 64)
    sample("05_night_headphones.jpg").save(folder / "latin1.jpg")
    (folder / "latin1.txt").write_bytes("photo de zorb, très café".encode("latin-1"))
    odd = "my photo [bold]1[red] ünï \x1b[31m.jpg"
    sample("12_forest.jpg").transpose(Image.FLIP_LEFT_RIGHT).save(folder / odd)
    for ignored in (".hidden.jpg", "incoming.jpg.part", "dl.jpg.crdownload", "x.tmp",
                    "backup.jpg~"):
        shutil.copy(folder / "ok.jpg", folder / ignored)
    (folder / ".lorabooth").mkdir()
    shutil.copy(folder / "ok.jpg", folder / ".lorabooth" / "cached.jpg")
    (folder / "README.md").write_text("not a photo, not an error")
    return folder


@pytest.fixture(scope="module")
def records(zoo: Path, tmp_path_factory: pytest.TempPathFactory):
    scan = scan_folder(zoo, OPTIONS, tmp_path_factory.mktemp("cache"))
    return {r.path: r for r in scan.records}, scan


def status(records, name: str) -> tuple[str, str]:
    record = records[0][name]
    return record.status, " | ".join(record.reasons)


def test_ignored_files_are_not_reported(records):
    names = set(records[0])
    for ignored in (".hidden.jpg", "incoming.jpg.part", "dl.jpg.crdownload", "x.tmp",
                    "backup.jpg~", ".lorabooth/cached.jpg", "README.md", "ok.txt"):
        assert ignored not in names


@pytest.mark.parametrize("name", ["ok.jpg", "alpha.png", "palette.png", "gray.png",
                                  "sixteen.png", "cmyk.jpg", "scan.tiff", "old.bmp", "web.webp",
                                  "anim.gif", "rotated.jpg",
                                  "my photo [bold]1[red] ünï \x1b[31m.jpg"])
def test_readable_formats_are_ok(records, name: str):
    assert status(records, name) == ("ok", "")


@pytest.mark.parametrize(("name", "expected", "reason"), [
    ("truncated.jpg", "skipped", "truncated or damaged file"),
    ("notes.jpg", "skipped", "not an image"),
    ("empty.png", "skipped", "empty file (0 bytes)"),
    ("tiny.jpg", "skipped", "too small: short side 180 px < 512"),
    ("banner.jpg", "skipped", "extreme aspect ratio 5.0:1"),
    ("bomb.png", "skipped", "decompression bomb"),
    ("ok_copy.jpg", "skipped", "exact duplicate of ok.jpg"),
    ("ok_resaved.jpg", "warn", "near-duplicate of ok.jpg"),
    ("blurry.jpg", "warn", "very blurry"),
    ("dark.jpg", "warn", "very dark"),
    ("blown.jpg", "warn", "over-exposed"),
    ("iphone.heic", "skipped", "pip install 'lorabooth[heic]'"),
    ("latin1.jpg", "warn", "caption latin1.txt is not UTF-8"),
])
def test_problem_files_get_a_status_and_a_readable_reason(records, name, expected, reason):
    got_status, got_reason = status(records, name)
    assert got_status == expected
    assert reason in got_reason


def test_exif_rotated_photo_comes_out_upright(zoo: Path, records):
    record = records[0]["rotated.jpg"]
    assert (record.width, record.height) == (600, 800)
    img = open_image((zoo / "rotated.jpg").read_bytes())
    assert img.size == (600, 800)
    top, bottom = np.asarray(img)[20, 300], np.asarray(img)[780, 300]
    assert top[0] > 200 and top[2] < 60  # red stays on top
    assert bottom[2] > 200 and bottom[0] < 60


def test_alpha_is_composited_on_neutral_grey(zoo: Path):
    img = open_image((zoo / "alpha.png").read_bytes())
    assert img.mode == "RGB"
    assert tuple(np.asarray(img)[5, 5]) == (128, 128, 128)


def test_sixteen_bit_and_cmyk_convert_to_rgb(zoo: Path):
    for name in ("sixteen.png", "cmyk.jpg"):
        img = open_image((zoo / name).read_bytes())
        assert img.mode == "RGB"
        assert 30 < np.asarray(img).mean() < 230


def test_captions_sidecar_template_and_trigger(zoo: Path, records):
    by_path = records[0]
    assert by_path["ok.jpg"].caption == "photo of zorb in a studio"
    assert by_path["ok.jpg"].caption_source == "sidecar"
    assert by_path["gray.png"].caption == "photo of zorb"
    assert by_path["gray.png"].caption_source == "template"
    assert effective_caption("a plush toy on a beach", "zorb") == "zorb, a plush toy on a beach"
    assert effective_caption("[trigger] at night", "zorb") == "zorb at night"


def test_a_caption_too_large_says_its_size_and_the_limit_and_the_template_is_used(
        tmp_path: Path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"")
    (tmp_path / "a.txt").write_text("zorb " * 20_000)  # 100,000 bytes
    caption = read_caption(photo)
    assert caption.text is None
    assert caption.problem == ("caption a.txt: too large for a caption (97.7 KiB; the limit is "
                               "64 KiB); using the template")


def test_the_class_caption_names_the_class_wherever_the_caption_names_the_subject():
    from lorabooth.core.dataset.captions import class_caption

    assert class_caption("zorb, a plush toy on a beach", "zorb", "plush toy") == \
        "plush toy, a plush toy on a beach"
    # Any case, possessives, punctuation; a word that merely starts with it is left alone.
    assert class_caption("Zorb's scarf. ZORB waves at zorbland", "zorb", "person") == \
        "person's scarf. person waves at zorbland"
    # The class is text, never a regex replacement pattern.
    assert class_caption("photo of ohwx", "ohwx", r"a \1 \g<0> dog") == r"photo of a \1 \g<0> dog"
    assert class_caption("photo of o.w", "o.w", "man") == "photo of man"
    assert class_caption("photo of oxw", "o.w", "man") == "photo of oxw"


def test_check_json_reports_every_file(zoo: Path):
    from support import run_cli

    result = run_cli("check", str(zoo), "--json", "--trigger", "zorb")
    assert result.returncode == 0, result.stderr
    import json

    rows = json.loads(result.stdout)
    assert {"path", "status", "reasons", "width", "height", "caption"} <= set(rows[0])
    assert len(rows) == len(list_photos(zoo))


def test_check_given_a_workspace_checks_its_photos_folder(zoo: Path, tmp_path: Path):
    """`lorabooth check WS`, the path the UI opens with, reads the workspace's photos folder
    (kept elsewhere here), not the workspace folder (which holds no photos)."""
    import json

    from support import run_cli

    ws = tmp_path / "ws"
    made = run_cli("init", str(ws), "--photos", str(zoo), "--model", "demo")
    assert made.returncode == 0, made.stderr
    result = run_cli("check", str(ws), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == len(list_photos(zoo))
    assert str(zoo.resolve()) in result.stderr
    # with the workspace's settings: its trigger word (init's default) leads the captions
    captions = [row["caption"] for row in rows if row["caption"]]
    assert captions and all("ohwx" in caption for caption in captions)
    # Its settings broken: the problem with them is said, not "no usable photos" from a check
    # of the workspace folder as if it held the photos.
    toml = ws / "lorabooth.toml"
    toml.write_text(toml.read_text() + "\nzz = " + "[" * 5000 + "]" * 5000 + "\n")
    broken = run_cli("check", str(ws))
    assert broken.returncode == 2 and "lorabooth.toml" in broken.stderr, broken.stderr
    assert "nested" in broken.stderr and "usable" not in broken.stdout + broken.stderr


def test_check_exit_code_2_when_nothing_is_usable(tmp_path: Path):
    from support import run_cli

    (tmp_path / "a.jpg").write_text("nope")
    result = run_cli("check", str(tmp_path))
    assert result.returncode == 2
    assert "not an image" in result.stdout


@pytest.mark.parametrize("value", ["-5", "0", "99999999999", "nan"])
def test_check_refuses_a_resolution_no_training_could_use(tmp_path: Path, value: str):
    """-5 passed every photo and 99999999999 skipped them all, each as if it were advice."""
    from support import run_cli

    result = run_cli("check", str(tmp_path), "--resolution", value)
    assert result.returncode == 2
    assert "--resolution" in result.stderr
    assert "allowed: 64 to 2048" in result.stderr or "not a whole number" in result.stderr


def test_check_shows_names_as_typed(zoo: Path):
    from support import run_cli

    result = run_cli("check", str(zoo))
    assert "my photo [bold]1[red] ünï ␛[31m.jpg" in result.stdout
    assert "\x1b[31m.jpg" not in result.stdout


def test_edited_caption_keeps_encoding_and_line_endings(tmp_path: Path):
    photo = tmp_path / "p.jpg"
    (tmp_path / "p.txt").write_bytes(b"\xef\xbb\xbfold caption\r\nsecond line\r\n")
    write_caption(photo, "new caption, ünï\nline two")
    assert (tmp_path / "p.txt").read_bytes() == \
        b"\xef\xbb\xbfnew caption, \xc3\xbcn\xc3\xaf\r\nline two\r\n"
    assert read_caption(photo).text == "new caption, ünï line two"
    fresh = tmp_path / "q.jpg"
    write_caption(fresh, "zorb on a bike")
    assert (tmp_path / "q.txt").read_bytes() == b"zorb on a bike\n"
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left nothing behind
    # A FIFO where the sidecar goes (saving read it first, and hung): replaced by the caption.
    import os
    import threading

    os.mkfifo(tmp_path / "r.txt")
    saving = threading.Thread(target=write_caption, args=(tmp_path / "r.jpg", "zorb"),
                              daemon=True)
    saving.start()
    saving.join(timeout=30)
    assert not saving.is_alive(), "saving a caption hung on a FIFO"
    assert (tmp_path / "r.txt").read_bytes() == b"zorb\n"


def test_buckets_are_multiples_of_64_around_the_area():
    for resolution in (512, 768, 1024):
        buckets = bucket_sizes(resolution)
        assert Bucket(resolution, resolution) in buckets
        for b in buckets:
            assert b.width % 64 == 0 and b.height % 64 == 0
            assert 0.75 * resolution**2 <= b.width * b.height <= resolution**2
    portrait = nearest_bucket(3000, 4000, bucket_sizes(1024))
    assert portrait.height > portrait.width
    assert abs(portrait.ratio - 0.75) < 0.1
    img = crop_to_bucket(sample("02_beach_scarf.jpg"), portrait)
    assert img.size == (portrait.width, portrait.height)


def test_report_says_what_the_set_is_short_of(tmp_path: Path):
    rng = np.random.default_rng(0)
    for i in range(14):
        backdrop = (200, 200, 205) if i < 11 else tuple(int(v) for v in rng.integers(0, 255, 3))
        img = Image.new("RGB", (640, 800), backdrop)
        draw = ImageDraw.Draw(img)
        x, y = int(rng.integers(150, 350)), int(rng.integers(200, 400))
        draw.ellipse([x, y, x + 200, y + 260], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw.rectangle([x + 40, y + 60, x + 80 + i * 5, y + 90], fill=(20, 20, 20))
        img.save(tmp_path / f"p{i:02}.jpg")
    scan = scan_folder(tmp_path, OPTIONS)
    report = build_report(scan, OPTIONS)
    assert ("11 of 14 photos have the same background: the LoRA will learn it; add variety or "
            "describe it in the captions.") in report.advice
    assert report.orientation["portrait"] == 14
    assert any("All photos are portrait" in a for a in report.advice)
    assert any("14 photos have no usable caption file" in a for a in report.advice)
    # With no trigger word known (a plain folder checked) the template is shown as written.
    from dataclasses import replace

    unnamed = replace(OPTIONS, trigger="")
    advice = " ".join(build_report(scan_folder(tmp_path, unnamed), unnamed).advice)
    assert "'photo of {trigger}'" in advice and "'photo of '" not in advice


def test_sample_photos_pass_cleanly():
    scan = scan_folder(SAMPLES, ScanOptions(resolution=512, trigger="zorb"))
    assert len(scan.records) == 16
    assert all(r.status == "ok" for r in scan.records), [
        (r.path, r.reasons) for r in scan.records if r.status != "ok"]
    assert build_report(scan, OPTIONS).advice == []


def test_warm_rescan_reuses_the_cache(zoo: Path, tmp_path: Path, monkeypatch):
    import lorabooth.core.dataset.measure as dataset

    first = scan_folder(zoo, OPTIONS, tmp_path)
    thumbs = list((tmp_path / "thumbs").glob("*.jpg"))
    assert len(thumbs) >= 15
    calls = []
    real = dataset.measure
    monkeypatch.setattr(dataset, "measure", lambda *a: calls.append(a) or real(*a))
    second = scan_folder(zoo, OPTIONS, tmp_path)
    assert calls == []
    assert [r.public() for r in first.records] == [r.public() for r in second.records]
    buffer = io.BytesIO()
    sample().save(buffer, "JPEG", quality=70)
    (zoo / "ok_resaved.jpg").write_bytes(buffer.getvalue())  # changed: measured again
    scan_folder(zoo, OPTIONS, tmp_path)
    assert [Path(c[0]).name for c in calls] == ["ok_resaved.jpg"]


def test_a_forged_scan_cache_is_measured_again_not_trusted(tmp_path: Path):
    """The scan cache lives in the workspace: forged (brackets nested past the parser's
    limit, a FIFO, entries with a string for a width or a path for the hash that names the
    thumbnail), the next scan measures the photos again and finds what a fresh one finds."""
    import json
    import os
    import threading

    photos = copy_sample_photos(tmp_path / "photos")
    cache = tmp_path / "cache"
    fresh = [(r.path, r.status, r.width) for r in scan_folder(photos, OPTIONS, cache).records]
    blob = json.loads((cache / "scan.json").read_text())
    for entry in blob["files"].values():
        entry["width"], entry["sha256"] = "wide", "../" * 10 + "etc/passwd"
    forgeries = [json.dumps(blob), "[" * 100_000 + "]" * 100_000, None]
    for forged in forgeries:
        (cache / "scan.json").unlink()
        if forged is None:
            os.mkfifo(cache / "scan.json")  # opening it would wait for a writer forever
        else:
            (cache / "scan.json").write_text(forged)
        done: list = []
        scan = threading.Thread(target=lambda out=done: out.append(
            scan_folder(photos, OPTIONS, cache)), daemon=True)  # a FIFO would block it, not us
        scan.start()
        scan.join(timeout=60)
        assert done, f"the scan hung on a {'FIFO' if forged is None else 'forged'} cache"
        again = done[0].records
        assert [(r.path, r.status, r.width) for r in again] == fresh
        assert all(len(r.measurement.sha256) == 64 for r in again)


def test_a_caption_saved_since_a_stamp_refuses_a_file_changed_meanwhile(tmp_path: Path):
    from lorabooth.core.dataset.captions import CaptionChanged, caption_stamp

    photo = tmp_path / "a.jpg"
    since = caption_stamp(photo)  # no sidecar yet
    write_caption(photo, "first", since)
    stamp = caption_stamp(photo)
    assert stamp != since
    (tmp_path / "a.txt").write_text("changed elsewhere\n")
    with pytest.raises(CaptionChanged, match=r"a\.txt changed on disk"):
        write_caption(photo, "mine", stamp)
    assert (tmp_path / "a.txt").read_text() == "changed elsewhere\n"
    write_caption(photo, "mine")  # asked again: saved over it
    assert (tmp_path / "a.txt").read_text() == "mine\n"
