"""Shared test helpers: fixture paths and the fixture manifest."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow runs a channels_first Conv2DTranspose on the CPU only with its oneDNN kernels,
# which it turns on by itself on some CPUs only (not on AMD EPYC without AVX-512): the
# channels_first fixtures need them on every machine. Child processes inherit it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())
FIXTURE_NAMES = sorted(MANIFEST)


@pytest.fixture(scope="session")
def manifest() -> dict:
    return MANIFEST
