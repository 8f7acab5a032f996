"""lorabooth's colour themes: dark, light and high-contrast. Each reads in 256 colours too."""

from __future__ import annotations

from textual.theme import Theme

DARK = Theme(
    name="lorabooth-dark", dark=True, primary="#5fafd7", secondary="#af87d7",
    accent="#ffaf5f", warning="#ffd75f", error="#ff5f5f", success="#87d787",
    foreground="#dadada", background="#1c1c1c", surface="#262626", panel="#303030",
)
LIGHT = Theme(
    name="lorabooth-light", dark=False, primary="#005f87", secondary="#5f00af",
    accent="#af5f00", warning="#875f00", error="#af0000", success="#005f00",
    foreground="#1c1c1c", background="#eeeeee", surface="#e4e4e4", panel="#d0d0d0",
)
CONTRAST = Theme(
    name="lorabooth-contrast", dark=True, primary="#00ffff", secondary="#ff00ff",
    accent="#ffff00", warning="#ffff00", error="#ff0000", success="#00ff00",
    foreground="#ffffff", background="#000000", surface="#000000", panel="#121212",
)
THEMES = (DARK, LIGHT, CONTRAST)
DEFAULT_THEME = DARK.name
