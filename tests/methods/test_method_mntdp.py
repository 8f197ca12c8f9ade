import optuna
import torch

from growsearch.search.run_folder import RunFolder


def test_every_candidate_is_trained_and_the_best_on_validation_is_committed(run_tiny):
    result = run_tiny("mntdp-d")
    run = RunFolder.open(result.path)
    storage = run.storage("sqlite")
    for record in result.records:
        task = record["task"]
        study = optuna.load_study(study_name=f"task-{task}", storage=storage)
        trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        depths = sorted(t.params["reuse_depth"] for t in trials)
        assert depths == ([0] if task == 0 else [0, 1, 2])  # L + 1 candidates for L = 2 layers
        best = max(trials, key=lambda t: t.value)
        assert record["val_accuracy"] == best.value
        assert record["decisions"]["reuse_depth"] == best.params["reuse_depth"]
        assert record["decisions"]["source_task"] == (task - 1 if task else None)
    assert result.metrics["decisions"] == [r["decisions"] for r in result.records]


def test_the_chosen_path_reuses_frozen_modules_bit_identically(run_tiny):
    result = run_tiny("mntdp-d", training={"epochs": 1})
    run = RunFolder.open(result.path)
    final, _ = run.load_task(4)
    for record in result.records[1:]:
        task, k = record["task"], record["decisions"]["reuse_depth"]
        path = final.layer_nodes(task)
        source_path = final.layer_nodes(task - 1)
        for layer in range(2):
            if layer < k:
                assert path[layer] == source_path[layer]
            else:
                assert path[layer] == f"t{task}/L{layer}"
    first, _ = run.load_task(0)
    for node_id, node in first.nodes():
        assert node.frozen or node_id == "input"
        assert all(torch.equal(v, final.node(node_id).weights[k]) for k, v in node.weights.items())
