"""Caption sidecars (`photo.txt` beside `photo.jpg`): read in any common encoding, written back
keeping the encoding and line endings, and the trigger word put in."""

from __future__ import annotations

import codecs
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import LoraboothError
from ..fsutil import NotRegular, atomic_write_bytes, read_regular_file

DEFAULT_TEMPLATE = "photo of {trigger}"
MAX_CAPTION_BYTES = 64 * 1024


@dataclass(frozen=True)
class Caption:
    text: str | None  # None when there is no usable sidecar
    problem: str = ""


def sidecar_path(photo: Path) -> Path:
    return photo.with_suffix(".txt")


def _decode(data: bytes) -> tuple[str, str]:
    """(text, encoding) of a sidecar: UTF-8, with or without a BOM, or UTF-16 with a BOM."""
    if data.startswith(codecs.BOM_UTF8):
        return data[3:].decode("utf-8"), "utf-8-sig"
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16"), "utf-16"
    return data.decode("utf-8"), "utf-8"


def read_caption(photo: Path) -> Caption:
    sidecar = sidecar_path(photo)
    try:
        data, _ = read_regular_file(sidecar, MAX_CAPTION_BYTES, "a caption")
    except FileNotFoundError:
        return Caption(None)
    except NotRegular as exc:
        return Caption(None, f"caption {sidecar.name}: {exc}; using the template")
    except OSError as exc:
        return Caption(None, f"caption file unreadable ({exc.strerror}); using the template")
    try:
        text, _ = _decode(data)
    except UnicodeDecodeError as exc:
        return Caption(None, f"caption {sidecar.name} is not UTF-8 (bad byte at {exc.start}); "
                             "using the template")
    text = " ".join(text.split())
    return Caption(text or None, "" if text else f"caption {sidecar.name} is empty; "
                                                 "using the template")


def substitute_trigger(text: str, trigger: str) -> str:
    """`{trigger}` and `[trigger]` (ai-toolkit's spelling) both become the trigger word: the one
    substitution for captions, sample prompts, report text and prompts."""
    return text.replace("{trigger}", trigger).replace("[trigger]", trigger)


def effective_caption(raw: str | None, trigger: str, template: str = DEFAULT_TEMPLATE) -> str:
    """The caption training uses: the sidecar or the template, with the trigger word in it."""
    text = raw or (template if trigger else "photo")
    text = " ".join(substitute_trigger(text, trigger).split())
    words = text.lower().replace(",", " ").replace(".", " ").split()
    if trigger and trigger.lower() not in words:
        text = f"{trigger}, {text}"
    return text


def class_caption(caption: str, trigger: str, word: str) -> str:
    """`caption` with its subject named by its class instead of the trigger word ("photo of
    ohwx smiling" -> "photo of person smiling"): the prompt whose output differential output
    preservation holds to the base model's. The trigger is matched as a whole word in any case,
    as `effective_caption` finds it."""
    pattern = re.compile(rf"(?<!\w){re.escape(trigger)}(?!\w)", re.IGNORECASE)
    return " ".join(pattern.sub(lambda _: word, caption).split())


class CaptionChanged(LoraboothError):
    """The sidecar changed on disk after its editing began."""


def _sidecar(photo: Path) -> tuple[bytes | None, str]:
    """The sidecar's bytes (None: none to keep) and its stamp."""
    try:
        data, _ = read_regular_file(sidecar_path(photo), MAX_CAPTION_BYTES, "a caption")
    except FileNotFoundError:
        return None, "none"
    except NotRegular:  # a FIFO there would hang the save; too large: replaced by a save
        return None, "unreadable"
    return data, hashlib.sha256(data).hexdigest()


def caption_stamp(photo: Path) -> str:
    """What the sidecar holds now, in short: compared when an edit is saved."""
    try:
        return _sidecar(photo)[1]
    except OSError:  # unreadable now; the save will say why
        return "unreadable"


def write_caption(photo: Path, text: str, since: str | None = None) -> Path:
    """Save a caption sidecar atomically, keeping the old file's encoding and line endings.
    With `since` (its `caption_stamp` when the edit began), a sidecar changed meanwhile (by
    another window, an editor, a sync) is not overwritten: CaptionChanged."""
    sidecar = sidecar_path(photo)
    old, stamp = _sidecar(photo)
    if since is not None and stamp != since:
        raise CaptionChanged(f"{sidecar.name} changed on disk since you began editing it "
                             "(another window or program): your text is kept; ctrl+s again "
                             "saves it over the file")
    encoding, newline, trailing = "utf-8", "\n", True
    if old is not None:
        try:
            old_text, encoding = _decode(old)
        except UnicodeDecodeError:
            old_text = ""
        newline = "\r\n" if "\r\n" in old_text else "\n"
        trailing = old_text.endswith(("\n", "\r")) or not old_text
    body = newline.join(text.splitlines()) + (newline if trailing else "")
    if encoding == "utf-8-sig":
        data = codecs.BOM_UTF8 + body.encode("utf-8")
    else:
        data = body.encode(encoding)
    atomic_write_bytes(sidecar, data)
    return sidecar
