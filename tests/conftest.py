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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep the tests that share a module-scoped fixture on one xdist worker.

    Under `--dist loadgroup` (the Makefile's), tests spread over the workers one by one, so
    a module's costly fixture (Keras applications built and folded, the fuzz's child
    processes, files saved once and reloaded) would be built again on every worker that
    runs one of its tests; and a test that reads what its module's other tests collected
    (`test_properties`' reload check) must run where they ran.
    """
    for item in items:
        definitions = getattr(item, "_fixtureinfo", None)
        if definitions is None:
            continue
        shared = [
            name
            for name in item.fixturenames
            for fixture in definitions.name2fixturedefs.get(name, ())
            if fixture.scope == "module"
        ]
        if shared:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
