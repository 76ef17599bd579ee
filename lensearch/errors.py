"""User-facing errors.

A :class:`UserError` is a mistake in what the user gave us (a file, a YAML key, a CLI value), never a bug.
The CLI prints its message as one line and exits with status 2. Messages name the culprit
(file path, YAML key path, dataset name) and say what was expected and what was found.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in user input. ``str(err)`` is one line that names the culprit."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def expect(condition: object, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UserError(message)


def did_you_mean(word: object, choices) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to a misspelt ``word``, else ``""``."""
    import difflib

    names = [str(c) for c in choices]
    close = difflib.get_close_matches(str(word), names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
