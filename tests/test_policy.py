"""Team policy in the repository ([tool.normify] / normify.toml), multi-model audits and
the pre-commit hook."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FIXTURES, ROOT

from normify.cli import main
from normify.policy import PolicyError, find_policy, load_policy

POLICY = """
[project]
name = "team-models"

[tool.normify.audit]
require = { conv = "batchnorm", dense = "any" }

[tool.normify.add]
dense = "layernorm"
exclude = ["head/*"]
"""


def _repo(tmp_path: Path, models: list[str], pyproject: str | None = POLICY) -> Path:
    """A repository folder with a policy and a folder of fixture models."""
    (tmp_path / ".git").mkdir()
    if pyproject is not None:
        (tmp_path / "pyproject.toml").write_text(pyproject)
    folder = tmp_path / "models"
    folder.mkdir()
    for name in models:
        shutil.copy(FIXTURES / name, folder / name)
    return tmp_path


def _audit(repo: Path, *args: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(repo)
    return CliRunner().invoke(main, ["audit", *args])


def test_policy_gates_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path, ["conv_bn.keras", "cnn.keras", "partial_bn_cnn.keras"])
    result = _audit(repo, "models", monkeypatch=monkeypatch)
    assert result.exit_code == 1, result.output
    assert "violation: models/cnn.keras: conv2d (conv) requires batchnorm, has no norm" in (
        result.output
    )
    assert "3 models" in result.output and "policy: " in result.output
    assert "policy: pyproject.toml [tool.normify]" in result.output
    rows = {line.split()[1]: line for line in result.output.splitlines() if "models/" in line}
    assert "ok" in rows["models/conv_bn.keras"] and "violations" in rows["models/cnn.keras"]
    # partial_bn_cnn has an unnormalized conv layer: it breaks conv=batchnorm too
    assert "violations" in rows["models/partial_bn_cnn.keras"]

    payload = json.loads(_audit(repo, "models", "--json", monkeypatch=monkeypatch).output)
    assert payload["passed"] is False and payload["require"] == {
        "conv": "batchnorm",
        "dense": "any",
    }
    assert payload["config"].endswith("pyproject.toml [tool.normify]")
    status = {Path(m["model"]).name: m["status"] for m in payload["models"]}
    assert status == {"cnn.keras": "violations", "conv_bn.keras": "ok",
                      "partial_bn_cnn.keras": "violations"}  # fmt: skip


def test_policy_passes_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy = '[tool.normify.audit]\nrequire = { conv = "batchnorm" }\n'
    repo = _repo(tmp_path, ["conv_bn.keras", "conv_bn_channels_first.keras"], policy)
    result = _audit(repo, "models", monkeypatch=monkeypatch)
    assert result.exit_code == 0, result.output
    assert "2 of 2 models pass" in result.output


def test_flags_override_and_no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path, ["cnn.keras"])
    # --require overrides the file's rule for its kind only (dense=any stays)
    result = _audit(repo, "models/cnn.keras", "--require", "conv=any", monkeypatch=monkeypatch)
    assert result.exit_code == 1
    assert "conv2d (conv) requires any" in result.output
    assert "dense (dense) requires any" in result.output
    result = _audit(repo, "models/cnn.keras", "--no-config", monkeypatch=monkeypatch)
    assert result.exit_code == 0 and "policy:" not in result.output
    # strict from the file: output layers are no longer exempt
    (repo / "pyproject.toml").write_text(
        '[tool.normify.audit]\nrequire = { dense = "any" }\nstrict = true\n'
    )
    result = _audit(repo, "models/cnn.keras", "--json", monkeypatch=monkeypatch)
    paths = {v["path"] for v in json.loads(result.output)["violations"]}
    assert paths == {"dense", "dense_1"}
    result = _audit(repo, "models/cnn.keras", "--json", "--no-strict", monkeypatch=monkeypatch)
    assert {v["path"] for v in json.loads(result.output)["violations"]} == {"dense"}


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('[tool.normify.add]\ndense = "bn"\n', "[tool.normify.add] dense"),
        ('[tool.normify.add]\ninclude = 3\n', "[tool.normify.add] include"),
        ('[tool.normify.add]\ncolour = "red"\n', "[tool.normify.add] colour"),
        ('[tool.normify.audit]\nrequire = { dense = "bn" }\n',
         "[tool.normify.audit] require.dense"),
        ('[tool.normify.audit]\nrequire = { lstm = "any" }\n', "[tool.normify.audit] require.lstm"),
        ('[tool.normify.audit]\nrequire = { conv = "layernorm-cell" }\n',
         "[tool.normify.audit] require.conv"),
        ('[tool.normify.audit]\nstrict = "yes"\n', "[tool.normify.audit] strict"),
        ('[tool.normify]\nadd = 1\n', "[tool.normify] add"),
        ('[tool.normify]\nrules = {}\n', "[tool.normify] rules"),
        ('[tool.normify\n', "not valid TOML"),
    ],
)  # fmt: skip
def test_malformed_table_is_one_line_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, key: str
) -> None:
    repo = _repo(tmp_path, ["mlp.keras"], table)
    monkeypatch.chdir(repo)
    completed = subprocess.run(
        [sys.executable, "-m", "normify", "audit", "models/mlp.keras"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    assert key in lines[0] and "pyproject.toml" in lines[0], lines[0]
    assert "Error" not in lines[0].split(":")[1]  # no internal class name


def test_normify_toml_first_and_search_stops_at_the_repository(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    repo = outer / "repo"
    (repo / "sub").mkdir(parents=True)
    (outer / "normify.toml").write_text('[audit]\nrequire = { dense = "any" }\n')
    (repo / ".git").mkdir()
    assert find_policy(repo / "sub") is None  # the repository root ends the search
    (repo / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert find_policy(repo / "sub") is None  # a pyproject.toml without [tool.normify]
    (repo / "pyproject.toml").write_text('[tool.normify.audit]\nrequire = { conv = "any" }\n')
    found = find_policy(repo / "sub")
    assert found is not None and found.require == {"conv": "any"}
    (repo / "normify.toml").write_text('[audit]\nrequire = { rnn = "layernorm" }\nstrict = true\n')
    found = find_policy(repo / "sub")
    assert found.path.name == "normify.toml" and found.require == {"rnn": "layernorm"}
    assert found.strict is True and found.describe().endswith("normify.toml")
    (repo / "normify.toml").write_text("[audit]\nrequire = { rnn = 1 }\n")
    with pytest.raises(PolicyError, match=r"normify.toml: \[audit\] require.rnn: expected"):
        load_policy(repo / "normify.toml")


def test_add_takes_its_rules_from_the_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = _repo(tmp_path, ["nested.keras"])
    monkeypatch.chdir(repo)
    runner = CliRunner()
    result = runner.invoke(main, ["add", "models/nested.keras", "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    changes = {c["path"]: c["norm"] for c in plan["changes"]}
    assert set(changes.values()) == {"LayerNormalization"}  # dense = "layernorm"
    assert not any(path.startswith("head/") for path in changes)  # exclude = ["head/*"]
    assert any(k["path"].startswith("head/") and "exclude" in k["reason"] for k in plan["kept"])
    assert any("pyproject.toml [tool.normify]" in n and "dense=layernorm" in n
               for n in plan["notices"])  # fmt: skip
    # flags override the file
    result = runner.invoke(
        main, ["add", "models/nested.keras", "--dry-run", "--json", "--dense", "batchnorm"]
    )
    assert {c["norm"] for c in json.loads(result.output)["changes"]} == {"BatchNormalization"}
    result = runner.invoke(
        main, ["add", "models/nested.keras", "--dry-run", "--json", "--no-config"]
    )
    plan = json.loads(result.output)
    assert any(c["path"].startswith("head/") for c in plan["changes"])
    assert not any("pyproject" in n for n in plan["notices"])
    # an explicit policy file
    other = tmp_path / "elsewhere.toml"
    other.write_text('[tool.normify.add]\ndense = "rmsnorm"\n')
    result = runner.invoke(
        main, ["add", "models/nested.keras", "--dry-run", "--json", "--config", str(other)]
    )
    assert {c["norm"] for c in json.loads(result.output)["changes"]} == {"RMSNormalization"}


def test_several_files_and_globs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = _repo(tmp_path, ["mlp.keras", "conv_bn.keras"], None)
    (repo / "models" / "broken.keras").write_bytes(b"not a zip")
    monkeypatch.chdir(repo)
    runner = CliRunner()
    result = runner.invoke(main, ["audit", "models/m*.keras", "models/conv_bn.keras", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [Path(m["model"]).name for m in payload["models"]] == ["mlp.keras", "conv_bn.keras"]
    assert payload["config"] is None and payload["passed"] is True
    result = runner.invoke(main, ["audit", "models"])
    assert result.exit_code == 2  # a model that cannot be read
    broken = next(line for line in result.output.splitlines() if "broken.keras" in line)
    assert "error:" in broken
    result = runner.invoke(main, ["audit", "models/*.nothing"])
    assert result.exit_code == 2 and "no model file matches" in result.output
    result = runner.invoke(main, ["audit", "models", "--data", "x.npz"])
    assert result.exit_code == 2 and "take one model" in result.output


def test_pre_commit_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yaml = pytest.importorskip("yaml")
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "normify-audit")
    assert hook["language"] == "python" and hook["entry"] == "normify audit"
    pattern = re.compile(hook["files"])
    assert pattern.search("models/a.keras") and pattern.search("legacy/b.h5")
    assert not pattern.search("a.keras.json") and not pattern.search("train.py")
    # pre-commit runs the entry with the staged files matching `files` as arguments
    repo = _repo(tmp_path, ["cnn.keras", "conv_bn.keras"])
    staged = [str(p.relative_to(repo)) for p in sorted((repo / "models").iterdir())]
    assert all(pattern.search(name) for name in staged)
    executable = shutil.which("normify", path=str(Path(sys.executable).parent))
    assert executable is not None
    command = [executable, *hook["entry"].split()[1:]]
    failing = subprocess.run([*command, *staged], cwd=repo, capture_output=True, text=True)
    assert failing.returncode == 1, failing.stderr
    assert "violation: models/cnn.keras" in failing.stdout
    passing = subprocess.run(
        [*command, "models/conv_bn.keras"], cwd=repo, capture_output=True, text=True
    )
    # one file: the full table; conv=batchnorm holds; dense=any exempts the output layer
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "policy satisfied" in passing.stdout and passing.stderr == ""
