"""The experiment layer's one error: bad input (a flag, a preset, an env, a model file) that ``train.py`` prints as
one ``error: ...`` line with exit status 2 (``--verbose 2``: the traceback)."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """Bad input: printed as one ``error: ...`` line, exit status 2."""
