"""A task's frozen-prefix outputs, kept across its trials.

Every candidate of a task is compiled split at its frozen frontier (`graph.compile.compile_for_training`),
and the frozen prefix (the committed columns, reused modules) is run once over the task's samples. Those
outputs do not change while the task searches: its candidates share the committed graph, so most of them
share the prefix too. `PrefixCache` keeps them (and, where no prefix runs, the samples moved to the
device) on their device for the task's trials, in one process: a Ray worker starts with an empty cache.
An entry serves a later candidate only for the same samples (the same tensor) through a prefix that
computes the same function: the same modules and generated code, and equal weights and buffers, compared
entry by entry (cheap beside a pass over the samples), so a candidate that changes anything upstream of
its frontier computes its own. A trial is charged the prefix's compute (CE) only where it ran.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.fx as fx

from growsearch.graph.compile import TrainingProgram
from growsearch.train.candidate import prefix_outputs

MAX_ENTRIES = 8  # MNTDP-D's candidates of one task have at most L + 1 different prefixes


@dataclass
class _Entry:
    samples: torch.Tensor
    source: str  # the prefix's modules and generated code
    state: dict[str, torch.Tensor]
    device: torch.device
    outputs: list[torch.Tensor]


class PrefixCache:
    """Frozen-prefix outputs of one task's samples, reused across the task's trials."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes  # what the kept outputs may hold in all (the oldest go first)
        self._entries: list[_Entry] = []

    def outputs(
        self, program: TrainingProgram, samples: torch.Tensor, device: torch.device
    ) -> tuple[list[torch.Tensor], bool]:
        """The prefix's outputs for `samples` on `device` (with no prefix: the samples, moved there), and
        whether a prefix ran for them now (False: kept from an earlier candidate's equal prefix)."""
        prefix = program.prefix
        source = "" if prefix is None else _source(prefix)
        state = {} if prefix is None else prefix.state_dict()
        for entry in self._entries:
            if entry.samples is samples and entry.device == device and _same(entry, source, state):
                return entry.outputs, False
        outputs = prefix_outputs(program, samples, device)
        size = sum(t.numel() * t.element_size() for t in outputs)
        if size <= self.max_bytes:
            kept = {name: value.detach().clone() for name, value in state.items()}
            self._entries.append(_Entry(samples, source, kept, device, outputs))
            while len(self._entries) > MAX_ENTRIES or self._bytes() > self.max_bytes:
                self._entries.pop(0)
        return outputs, prefix is not None

    def _bytes(self) -> int:
        return sum(t.numel() * t.element_size() for e in self._entries for t in e.outputs)

    def __getstate__(self) -> dict:
        """Shipped (to a Ray worker) empty: what it keeps is this process's."""
        return {"max_bytes": self.max_bytes, "_entries": []}


def _source(prefix: fx.GraphModule) -> str:
    """What the prefix computes besides its tensors: its modules (types and settings) and its code."""
    return repr(prefix) + prefix.code


def _same(entry: _Entry, source: str, state: dict[str, torch.Tensor]) -> bool:
    if entry.source != source or entry.state.keys() != state.keys():
        return False
    return all(
        value.shape == entry.state[name].shape
        and value.dtype == entry.state[name].dtype
        and torch.equal(value.to(entry.state[name].device), entry.state[name])
        for name, value in state.items()
    )
