import pytest
import torch

from growsearch.graph.module_graph import FREE
from growsearch.store.run_folder import RunFolder

from tiny_runs import assert_old_tasks_unchanged

SHARED = ("shared/L0", "shared/L1")


def test_old_tasks_outputs_are_bit_identical_after_later_tasks(run_tiny, digits_stream):
    result = run_tiny("packnet")
    assert_old_tasks_unchanged(result.path, digits_stream)
    assert result.metrics["metrics"]["forgetting"] == 0.0


def test_masks_of_different_tasks_never_claim_the_same_weight(run_tiny):
    result = run_tiny("packnet")
    run = RunFolder.open(result.path)
    graphs = [run.load_task(t)[0] for t in range(5)]
    final = graphs[-1]
    for node_id in SHARED:
        owners = final.node(node_id).owners["1.0.weight" if node_id.endswith("L0") else "0.weight"]
        masks = [owners == t for t in range(5)]
        for i in range(5):
            assert masks[i].any(), f"task {i} owns no weight of {node_id}"
            for j in range(i + 1, 5):
                assert not (masks[i] & masks[j]).any()
        # once claimed, a weight keeps its owner and its value in every later checkpoint
        for t in range(4):
            earlier = graphs[t].node(node_id)
            for name, early_owners in earlier.owners.items():
                claimed = early_owners != FREE
                assert torch.equal(final.node(node_id).owners[name][claimed], early_owners[claimed])
                assert torch.equal(final.node(node_id).weights[name][claimed], earlier.weights[name][claimed])


@pytest.mark.parametrize("prune_last_task", [True, False])
def test_pruning_follows_the_fractions_and_biases_belong_to_the_first_task(run_tiny, prune_last_task):
    options = {"prune_fractions": [0.5, 0.75], "prune_last_task": prune_last_task}
    result = run_tiny("packnet", options=options)
    final, _ = RunFolder.open(result.path).load_task(4)
    owners = final.node("shared/L1").owners["0.weight"].flatten()
    total = owners.numel()
    free = total
    for task in range(5):
        claimed = int((owners == task).sum())
        fraction = 0.5 if task == 0 else 0.75
        if task == 4 and not prune_last_task:
            fraction = 0.0  # the authors' schedule: the last task keeps every free weight
        assert claimed == round((1 - fraction) * free)
        mechanism = result.records[task].mechanism
        assert mechanism["pruned_fraction"] == fraction
        layer1 = [c for c in mechanism["capacity"] if c["layer"] == 1][0]
        assert layer1["owned"] == claimed / total and layer1["free"] == (free - claimed) / total
        free -= claimed
    assert int((owners == FREE).sum()) == free
    assert (final.node("shared/L1").owners["0.bias"] == 0).all()
    assert (final.node("shared/L1").weights["0.weight"].flatten()[owners == FREE] == 0).all()
    assert (
        result.metrics["parameters"][0] == result.metrics["parameters"][-1] - 4 * 34
    )  # only heads are added


def test_a_search_over_the_prune_fraction_against_capacity(run_tiny):
    result = run_tiny(
        "packnet",
        options={"search": True},
        search={"n_trials": 3, "objectives": ["accuracy", "capacity_used"], "sampler": "nsga2"},
        training={"epochs": 1},
    )
    final, _ = RunFolder.open(result.path).load_task(4)
    owners = final.node("shared/L1").owners["0.weight"].flatten()
    free = owners.numel()
    for task, record in enumerate(result.records):
        fraction = record.decisions["prune_fraction"]
        assert 0.3 <= fraction <= 0.95 and record.mechanism["pruned_fraction"] == fraction
        assert int((owners == task).sum()) == round((1 - fraction) * free)  # the chosen trial's fraction
        free -= int((owners == task).sum())
