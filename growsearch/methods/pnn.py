"""PNN: Progressive Neural Networks (Rusu et al. 2016, arXiv:1606.04671).

Each task adds a column: one new module per layer and a head. Layer i of column k receives
`f(W_i^k h_{i-1}^k + U_i^k sigma(V_i^k (alpha * [h_{i-1}^1 ... h_{i-1}^{k-1}])))`: an adapter (one-hidden-
layer MLP, or a 1x1 convolution for conv layers) over the older columns' activations, with a learned
scalar alpha initialised small and a hidden projection onto n_{i-1} units. Old columns are frozen, so
old tasks' outputs never change. A degenerate search space: one candidate per task. Task-IL only.
"""

from __future__ import annotations

from dataclasses import dataclass

from growsearch.methods.toolkit import Adapter, Candidate, Decisions, Method, TaskContext, ops, require_size


@dataclass(frozen=True)
class PNNOptions:
    laterals: bool = True  # False gives independent columns (the paper's "baseline 1" style ablation)
    adapter_hidden: int | None = None  # None: the paper's projection onto n_{i-1} units

    def validate(self, where: str) -> None:
        require_size(self.adapter_hidden, f"{where}.adapter_hidden", null_allowed=True)


class PNN(Method):
    name = "pnn"
    paper = "Rusu et al. 2016, Progressive Neural Networks, arXiv:1606.04671"
    scenarios = ("task-il",)
    Options = PNNOptions
    backbones = ("mlp", "conv")
    backbone_note = "its lateral adapters join dense or conv layers, not residual blocks"

    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        graph = ops.add_column(
            ctx.committed,
            ctx.task_id,
            ctx.specs,
            ctx.n_outputs,
            adapter_hidden=self.options.adapter_hidden,
            laterals=self.options.laterals,
        )
        laterals = [
            n for n, node in graph.nodes() if node.owner == ctx.task_id and isinstance(node.spec, Adapter)
        ]
        return Candidate(graph, mechanism={"lateral_parameters": graph.n_parameters(laterals)})
