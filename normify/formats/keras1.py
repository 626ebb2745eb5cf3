"""Keras 1.x configs translated into Keras 2's config language."""

from __future__ import annotations

from normify.formats.base import Stage

STAGE = Stage("Keras 1")
