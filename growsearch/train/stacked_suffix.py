"""A pack's compiled suffix run over K candidates' stacked weights with batched tensor operations.

`train.packed` trains a pack through `torch.func.vmap` of `functional_call`, which takes any suffix. Its
per-call cost (wrapping every tensor, swapping every parameter in and out) is most of a step when the
candidates are small: on two CPU cores, a step of five RCL children (two dense layers and a head) took
3.2 ms through vmap, 1.6 ms as batched products here, and one child alone 1 ms. Where every operation of
the suffix has a batched form (dense layers: one batched matrix product for the K candidates;
activations; flattening, concatenation, stacking and sums along shifted axes), `StackedSuffix` runs it
directly on (K, batch, ...) tensors: the same arithmetic, without the wrapping. Anything else
(convolutions, normalisation, custom modules) makes `stacked_suffix` return None, and the pack keeps vmap.

A value is either stacked (one per candidate: (K, batch, ...)) or shared by every candidate (batch, ...:
the samples every candidate is measured on, and what only frozen inputs compute); an operation mixing the
two broadcasts the shared one.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import NamedTuple

import torch
import torch.fx as fx
from torch import nn

# modules that act entry by entry and hold no parameters: the same call on a stacked tensor
ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.ELU,
    nn.SiLU,
    nn.Softplus,
    nn.Identity,
)
ELEMENTWISE_FUNCTIONS = {
    operator.add,
    operator.mul,
    torch.add,
    torch.mul,
    torch.relu,
    torch.tanh,
    torch.sigmoid,
    nn.functional.relu,
}
AXIS_FUNCTIONS = {torch.cat, torch.stack}  # take a sequence of tensors and one axis


class _Value(NamedTuple):  # a tuple: made for every node at every step, cheaper than a dataclass
    tensor: torch.Tensor
    stacked: bool  # (K, batch, ...) rather than (batch, ...) shared by all K


Step = Callable[[dict[str, _Value], Mapping[str, torch.Tensor]], _Value]


def _axis(axis: int, stacked: bool) -> int:
    """A per-sample tensor's axis in its stacked form (a negative axis counts from the end: unchanged)."""
    return axis + 1 if stacked and axis >= 0 else axis


def _stacked_like(value: _Value, k: int) -> torch.Tensor:
    return value.tensor if value.stacked else value.tensor.expand(k, *value.tensor.shape)


def _linear(source: str, weight: str, bias: str | None, module: nn.Linear) -> Step:
    """A dense layer: with stacked weights (K, out, in), one batched product for the K candidates (on a
    shared input, one product with the K weights side by side); a weight not in the stack (a frozen layer
    downstream of a trained one) is the module's own."""

    def run(values: dict[str, _Value], params: Mapping[str, torch.Tensor]) -> _Value:
        x = values[source]
        w = params.get(weight)
        if w is None:
            return _Value(nn.functional.linear(x.tensor, module.weight, module.bias), x.stacked)
        k, out, width = w.shape
        b = None if bias is None else params.get(bias)
        if not x.stacked:  # (..., in) @ (in, K x out), then the K axis in front
            flat = nn.functional.linear(
                x.tensor, w.reshape(k * out, width), None if b is None else b.reshape(-1)
            )
            y = flat.view(*x.tensor.shape[:-1], k, out).movedim(-2, 0)
        else:
            rows = x.tensor.reshape(k, -1, width)
            if b is None:
                y = torch.bmm(rows, w.transpose(1, 2))
            else:
                y = torch.baddbmm(b.unsqueeze(1), rows, w.transpose(1, 2))
            y = y.view(*x.tensor.shape[:-1], out)
        if b is None and bias is not None:  # a bias held by the module, shared
            y = y + module.bias
        return _Value(y, True)

    return run


def _flatten(source: str, start: int, end: int) -> Step:
    def run(values: dict[str, _Value], _: Mapping[str, torch.Tensor]) -> _Value:
        x = values[source]
        return _Value(torch.flatten(x.tensor, _axis(start, x.stacked), _axis(end, x.stacked)), x.stacked)

    return run


