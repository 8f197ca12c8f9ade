"""A checkpoint read without torch (`checkpoint.read_graph`, numpy arrays) is the checkpoint `load_graph`
loads: the same nodes, parameter counts and description, and the same files refused in the same words.
Each general kind says its module's state dict (`state_layout`) without building it, exactly as built."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from growsearch.atomic_files import sha256_of
from growsearch.errors import CheckpointError
from growsearch.graph.checkpoint import read_graph
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.modules import ACTIVATION_MODULES
from growsearch.graph.serialize import load_graph, save_graph
from growsearch.graph.specs import (
    ACTIVATIONS,
    LSTM,
    NODE_KINDS,
    Activation,
    Adapter,
    Conv2d,
    Flatten,
    GlobalAvgPool,
    Head,
    Input,
    LastStep,
    Linear,
    NodeSpec,
    ResBlock,
)
from growsearch.grow import node_data
from growsearch.grow import operators as ops
from growsearch.methods import get_method, method_names
from growsearch.report.graph.export import picture_to_json
from growsearch.report.graph.picture import graph_picture
from growsearch.report.inspect import render_text

SPECS = [
    Input((1, 8, 8)),
    *(Linear(6, 4, a, b, f) for a in ("relu", "tanh", None) for b in (True, False) for f in (True, False)),
    Head(6, 3),
    Head(6, 3, bias=False),
    *(
        Conv2d(3, 5, k, 1, 1, a, p, n)
        for k in (1, 3)
        for a in ("sigmoid", None)
        for p in (1, 2)
        for n in (0, 1)
    ),
    *(ResBlock(4, c, s, n) for c in (4, 6) for s in (1, 2) for n in (False, True)),
    GlobalAvgPool(),
    Flatten(),
    Activation("relu"),
    Activation(None, pool=2),
    Adapter(6, 4, 3),
    Adapter(6, 4, 3, flatten=True),
    Adapter(6, 4, 3, conv_kernel=3, conv_padding=1),
    Adapter(6, 4, 3, conv_kernel=3, conv_padding=1, pool=2),
    LSTM(5, 7),
    LSTM(5, 7, return_sequence=True),
    LastStep(),
]


@pytest.mark.parametrize("spec", SPECS, ids=repr)
def test_a_kind_says_its_modules_state_dict_without_building_it(spec):
    assert spec.state_layout() == NodeSpec.state_layout(spec)  # the default builds the module (torch)


def test_every_kind_that_says_its_state_dict_is_checked_against_its_module():
    for name in method_names():  # registers the kinds methods define beside them (they build to say it)
        get_method(name)
    saying = {kind for kind, cls in NODE_KINDS.items() if cls.state_layout is not NodeSpec.state_layout}
    assert saying == {spec.kind for spec in SPECS}
    assert set(ACTIVATION_MODULES) == set(ACTIVATIONS)


def _every_kind_of_tensor() -> ModuleGraph:
    """Two tasks over a conv layer with batch norm (task 1 keeps its own), a node sharing a frozen node's
    weights, an owner-tracked layer with task 1's gate and mask, and a method's state on a node."""
    torch.manual_seed(0)
    graph = ModuleGraph((1, 6, 6))
    graph.add("conv", Conv2d(1, 3, 3, padding=1, pool=2, norm=True), [INPUT], 0)
    graph.add("dense", Linear(27, 5, flatten=True), ["conv"], 0)
    graph.add("t0/head", Head(5, 2), ["dense"], 0)
    graph.set_head(0, "t0/head")
    graph = ops.freeze(graph, ["conv", "dense", "t0/head"])
    graph.add("again", Linear(27, 5, flatten=True), ["conv"], 1, shares="dense")
    graph.add("tracked", Linear(5, 5), ["again"], 1)
    graph.add("t1/head", Head(5, 2), ["tracked"], 1)
    graph.set_head(1, "t1/head")
    graph = ops.claim_free(ops.track_owners(graph, ["tracked"]), 1, ["tracked"], ["0.weight"])
    graph = node_data.with_task_norms(graph, 1, ["conv"])
    graph = node_data.with_gates(graph, 1, {"tracked": torch.tensor([1.0, 0.0, 1.0, 0.0, 0.3])})
    kept = torch.rand(graph.node("tracked").weights["0.weight"].shape) > 0.5
    graph = node_data.with_masks(graph, 1, {"tracked": {"0.weight": kept.float()}})
    return node_data.with_state(graph, {"dense": {"importance": torch.rand(5, 27)}})


def test_a_graph_read_without_torch_is_described_as_the_loaded_one(tmp_path):
    folder = save_graph(_every_kind_of_tensor(), tmp_path / "c")
    loaded, read = load_graph(folder), read_graph(folder)
    assert read.node_ids() == loaded.node_ids() and read.heads == loaded.heads
    for node_id, node in loaded.nodes():
        twin = read.node(node_id)
        assert twin.spec == node.spec and twin.n_parameters == node.n_parameters
        for field in ("weights", "owners", "gates", "state"):
            ours, theirs = getattr(twin, field), getattr(node, field)
            assert set(ours) == set(theirs) and all(isinstance(v, np.ndarray) for v in ours.values())
            assert all(np.array_equal(ours[k], theirs[k].numpy()) for k in theirs)
    assert read.node("conv").norms and read.node("tracked").masks and read.node("tracked").owners
    for task in (0, 1):
        assert render_text(read, task) == render_text(loaded, task)
        assert picture_to_json(graph_picture(read, task)) == picture_to_json(graph_picture(loaded, task))


def _rewrite(folder, edit_tensors) -> None:
    from safetensors.torch import load_file, save_file

    save_file(edit_tensors(load_file(folder / "weights.safetensors")), folder / "weights.safetensors")
    names = json.loads((folder / "checksums.json").read_text())
    (folder / "checksums.json").write_text(json.dumps({n: sha256_of(folder / n) for n in names}))


def _set(key, value):
    return lambda tensors: {**tensors, key: value(tensors[key])}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set("dense|1.0.weight", lambda v: v.to(torch.float64)), "is float64; its spec expects float32"),
        (_set("dense|1.0.weight", lambda v: v[:3]), "the weights of node 'dense' are"),
        (_set("dense|1.0.weight", lambda v: v * float("nan")), "holds NaN or infinite values"),
        (_set("tracked|0.weight|owners", lambda v: v.float()), "expected task numbers (integers)"),
        (_set("tracked|@gate|1", lambda v: v.half()), "task 1's gate is float16; expected numbers"),
        (_set("tracked|@mask|1|0.weight", lambda v: v.int()), "task 1's mask of '0.weight' is int32"),
        (_set("conv|@norm|1|0.0.1.running_var", lambda v: v[:2]), "entry '0.0.1.running_var' (float32 (2,))"),
        (_set("dense|@state|importance", lambda v: v / 0), "state importance holds NaN or infinite values"),
        (lambda t: {**t, "ghost|weight": torch.ones(1)}, "'ghost|weight' is a tensor of no node"),
    ],
)
def test_a_weights_file_that_lies_is_refused_alike_with_and_without_torch(tmp_path, edit, message):
    folder = save_graph(_every_kind_of_tensor(), tmp_path / "c")
    _rewrite(folder, edit)
    errors = []
    for reader in (load_graph, read_graph):
        with pytest.raises(CheckpointError) as caught:
            reader(folder)
        errors.append(str(caught.value))
    assert errors[0] == errors[1] and message in errors[0], errors


def test_reading_a_checkpoint_imports_no_torch(tmp_path):
    folder = save_graph(_every_kind_of_tensor(), tmp_path / "c")
    script = (
        "import sys\n"
        "from growsearch.graph.checkpoint import read_graph\n"
        "from growsearch.report.inspect import render_inspect\n"
        f"graph = read_graph({str(folder)!r})\n"
        "assert render_inspect(graph, 1, 'text') and render_inspect(graph, 1, 'json')\n"
        "print(sorted(m for m in ('torch', 'optuna', 'ray') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
