"""What a later task added to the grown graph: `growsearch inspect RUN --diff T1 T2`.

Compares the graph committed after task T1 with the one committed after task T2 (T1 < T2): nodes added,
nodes frozen since, owner-tracked weights claimed since (PackNet packs later tasks into free weights of the
same nodes), heads added, and the parameter counts before and after.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from growsearch.graph.module_graph import FREE, ModuleGraph
from growsearch.report.graph.picture import GraphPicture, as_array, graph_picture


@dataclass(frozen=True)
class GraphDiff:
    before: int
    after: int
    added: list[str]  # nodes in the later graph only
    removed: list[str]  # nodes in the earlier graph only (no method removes nodes today)
    newly_frozen: list[str]
    claimed: dict[str, int]  # owner-tracked node -> weights free before, owned by a task after
    new_heads: dict[int, str]
    parameters_before: int
    parameters_after: int

    @property
    def changed(self) -> list[str]:
        """Every node of the later graph the diff concerns: added, frozen since, or with claimed weights."""
        return sorted(set(self.added) | set(self.newly_frozen) | set(self.claimed))

    @property
    def added_parameters(self) -> int:
        return self.parameters_after - self.parameters_before


def graph_diff(before: ModuleGraph, after: ModuleGraph, t1: int, t2: int) -> GraphDiff:
    old, new = set(before.node_ids()), set(after.node_ids())
    claimed = {}
    for node_id in sorted(old & new):
        was = before.node(node_id).owners
        count = sum(_claimed(was.get(k), v) for k, v in after.node(node_id).owners.items())
        if count:
            claimed[node_id] = count
    return GraphDiff(
        before=t1,
        after=t2,
        added=sorted(new - old),
        removed=sorted(old - new),
        newly_frozen=sorted(n for n in old & new if after.node(n).frozen and not before.node(n).frozen),
        claimed=claimed,
        new_heads={t: h for t, h in sorted(after.heads.items()) if t not in before.heads},
        parameters_before=before.n_parameters(),
        parameters_after=after.n_parameters(),
    )


def _claimed(was: Any, now: Any) -> int:
    """Entries of an owner tensor owned by a task now that were FREE before, or did not exist (a widened
    node's new units: `grow.operators.widen` keeps the old entries first along every axis)."""
    taken = as_array(now) != FREE
    if was is None:
        return int(taken.sum())
    old = tuple(slice(0, size) for size in was.shape)
    return int(taken.sum()) - int((taken[old] & (as_array(was) != FREE)).sum())


def diff_picture(diff: GraphDiff, after: ModuleGraph, moves: Mapping[int, str] | None = None) -> GraphPicture:
    """The later graph with what changed since the earlier task highlighted and the rest dimmed."""
    title = (
        f"what tasks {diff.before + 1}..{diff.after} added over task {diff.before}: "
        f"{len(diff.added)} modules, {diff.added_parameters:+,} parameters "
        f"({diff.parameters_before:,} -> {diff.parameters_after:,})"
    )
    if diff.after == diff.before + 1:
        title = title.replace(f"tasks {diff.before + 1}..{diff.after}", f"task {diff.after}")
    return graph_picture(after, diff.after, highlight=diff.changed, title=title, moves=moves)


def render_diff_text(diff: GraphDiff, after: ModuleGraph) -> str:
    lines = [diff_picture(diff, after).title]
    for node_id in diff.added:
        node = after.node(node_id)
        where = "head" if node.layer is None else f"L{node.layer}"
        lines.append(
            f"  + {where:>4} {node_id}: {node.spec.kind} owned by task {node.owner}, "
            f"{node.n_parameters:,} params{', frozen' if node.frozen else ''}"
        )
    for node_id in diff.removed:
        lines.append(f"  - {node_id}")
    for node_id in diff.newly_frozen:
        lines.append(f"  * {node_id}: frozen since task {diff.before}")
    for node_id, count in diff.claimed.items():
        total = sum(math.prod(o.shape) for o in after.node(node_id).owners.values())
        lines.append(
            f"  * {node_id}: {count:,} of {total:,} weights ({100 * count / total:.0f}%) "
            "claimed from the free pool"
        )
    if diff.new_heads:
        lines.append("  heads: " + ", ".join(f"task {t} -> {h}" for t, h in diff.new_heads.items()))
    if len(lines) == 1:
        lines.append("  nothing changed")
    return "\n".join(lines)
