"""The demo photo set, installed with lorabooth so `lorabooth demo` works from a wheel too."""

from pathlib import Path

SAMPLE_PHOTOS_DIR = Path(__file__).resolve().parent
TRIGGER = "zorb"