def _elementwise(function: Callable, args: tuple, kwargs: dict) -> Step:
    """An entry-by-entry operation; its tensor arguments broadcast (a shared (batch, ...) one against
    stacked (K, batch, ...) ones, from the right)."""

    if len(args) == 1 and isinstance(args[0], fx.Node) and not kwargs:  # an activation: the common case
        source = args[0].name

        def run_one(values: dict[str, _Value], _: Mapping[str, torch.Tensor]) -> _Value:
            x = values[source]
            return _Value(function(x.tensor), x.stacked)

        return run_one

    def run(values: dict[str, _Value], _: Mapping[str, torch.Tensor]) -> _Value:
        stacked = False

        def read(arg):
            nonlocal stacked
            if isinstance(arg, fx.Node):
                value = values[arg.name]
                stacked = stacked or value.stacked
                return value.tensor
            return arg

        result = function(*(read(a) for a in args), **{k: read(v) for k, v in kwargs.items()})
        return _Value(result, stacked)

    return run


def _along_axis(function: Callable, sources: list[str], axis: int) -> Step:
    """`torch.cat` or `torch.stack` of per-sample tensors along `axis`."""

    def run(values: dict[str, _Value], _: Mapping[str, torch.Tensor]) -> _Value:
        parts = [values[s] for s in sources]
        if not any(p.stacked for p in parts):
            return _Value(function([p.tensor for p in parts], dim=axis), False)
        k = next(p.tensor.shape[0] for p in parts if p.stacked)
        return _Value(function([_stacked_like(p, k) for p in parts], dim=_axis(axis, True)), True)

    return run


class StackedSuffix:
    """`suffix` over stacked weights: called with the stacked parameters (by their names in the suffix) and
    the inputs, stacked (K, batch, ...) or, with `shared`, the same samples for every candidate; returns
    logits (K, batch, classes)."""

    def __init__(self, steps: list[tuple[str, Step]], inputs: list[str], output: str):
        self.steps, self.inputs, self.output = steps, inputs, output

    def __call__(
        self, params: Mapping[str, torch.Tensor], *inputs: torch.Tensor, shared: bool = False
    ) -> torch.Tensor:
        values = {name: _Value(t, not shared) for name, t in zip(self.inputs, inputs, strict=True)}
        for name, step in self.steps:
            values[name] = step(values, params)
        result = values[self.output]
        k = next(iter(params.values())).shape[0]
        return _stacked_like(result, k)


def stacked_suffix(suffix: fx.GraphModule, stacked_names: set[str]) -> StackedSuffix | None:
    """`suffix` as a `StackedSuffix`, when every operation in it has a batched form here and every stacked
    parameter (`stacked_names`, names in `suffix`) belongs to a dense layer; else None."""
    modules = dict(suffix.named_modules())
    steps: list[tuple[str, Step]] = []
    inputs: list[str] = []
    output: str | None = None
    covered: set[str] = set()
    for node in suffix.graph.nodes:
        if node.op == "placeholder":
            inputs.append(node.name)
            continue
        if node.op == "output":
            if not isinstance(node.args[0], fx.Node):
                return None
            output = node.args[0].name
            continue
        step = _step(node, modules, stacked_names, covered)
        if step is None:
            return None
        steps.append((node.name, step))
    if output is None or covered != stacked_names:
        return None
    return StackedSuffix(steps, inputs, output)


def _step(node: fx.Node, modules: dict[str, nn.Module], stacked: set[str], covered: set[str]) -> Step | None:
    if node.op == "call_module":
        module = modules[node.target]
        if len(node.args) != 1 or node.kwargs or not isinstance(node.args[0], fx.Node):
            return None
        source = node.args[0].name
        if type(module) is nn.Linear:  # a subclass may compute something else
            weight, bias = f"{node.target}.weight", f"{node.target}.bias"
            covered.update(name for name in (weight, bias) if name in stacked)
            return _linear(source, weight, bias if module.bias is not None else None, module)
        if any(f"{node.target}.{name}" in stacked for name, _ in module.named_parameters()):
            return None
        if type(module) is nn.Flatten:
            return _flatten(source, module.start_dim, module.end_dim)
        if type(module) in ELEMENTWISE_MODULES:
            return _elementwise(module, (node.args[0],), {})
        return None
    if node.op == "call_function":
        if node.target in ELEMENTWISE_FUNCTIONS:
            return _elementwise(node.target, node.args, dict(node.kwargs))
        if node.target in AXIS_FUNCTIONS and len(node.args) == 1 and set(node.kwargs) <= {"dim"}:
            sources = node.args[0]
            if not all(isinstance(s, fx.Node) for s in sources):
                return None
            return _along_axis(node.target, [s.name for s in sources], int(node.kwargs.get("dim", 0)))
    return None
