"""Keras callbacks for training pipelines.

`RecalibrateBatchNorm(data, when="end"|"epoch")` recomputes the exact moving statistics
of every BatchNormalization of the model being trained, with the math of
`normify.recalibrate` (`normify.calibrate.recalibrate_batchnorms`: a cumulative average
over all of `data` in float64, layer after layer so each sees the recalibrated layers
before it), and logs how far they moved.

Importing this module imports Keras (the callback subclasses `keras.callbacks.Callback`);
`import normify` does not import it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from normify.backend import keras as _keras
from normify.errors import NormifyError

WHENS = ("end", "epoch")


class RecalibrateBatchNorm(_keras().callbacks.Callback):  # type: ignore[misc]
    """Recompute exact BatchNormalization statistics after `fit` (`when="end"`) or after
    every epoch (`when="epoch"`).

    Args:
        data: what the statistics are computed over: a path to an `.npz`/`.npy`, arrays,
            a dict of arrays, or an iterable of batches (`(x, y)` elements read as `x`),
            as `normify.recalibrate` takes.
        when: `"end"` (once, when training ends) or `"epoch"` (after every epoch; Keras
            computes an epoch's validation metrics before its callbacks run, so they
            reflect the statistics of the epoch before).
        include, exclude: glob patterns on BatchNormalization paths (`encoder/*`).
        batch_size, max_samples: how `data` is batched and how much of it is used.
        verbose: 1 prints one line each time; 0 is silent.

    After each recalibration, `history` gets the list of changes (one
    `normify.calibrate.StatisticsChange` per layer: `path`, `mean_change`,
    `variance_change`, `variance_ratio`), and with `when="epoch"` the epoch's logs get
    `bn_mean_change` and `bn_variance_ratio` (the largest over the layers).
    """

    def __init__(
        self,
        data: Any,
        when: str = "end",
        *,
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        batch_size: int = 64,
        max_samples: int = 1024,
        verbose: int = 1,
    ) -> None:
        super().__init__()
        if when not in WHENS:
            raise NormifyError(f"RecalibrateBatchNorm: when must be 'end' or 'epoch', not {when!r}")
        self.data = data
        self.when = when
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self.batch_size = batch_size
        self.max_samples = max_samples
        self.verbose = verbose
        self.history: list[list[Any]] = []
        self._calibration: Any = None
        self._paths: list[str] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        from normify.data import input_specs, load_data
        from normify.graph import from_model
        from normify.passes.fold import batchnorm_paths
        from normify.rules import selected

        label = str(self.data) if isinstance(self.data, (str, bytes)) else None
        self._calibration = load_data(
            self.data, input_specs(self.model), batch_size=self.batch_size,
            max_samples=self.max_samples, path_label=label,
        )  # fmt: skip
        self._paths = [
            path
            for path in batchnorm_paths(from_model(self.model))
            if selected(path, self.include, self.exclude) is None
        ]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.when != "epoch":
            return
        changes = self.recalibrate(f"epoch {epoch + 1}")
        if logs is not None and changes:
            logs["bn_mean_change"] = max(change.mean_change for change in changes)
            logs["bn_variance_ratio"] = max(change.variance_ratio for change in changes)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.when == "end":
            self.recalibrate("end of training")

    def recalibrate(self, moment: str = "now") -> list[Any]:
        """Recalibrate now; the changes (also appended to `history`)."""
        from normify.calibrate import recalibrate_batchnorms

        if self._calibration is None:
            self.on_train_begin()
        if self._paths is None:
            raise NormifyError("RecalibrateBatchNorm is not attached to a model (pass it to fit)")
        changes = (
            recalibrate_batchnorms(self.model, self._paths, self._calibration.batches)
            if self._paths
            else []
        )
        self.history.append(changes)
        if self.verbose:
            print(_describe(changes, moment, self._calibration.samples))
        return changes


def _describe(changes: list[Any], moment: str, samples: int) -> str:
    if not changes:
        return f"RecalibrateBatchNorm ({moment}): no BatchNormalization to recalibrate"
    mean = max(change.mean_change for change in changes)
    ratio = max(change.variance_ratio for change in changes)
    return (
        f"RecalibrateBatchNorm ({moment}): {len(changes)} BatchNormalization(s) over "
        f"{samples} samples; moving mean moved up to {mean:.3g}, variance ratio up to "
        f"{ratio:.3g}"
    )


__all__ = ["RecalibrateBatchNorm"]
