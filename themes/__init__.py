"""Stylesheets (.tcss) and colour themes of the lorabooth UI."""

from pathlib import Path

THEMES_DIR = Path(__file__).resolve().parent
