"""What normalization does for a model that barely trains: a deep sigmoid MLP on digits.

scikit-learn's bundled digits (1,797 images of 8x8 pixels, 10 classes) and a Dense
network of 12 sigmoid layers. Trained plainly for a few epochs it barely learns: the
gradients vanish through the sigmoids. That is the model "you already have". Then, from
the same saved model and with the same optimizer (SGD with momentum, its learning rate
decaying along a cosine to 0 over the fine-tuning), fine-tune for 15 epochs:

1. plain: the model as it is;
2. `normify add --init fresh`: a BatchNormalization before every sigmoid (gamma 1,
   beta 0, moving statistics from the training data): the network is re-conditioned;
3. `normify add` (identity): the same layers, starting as an exact identity at
   inference, so the model predicts what it did until it trains.

Each epoch records the validation accuracy with the moving statistics (inference mode)
and, for the normalized models, after `normify.recalibrate` on the training data (the
exact statistics): where the two differ, the moving statistics lag the batch statistics
and recalibration closes the gap.

    pip install -e ".[tensorflow,examples]"
    python examples/retrain_digits.py --seed 0 --plot docs/retrain_digits.png

Needs the `examples` extra (matplotlib, scikit-learn); normify itself does not.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEPTH = 12
WIDTH = 64
PRETRAIN_EPOCHS = 3
EPOCHS = 15
LEARNING_RATE = 0.05
BATCH_SIZE = 32


@dataclass
class Run:
    """One fine-tuning route: validation accuracy after each epoch."""

    name: str
    accuracy: list[float] = field(default_factory=list)
    recalibrated: list[float] = field(default_factory=list)  # after normify.recalibrate

    @property
    def final(self) -> float:
        return self.accuracy[-1]


def digits(seed: int) -> tuple[Any, Any, Any, Any]:
    """Train and validation splits of scikit-learn's digits, pixels scaled to [0, 1]."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    return train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)


def sigmoid_mlp(depth: int = DEPTH, width: int = WIDTH) -> Any:
    import keras

    inputs = keras.Input((64,), name="pixels")
    x = inputs
    for index in range(depth):
        x = keras.layers.Dense(width, activation="sigmoid", name=f"dense_{index}")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="digit")(x)
    return keras.Model(inputs, outputs, name="deep_sigmoid_mlp")


