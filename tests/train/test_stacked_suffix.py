"""A pack's suffix as batched operations (`StackedSuffix`) computes what vmap of the suffix computes, for
every operation it takes (dense layers stacked or frozen, a bias held by the module, flatten, concat,
stack, sums, activations), on per-candidate and on shared inputs; an operation it does not take leaves
the pack on vmap."""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
from torch import nn
from torch.func import functional_call, vmap

from growsearch.train.stacked_suffix import stacked_suffix

K, BATCH = 3, 5


def _suffix(flatten_by_method: bool = False) -> fx.GraphModule:
    """image -> flatten -> new layer (stacked) -> tanh; beside a frozen input: concat, a frozen layer
    above the new one, a sum, a stack, then the head (stacked, its bias the module's)."""
    root = nn.Module()
    root.flat = nn.Flatten()
    root.flat_pair = nn.Flatten()
    root.new = nn.Linear(12, 4)
    root.act = nn.Tanh()
    root.frozen = nn.Linear(7, 4)  # reused above the new layer: not in the stack
    root.head = nn.Linear(8, 2)
    graph = fx.Graph()
    image, old = graph.placeholder("image"), graph.placeholder("old")
    x = graph.call_module("flat", (image,))
    x = graph.call_module("act", (graph.call_module("new", (x,)),))
    joined = graph.call_function(torch.cat, ((old, x),), {"dim": 1})
    above = graph.call_function(torch.relu, (graph.call_module("frozen", (joined,)),))
    summed = graph.call_function(operator.add, (above, x))
    pair = graph.call_function(torch.stack, ((summed, x),), {"dim": 1})
    if flatten_by_method:
        flat_pair = graph.call_method("flatten", (pair, 1))
    else:
        flat_pair = graph.call_module("flat_pair", (pair,))
    graph.output(graph.call_module("head", (flat_pair,)))
    return fx.GraphModule(root, graph)


def test_batched_operations_compute_what_vmap_computes():
    suffix = _suffix()
    generator = torch.Generator().manual_seed(0)
    params = {
        "new.weight": torch.randn(K, 4, 12, generator=generator).requires_grad_(),
        "new.bias": torch.randn(K, 4, generator=generator).requires_grad_(),
        "head.weight": torch.randn(K, 2, 8, generator=generator).requires_grad_(),
    }
    direct = stacked_suffix(suffix, set(params))
    assert direct is not None
    assert stacked_suffix(_suffix(flatten_by_method=True), set(params)) is None  # no batched form here

    def one(p, *inputs):
        return functional_call(suffix, p, inputs)

    image, old = torch.randn(K, BATCH, 3, 2, 2, generator=generator), torch.randn(K, BATCH, 3)
    expected = vmap(one)(params, image, old)
    torch.testing.assert_close(direct(params, image, old), expected)
    shared = (image[0], old[0])
    torch.testing.assert_close(
        direct(params, *shared, shared=True), vmap(one, in_dims=(0, None, None))(params, *shared)
    )
    ours = torch.autograd.grad(direct(params, image, old).square().sum(), list(params.values()))
    theirs = torch.autograd.grad(expected.square().sum(), list(params.values()))
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference)


def test_a_stacked_parameter_outside_a_dense_layer_leaves_the_pack_on_vmap():
    root = nn.Module()
    root.norm = nn.LayerNorm(4)
    graph = fx.Graph()
    graph.output(graph.call_module("norm", (graph.placeholder("x"),)))
    assert stacked_suffix(fx.GraphModule(root, graph), {"norm.weight", "norm.bias"}) is None
