"""Straight-through weight masks: Piggyback's per-task masks (Mallya, Davis & Lazebnik, ECCV 2018) and
CPG's picking masks (Hung et al., NeurIPS 2019).

A real-valued mask m_r per weight is thresholded to a binary mask that multiplies the weight while a task
trains: W_eff = W * (m_r > threshold). The threshold has no useful gradient, so the straight-through
estimator passes the gradient of the binary mask to m_r unchanged (the reference's `Binarizer.backward`
returns its input gradient): dL/dm_r = dL/dW_eff * W. A mask may be restricted to some entries (CPG picks
only among earlier tasks' weights): elsewhere it is 1 and m_r gets no gradient.

The mask is attached to a compiled view's module as a torch parametrisation of the weight, so the weight
itself still trains where the view lets it (CPG's free weights); the module's state dict keeps naming the
plain weight and omits the mask, so `write_back` copies trained weights as for any module. After training
the binary mask is stored as the task's mask on the node (`Node.masks[task][param]`, bool), which every
compiled view of that task applies from then on, exactly (a multiplication by 0 or 1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from growsearch.methods.toolkit import ModuleGraph, Training, TrainingProgram, TrainingRun, node_data

MaskKey = tuple[str, str]  # (node id, parameter name)


class _StraightThrough(torch.autograd.Function):
    """Forward: 1 where the real value is above the threshold, else 0 (exactly). Backward: the identity."""

    @staticmethod
    def forward(ctx: Any, real: torch.Tensor, threshold: float) -> torch.Tensor:
        return (real > threshold).to(real.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def binarize(real: torch.Tensor, threshold: float) -> torch.Tensor:
    """The binary mask of `real`, with the straight-through gradient."""
    return _StraightThrough.apply(real, threshold)


class WeightMask(nn.Module):
    """A parametrisation W -> W * mask, the mask binarised from a trainable real tensor where `pickable`
    (every entry by default) and 1 elsewhere."""

    def __init__(
        self,
        shape: torch.Size,
        init: float,
        threshold: float,
        pickable: torch.Tensor | None = None,
        start: torch.Tensor | None = None,
    ):
        super().__init__()
        real = torch.full(tuple(shape), float(init))
        if start is not None:  # resume a binary mask: dropped entries start as far below as kept ones above
            real = torch.where(start.to(torch.bool), real, torch.full_like(real, 2 * threshold - init))
        self.real = nn.Parameter(real)
        self.threshold = threshold
        self.register_buffer("pickable", None if pickable is None else pickable.to(torch.bool).clone())

    def mask(self) -> torch.Tensor:
        binary = binarize(self.real, self.threshold)
        if self.pickable is None:
            return binary
        return torch.where(self.pickable, binary, torch.ones_like(binary))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask()

    def binary(self) -> torch.Tensor:
        """The mask as it stands (bool, on the CPU)."""
        with torch.no_grad():
            return self.mask().to("cpu", torch.bool)


def matrix_parameters(graph: ModuleGraph, node_id: str) -> list[str]:
    """The node's weights that masks and pruning act on: matrices and filters, not biases."""
    return [name for name, value in graph.weights_of(node_id).items() if value.dim() >= 2]


def attach_masks(
    program: TrainingProgram,
    pickable: Mapping[str, Mapping[str, torch.Tensor | None]],
    init: float,
    threshold: float,
    start: Mapping[MaskKey, torch.Tensor] | None = None,
) -> dict[MaskKey, WeightMask]:
    """A trainable mask on every named weight of the compiled modules (node id -> parameter -> the entries
    the mask may drop, None: all), starting at `init` everywhere or from the binary masks in `start`. Their
    `real` parameters then train with the view."""
    masks = {}
    for node_id, params in pickable.items():
        module = program.full.node_modules[node_id]
        for name, where in params.items():
            path, _, attribute = name.rpartition(".")
            leaf = module.get_submodule(path)
            weight = getattr(leaf, attribute)
            begin = (start or {}).get((node_id, name))
            mask = WeightMask(weight.shape, init, threshold, where, begin).to(weight.device)
            parametrize.register_parametrization(leaf, attribute, mask)
            leaf.register_state_dict_post_hook(_plain_state_dict(attribute))
            masks[node_id, name] = mask
    return masks


def _plain_state_dict(attribute: str):
    """A state-dict hook naming the parametrised weight as before, without its mask."""

    def hook(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, metadata: Any) -> None:
        parametrised = f"{prefix}parametrizations.{attribute}."
        state[prefix + attribute] = state.pop(parametrised + "original")
        for key in [k for k in state if k.startswith(parametrised)]:
            del state[key]

    return hook


def store_masks(graph: ModuleGraph, task: int, masks: Mapping[MaskKey, WeightMask]) -> ModuleGraph:
    """`graph` with each trained mask kept, binary, as `task`'s mask of its parameter."""
    binary: dict[str, dict[str, torch.Tensor]] = {}
    for (node_id, name), mask in masks.items():
        binary.setdefault(node_id, {})[name] = mask.binary()
    return node_data.with_masks(graph, task, binary)


def mask_training(
    graph: ModuleGraph, task: int, node_ids: list[str], init: float, threshold: float
) -> Training:
    """How a task learns a binary mask over every weight matrix of the (frozen) nodes `node_ids`
    (Piggyback's, auto-grow's masking move): the masks attached once the candidate is compiled, the nodes
    run per batch, and the binary masks stored as the task's masks after training."""
    masked = {n: dict.fromkeys(matrix_parameters(graph, n)) for n in node_ids}
    attached: dict[MaskKey, WeightMask] = {}

    def start(run: TrainingRun) -> None:
        attached.update(attach_masks(run.program, masked, init, threshold))

    def finish(trained: ModuleGraph, program: TrainingProgram) -> ModuleGraph:
        return store_masks(trained, task, attached)

    return Training(changing=tuple(node_ids), start=start, finish=finish)
