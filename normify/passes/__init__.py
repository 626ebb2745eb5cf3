"""Graph passes: each takes a Graph and returns a `PassResult`: the new Graph, the changes
it made, the layers it left alone (each a `Kept` with the reason) and notices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from normify.graph import Graph


@dataclass(frozen=True)
class Kept:
    """A layer a pass left as it was, and why."""

    path: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason}


class _PassResultFields(NamedTuple):
    graph: Graph
    changes: list[Any]
    kept: list[Kept]
    notices: list[str]


class PassResult(_PassResultFields):
    """What every pass returns. Each change has a `path`, `to_json()` and `describe()`.

    The graph is checked (`Graph.check`) as the result is made, so no pass can hand on a
    graph whose references, order or Sequential chains it broke."""

    def __new__(
        cls, graph: Graph, changes: list[Any], kept: list[Kept], notices: list[str]
    ) -> PassResult:
        graph.check()
        return super().__new__(cls, graph, changes, kept, notices)
