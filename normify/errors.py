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
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    # Keras introduces its cause on the next line ("Example error message for object
    # <Dense name=dense>:"): a line that ends in a colon says nothing without it.
    line = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return line[:limit]
