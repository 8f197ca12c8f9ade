"""The module graph: the intermediate representation every method grows.

A `ModuleGraph` wraps a `networkx.DiGraph` (private: other packages use its methods). A node is one
module: a declarative spec, the task that owns it, whether it is frozen, how it merges several inputs (sum,
concat, or stack for a mixed operation), the layer index it sits at, and its weights. Weight-level methods
(PackNet) also keep an `owners` tensor per parameter: the task that owns each weight, or FREE. A node may
instead `share` the weights of another frozen node: it applies that node's function to its own inputs and
stores no weights of its own (PathNet's frozen module behind a new input, Learn to Grow's reused layer).
Unit- and weight-level methods keep per-task data on a node: `gates[t]`, one value per output unit (feature
or channel) multiplying the node's output in task t's view (HAT's attention, XdG's gating, CLNP's active
units), and `masks[t][param]`, a tensor multiplying that parameter in task t's view (Piggyback's and CPG's
picked weights). `state` holds tensors a method keeps with a node from task to task without computing with
them (a synaptic stabiliser's importance and anchor weights). A node with batch norm keeps, per task that
reuses it with a normalisation of its own, that task's set (`norms[t]`); the others evaluate with theirs.
Edges are data flow; a node's `inputs` list fixes their order (it matters for concat and stack). A task's
view is the sub-graph from the input to its head. A graph read to be described (`growsearch inspect`,
`checkpoint.read_graph`) holds numpy arrays in place of tensors, and this module imports no torch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import networkx as nx

from growsearch.errors import GraphError
from growsearch.graph.specs import Input, NodeSpec, Shape, feature_axis

if TYPE_CHECKING:
    import torch

INPUT = "input"
FREE = -1  # owner value of a weight that no task has claimed yet
MERGES = ("sum", "concat", "stack")


@dataclass
class Node:
    """One node's data. Mutated only by growth operators, on a copy of the graph."""

    spec: NodeSpec
    owner: int
    inputs: tuple[str, ...]
    frozen: bool = False
    merge: str | None = None
    layer: int | None = None
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    owners: dict[str, torch.Tensor] = field(default_factory=dict)
    shares: str | None = None  # the node whose weights this one computes with (it has none of its own)
    gates: dict[int, torch.Tensor] = field(default_factory=dict)  # task -> one value per output unit
    masks: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # task -> param -> multiplier
    state: dict[str, torch.Tensor] = field(
        default_factory=dict
    )  # a method's per-node memory, unused in forward
    # task -> its own normalisation (batch norm's affine parameters and running statistics, named as in
    # `weights`): a task that reuses the node normalises with its own set; `weights` holds the creator's
    norms: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def n_parameters(self) -> int:
        """Its weights' entries and those of each task's own normalisation (counted from their shapes: a
        graph read for a report holds numpy arrays, `checkpoint.read_graph`)."""
        tensors = [*self.weights.values(), *(t for norm in self.norms.values() for t in norm.values())]
        return sum(math.prod(t.shape) for t in tensors)


