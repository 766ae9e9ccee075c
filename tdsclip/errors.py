"""Errors a user sees as one or two lines instead of a traceback.

The entry points catch :class:`TdsclipError` and print its message (and ``hint``): a
:class:`UserError` (a mistake in what was given: config, data, checkpoint, weights) exits
with code 2, a :class:`RunError` (a run that failed while running) with code 1.
``--verbose`` or ``HYDRA_FULL_ERROR=1`` show the traceback as well. Anything else is a
programming error and keeps its traceback. This module imports nothing of tdsclip, so every
layer (models, data, engine) may raise these.
"""

from __future__ import annotations


class TdsclipError(Exception):
    """A failure explained in words: ``message`` says what is wrong, ``hint`` what to do."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  {hint}")


class UserError(TdsclipError):
    """Something the user gave is wrong or missing; nothing ran yet, or nothing was lost."""

    exit_code = 2


class ConfigError(UserError, ValueError):
    """A config value or key that cannot work; ``key`` is its dotted name."""

    def __init__(self, key: str, message: str, *, hint: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}", hint=hint)


class CheckpointError(UserError):
    """A checkpoint or model file that is missing, unreadable or of the wrong kind."""


class RunError(TdsclipError):
    """A run that started and then failed (its last good checkpoint is kept)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or the config points at) is not there."""


class WeightsError(UserError, ValueError):
    """Pretrained weights that cannot be read or do not fit the configured model."""


def short_reason(error: BaseException, limit: int = 100) -> str:
    """An exception's text cut to its first line and, if long, its first sentence (libraries
    append paragraphs of advice that would bury tdsclip's own)."""
    text = str(error).strip()
    if not text:
        return type(error).__name__
    line = text.splitlines()[0]
    if len(line) > limit and ". " in line:
        line = line.split(". ")[0]
    return line
