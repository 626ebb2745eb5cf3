"""What `normify audit` costs at start: the package binds its public names on first use,
`normify.audit` and `normify.verify` stay the functions whatever is imported in whatever
order, and a folder of models is audited in one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, ROOT

from normify.cli import main

CNN = FIXTURES / "cnn.keras"

CHECK = """
import sys, types
import normify

assert callable(normify.audit) and callable(normify.verify), (normify.audit, normify.verify)
assert not isinstance(normify.audit, types.ModuleType)
assert not isinstance(normify.verify, types.ModuleType)
assert normify.audit.__module__ == "normify.auditing", normify.audit.__module__
assert normify.verify.__module__ == "normify.verify", normify.verify.__module__
for name in ("normify.audit", "normify.verify"):
    assert getattr(normify, name.split(".")[1]) is not sys.modules.get(name)
if "normify.api" in sys.modules:
    assert sys.modules["normify.api"].audit is normify.audit
    assert sys.modules["normify.api"].verify is normify.verify
for name in normify.__all__:
    assert getattr(normify, name) is not None and name in dir(normify), name
import normify.audit, normify.verify  # already loaded: nothing rebinds
assert callable(normify.audit) and callable(normify.verify)
"""

ORDERS = {
    "verify-module-first": "import normify.verify\nm = sys.modules['normify.verify']\n"
    "import normify\nassert callable(normify.verify) and normify.verify is not m",
    "audit-module-first": "import normify.audit\nm = sys.modules['normify.audit']\n"
    "import normify\nassert callable(normify.audit) and normify.audit is not m",
    "import-as": "import normify.verify as v\nimport normify.audit as a\n"
    "n = sys.modules['normify']\nassert v is n.verify and a is n.audit and callable(a)",
    "functions-first": "from normify import audit, verify\nimport normify.audit, normify.verify\n"
    "assert normify.audit is audit and normify.verify is verify",
    "package-then-modules": "import normify\nimport importlib\n"
    "importlib.import_module('normify.verify'); importlib.import_module('normify.audit')",
    "function-then-module": "import normify\nf = normify.audit\nimport normify.audit\n"
    "assert normify.audit is f",
    "from-module": "from normify.verify import verify as f\nfrom normify.audit import AuditReport\n"
    "import normify\nassert normify.verify is f",
    "api-first": "import normify.api",
    "rewrite-modules": "import normify.passes.add, normify.rebuild, normify.reports, normify.api",
    "cli-audit": "import io, contextlib\nfrom normify.cli import main\n"
    f"with contextlib.redirect_stdout(io.StringIO()):\n"
    f"    main(['audit', {str(CNN)!r}, '--json'], standalone_mode=False)",
}


@pytest.mark.parametrize("first", list(ORDERS.values()), ids=list(ORDERS))
def test_audit_and_verify_stay_the_functions_in_any_import_order(
    first: str, tmp_path: Path
) -> None:
    code = f"import sys\n{first}\n{CHECK}"
    # this tree's normify, whatever the interpreter has installed
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_an_unknown_name_is_an_attribute_error() -> None:
    import normify

    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        normify.nothing  # noqa: B018
    assert not hasattr(normify, "nothing")


def test_a_folder_of_models_is_audited_in_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for index in range(20):
        shutil.copy(CNN, folder / f"model_{index:02d}.keras")

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a child process was started: {args}")

    monkeypatch.setattr(subprocess, "Popen", no_child)
    monkeypatch.setattr("os.fork", no_child)
    monkeypatch.setattr("os.posix_spawn", no_child)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["audit", "models", "--json", "--require", "conv=any"])
    assert result.exit_code == 1, result.output  # cnn.keras's conv layers have no norm
    payload = json.loads(result.output)
    names = sorted(Path(entry["model"]).name for entry in payload["models"])
    assert names == [f"model_{index:02d}.keras" for index in range(20)]
    assert {entry["status"] for entry in payload["models"]} == {"violations"}

    result = CliRunner().invoke(main, ["audit", "models", "--no-config"])
    assert result.exit_code == 0, result.output
    for index in range(20):
        assert f"models/model_{index:02d}.keras" in result.output