def _compile(model: Any, learning_rate: float, decay_steps: int | None = None) -> None:
    """SGD with momentum; with `decay_steps`, the rate follows a cosine down to 0 over them
    (the fine-tuning schedule, the same for every route)."""
    import keras

    rate: Any = learning_rate
    if decay_steps:
        rate = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps)
    model.compile(
        optimizer=keras.optimizers.SGD(rate, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


def fine_tune(
    name: str,
    model: Any,
    data: tuple[Any, Any, Any, Any],
    epochs: int,
    learning_rate: float,
    recalibrate: bool,
) -> Run:
    """Train `model` for `epochs`, recording validation accuracy after each (and after
    recalibrating a copy, for models with BatchNormalization)."""
    import keras

    import normify

    x_train, x_val, y_train, y_val = data
    run = Run(name)

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            run.accuracy.append(_accuracy(self.model, x_val, y_val))
            if recalibrate:
                exact = normify.recalibrate(self.model, data=x_train, max_samples=len(x_train))
                run.recalibrated.append(_accuracy(exact.model, x_val, y_val))

    _compile(model, learning_rate, decay_steps=epochs * math.ceil(len(x_train) / BATCH_SIZE))
    model.fit(
        x_train, y_train, epochs=epochs, batch_size=BATCH_SIZE, shuffle=True, verbose=0,
        callbacks=[Record()],
    )  # fmt: skip
    return run


def _accuracy(model: Any, x: Any, y: Any) -> float:
    import keras
    import numpy as np

    predicted = np.argmax(keras.ops.convert_to_numpy(model(x, training=False)), axis=-1)
    return float(np.mean(predicted == y))


def run_recipe(
    seed: int = 0,
    *,
    depth: int = DEPTH,
    epochs: int = EPOCHS,
    pretrain_epochs: int = PRETRAIN_EPOCHS,
    learning_rate: float = LEARNING_RATE,
    workdir: str | os.PathLike[str] | None = None,
    recalibrate: bool = True,
) -> dict[str, Run]:
    """The three fine-tuning routes from one barely trained model; their runs by name."""
    import tempfile

    import keras

    import normify

    keras.utils.set_random_seed(seed)
    data = digits(seed)
    x_train, x_val, y_train, y_val = data
    base = sigmoid_mlp(depth)
    _compile(base, learning_rate)
    base.fit(x_train, y_train, epochs=pretrain_epochs, batch_size=BATCH_SIZE, verbose=0)
    folder = Path(workdir or tempfile.mkdtemp(prefix="retrain_digits_"))
    saved = folder / "barely_trained.keras"
    base.save(saved)
    starting = _accuracy(base, x_val, y_val)
    runs = {"start": Run("barely trained", [starting])}

    keras.utils.set_random_seed(seed + 1)
    plain = keras.saving.load_model(saved)
    runs["plain"] = fine_tune("plain fine-tuning", plain, data, epochs, learning_rate, False)

    keras.utils.set_random_seed(seed + 1)
    fresh = normify.add(saved, init="fresh", data=x_train, max_samples=len(x_train)).model
    runs["fresh"] = fine_tune(
        "add --init fresh, then fine-tuning", fresh, data, epochs, learning_rate, recalibrate
    )

    keras.utils.set_random_seed(seed + 1)
    identity = normify.add(saved).model
    runs["identity"] = fine_tune(
        "add (identity), then fine-tuning", identity, data, epochs, learning_rate, recalibrate
    )
    return runs


def plot(runs: dict[str, Run], path: str | os.PathLike[str], seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    start = runs["start"].accuracy[0]
    colours = {"plain": "#b71c1c", "fresh": "#1b5e20", "identity": "#1565c0"}
    for key in ("plain", "fresh", "identity"):
        run = runs[key]
        epochs = range(0, len(run.accuracy) + 1)
        axes.plot(epochs, [start, *run.accuracy], marker="o", markersize=3,
                  color=colours[key], label=run.name)  # fmt: skip
        if run.recalibrated:
            axes.plot(epochs, [start, *run.recalibrated], linestyle="--", color=colours[key],
                      alpha=0.7, label=f"{run.name}, after recalibrate")  # fmt: skip
    axes.axhline(0.85, color="#757575", linewidth=0.8, linestyle=":")
    axes.set_xlabel("fine-tuning epoch")
    axes.set_ylabel("validation accuracy")
    axes.set_ylim(0, 1)
    axes.set_title(f"digits, {DEPTH}-layer sigmoid MLP (seed {seed})")
    axes.legend(loc="lower right", fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def summary(runs: dict[str, Run]) -> list[str]:
    lines = [f"{'route':<40} {'epoch 1':>8} {'epoch 5':>8} {'final':>8} {'recalibrated':>13}"]
    lines.append(f"{runs['start'].name:<40} {'':>8} {'':>8} {runs['start'].final:>8.3f}")
    for key in ("plain", "fresh", "identity"):
        run = runs[key]
        recalibrated = f"{run.recalibrated[-1]:>13.3f}" if run.recalibrated else f"{'-':>13}"
        fifth = run.accuracy[min(4, len(run.accuracy) - 1)]
        lines.append(f"{run.name:<40} {run.accuracy[0]:>8.3f} {fifth:>8.3f} {run.final:>8.3f} "
                     f"{recalibrated}")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--plot", type=Path, help="write the accuracy plot (PNG) here")
    parser.add_argument("--json", type=Path, help="write the measured accuracies here")
    args = parser.parse_args(argv)
    runs = run_recipe(args.seed, epochs=args.epochs)
    for line in summary(runs):
        print(line)
    if args.plot:
        plot(runs, args.plot, args.seed)
        print(f"wrote {args.plot}")
    if args.json:
        args.json.write_text(json.dumps({k: r.__dict__ for k, r in runs.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
