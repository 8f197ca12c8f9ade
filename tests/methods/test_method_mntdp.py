import optuna
import torch

from growsearch.grow import node_data
from growsearch.store.run_folder import RunFolder
from growsearch.trial_record import read_record


def test_every_candidate_is_trained_and_the_best_on_validation_is_committed(run_tiny):
    result = run_tiny("mntdp-d", search={"accuracy_tolerance": 0.0})  # the paper's rule
    run = RunFolder.open(result.path)
    storage = run.storage()
    for record in result.records:
        task = record.task
        study = optuna.load_study(study_name=f"task-{task}", storage=storage)
        trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        depths = sorted(t.params["reuse_depth"] for t in trials)
        assert depths == ([0] if task == 0 else [0, 1, 2])  # L + 1 candidates for L = 2 layers
        best = max(trials, key=lambda t: t.value)
        assert record.val_accuracy == best.value
        assert record.decisions["reuse_depth"] == best.params["reuse_depth"]
        if task == 0:
            assert record.decisions["source_task"] is None
        else:  # the task-driven prior picked the earlier path whose features classify the new task best
            scores = {int(j): s for j, s in read_record(best).mechanism["prior_scores"].items()}
            assert record.mechanism["prior_scores"] == read_record(best).mechanism["prior_scores"]
            assert set(scores) == set(range(task))
            assert scores[record.decisions["source_task"]] == max(scores.values())
    assert result.metrics["decisions"] == [r.decisions for r in result.records]


def test_the_chosen_path_reuses_frozen_modules_bit_identically(run_tiny):
    result = run_tiny("mntdp-d", training={"epochs": 1})
    run = RunFolder.open(result.path)
    final, _ = run.load_task(4)
    for record in result.records[1:]:
        task, k = record.task, record.decisions["reuse_depth"]
        path = final.layer_nodes(task)
        source_path = final.layer_nodes(record.decisions["source_task"])
        for layer in range(2):
            if layer < k:
                assert path[layer] == source_path[layer]
            else:
                assert path[layer] == f"t{task}/L{layer}"
    first, _ = run.load_task(0)
    for node_id, node in first.nodes():
        assert node.frozen or node_id == "input"
        assert all(torch.equal(v, final.node(node_id).weights[k]) for k, v in node.weights.items())


def test_with_source_previous_the_previous_task_is_perturbed(run_tiny):
    result = run_tiny("mntdp-d", training={"epochs": 1}, options={"source": "previous"})
    assert [d["source_task"] for d in result.metrics["decisions"]] == [None, 0, 1, 2, 3]


def test_the_prior_picks_the_earlier_path_whose_features_separate_the_new_task(run_tiny, digits_stream):
    from growsearch.methods.algorithms.task_prior import choose_source

    result = run_tiny("pnn", training={"epochs": 3}, options={"laterals": False})  # independent columns
    graph, _ = RunFolder.open(result.path).load_task(1)
    constant = {name: torch.zeros_like(value) for name, value in graph.node("t1/L1").weights.items()}
    graph = node_data.with_weights(graph, {"t1/L1": constant})  # column 1's features: a constant
    choice = choose_source(graph, digits_stream.tasks[0], [0, 1])
    assert choice.source == 0
    assert choice.scores[0] > 0.9 and choice.scores[1] < 0.7  # constant features: a kNN near chance


def test_mntdp_s_trains_the_candidates_jointly_and_commits_the_most_probable(run_tiny):
    result = run_tiny("mntdp-s", training={"epochs": 1}, options={"sampler_epochs": 2})
    storage = RunFolder.open(result.path).storage()
    for record in result.records[1:]:
        decisions = record.decisions
        probabilities = {int(k): p for k, p in decisions["path_probabilities"].items()}
        assert sorted(probabilities) == [0, 1, 2] and abs(sum(probabilities.values()) - 1) < 1e-5
        assert probabilities[decisions["reuse_depth"]] == max(probabilities.values())
        trial = optuna.load_study(study_name=f"task-{record.task}", storage=storage).get_trials()[0]
        assert read_record(trial).search_macs > 0  # the joint phase's training is counted
    assert result.metrics["metrics"]["forgetting"] == 0.0
