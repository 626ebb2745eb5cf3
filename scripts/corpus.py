"""Run normify over a folder of real model files, as a new user would, and tally the results.

    .venv/bin/python scripts/corpus.py FOLDER [--refs REFS] [--jobs 2] [--out results.json]

For every `.h5`, `.hdf5` and `.keras` file in FOLDER (one child process each, with a time
limit), it checks that normify:

- audits the file (no backend);
- loads it, and, where `REFS/<file name>.npz` holds a reference (`input_0`, ...,
  `output_0`, ... computed by the Keras that reads the file faithfully, tf_keras for
  Keras 1 and 2 files), predicts within 1e-4 of it (max abs difference relative to the
  output scale);
- rewrites it with `add --rnn batchnorm` (an exact identity), keeping every weight of the
  loaded model bit for bit and the predictions;
- writes a file that loads back (normify's own check on writing, which reads it back).

A file refused for a Lambda layer is tried again with `safe_mode=False` (`--unsafe`), as
a user who trusts it would. A file normify refuses must be refused with one line. The
summary counts each outcome; `--out` keeps every file's record. Nothing here is specific
to any file: the folder is the user's (the project commits no third-party model files).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHILD = r"""
import json, sys, os, tempfile
from pathlib import Path
import numpy as np
path, ref = Path(sys.argv[1]), sys.argv[2]
record = {"file": path.name}
def first(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300], len(str(error).strip().splitlines())
import normify
from normify.errors import NormifyError
try:
    normify.audit(path)
    record["audit"] = "ok"
except NormifyError as error:
    record["audit"] = "refused: " + first(error)[0]
from normify.loading import load_model
safe_mode = True
try:
    try:
        loaded = load_model(path)
    except NormifyError as error:
        if "--unsafe" not in str(error):
            raise
        # what a user who trusts the file does next
        safe_mode = record["unsafe"] = False
        loaded = load_model(path, safe_mode=False)
except NormifyError as error:
    record["load"] = "refused: " + first(error)[0]
    print("@@" + json.dumps(record)); sys.exit(0)
record["load"] = "ok"
record["origin"] = loaded.origin.describe()
rules = {n.rsplit("[", 1)[-1].rstrip("]") for n in loaded.notices if n.startswith("repaired:")}
record["repairs"] = sorted(rules)
import keras
def predict(model, inputs):
    out = model.predict(inputs[0] if len(inputs) == 1 else inputs, verbose=0)
    if isinstance(out, dict):
        out = [out[k] for k in sorted(out)]
    return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]
def relative(a, b):
    worst = 0.0
    if len(a) != len(b):
        return float("inf")
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return float("inf")
        scale = max(1.0, float(np.max(np.abs(x)))) if x.size else 1.0
        difference = float(np.max(np.abs(x.astype("float64") - y))) if x.size else 0.0
        worst = max(worst, difference / scale)
    return worst
inputs = outputs = None
if ref and os.path.exists(ref):
    with np.load(ref) as data:
        inputs = [data[f"input_{i}"] for i in range(sum(k.startswith("input_") for k in data))]
        outputs = [data[f"output_{i}"] for i in range(sum(k.startswith("output_") for k in data))]
    try:
        record["load_vs_ref"] = relative(outputs, predict(loaded.model, inputs))
    except Exception as error:
        record["load_vs_ref"] = "predict failed: " + first(error)[0]
try:
    result = normify.add(path, rnn="batchnorm", safe_mode=safe_mode)
except NormifyError as error:
    record["add"] = "refused: " + first(error)[0]
    print("@@" + json.dumps(record)); sys.exit(0)
record["add"] = "ok" if result.report.changes else "nothing to insert"
def by_layer(model, prefix=""):
    found = {}
    for layer in model.layers:
        p = prefix + layer.name
        if getattr(layer, "layers", None) is not None and hasattr(layer, "inputs"):
            found.update(by_layer(layer, p + "/"))
            continue
        for v in layer.weights:
            found[p + "/" + v.path.rsplit("/", 1)[-1]] = keras.ops.convert_to_numpy(v)
    return found
before, after = by_layer(loaded.model), by_layer(result.model)
changed = []
for key, value in before.items():
    if key in after:
        if after[key].tobytes() != value.tobytes():
            changed.append(key)
    else:
        layer = key.rsplit("/", 1)[0]
        moved = after.get(layer + "_bn/beta")
        if not (key.endswith("/bias") and moved is not None and np.array_equal(moved, value)):
            changed.append(key)
record["weights_changed"] = changed[:5]
if inputs is not None:
    try:
        record["add_vs_ref"] = relative(outputs, predict(result.model, inputs))
    except Exception as error:
        record["add_vs_ref"] = "predict failed: " + first(error)[0]
from normify.saving import save_model
with tempfile.TemporaryDirectory() as folder:
    try:
        save_model(result.model, Path(folder) / "out.keras", reload=True, safe_mode=safe_mode)
        record["write"] = "ok"
    except NormifyError as error:
        record["write"] = "refused: " + first(error)[0]
print("@@" + json.dumps(record))
"""

TOLERANCE = 1e-4


def run_one(path: Path, refs: Path | None, timeout: float) -> dict:
    ref = str(refs / f"{path.name}.npz") if refs else ""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), ref],
            capture_output=True, text=True, timeout=timeout, env=env,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"file": path.name, "crash": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("@@"):
            record = json.loads(line[2:])
            record["stderr"] = done.stderr.strip()[-400:]
            return record
    tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
    return {"file": path.name, "crash": tail[0][:300]}


def outcome(record: dict) -> str:
    """One word for what a user would see."""
    if "crash" in record:
        return "crash (traceback or hang)"
    if record.get("load", "").startswith("refused"):
        return "refused at load"
    if record.get("add", "").startswith("refused"):
        return "refused at add"
    if record.get("write", "ok") != "ok":
        return "written file refused"
    if record.get("weights_changed"):
        return "weights changed"
    reference = record.get("load_vs_ref")
    if reference is None:
        return "rewritten (no reference)"
    if isinstance(reference, str) or reference > TOLERANCE:
        return "predictions differ from the reference"
    added = record.get("add_vs_ref")
    if isinstance(added, str) or (added is not None and added > TOLERANCE):
        return "rewrite changed predictions"
    return "rewritten exactly"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--refs", type=Path, help="folder of <file name>.npz references")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--only", help="substring a file name must contain")
    parser.add_argument("--out", type=Path, help="write every file's record as JSON")
    args = parser.parse_args()
    paths = sorted(
        path
        for path in args.folder.iterdir()
        if path.suffix in (".h5", ".hdf5", ".keras") and (not args.only or args.only in path.name)
    )
    with ThreadPoolExecutor(args.jobs) as pool:
        records = list(pool.map(lambda p: run_one(p, args.refs, args.timeout), paths))
    counts = Counter(outcome(record) for record in records)
    for record in records:
        print(f"{outcome(record):<40} {record['file']}", file=sys.stderr)
    print(json.dumps(dict(counts.most_common()), indent=1))
    if args.out:
        args.out.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    tempfile.tempdir = None
    sys.exit(main())
