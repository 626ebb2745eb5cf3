"""Team policy kept in the repository: `[tool.normify]` in `pyproject.toml`, or `normify.toml`.

```toml
[tool.normify.add]          # in normify.toml: [add]
dense = "batchnorm"         # batchnorm, layernorm, groupnorm, rmsnorm or none
conv = "batchnorm"
rnn = "layernorm"           # also layernorm-cell
position = "pre"            # pre or post
include = ["encoder/*"]
exclude = []
include-output = false
init = "identity"           # identity, calibrate or fresh

[tool.normify.audit]        # in normify.toml: [audit]
require = { dense = "batchnorm", conv = "any" }
strict = false
```

The file is looked for from a starting folder (the current one) upwards, stopping at the
repository's root (the folder holding `.git`): in each folder `normify.toml` first, then a
`pyproject.toml` that has a `[tool.normify]` table. Command-line flags override what the
file says; `--no-config` ignores it. A malformed table is refused with one line naming
the file and the key.

Only the standard library is used here (`tomllib`, or `tomli` on Python 3.10).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from normify import kinds
from normify.errors import NormifyError

PYPROJECT = "pyproject.toml"
NORMIFY_TOML = "normify.toml"

REQUIRE_KINDS = kinds.TARGET_KINDS
REQUIRE_NORMS = (*kinds.NORM_NAMES, kinds.LAYERNORM_CELL, "any")
ADD_NORMS = (*kinds.INSERTABLE_NORMS, "none")
RNN_NORMS = (*kinds.INSERTABLE_NORMS, kinds.LAYERNORM_CELL, "none")
POSITIONS = ("pre", "post")
INITS = ("identity", "calibrate", "fresh")


class PolicyError(NormifyError):
    """A policy file that cannot be read or holds a key or value normify does not know."""


@dataclass(frozen=True)
class Policy:
    """The rules a repository keeps for `add` and `audit`, and where they were read."""

    path: Path
    table: str  # "[tool.normify]" in a pyproject.toml, "" in a normify.toml
    add: dict[str, Any] = field(default_factory=dict)  # only the keys the file sets
    require: dict[str, str] = field(default_factory=dict)
    strict: bool | None = None

    def describe(self) -> str:
        """Where the policy comes from, as the reports say it (relative to the current
        folder when it lies under it)."""
        return f"{_relative(self.path)} {self.table}".rstrip()


def find_policy(start: str | os.PathLike[str] | None = None) -> Policy | None:
    """The policy that applies in `start` (default: the current folder), or None."""
    folder = Path(start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        own = candidate / NORMIFY_TOML
        if own.is_file():
            return load_policy(own)
        pyproject = candidate / PYPROJECT
        if pyproject.is_file():
            text = _read_text(pyproject)
            if "normify" in text:
                policy = _policy_from_text(pyproject, text)
                if policy is not None:
                    return policy
        if (candidate / ".git").exists():
            return None
    return None


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """The policy in `path`: a `normify.toml`, or a `pyproject.toml` with `[tool.normify]`."""
    path = Path(path)
    if not path.is_file():
        raise PolicyError("policy file not found", path)
    policy = _policy_from_text(path, _read_text(path))
    if policy is None:
        raise PolicyError("has no [tool.normify] table", path)
    return policy


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(f"cannot read the policy file ({error})", path) from None


def _relative(path: Path) -> Path:
    """`path` relative to the current folder when it lies under it (as reports show it)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


def _policy_from_text(path: Path, text: str) -> Policy | None:
    path = _relative(path)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PolicyError(f"not valid TOML ({error})", path) from None
    if path.name == NORMIFY_TOML:
        return parse_policy(document, path, "")
    tool = document.get("tool")
    if not isinstance(tool, dict) or "normify" not in tool:
        return None
    return parse_policy(tool["normify"], path, "[tool.normify]")


def parse_policy(table: Any, path: Path, prefix: str = "[tool.normify]") -> Policy:
    """Check a policy table (`[tool.normify]`'s contents) and read it."""
    where = prefix or NORMIFY_TOML

    def fail(key: str, problem: str) -> PolicyError:
        return PolicyError(f"{_key(prefix, key)}: {problem}", path)

    if not isinstance(table, dict):
        raise PolicyError(f"{where} must be a table", path)
    for key in table:
        if key not in ("add", "audit"):
            raise fail(key, "unknown key (expected add or audit)")
    add = _parse_add(table.get("add", {}), fail)
    require, strict = _parse_audit(table.get("audit", {}), fail)
    return Policy(path, prefix, add, require, strict)


