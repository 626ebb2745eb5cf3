"""Errors that normify reports to its users as one line."""

from __future__ import annotations


class NormifyError(Exception):
    """A problem with the user's input, reported as one line (exit code 2 on the CLI)."""

    def __init__(self, message: str, path: object | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ModelLoadError(NormifyError):
    """The model file could not be read or deserialized."""


class UnsupportedModelError(NormifyError):
    """The model is of a kind normify cannot rewrite (subclassed, opaque, ...)."""


class OutputError(NormifyError):
    """The output path cannot be written as asked."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """An exception's message as one line: what a user is shown of a library's error."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:limit]
