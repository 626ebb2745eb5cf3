"""The command line on good input: outputs, JSON schemas, exit codes of policy checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import FIXTURES

from normify.cli import main

AUDIT_ROW_KEYS = {
    "path", "class", "kind", "activation", "normalized", "norm", "norm_layer", "position",
    "output", "calls",
}  # fmt: skip


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_audit_json_schema_and_counts():
    result = run("audit", FIXTURES / "partial_bn_cnn.keras", "--json")
    assert result.exit_code == 0
    payload = json.loads(result.output)
    assert set(payload) == {"model", "layers", "summary", "norm_layers", "opaque"}
    assert all(set(row) == AUDIT_ROW_KEYS for row in payload["layers"])
    assert payload["summary"] == {
        "dense": {"total": 2, "normalized": 1},
        "conv": {"total": 3, "normalized": 2},
        "rnn": {"total": 0, "normalized": 0},
    }
    assert payload["norm_layers"] == {"BatchNormalization": 2, "LayerNormalization": 1}
    rows = {row["path"]: row for row in payload["layers"]}
    assert rows["conv2d"]["position"] == "pre-activation"
    assert rows["conv2d_1"]["position"] == "post-activation"
    assert rows["dense"]["norm_layer"] == "layer_normalization"
    assert rows["dense_1"]["output"] is True


def test_audit_require_exit_codes():
    model = FIXTURES / "partial_bn_cnn.keras"
    violated = run("audit", model, "--require", "conv=batchnorm")
    assert violated.exit_code == 1
    assert "violation: conv2d_2 (conv) requires batchnorm, has no norm" in violated.output
    # dense is normalized by a LayerNormalization: batchnorm fails, any passes
    assert run("audit", model, "--require", "dense=batchnorm").exit_code == 1
    assert run("audit", model, "--require", "dense=any").exit_code == 0
    assert run("audit", model, "--require", "dense=layernorm").exit_code == 0
    # the output layer dense_1 is exempt unless --strict
    assert run("audit", model, "--require", "dense=any", "--strict").exit_code == 1
    as_json = run("audit", model, "--require", "conv=any", "--json")
    assert as_json.exit_code == 1
    assert json.loads(as_json.output)["violations"] == [
        {"path": "conv2d_2", "kind": "conv", "required": "any", "found": None}
    ]


def test_audit_require_rejects_bad_policy():
    result = CliRunner().invoke(main, ["audit", str(FIXTURES / "mlp.keras"), "--require", "dense"])
    assert result.exit_code == 2
    assert "expected KIND=NORM" in result.output


def test_add_default_output_name_dry_run_and_idempotence(tmp_path):
    model = tmp_path / "mlp.keras"
    shutil.copy(FIXTURES / "mlp.keras", model)
    dry = run("add", model, "--dry-run")
    assert dry.exit_code == 0 and "nothing written" in dry.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.keras"]

    done = run("add", model)
    assert done.exit_code == 0
    output = tmp_path / "mlp.normified.keras"
    assert output.is_file()
    umask = os.umask(0)
    os.umask(umask)
    assert output.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0600
    assert "wrote" in done.output and "2 norm layer(s) inserted" in done.output

    again = run("add", output, "-o", tmp_path / "again.keras", "--json")
    payload = json.loads(again.output)
    assert payload["changes"] == []
    assert {s["path"] for s in payload["kept"]} == {"dense", "dense_1", "dense_2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "again.keras",
        "mlp.keras",
        "mlp.normified.keras",
    ]


def test_add_json_schema(tmp_path):
    result = run("add", FIXTURES / "text_bilstm.keras", "-o", tmp_path / "out.keras", "--json")
    assert result.exit_code == 0
    payload = json.loads(result.output)
    assert {"model", "changes", "kept", "drift", "notices", "output", "dry_run"} <= set(payload)
    first = payload["changes"][0]
    assert {"path", "norm", "position", "name"} <= set(first)
    assert (first["path"], first["norm"], first["name"]) == (
        "bidirectional", "LayerNormalization", "bidirectional_ln",
    )  # fmt: skip
    assert payload["drift"]["max_abs"] > 0
    assert payload["kept"] == [
        {"path": "dense_1", "reason": "output layer (pass --include-output to normalize it)"}
    ]


def test_dry_run_json_does_not_import_tensorflow():
    code = (
        "import sys, json\n"
        "from normify.cli import main\n"
        f"argv = ['add', {str(FIXTURES / 'nested.keras')!r}, '--dry-run', '--json']\n"
        "main(argv, standalone_mode=False)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    plan = json.loads(completed.stdout)
    assert [i["name"] for i in plan["changes"]] == [
        "encoder/dense_bn", "encoder/dense_1_bn", "dense_bn_1", "head/dense_2_bn",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "argv", [["--version"], ["--help"], ["add", "--help"], ["audit", "--help"]]
)
def test_help_and_version(argv):
    completed = subprocess.run(
        [sys.executable, "-m", "normify", *argv], capture_output=True, text=True
    )
    assert completed.returncode == 0
    assert completed.stderr == ""
    assert "normify" in completed.stdout


def test_in_place_keeps_a_loadable_backup(tmp_path):
    model = tmp_path / "mlp.keras"
    shutil.copy(FIXTURES / "mlp.keras", model)
    original_bytes = model.read_bytes()
    done = subprocess.run(
        [sys.executable, "-m", "normify", "add", str(model), "--in-place"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    backup = tmp_path / "mlp.keras.bak"
    assert backup.read_bytes() == original_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlp.keras", "mlp.keras.bak"]
    report = normify_verify(backup, model)
    assert report.passed and report.counts["moved"] == 2  # the two biases now in BN betas
    refused = run("add", model, "--in-place", "-o", tmp_path / "other.keras")
    assert refused.exit_code == 2


def normify_verify(original, rewritten):
    from normify.verify import verify

    return verify(original, rewritten, tolerance=1e-6)