class ModuleGraph:
    """A directed acyclic graph of modules, with one head per task."""

    def __init__(self, input_shape: Shape):
        self._nx = nx.DiGraph()
        self.input_shape = tuple(input_shape)
        self.heads: dict[int, str] = {}
        self._forget_order()
        self._nx.add_node(INPUT, node=Node(spec=Input(self.input_shape), owner=FREE, inputs=(), frozen=True))

    # ---- reading -------------------------------------------------------------------------------------
    def __contains__(self, node_id: str) -> bool:
        return node_id in self._nx

    def __iter__(self) -> Iterator[str]:
        return iter(self._order())

    def _order(self) -> list[str]:
        """Every node in lexicographical topological order, kept until a node is added (a search reads the
        same graph's views thousands of times; only `add` changes the structure)."""
        if self._topological is None:
            self._topological = list(nx.lexicographical_topological_sort(self._nx))
        return self._topological

    def _forget_order(self) -> None:
        self._topological: list[str] | None = None
        self._upstream: dict[str, list[str]] = {}

    def node_ids(self) -> list[str]:
        """Every node id, in insertion order (cheaper than iterating the topological order)."""
        return list(self._nx)

    def edges(self) -> list[tuple[str, str]]:
        return list(self._nx.edges)

    def successors(self, node_id: str) -> list[str]:
        """The nodes that read `node_id`'s output."""
        self.node(node_id)
        return list(self._nx.successors(node_id))

    def ancestors(self, node_id: str) -> set[str]:
        """Every node `node_id` depends on (not itself)."""
        self.node(node_id)
        return set(nx.ancestors(self._nx, node_id))

    def weights_of(self, node_id: str) -> dict[str, torch.Tensor]:
        """The weights a node computes with: its own, or those of the node it shares (a combining node:
        its own; the shared ones reach its module apart)."""
        node = self.node(node_id)
        if node.shares and not node.spec.combines_shared:
            return self.node(node.shares).weights
        return node.weights

    def node(self, node_id: str) -> Node:
        if node_id not in self._nx:
            raise GraphError(f"no node {node_id!r} in the graph; nodes are {sorted(self._nx)}")
        return self._nx.nodes[node_id]["node"]

    def nodes(self) -> Iterator[tuple[str, Node]]:
        for node_id in self:
            yield node_id, self.node(node_id)

    @property
    def tasks(self) -> list[int]:
        return sorted(self.heads)

    def head(self, task: int) -> str:
        if task not in self.heads:
            raise GraphError(f"task {task} has no head; tasks with heads: {self.tasks}")
        return self.heads[task]

    def view(self, task: int) -> list[str]:
        """The nodes task `task` runs, input first, head last, in topological order."""
        return self.upstream(self.head(task))

    def upstream(self, node_id: str) -> list[str]:
        """`node_id` and every node it depends on, input first, in topological order."""
        # an ancestor-closed set's own lexicographical order is the whole graph's order filtered to it
        if node_id not in self._upstream:
            members = self.ancestors(node_id) | {node_id}
            self._upstream[node_id] = [n for n in self._order() if n in members]
        return list(self._upstream[node_id])

    def shapes(self, node_ids: Iterable[str] | None = None) -> dict[str, Shape]:
        """Output shape of every node (of `node_ids` and their ancestors), checking every merge."""
        shapes: dict[str, Shape] = {}
        if node_ids is None:
            for node_id in self._order():
                self._shape_into(node_id, shapes)
            return shapes
        for target in node_ids:
            # depth first from the target, through its ancestors alone: `add` checks each new node this
            # way, and a topological sort of the whole graph per node would cost more than the rest
            pending = [target]
            while pending:
                node_id = pending[-1]
                if node_id in shapes:
                    pending.pop()
                    continue
                missing = [i for i in self.node(node_id).inputs if i not in shapes]
                if missing:
                    pending.extend(missing)
                    continue
                pending.pop()
                self._shape_into(node_id, shapes)
        return shapes

    def _shape_into(self, node_id: str, shapes: dict[str, Shape]) -> None:
        """Add `node_id`'s output shape to `shapes`, which holds its inputs'."""
        node = self.node(node_id)
        merged = self.merged_input_shape(node_id, shapes)
        try:
            shapes[node_id] = node.spec.output_shape(merged)
        except GraphError as error:
            raise GraphError(
                f"node {node_id!r} ({node.spec.kind} after {list(node.inputs)}): {error}"
            ) from None

    def merged_input_shape(self, node_id: str, shapes: dict[str, Shape]) -> Shape:
        node = self.node(node_id)
        if not node.inputs:
            return self.input_shape
        inputs = [shapes[i] for i in node.inputs]
        if len(inputs) == 1:
            return inputs[0]
        if node.merge == "sum":
            if any(s != inputs[0] for s in inputs):
                raise GraphError(
                    f"node {node_id!r} sums inputs {list(node.inputs)} of unequal shapes {inputs}"
                )
            return inputs[0]
        if node.merge == "stack":  # a mixed operation: (n_inputs, *shape), every input the same shape
            if any(s != inputs[0] for s in inputs):
                raise GraphError(
                    f"node {node_id!r} stacks inputs {list(node.inputs)} of unequal shapes {inputs}"
                )
            return (len(inputs), *inputs[0])
        if node.merge == "concat":  # along the feature axis: every step's features of a sequence
            axis = feature_axis(inputs[0])
            others = [s[:axis] + s[axis + 1 :] for s in inputs]
            if any(len(s) != len(inputs[0]) or o != others[0] for s, o in zip(inputs, others, strict=True)):
                raise GraphError(f"node {node_id!r} concatenates inputs of mismatched shapes {inputs}")
            joined = list(inputs[0])
            joined[axis] = sum(s[axis] for s in inputs)
            return tuple(joined)
        raise GraphError(
            f"node {node_id!r} has {len(inputs)} inputs but merge={node.merge!r}; expected {MERGES}"
        )

    def n_parameters(self, node_ids: Iterable[str] | None = None) -> int:
        ids = list(self._nx) if node_ids is None else node_ids
        return sum(self.node(n).n_parameters for n in ids)

    def view_parameters(self, task: int) -> int:
        """Parameters task `task`'s view computes with: its nodes' own, and those of the nodes they share
        (each counted once, whether the shared node is on the view or not)."""
        view = set(self.view(task))
        holders = view | {self.node(n).shares for n in view if self.node(n).shares}
        return self.n_parameters(holders)

    def macs(self, node_ids: Iterable[str]) -> int:
        """Multiply-adds of one forward pass of one sample through `node_ids`."""
        ids = list(node_ids)
        shapes = self.shapes(ids)
        return sum(self.node(n).spec.macs(self.merged_input_shape(n, shapes)) for n in ids)

    def main_path(self, task: int) -> list[str]:
        """The chain from the input to a task's head that follows each node's first input."""
        path = [self.head(task)]
        while path[-1] != INPUT:
            path.append(self.node(path[-1]).inputs[0])
        return path[::-1]

    def layer_nodes(self, task: int) -> dict[int, str]:
        """The output node of each layer on a task's main path (a PNN layer's join, not its pre-sum)."""
        return {self.node(n).layer: n for n in self.main_path(task) if self.node(n).layer is not None}

    # ---- changing (growth operators call these on a copy) ---------------------------------------------
    def add(
        self,
        node_id: str,
        spec: NodeSpec,
        inputs: Iterable[str],
        owner: int,
        *,
        merge: str | None = None,
        layer: int | None = None,
        frozen: bool = False,
        weights: dict[str, torch.Tensor] | None = None,
        shares: str | None = None,
    ) -> Node:
        """Add a node. With `shares`, the node applies that frozen node's weights (it must have the same
        spec) to its own inputs; it is frozen and holds no weights; a spec that `combines_shared` instead
        computes with the shared weights and weights of its own, and one that `wraps_shared` (it runs the
        shared node, then itself) may share a trainable node. An owner-tracked node (every weight owned
        entry by entry) may be shared while it trains: a task sees only entries owned by tasks up to it
        (times its masks), and an owned entry never changes. `weights` (None: a fresh initialisation,
        drawn from torch's global random stream)."""
        inputs = tuple(inputs)
        if node_id in self._nx:
            raise GraphError(f"node {node_id!r} already exists")
        if "|" in node_id:
            raise GraphError(f"node id {node_id!r} may not contain '|' (it separates ids in weight files)")
        missing = [i for i in inputs if i not in self._nx]
        if missing:
            raise GraphError(f"node {node_id!r} takes inputs {missing} that are not in the graph")
        if not inputs:
            raise GraphError(f"node {node_id!r} needs at least one input (use {INPUT!r} for the data)")
        if len(inputs) > 1 and merge not in MERGES:
            raise GraphError(f"node {node_id!r} has {len(inputs)} inputs; merge must be one of {MERGES}")
        if shares is not None:
            target = self.node(shares)
            trainable_ok = spec.wraps_shared  # it trains the shared weights through itself
            trainable_ok |= bool(target.weights) and set(target.owners) == set(target.weights)
            if (
                not spec.can_share(target.spec)
                or target.shares is not None
                or not (target.frozen or trainable_ok)
            ):
                raise GraphError(
                    f"node {node_id!r} ({spec}) may share only a frozen node of a matching spec that holds "
                    f"its own weights (or an owner-tracked one); {shares!r} is "
                    f"{'frozen' if target.frozen else 'trainable'}, a {target.spec}"
                )
            if not spec.combines_shared:
                weights, frozen = {}, True
        if weights is None:
            weights = {k: v.detach().clone() for k, v in spec.build().state_dict().items()}
        node = Node(
            spec=spec,
            owner=owner,
            inputs=inputs,
            frozen=frozen,
            merge=merge,
            layer=layer,
            weights=weights,
            shares=shares,
        )
        self._nx.add_node(node_id, node=node)
        for source in inputs:
            self._nx.add_edge(source, node_id)
        self._forget_order()
        try:
            self.shapes([node_id])  # refuse a shape mismatch now, naming the node
        except GraphError:
            self._nx.remove_node(node_id)
            self._forget_order()
            raise
        return node

    def set_head(self, task: int, node_id: str) -> None:
        self.node(node_id)
        self.heads[task] = node_id

    def copy(self) -> ModuleGraph:
        """A deep copy: tensors are cloned, so training a copy never touches this graph."""
        return copy.deepcopy(self)

    def __deepcopy__(self, memo: dict) -> ModuleGraph:
        return self._copied(lambda tensor: tensor.clone())

    def sharing_copy(self) -> ModuleGraph:
        """A copy whose nodes hold this graph's tensors, not clones (its own dicts and structure): for code
        that replaces a copy's tensors and never changes one in place (a pack writing back what its
        candidates trained), so copying costs no weights."""
        return self._copied(lambda tensor: tensor)

    def _copied(self, tensor_copy: Callable[[torch.Tensor], torch.Tensor]) -> ModuleGraph:
        new = ModuleGraph.__new__(ModuleGraph)
        new.input_shape = self.input_shape
        new.heads = dict(self.heads)
        new._forget_order()
        new._nx = nx.DiGraph()
        for node_id in self._nx:
            node = self.node(node_id)
            new._nx.add_node(
                node_id,
                node=Node(
                    spec=node.spec,
                    owner=node.owner,
                    inputs=node.inputs,
                    frozen=node.frozen,
                    merge=node.merge,
                    layer=node.layer,
                    weights={k: tensor_copy(v) for k, v in node.weights.items()},
                    owners={k: tensor_copy(v) for k, v in node.owners.items()},
                    shares=node.shares,
                    gates={t: tensor_copy(g) for t, g in node.gates.items()},
                    masks={t: {k: tensor_copy(v) for k, v in m.items()} for t, m in node.masks.items()},
                    state={k: tensor_copy(v) for k, v in node.state.items()},
                    norms={t: {k: tensor_copy(v) for k, v in n.items()} for t, n in node.norms.items()},
                ),
            )
        new._nx.add_edges_from(self._nx.edges)
        return new
