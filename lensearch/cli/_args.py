"""Argument types shared by every sub-command: numbers are checked when the command line is parsed, so a
value that would be silently read as "not given" (``--epochs 0``) or crash deep inside Ray
(``--max-epochs -1``) is one line and exit status 2 before anything starts or is written."""

from __future__ import annotations

import argparse


def _number(kind: type, low: float | None, *, exclusive: bool = False, high: float | None = None):
    """An argparse ``type=`` converting to ``kind`` and refusing values outside [low, high] (or (low, ...))."""
    noun = "an integer" if kind is int else "a number"
    parts = []
    if low is not None:
        parts.append(f"{'>' if exclusive else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    expected = f"{noun}{' ' + ' and '.join(parts) if parts else ''}"

    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if kind is float and value != value:  # NaN compares false with every bound
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        too_low = low is not None and (value <= low if exclusive else value < low)
        if too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return convert


positive_int = _number(int, 1)
non_negative_int = _number(int, 0)
positive_float = _number(float, 0, exclusive=True)
port_number = _number(int, 0, high=65535)
fraction = _number(float, 0, high=1)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line naming the command and the flag, exit status 2
    (argparse's own prints the whole usage first)."""

    def error(self, message: str):  # noqa: D401 - argparse's signature
        message = message.replace("argument ", "", 1) if message.startswith("argument ") else message
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")



def location(text: str):
    """A path, or a storage URI kept as text (``s3://bucket/prefix``: ``Path`` would fold its ``//``)."""
    from pathlib import Path

    from lensearch.storage import is_uri

    return text if is_uri(text) else Path(text)