def _key(prefix: str, key: str) -> str:
    table, _, rest = key.partition(".")
    if not rest:
        return f"{prefix} {key}".strip() if prefix else key
    if prefix:
        return f"[tool.normify.{table}] {rest}"
    return f"[{table}] {rest}"


def _parse_add(table: Any, fail: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise fail("add", "must be a table")
    choices = {
        "dense": ADD_NORMS, "conv": ADD_NORMS, "rnn": RNN_NORMS, "position": POSITIONS,
        "init": INITS,
    }  # fmt: skip
    found: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in choices:
            if not isinstance(value, str) or value not in choices[name]:
                raise fail(f"add.{key}", _expected(value, choices[name]))
            found[name] = value
        elif name in ("include", "exclude"):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise fail(f"add.{key}", f"expected a list of glob strings, got {value!r}")
            found[name] = tuple(value)
        elif name == "include_output":
            if not isinstance(value, bool):
                raise fail(f"add.{key}", f"expected true or false, got {value!r}")
            found[name] = value
        else:
            raise fail(
                f"add.{key}",
                "unknown key (expected dense, conv, rnn, position, include, exclude, "
                "include-output or init)",
            )
    return found


def _parse_audit(table: Any, fail: Any) -> tuple[dict[str, str], bool | None]:
    if not isinstance(table, dict):
        raise fail("audit", "must be a table")
    require: dict[str, str] = {}
    strict = None
    for key, value in table.items():
        if key == "require":
            if not isinstance(value, dict):
                raise fail("audit.require", f"expected a table of KIND = NORM, got {value!r}")
            for kind, norm in value.items():
                if kind not in REQUIRE_KINDS:
                    raise fail(
                        f"audit.require.{kind}", "unknown kind (expected dense, conv or rnn)"
                    )
                check_requirement(
                    kind, norm, lambda problem, k=kind: fail(f"audit.require.{k}", problem)
                )
                require[kind] = norm
        elif key == "strict":
            if not isinstance(value, bool):
                raise fail("audit.strict", f"expected true or false, got {value!r}")
            strict = value
        else:
            raise fail(f"audit.{key}", "unknown key (expected require or strict)")
    return require, strict


def _expected(value: Any, choices: tuple[str, ...]) -> str:
    return f"expected one of {', '.join(choices)}, got {value!r}"


def check_requirement(kind: str, norm: Any, fail: Any) -> None:
    """Raise `fail(problem)` unless `norm` may be required of `kind` layers."""
    if not isinstance(norm, str) or norm not in REQUIRE_NORMS:
        raise fail(_expected(norm, REQUIRE_NORMS))
    if norm == kinds.LAYERNORM_CELL and kind != kinds.RNN:
        raise fail(f"{kinds.LAYERNORM_CELL} applies to rnn layers only")


def parse_requirements(values: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`--require KIND=NORM` values as a mapping."""
    requirements = {}
    for value in values:
        kind, separator, norm = value.partition("=")

        def fail(problem: str, value: str = value) -> NormifyError:
            return NormifyError(f"--require {value!r}: {problem}")

        if not separator or kind not in REQUIRE_KINDS or norm not in REQUIRE_NORMS:
            raise NormifyError(
                f"--require {value!r}: expected KIND=NORM with KIND one of dense, conv, rnn "
                f"and NORM one of {', '.join(REQUIRE_NORMS)}"
            )
        check_requirement(kind, norm, fail)
        requirements[kind] = norm
    return requirements


def resolve_policy(
    config: str | os.PathLike[str] | None, no_config: bool, start: Path | None = None
) -> Policy | None:
    """The policy a command applies: `config` when given, none with `no_config`, else the
    one found from `start` (the current folder) upwards."""
    if no_config:
        if config is not None:
            raise NormifyError("--config and --no-config are exclusive: choose one")
        return None
    if config is not None:
        return load_policy(config)
    return find_policy(start)
