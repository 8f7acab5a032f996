from rich.console import Console

from lorabooth.core.safetext import plain, printable


def test_escape_sequences_are_made_visible():
    assert printable("a\x1b[31mred\x07") == "a␛[31mred␇"
    assert printable("csi\x9b2J") == "csi\ufffd2J"


def test_markup_is_not_parsed():
    console = Console(record=True, width=80, color_system=None)
    console.print(plain("[bold]not bold[/bold] \x1b]0;title\x07"))
    out = console.export_text()
    assert "[bold]not bold[/bold]" in out
    assert "\x1b" not in out
