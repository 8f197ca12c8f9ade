"""Which units a task's input-conditional gates open, sample by sample (CCGN's firing statistics).

The task's view is compiled and run in evaluation mode (hard gates) over the inputs; each gate node's
gates are read from its own input as the view computes it, so the statistics are exactly what the task's
test-time forward pass does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from growsearch.methods.toolkit import ModuleGraph, compile_view, run_in_batches


@dataclass(frozen=True)
class GateFiring:
    """Per gate node, the gates (0/1) of every sample: (samples, units)."""

    gates: dict[str, torch.Tensor]

    def rates(self, node_id: str) -> torch.Tensor:
        """The share of samples for which each unit's gate fires."""
        return self.gates[node_id].mean(0)

    def open_share(self, node_id: str) -> float:
        """The mean share of the units a sample opens."""
        return float(self.gates[node_id].mean()) if len(self.gates[node_id]) else 0.0

    def conditional_share(self, node_id: str) -> float:
        """The share of units whose gate depends on the sample: open for some samples, closed for others."""
        rates = self.rates(node_id)
        return float(((rates > 0) & (rates < 1)).float().mean())

    def patterns(self, node_id: str) -> int:
        """How many distinct sets of open units the samples have."""
        return len(self.gates[node_id].unique(dim=0)) if len(self.gates[node_id]) else 0

    def class_mask_share(self, node_id: str, labels: torch.Tensor) -> float:
        """The share of samples whose gates are their class's most common set: 1 when the gates are one mask
        per class (they depend on the input only through its class)."""
        gates, typical = self.gates[node_id], 0
        for label in labels.unique():
            _, counts = gates[labels == label].unique(dim=0, return_counts=True)
            typical += int(counts.max())
        return typical / len(gates) if len(gates) else 1.0


def gate_firing(graph: ModuleGraph, task: int, gate_ids: Sequence[str], x: torch.Tensor) -> GateFiring:
    """The gates task `task`'s view opens on each of `x`'s samples, at the nodes `gate_ids`."""
    compiled = compile_view(graph, task)
    compiled.module.eval()
    seen: dict[str, list[torch.Tensor]] = {node_id: [] for node_id in gate_ids}
    handles = [
        compiled.node_modules[node_id].register_forward_pre_hook(
            lambda module, args, node_id=node_id: seen[node_id].append(module.gates(args[0]))
        )
        for node_id in gate_ids
    ]
    try:
        run_in_batches(compiled.module, [x])
    finally:
        for handle in handles:
            handle.remove()
    return GateFiring({node_id: torch.cat(parts) for node_id, parts in seen.items()})
