"""Showing user text (captions, prompts, file names, error messages) safely on a terminal.

Rich's `Text` is never parsed as markup, but it passes ESC and other control characters to the
terminal, where a crafted file name could move the cursor or retitle the window. `printable`
swaps each control character for its visible Unicode "control picture" (ESC -> ␛).
"""

from __future__ import annotations

from rich.text import Text

_PICTURES = {code: 0x2400 + code for code in range(0x20)} | {0x7F: 0x2421}
_PICTURES.update({code: 0xFFFD for code in range(0x80, 0xA0)})  # C1 controls, e.g. CSI
_KEEP_NEWLINES = {k: v for k, v in _PICTURES.items() if k not in (0x0A, 0x09)}


def unmangled(text: str) -> str:
    """A file name that was not valid UTF-8 (Python keeps its bytes as lone surrogates, which
    no terminal, JSON writer or database accepts) with those bytes shown as `\\xff`."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every terminal control character made visible and harmless."""
    return unmangled(text).translate(_KEEP_NEWLINES if keep_newlines else _PICTURES)


def plain(text: str, style: str = "", *, keep_newlines: bool = False) -> Text:
    """A Rich Text of user text: no markup parsed, no control characters passed through."""
    return Text(printable(text, keep_newlines=keep_newlines), style=style)
