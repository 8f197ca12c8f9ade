"""Removing units from a layer: the network gets smaller and computes what the network with those units
gated to zero computed, through dense and conv readers and through concatenations."""

import pytest
import torch

from growsearch.config.network import parse_layers
from growsearch.errors import GraphError
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.specs import Activation
from growsearch.grow.backbone import head_spec, layer_specs
from growsearch.grow.unit_removal import remove_units

X = torch.rand(7, 1, 8, 8)


def two_extractors(layers) -> ModuleGraph:
    """Two stacks of `layers` reading the input, joined by a concatenation, and a head over the join."""
    specs = layer_specs(parse_layers(layers, "test"), (1, 8, 8))
    graph = ModuleGraph((1, 8, 8))
    for k in range(2):
        previous = INPUT
        for i, spec in enumerate(specs):
            graph.add(f"e{k}/L{i}", spec, [previous], 0, layer=i)
            previous = f"e{k}/L{i}"
    graph.add("join", Activation(None), [f"e0/L{len(specs) - 1}", f"e1/L{len(specs) - 1}"], 0, merge="concat")
    graph.add("head", head_spec(graph.shapes(["join"])["join"], 3), ["join"], 0)
    graph.set_head(0, "head")
    return graph


@pytest.mark.parametrize(
    "layers",
    [
        [{"linear": 6}, {"linear": 5}],
        [
            {"conv": {"channels": 4, "pool": 2}},
            {"conv": {"channels": 5}},
        ],  # the head flattens the joined channels
    ],
)
def test_removed_units_compute_what_gating_them_to_zero_computed(layers):
    torch.manual_seed(0)
    graph = two_extractors(layers)
    keep_first = torch.tensor([True, False, True, True] + [False] * 2)[: graph.shapes()["e1/L0"][0]]
    keep_last = torch.tensor([False, True, True, False, True])
    gated = graph.copy()
    gated.node("e1/L0").gates[0] = keep_first.float()
    gated.node("e1/L1").gates[0] = keep_last.float()
    pruned = remove_units(remove_units(graph, "e1/L0", keep_first), "e1/L1", keep_last)
    assert pruned.shapes()["e1/L1"][0] == 3 and pruned.n_parameters() < graph.n_parameters()
    assert graph.shapes()["e1/L1"][0] == 5  # the argument is left as it was
    expected = compile_view(gated, 0).module(X)
    torch.testing.assert_close(compile_view(pruned, 0).module(X), expected, rtol=1e-5, atol=1e-6)
    for node_id in ("e0/L0", "e0/L1"):  # the other extractor is untouched
        for name, value in graph.node(node_id).weights.items():
            assert torch.equal(pruned.node(node_id).weights[name], value)


def test_what_cannot_be_pruned_is_refused_by_name():
    graph = two_extractors([{"linear": 6}, {"linear": 5}])
    with pytest.raises(GraphError, match="expected a mask of its 6 units keeping at least one"):
        remove_units(graph, "e0/L0", torch.zeros(6, dtype=torch.bool))
    with pytest.raises(GraphError, match="'head' is a Head"):
        remove_units(graph, "head", torch.ones(3, dtype=torch.bool))
