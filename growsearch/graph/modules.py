"""The torch modules the general node kinds build (`NodeSpec.build` in `graph.specs`).

Apart from the specs so that a spec is plain data: reading, checking and describing a graph (`growsearch
inspect`) never imports torch; building a module does, through this module.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from growsearch.errors import UnknownNameError

ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}  # graph.specs.ACTIVATIONS names them (a test keeps them equal)


def with_activation(module: nn.Module, activation: str | None) -> nn.Module:
    if activation is None:
        return module
    if activation not in ACTIVATION_MODULES:
        raise UnknownNameError("activation", activation, list(ACTIVATION_MODULES))
    return nn.Sequential(module, ACTIVATION_MODULES[activation]())


class TaskNorm(nn.BatchNorm2d):
    """Batch norm whose statistics can be held fixed: `fixed` computes with the running statistics even in
    training mode (a normalisation that belongs to another task, or to a frozen module: its outputs must
    not depend on the batch, and nothing of it may change). Each task's set of it is kept apart
    (`Node.norms`), so an old task evaluates with its own."""

    fixed: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fixed:
            return super().forward(x)
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


class ResidualBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + self.shortcut(x))


class NormResidualBlock(nn.Module):
    """The basic block of the CIFAR ResNets (He et al. 2016): conv-BN-ReLU-conv-BN plus the input (a 1x1
    conv and BN where the shape changes), then ReLU; convolutions without biases."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = TaskNorm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = TaskNorm(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False), TaskNorm(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + self.shortcut(x))


class ScaledAdapter(nn.Module):
    """PNN lateral: U sigma(V (alpha * h)), with a learned scalar alpha "initialised by a random small
    value" (Rusu et al. 2016, sec. 2): uniform in [0, alpha_scale)."""

    def __init__(self, reduce: nn.Module, project: nn.Module, alpha_scale: float, flatten: bool):
        super().__init__()
        self.alpha = nn.Parameter(torch.rand(()) * alpha_scale)
        self.flatten = flatten
        self.reduce, self.project = reduce, project

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.flatten:
            h = h.flatten(1)
        return self.project(torch.relu(self.reduce(self.alpha * h)))


class LSTMLayer(nn.Module):
    """An LSTM layer over a batch-first (B, T, F) sequence, from zero initial states; one bias (nn.LSTM's two
    add up to one). Written out step by step (no fused kernel) so that `torch.func.vmap` batches it in a
    pack like any dense layer; the gates' input projection runs for all steps at once."""

    def __init__(self, input_size: int, hidden_size: int, return_sequence: bool):
        super().__init__()
        self.hidden_size, self.return_sequence = hidden_size, return_sequence
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))  # gates i, f, g, o
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)  # nn.LSTM's initialisation
        for parameter in (self.weight_ih, self.weight_hh, self.bias):
            nn.init.uniform_(parameter, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        projected = F.linear(x, self.weight_ih, self.bias)  # (B, T, 4H)
        h = projected.new_zeros(projected.shape[0], self.hidden_size)
        c, states = h, []
        for step in range(projected.shape[1]):
            i, f, g, o = (projected[:, step] + F.linear(h, self.weight_hh)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            states.append(h)
        return torch.stack(states, 1) if self.return_sequence else h


class LastStepModule(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1]
