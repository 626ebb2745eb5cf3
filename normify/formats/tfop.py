"""TFOpLambda and SlicingOpLambda layers (tf.keras 2.4+) as Keras 3 operations."""

from __future__ import annotations

from normify.formats.base import Stage

STAGE = Stage("TFOpLambda")
