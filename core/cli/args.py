"""Argument types that check bounds at the edge: a value out of range, not a number, or not
finite is a usage error (exit 2) naming the allowed range, never a failure later."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_SEED = 2**32 - 1


def whole(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        text = text.strip()
        if not (text.isascii() and text.lstrip("-").isdigit()):
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
        value = int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is out of range; allowed: {lo} to {hi}")
        return value
    parse.__name__ = "whole number"
    return parse


def number(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{text} is out of range; allowed: {lo:g} to "
                                             f"{hi:g}")
        return value
    parse.__name__ = "number"
    return parse
