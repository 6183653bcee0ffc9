"""Value types the command lines share with argparse, apart from any reader of the tree: the
parsers that only show help or refuse a command line import nothing else."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def non_negative(unit: str) -> Callable[[str], float]:
    """The argparse type of a finite number of ``unit`` (days, seconds...) that is at least 0.
    Text that is no number gets the same message as a negative one, naming the unit, where
    argparse would name the converting function."""

    def number(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise argparse.ArgumentTypeError(f"{text!r}: a number of {unit} >= 0")
        return value

    return number
