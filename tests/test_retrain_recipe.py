"""examples/retrain_digits.py, reduced: the normalized fine-tune beats the plain one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from conftest import ROOT

pytest.importorskip("sklearn")
pytest.importorskip("keras")


def _recipe():
    spec = importlib.util.spec_from_file_location(
        "retrain_digits", ROOT / "examples" / "retrain_digits.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_normalized_fine_tune_beats_the_plain_one(tmp_path: Path) -> None:
    recipe = _recipe()
    runs = recipe.run_recipe(seed=3, epochs=5, workdir=tmp_path, recalibrate=False)
    plain, fresh, identity = runs["plain"], runs["fresh"], runs["identity"]
    assert len(plain.accuracy) == len(fresh.accuracy) == 5
    # the deep sigmoid network barely trains: chance level is 0.1
    assert runs["start"].final < 0.3 and max(plain.accuracy) < 0.3
    # re-conditioned by BatchNormalization (fresh init), it learns within a few epochs
    assert max(fresh.accuracy) > max(plain.accuracy) + 0.25
    assert identity.final >= plain.final
    # the plot is written from the runs
    recipe.plot(runs, tmp_path / "accuracy.png", seed=3)
    assert (tmp_path / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(recipe.summary(runs)) == 5


def test_recalibrate_closes_the_gap_after_an_identity_add(tmp_path: Path) -> None:
    """After fine-tuning an identity-initialized model briefly, the moving statistics
    lag the batch statistics; the exact statistics give back the accuracy."""
    recipe = _recipe()
    runs = recipe.run_recipe(seed=4, epochs=2, workdir=tmp_path, recalibrate=True)
    identity = runs["identity"]
    assert identity.recalibrated[-1] > identity.accuracy[-1] + 0.1
