import torch

from growsearch.store.run_folder import RunFolder

from tiny_runs import assert_old_tasks_unchanged


def test_old_tasks_outputs_are_bit_identical_after_later_tasks(run_tiny, digits_stream):
    result = run_tiny("pnn")
    assert_old_tasks_unchanged(result.path, digits_stream)


def test_each_task_adds_a_frozen_column_and_old_columns_never_change(run_tiny):
    result = run_tiny("pnn")
    run = RunFolder.open(result.path)
    first, _ = run.load_task(0)
    final, _ = run.load_task(4)
    for node_id, node in first.nodes():
        assert all(torch.equal(v, final.node(node_id).weights[k]) for k, v in node.weights.items())
    assert all(node.frozen for _, node in final.nodes())
    owners = {node.owner for n, node in final.nodes() if n != "input"}
    assert owners == {0, 1, 2, 3, 4}
    # laterals: column 4 reads every older column through one adapter per layer
    assert final.node("t4/lateral1").inputs == ("t0/L0", "t1/L0", "t2/L0", "t3/L0")
    # parameters grow every task, faster than linearly (the adapters' inputs widen)
    params = result.metrics["parameters"]
    steps = [b - a for a, b in zip(params, params[1:], strict=False)]
    assert all(s > 0 for s in steps) and steps[-1] > steps[0]


def test_pnn_learns_the_stream(run_tiny):
    result = run_tiny("pnn", training={"epochs": 4})
    accuracy = result.metrics["accuracy"]
    assert [len(row) for row in accuracy] == [5] * 5
    assert result.metrics["metrics"]["forgetting"] == 0.0
    assert result.metrics["metrics"]["average_accuracy"] > 0.85
