"""Compile a task's view of a module graph into a `torch.nn.Module`.

The view is emitted as a `torch.fx` graph, so the generated `forward` is straight-line code with one call
per node: no Python loop over nodes, no dict look-ups, the same cost as a hand-written `nn.Sequential`.

For training, `compile_for_training` splits the view at its frozen frontier: the fully frozen prefix
(nodes frozen together with all their ancestors) is compiled apart, so the trainer computes its outputs
once per task instead of once per batch per epoch.

This module owns the graph's semantics: how a node merges its inputs (sum, concat, or stack for a mixed
operation), what a node that shares another's weights computes (a wrapping node, such as a gate on a shared
layer's output: the shared node's own module on its input, trainable with it, then its own), which entries
of an owner-tracked weight a task sees and which of them train, and how a task's gates (per output unit)
and masks (per weight) change what its view computes. Every forward pass of a graph in growsearch is a view
compiled here.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
import torch.fx as fx
from torch import nn

from growsearch.errors import GraphError
from growsearch.graph.module_graph import FREE, INPUT, ModuleGraph, Node
from growsearch.graph.modules import TaskNorm
from growsearch.graph.specs import Shape, feature_axis, norm_entries


@dataclass
class MaskedParameter:
    """A parameter of which only some entries may train (PackNet's free weights).

    The trainer multiplies its gradient by `trainable` and, after each step, puts `frozen_values` back
    into the entries that are not trainable, so no optimiser setting (momentum, weight decay) moves them.
    """

    parameter: nn.Parameter
    trainable: torch.Tensor  # bool, same shape
    frozen_values: torch.Tensor
    node_id: str = ""
    name: str = ""

    def restore_frozen(self) -> None:
        with torch.no_grad():
            self.parameter.copy_(torch.where(self.trainable, self.parameter, self.frozen_values))


class UnitGate(nn.Module):
    """Multiplies a node's output by one fixed value per output unit (a feature, or a channel over every
    position): a task's stored gate."""

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.register_buffer("values", values.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.values.view(1, -1, *([1] * (x.dim() - 2)))


@dataclass
class CompiledView:
    """A task's view as one module, plus what the trainer and write-back need."""

    task: int
    module: fx.GraphModule
    node_modules: dict[str, nn.Module]
    masked: list[MaskedParameter]
    trainable_nodes: list[str]
    gates: dict[str, nn.Module]  # node id -> the module applied to its output (stored or being trained)
    norm_nodes: list[str] = field(default_factory=list)  # nodes whose normalisation (the task's) trains


@dataclass
class TrainingProgram:
    """A view split at its frozen frontier: `suffix(*prefix(x)) == full(x)`."""

    full: CompiledView
    prefix: fx.GraphModule | None  # None when the first trainable node reads the input directly
    suffix: fx.GraphModule
    suffix_nodes: list[str]  # the nodes that run per batch


def _attribute_name(node_id: str, taken: set[str]) -> str:
    name = re.sub(r"\W", "_", node_id)
    if not name or name[0].isdigit():
        name = "n_" + name
    base, i = name, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def visible_mask(owners: torch.Tensor, task: int, include_free: bool) -> torch.Tensor:
    """The entries of an owner-tracked tensor that task `task`'s view uses."""
    visible = (owners >= 0) & (owners <= task)
    return visible | (owners == FREE) if include_free else visible


def _build_module(graph: ModuleGraph, node_id: str, task: int, include_free: bool) -> nn.Module:
    """The node's module holding copies of its weights (a sharing node: those of the node it shares), as
    task `task` sees them: owner-tracked entries it may not see are zero, and its masks multiply. It is
    built on the meta device, so compiling neither spends time on a throw-away initialisation nor draws
    from torch's global random stream (which would make a candidate's initial weights depend on what was
    compiled before it)."""
    node = graph.node(node_id)
    with torch.device("meta"):
        module = node.spec.build()
    if node.shares and node.spec.combines_shared:  # its own weights, and the shared ones handed over
        module.load_state_dict(_seen_weights(node, task, include_free), assign=True)
        if not node.spec.wraps_shared:  # a wrapping node calls the shared node's own module instead
            module.bind_shared(_seen_weights(graph.node(node.shares), task, include_free))
        return module
    source = graph.node(node.shares) if node.shares else node
    module.load_state_dict(_seen_weights(source, task, include_free), assign=True)
    return module


def _seen_weights(node: Node, task: int, include_free: bool) -> dict[str, torch.Tensor]:
    """Copies of the node's weights as task `task` sees them (owner visibility, then its masks; its own
    normalisation where it keeps one)."""
    masks = node.masks.get(task, {})
    own_norm = node.norms.get(task, {})
    state = {}
    for name, value in node.weights.items():
        if name in own_norm:
            state[name] = own_norm[name].clone()
            continue
        if name in node.owners:
            value = value * visible_mask(node.owners[name], task, include_free)
        else:
            value = value.clone()
        if name in masks:
            value = value * masks[name].to(value.dtype)
        state[name] = value
    return state


def _emit_calls(
    root: nn.Module, code: fx.Graph, module: nn.Module, name: str, value: fx.Node, taken: set[str]
) -> fx.Node:
    """Call `module` on `value`. A Sequential becomes one call per leaf, each leaf registered flat on the
    root (the same module objects, so trained weights stay shared), so no wrapper runs per batch."""
    if isinstance(module, nn.Sequential):
        for child_name, child in module.named_children():
            value = _emit_calls(root, code, child, f"{name}_{child_name}", value, taken)
        return value
    if isinstance(module, nn.Identity):
        return value
    name = _attribute_name(name, taken)
    root.add_module(name, module)
    return code.call_module(name, (value,))


def _fx_module(
    graph: ModuleGraph,
    modules: dict[str, nn.Module],
    nodes: list[str],
    inputs: list[str],
    outputs: list[str],
    gates: Mapping[str, nn.Module],
) -> fx.GraphModule:
    """Straight-line code computing `outputs` from placeholders for `inputs` through `nodes`, each node's
    output multiplied by its gate where it has one."""
    root = nn.Module()
    code = fx.Graph()
    values: dict[str, fx.Node] = {}
    taken: set[str] = set()
    shapes: dict[str, Shape] = {}  # computed at the first concat merge
    for node_id in inputs:
        values[node_id] = code.placeholder(_attribute_name(node_id, taken))
    for node_id in nodes:
        if node_id in values:
            continue
        node = graph.node(node_id)
        args = [values[i] for i in node.inputs]
        if len(args) == 1:
            merged = args[0]
        elif node.merge == "sum":
            merged = args[0]
            for arg in args[1:]:
                merged = code.call_function(operator.add, (merged, arg))
        elif node.merge == "stack":  # batch first: (batch, n_inputs, ...)
            merged = code.call_function(torch.stack, (tuple(args),), {"dim": 1})
        else:  # concat, along the feature axis (batch first)
            shapes = shapes or graph.shapes(nodes)
            axis = 1 + feature_axis(shapes[node.inputs[0]])
            merged = code.call_function(torch.cat, (tuple(args),), {"dim": axis})
        if node.shares and node.spec.wraps_shared:  # the shared layer's output, then this node's module
            shared = _emit_calls(
                root, code, modules[node.shares], re.sub(r"\W", "_", node.shares), merged, taken
            )
            name = _attribute_name(re.sub(r"\W", "_", node_id), taken)
            root.add_module(name, modules[node_id])
            value = code.call_module(name, (merged, shared))
        else:
            value = _emit_calls(root, code, modules[node_id], re.sub(r"\W", "_", node_id), merged, taken)
        if node_id in gates:
            name = _attribute_name(re.sub(r"\W", "_", node_id) + "_gate", taken)
            root.add_module(name, gates[node_id])
            value = code.call_module(name, (value,))
        values[node_id] = value
    result = [values[o] for o in outputs]
    code.output(result[0] if len(result) == 1 else tuple(result))
    return fx.GraphModule(root, code)


def compile_view(
    graph: ModuleGraph,
    task: int,
    *,
    include_free: bool = False,
    train: bool = False,
    train_owner: int = FREE,
    train_masks: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    modules: Mapping[str, nn.Module] | None = None,
    output: str | None = None,
    gates: Mapping[str, nn.Module] | None = None,
) -> CompiledView:
    """Compile task `task`'s view (up to its head, or to the node `output`).

    `include_free` makes unclaimed weights visible (the task being trained). With `train`, parameters of
    unfrozen nodes require grad; in owner-tracked ones only the entries owned by `train_owner` train
    (FREE: the unclaimed ones; a task id: PackNet's retraining after pruning), unless `train_masks` names
    the entries that train per node and parameter (DEN's stages, HAT's unused units). `modules` gives
    module objects to use for some nodes instead of fresh copies of their weights (PathNet's pool,
    trained in place). A node's stored gate for `task` multiplies its output, unless `gates` gives the
    module to apply instead (HAT's attention, being learnt)."""
    output = graph.head(task) if output is None else output
    view = graph.upstream(output)
    graph.shapes(view)  # a mismatched graph fails here with the node named, not inside torch
    given = dict(modules or {})
    built: dict[str, nn.Module] = {}
    masked: list[MaskedParameter] = []
    trainable: list[str] = []
    norm_nodes: list[str] = []
    for node_id in _with_wrapped_nodes(graph, view):
        if node_id == INPUT:
            continue
        node = graph.node(node_id)
        if node_id in given:
            module = given[node_id]
        elif node.shares and node.shares in built and not node.spec.combines_shared:
            module = built[node.shares]  # the same frozen function twice in one view: one module
        else:
            module = _build_module(graph, node_id, task, include_free)
        norms = norm_entries(node.spec)
        node_masks = (train_masks or {}).get(node_id, {})
        # a node whose every parameter's train mask is empty trains nothing: no gradient is computed for it
        learns = train and not node.frozen
        if learns and node.weights and not norms:  # the masks are read only for a node that could train
            learns = not all(name in node_masks and not bool(node_masks[name].any()) for name in node.weights)
        norm_learns = train and bool(norms) and _trains_norm(graph, node_id, task, learns)
        _fix_norms(module, fixed=not norm_learns)
        for name, parameter in module.named_parameters():
            if name in norms:  # the task's own normalisation trains, another task's never
                parameter.requires_grad_(norm_learns)
                continue
            parameter.requires_grad_(learns)
            if not learns:
                continue
            if name in node_masks:
                own = node_masks[name].to(torch.bool)
            elif name in node.owners:
                own = node.owners[name] == train_owner
            else:
                continue
            masked.append(MaskedParameter(parameter, own, parameter.detach().clone(), node_id, name))
        if learns:
            trainable.append(node_id)
        if norm_learns:
            norm_nodes.append(node_id)
        built[node_id] = module
    if train and not trainable and not norm_nodes:
        raise GraphError(
            f"task {task}'s view has no trainable node: every node is frozen or its train masks are empty"
        )
    applied = _view_gates(graph, view, task, gates or {})
    module = _fx_module(graph, built, view, [INPUT], [output], applied)
    module.train(train)  # a view for inference evaluates (a module may compute differently in training)
    return CompiledView(task, module, built, masked, trainable, applied, norm_nodes)


def _trains_norm(graph: ModuleGraph, node_id: str, task: int, learns: bool) -> bool:
    """Whether a node's normalisation trains in task `task`'s view: the task's own set always (on a frozen
    node too); the node's creator's set only while the creator trains the node. Any other task's stays
    fixed, so no task's normalisation changes for another."""
    node = graph.node(node_id)
    holder = graph.node(node.shares) if node.shares else node
    return task in holder.norms or (learns and node.owner == task)


def _fix_norms(module: nn.Module, fixed: bool) -> None:
    for sub in module.modules():
        if isinstance(sub, TaskNorm):
            sub.fixed = fixed


def _with_wrapped_nodes(graph: ModuleGraph, view: list[str]) -> list[str]:
    """The nodes whose modules a view builds: its own, each node that a wrapping node of it shares placed
    just before that node (outside the view's data flow, but computed, and trained, through it)."""
    order: list[str] = []
    seen: set[str] = set()
    for node_id in view:
        node = graph.node(node_id)
        extra = [node.shares] if node.shares and node.spec.wraps_shared else []
        for member in [*extra, node_id]:
            if member not in seen:
                order.append(member)
                seen.add(member)
    return order


def _view_gates(
    graph: ModuleGraph, view: list[str], task: int, given: Mapping[str, nn.Module]
) -> dict[str, nn.Module]:
    unknown = sorted(set(given) - set(view))
    if unknown:
        raise GraphError(f"gates given for nodes {unknown} outside task {task}'s view")
    applied: dict[str, nn.Module] = {}
    shapes = graph.shapes(view)
    for node_id in view:
        stored = graph.node(node_id).gates.get(task)
        if node_id in given:
            applied[node_id] = given[node_id]
        elif stored is not None:
            if stored.shape != (shapes[node_id][0],):
                raise GraphError(
                    f"node {node_id!r}: task {task}'s gate has shape {tuple(stored.shape)}; the node has "
                    f"{shapes[node_id][0]} output units"
                )
            applied[node_id] = UnitGate(stored)
    return applied


def frozen_prefix(graph: ModuleGraph, view: list[str], changing: Iterable[str] = ()) -> set[str]:
    """Nodes of `view` that are frozen and have only frozen ancestors: their outputs never change (unless
    they are `changing`: a frozen node whose gate or weight mask is being learnt)."""
    moving = set(changing)
    fixed: set[str] = set()
    for node_id in view:
        node = graph.node(node_id)
        computes_frozen = not node.shares or graph.node(node.shares).frozen  # a wrapped node may train
        if node.frozen and computes_frozen and node_id not in moving and all(i in fixed for i in node.inputs):
            fixed.add(node_id)
    return fixed


def compile_for_training(
    graph: ModuleGraph,
    task: int,
    train_owner: int = FREE,
    *,
    train_masks: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
    gates: Mapping[str, nn.Module] | None = None,
    changing: Iterable[str] = (),
    modules: Mapping[str, nn.Module] | None = None,
) -> TrainingProgram:
    """Compile the candidate for task `task` for training, split at its frozen frontier. Nodes with a
    gate being learnt, and the `changing` ones, run per batch although frozen. `modules`: modules built
    before for some frozen nodes (`train.frozen_modules`), used instead of new copies of their weights."""
    full = compile_view(
        graph,
        task,
        include_free=train_owner == FREE,
        train=True,
        train_owner=train_owner,
        train_masks=train_masks,
        modules=modules,
        gates=gates,
    )
    view = graph.view(task)
    fixed = frozen_prefix(graph, view, {*changing, *(gates or {}), *full.norm_nodes})
    rest = [n for n in view if n not in fixed]
    rest_set = set(rest)
    frontier = [n for n in view if n in fixed and any(s in rest_set for s in graph.successors(n))]
    prefix = None
    if frontier != [INPUT]:
        fixed_nodes = [n for n in view if n in fixed]
        prefix = _fx_module(graph, full.node_modules, fixed_nodes, [INPUT], frontier, full.gates)
    suffix = _fx_module(graph, full.node_modules, rest, frontier, [graph.head(task)], full.gates)
    return TrainingProgram(full, prefix, suffix, rest)


def write_back(graph: ModuleGraph, compiled: CompiledView, train_owner: int = FREE) -> None:
    """Copy the trained weights of the compiled view's trainable nodes into `graph` (in place). In an
    owner-tracked weight only the entries that trained are copied (the compiled copy holds zeros where the
    task could not see); elsewhere masked entries were restored after every step, so the whole tensor is."""
    trained = {(m.node_id, m.name): m.trainable.cpu() for m in compiled.masked}
    for node_id in dict.fromkeys([*compiled.trainable_nodes, *compiled.norm_nodes]):
        node = graph.node(node_id)
        norms = norm_entries(node.spec)
        holder = graph.node(node.shares) if node.shares else node
        own_norm = holder.norms.get(compiled.task)
        learns = node_id in compiled.trainable_nodes
        for name, value in compiled.node_modules[node_id].state_dict().items():
            value = value.detach().to("cpu", copy=True)  # graphs keep their weights on the CPU
            if name in norms and own_norm is not None:  # the task's own normalisation
                if node_id in compiled.norm_nodes:
                    own_norm[name] = value
                continue
            if not learns:
                continue
            if name in node.owners:
                mask = trained.get((node_id, name), node.owners[name] == train_owner)
                value = torch.where(mask, value, node.weights[name])
            node.weights[name] = value
