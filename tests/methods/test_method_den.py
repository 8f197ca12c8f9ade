"""DEN (Yoon et al. 2018): expansion only when the loss threshold is missed; split units keep old tasks."""

import pytest
import torch

from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.grow.units import expand_units, split_units
from growsearch.methods.base import TaskContext
from growsearch.methods.den import DEN
from growsearch.store.run_folder import RunFolder
from growsearch.task_record import TaskRecord
from growsearch.train.trainer import count_macs

from tiny_runs import tiny_space

FAST = {"max_iterations": 6, "head_iterations": 2}
SHARED = ("den/L0", "den/L1")
FIRST = TaskRecord(
    task=0, chosen_trial=0, decisions={}, accuracy_row=[], parameters=0, train_macs=0, pass_macs=0
)


def test_split_units_keep_old_tasks_outputs_and_timestamps(run_tiny, digits_stream):
    result = run_tiny("den", options=FAST)
    run = RunFolder.open(result.path)
    final, _ = run.load_task(4)
    splits = [sum(r.mechanism["split_units"]) for r in result.records[1:]]
    assert sum(splits) > 0, "the stream should exercise the split"
    for task in range(4):
        at_commit, _ = run.load_task(task)
        x = digits_stream.tasks[task].test.x
        now, then = compile_view(final, task).module(x), compile_view(at_commit, task).module(x)
        # the old view only gains zero-weighted units, so only the summation order can change
        torch.testing.assert_close(now, then, rtol=0, atol=1e-5)
        assert torch.equal(now.argmax(1), then.argmax(1))
        for node_id in SHARED:
            for name, owners in at_commit.node(node_id).owners.items():
                old = tuple(slice(0, s) for s in owners.shape)
                assert torch.equal(final.node(node_id).owners[name][old], owners)
                assert torch.equal(
                    final.node(node_id).weights[name][old], at_commit.node(node_id).weights[name]
                )
    # timestamps: the units a task appended are owned by that task, and each task adds its copies
    widths = [run.load_task(t)[0].node("den/L0").spec.out_features for t in range(5)]
    owners = final.node("den/L0").owners["1.0.bias"]
    for task in range(1, 5):
        added = result.records[task].mechanism
        assert widths[task] - widths[task - 1] == added["expanded_units"][0] + added["split_units"][0]
        assert (owners[widths[task - 1] : widths[task]] == task).all()
    assert result.metrics["metrics"]["forgetting"] == 0.0


def _first_task(space, stream):
    method = DEN(space)
    specs = method.specs_for(stream.input_shape)
    torch.manual_seed(0)
    ctx = TaskContext(0, stream.tasks[0], ModuleGraph(stream.input_shape), specs, (), seed=0)
    return method.commit(method.build({}, ctx).graph, ctx, None), specs


@pytest.mark.parametrize(
    ("options", "params", "expands"),
    [
        ({"loss_threshold": 1e6}, {}, False),  # no loss misses this threshold
        ({"search_thresholds": True}, {"loss_threshold": 1e-3, "split_threshold": 0.5}, True),
    ],
)
def test_den_expands_only_when_the_loss_threshold_is_missed(digits_stream, options, params, expands):
    space = tiny_space("den", options={**FAST, "expand_units": 3, **options})
    committed, specs = _first_task(space, digits_stream)
    torch.manual_seed(1)
    ctx = TaskContext(1, digits_stream.tasks[1], committed, specs, (FIRST,), seed=0)
    with count_macs() as spent:
        candidate = DEN(space).build(params, ctx)
    done, decided = candidate.mechanism, candidate.decisions
    assert done.expanded is expands and decided["expanded"] is expands
    assert done.expanded == (done.selective_loss >= decided["loss_threshold"])
    assert decided["loss_threshold"] == params.get("loss_threshold", 1e6)
    for i, node_id in enumerate(SHARED):
        kept = done.expanded_units[i]
        assert kept == (3 - done.dropped_units[i] if expands else 0)
        before = committed.node(node_id).spec.out_features
        assert candidate.graph.node(node_id).spec.out_features == before + kept + done.split_units[i]
    assert spent.macs > 0  # the stages train through the one trainer, and their compute is counted


def test_split_copies_carry_the_new_function_and_originals_the_old_weights():
    torch.manual_seed(0)
    sizes = [6, 5, 4, 3]  # input, two hidden layers, head
    prev = [torch.randn(sizes[i + 1], sizes[i]) for i in range(2)]
    prev_b = [torch.randn(sizes[i + 1]) for i in range(2)]
    w = [p.clone() for p in prev] + [torch.randn(3, 4)]
    b = [p.clone() for p in prev_b] + [torch.randn(3)]
    expand_units(w, b, 2)  # two new units per layer, read by the layer above
    drifted = [torch.tensor([1, 3]), torch.tensor([0])]
    for layer, rows in enumerate(drifted):
        w[layer][rows] += torch.randn(len(rows), w[layer].shape[1])
        b[layer][rows] += 1.0
    # every unit above a drifted one reads it, so it is split too: then the task's function is exact
    split = [drifted[0], torch.arange(4)]

    def forward(w, b, x):
        for weight, bias in zip(w[:-1], b[:-1], strict=True):
            x = torch.relu(x @ weight.T + bias)
        return x @ w[-1].T + b[-1]

    x = torch.randn(7, 6)
    before = forward(w, b, x)
    free_w, free_b = split_units(w, b, prev, prev_b, split)
    torch.testing.assert_close(forward(w, b, x), before)  # the task's function is intact
    for layer in range(2):
        n, n_in = prev[layer].shape
        assert w[layer].shape[0] == n + 2 + len(split[layer])  # old, new, copies
        assert torch.equal(w[layer][:n, :n_in], prev[layer]) and torch.equal(b[layer][:n], prev_b[layer])
        assert not free_w[layer][:n, :n_in].any() and free_w[layer][n:].all() and not free_b[layer][:n].any()


def test_selective_retraining_selects_a_strict_subset_and_group_sparsity_drops_units(digits_stream):
    """With L1 strong enough to zero weights within the test's few iterations, the breadth-first search
    from the new head skips units the head cannot reach, and group sparsity removes added units."""
    options = {"max_iterations": 60, "head_iterations": 10, "l1": 0.004, "group_lasso": 0.05}
    space = tiny_space("den", options={**options, "loss_threshold": 0.0, "expand_units": 4})
    committed, specs = _first_task(space, digits_stream)
    torch.manual_seed(1)
    ctx = TaskContext(1, digits_stream.tasks[1], committed, specs, (FIRST,), seed=0)
    stages = DEN(space).build({}, ctx).mechanism
    assert stages.expanded and stages.stage_iterations[0] == 10
    assert any(s < old for s, old in zip(stages.selected_units, stages.old_units, strict=True)), stages
    assert sum(stages.dropped_units) > 0, stages
