"""`inspect --diff` over a node widened between the two tasks (DEN's growth): the weights claimed since
count the old entries freed-then-taken and the new entries taken, each once."""

from __future__ import annotations

import torch

from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.specs import Head, Linear
from growsearch.grow import operators as ops
from growsearch.report.graph.diff import graph_diff, render_diff_text


def test_a_widened_node_counts_what_was_claimed_since():
    torch.manual_seed(0)
    graph = ModuleGraph((4,))
    graph.add("layer", Linear(4, 3), [INPUT], 0)
    graph.add("t0/head", Head(3, 2), ["layer"], 0)
    graph.set_head(0, "t0/head")
    before = ops.track_owners(graph, ["layer"])
    before.node("layer").owners["0.weight"][0] = 0  # task 0 holds the first unit's 4 weights
    after = ops.widen(before, "layer", 2)  # 2 new units: 8 weights and 2 biases, FREE
    after = ops.claim_free(after, 1, ["layer"])  # task 1 takes every FREE entry: 8 + 8 weights, 5 biases
    diff = graph_diff(before, after, 0, 1)
    assert diff.claimed == {"layer": 8 + 8 + 5}
    assert "layer: 21 of 25 weights (84%) claimed from the free pool" in render_diff_text(diff, after)
