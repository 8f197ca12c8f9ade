"""GIM: Gated Incremental Memories (Cossu, Carta & Bacciu 2020, "Continual learning with gated incremental
memories for sequential data processing", IJCNN 2020, arXiv:2004.04077).

PNN for recurrent networks on sequences. Each task adds a module, a column of LSTM layers (the YAML's
`{lstm: N}` layers) with a head of its own; older modules are frozen, so old tasks' outputs never change.
The paper's A-LSTM feeds the older modules' hidden activations into the new module; here, at every step,
each recurrent layer of the new column reads its input concatenated with the hidden states of every older
column at the same layer (`add_column`'s recurrent case). The new layer's input weights over those states
are then PNN's lateral maps U^{k:j} inside each gate; older modules' states at step t depend only on the
input up to t, so the new module can read them step by step. PNN's adapter MLP and scalar alpha are not
used on these laterals: the paper concatenates the states into the module's input. A dense layer or the
head after the recurrent layers reads the new column alone (the older states entered below it already).

Task inference: the paper's gate is one LSTM autoencoder per task, which reconstructs the input sequence;
the module whose autoencoder reconstructs a test sequence best answers it. growsearch's task-inference
autoencoders (`inference/autoencoders.py`) are recurrent on sequence inputs (`SequenceAutoencoder`), and
GIM's YAML asks for them (`inference: {kind: expert-gate, autoencoder: lstm}`), so a GIM run picks each
test sequence's module so, in task-IL too; in class-IL, domain-IL and task-agnostic runs the scenario asks
for them anyway.

The paper fixes its hyper-parameters: one candidate per task. Beyond the paper, `module_sizes` makes the
new module's hidden size a per-task search (Optuna's categorical `hidden_size`, every recurrent layer of
the column that wide), single- or multi-objective (accuracy against added parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna

from growsearch.methods.toolkit import (
    LSTM,
    Candidate,
    ConfigError,
    Decisions,
    Method,
    ModuleGraph,
    NodeSpec,
    SearchPlan,
    TaskContext,
    layer_specs,
    ops,
    require,
)


@dataclass(frozen=True)
class GIMOptions:
    laterals: bool = True  # False: independent modules (no older states read)
    module_sizes: tuple[int, ...] = ()  # empty: the network's widths; else each task searches among them

    def validate(self, where: str) -> None:
        sizes = self.module_sizes
        require(all(s >= 1 for s in sizes), f"{where}.module_sizes", "expected hidden sizes >= 1")
        require(len(set(sizes)) == len(sizes), f"{where}.module_sizes", "expected distinct hidden sizes")


class GIM(Method):
    name = "gim"
    paper = (
        "Cossu, Carta & Bacciu 2020, Continual Learning with Gated Incremental Memories for sequential "
        "data processing, IJCNN 2020, arXiv:2004.04077"
    )
    scenarios = ("task-il",)
    Options = GIMOptions
    backbones = ("lstm",)
    backbone_note = "its modules are recurrent layers over sequences"

    def specs_for(self, input_shape: tuple[int, ...]) -> tuple[NodeSpec, ...]:
        first = self.space.layers[0].kind
        if first != "lstm":
            raise ConfigError(
                f"network.layers[0]: gim's modules are recurrent: expected {{lstm: N}} first, got a {first} "
                "layer"
            )
        return super().specs_for(input_shape)

    # ---- the search ------------------------------------------------------------------------------------
    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        """One candidate (the paper's); with `module_sizes`, `search.n_trials` (by default one per size)."""
        sizes = self.options.module_sizes
        return SearchPlan(budget=(self.space.search.n_trials or len(sizes)) if sizes else 1)

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        sizes = self.options.module_sizes
        return {"hidden_size": trial.suggest_categorical("hidden_size", list(sizes))} if sizes else {}

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        specs = ctx.specs
        if "hidden_size" in decisions:
            size = int(decisions["hidden_size"])
            widths = [size if layer.kind == "lstm" else layer.width for layer in self.space.layers]
            specs = tuple(layer_specs(self.space.layers, ctx.committed.input_shape, widths))
        graph = ops.add_column(
            ctx.committed, ctx.task_id, specs, ctx.n_outputs, laterals=self.options.laterals
        )
        return Candidate(graph, dict(decisions), _module_record(graph, ctx.task_id))


def _module_record(graph: ModuleGraph, task: int) -> dict[str, Any]:
    """The new module's hidden sizes, and the parameters of its input weights over older modules' states."""
    shapes = graph.shapes()
    sizes, lateral = [], 0
    for _, node in graph.nodes():
        if node.owner != task or not isinstance(node.spec, LSTM):
            continue
        sizes.append(node.spec.hidden_size)
        older = sum(shapes[n][-1] for n in node.inputs[1:])
        lateral += 4 * node.spec.hidden_size * older
    return {"hidden_sizes": sizes, "lateral_parameters": lateral}
