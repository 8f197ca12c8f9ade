"""DAN (Rosenfeld & Tsotsos 2018): a frozen base network, and per later task a combination A W of every base
layer's filters, a bias and a head; the per-layer search over combination / reuse / new."""

from pathlib import Path

import optuna
import pytest
import torch

from growsearch.errors import ConfigError
from growsearch.graph.compile import compile_view
from growsearch.graph.specs import Conv2d, Head
from growsearch.methods._dan_combination import Combination
from growsearch.methods.base import TaskContext
from growsearch.methods.dan import DAN
from growsearch.runner import start_run
from growsearch.store.run_folder import RunFolder
from growsearch.trial_record import read_record

from tiny_runs import assert_old_tasks_unchanged, tiny_options, tiny_space

CONV_LAYER = {"conv": {"channels": 8, "pool": 2}}
CONV = {"layers": [CONV_LAYER, CONV_LAYER, {"linear": 16}]}
MLP = {"layers": [{"linear": 16}, {"linear": 16}]}
# Adam: a combination's gradient is scaled by W W^T of the trained base (large once the base fits its task),
# which stalls SGD with momentum in these 5-minibatch epochs (the shipped YAML's SGD sees 9 an epoch)
TRAINING = {"epochs": 12, "lr": 0.01, "batch_size": 16, "optimizer": "adam"}
OBJECTIVES = ["accuracy", "added_parameters"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, one_thread):
    """One run per backbone, shared by the tests below (five tasks, 80 training samples each)."""
    root = tmp_path_factory.mktemp("dan")
    return {
        name: start_run(tiny_space("dan", network=network, training=TRAINING), tiny_options(), root / name)
        for name, network in (("conv", CONV), ("mlp", MLP))
    }


@pytest.fixture(scope="module")
def search_run(tmp_path_factory, one_thread):
    space = tiny_space("dan", options={"search": True}, search={"n_trials": 4, "objectives": OBJECTIVES})
    return start_run(space, tiny_options(), tmp_path_factory.mktemp("dan-search") / "run")


def _full(path: Path):
    run = RunFolder.open(path)
    return run.load_task(run.committed_tasks()[-1])[0]


@pytest.mark.parametrize("backbone", ["conv", "mlp"])
def test_the_base_never_changes_and_old_tasks_outputs_are_bit_identical(runs, digits_stream, backbone):
    result = runs[backbone]
    base, _ = RunFolder.open(result.path).load_task(0)
    final = _full(result.path)
    for node_id, node in base.nodes():
        assert node.frozen
        assert node.weights.keys() == final.node(node_id).weights.keys()
        assert all(torch.equal(v, final.node(node_id).weights[k]) for k, v in node.weights.items()), node_id
    assert_old_tasks_unchanged(result.path, digits_stream)
    assert result.metrics["metrics"]["forgetting"] == 0.0


@pytest.mark.parametrize("backbone", ["conv", "mlp"])
def test_each_later_task_adds_only_combinations_biases_and_a_head(runs, backbone):
    result = runs[backbone]
    final = _full(result.path)
    base = final.layer_nodes(0)
    records = RunFolder.open(result.path).records()
    parameters = result.metrics["parameters"]
    for task in range(1, 5):
        owned = sorted(n for n, node in final.nodes() if node.owner == task)
        assert owned == sorted([*(f"t{task}/L{i}" for i in base), f"t{task}/head"])
        expected = 0
        for i, base_id in base.items():
            node = final.node(f"t{task}/L{i}")
            width = node.spec.out_features
            assert isinstance(node.spec, Combination) and node.shares == base_id and node.frozen
            assert node.inputs == ((f"t{task}/L{i - 1}",) if i else ("input",))  # the task's own path
            assert {k: tuple(v.shape) for k, v in node.weights.items()} == {
                "combination": (width, width),
                "bias": (width,),
            }
            expected += width * width + width
        head = final.node(f"t{task}/head")
        assert isinstance(head.spec, Head)
        expected += head.spec.in_features * head.spec.out_features + head.spec.out_features
        assert parameters[task] - parameters[task - 1] == expected
        mechanism = records[task].mechanism
        assert mechanism["added_parameters"] == expected
        for layer in mechanism["layers"]:
            base_node = final.node(base[layer["layer"]])
            assert layer["choice"] == "combination"
            assert layer["full_layer_parameters"] == base_node.n_parameters
            assert layer["fraction_of_layer"] == layer["added_parameters"] / base_node.n_parameters
            assert layer["combination_change"] > 1e-3  # training moved A away from the identity
    assert records[0].mechanism["fraction_of_column"] == 1.0


def _context(method: DAN, committed, stream, task: int) -> TaskContext:
    specs = method.specs_for(stream.input_shape)
    return TaskContext(task, stream.tasks[task], committed, specs, (), seed=0, n_tasks=5)


@pytest.mark.parametrize("backbone", ["conv", "mlp"])
def test_an_untrained_task_network_computes_the_base_networks_features(runs, digits_stream, backbone):
    space = tiny_space("dan", network=CONV if backbone == "conv" else MLP, options={"search": True})
    method = DAN(space)
    base, _ = RunFolder.open(runs[backbone].path).load_task(0)
    last = len(base.layer_nodes(0)) - 1
    x = digits_stream.tasks[1].test.x
    features = compile_view(base, 0, output=f"t0/L{last}").module(x)
    ctx = _context(method, base, digits_stream, 1)
    n = last + 1
    for structure in (["combination"] * n, ["reuse"] + ["combination"] * last, ["reuse"] * n):
        decisions = {f"layer{i}": choice for i, choice in enumerate(structure)}
        candidate = method.build(decisions, ctx).graph
        output = candidate.layer_nodes(1)[last]
        assert torch.equal(compile_view(candidate, 1, output=output).module(x), features), structure
    fresh = method.build({f"layer{i}": "new" for i in range(n)}, ctx).graph
    assert not torch.equal(compile_view(fresh, 1, output=f"t1/L{last}").module(x), features)


def test_dan_learns_the_stream_on_an_mlp_and_a_conv_backbone(runs):
    for name, result in runs.items():
        accuracy = result.metrics["accuracy"]
        assert [len(row) for row in accuracy] == [5] * 5, name
        assert result.metrics["metrics"]["average_accuracy"] > 0.8, name  # chance: 0.5
    graph = _full(runs["conv"].path)
    assert isinstance(graph.node("t0/L0").spec, Conv2d) and graph.node("t4/L0").spec.kernel_size == 3


def test_the_search_picks_each_layer_against_added_parameters(search_run):
    run = RunFolder.open(search_run.path)
    storage, records, final = run.storage(), run.records(), _full(search_run.path)
    base = final.layer_nodes(0)
    width = {i: final.node(n).spec.out_features for i, n in base.items()}
    cost = {
        i: {"combination": width[i] ** 2 + width[i], "reuse": 0, "new": final.node(n).n_parameters}
        for i, n in base.items()
    }
    head = 16 * 2 + 2
    structures = set()
    for task in range(1, 5):
        study = optuna.load_study(study_name=f"task-{task}", storage=storage)
        assert len(study.directions) == 2
        trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert len(trials) == 4
        assert trials[0].params == {"layer0": "combination", "layer1": "combination"}  # the paper's first
        for trial in trials:
            structure = [trial.params[f"layer{i}"] for i in base]
            structures.add(tuple(structure))
            added = sum(cost[i][choice] for i, choice in enumerate(structure)) + head
            assert read_record(trial).added_parameters == added, structure
            assert trial.values[1] == added
        mechanism = records[task].mechanism
        assert [c["trial"] for c in mechanism["candidates"]] == [t.number for t in trials]
        chosen = records[task].decisions["structure"]
        assert records[task].pareto_front  # chosen among the accuracy / size trade-offs
        assert [layer["choice"] for layer in mechanism["layers"]] == chosen
        assert mechanism["added_parameters"] == sum(cost[i][c] for i, c in enumerate(chosen)) + head
    assert len(structures) > 2  # the sampler tried more than the paper's structure


def test_dan_refuses_a_layer_it_cannot_recombine_and_unknown_choices():
    with pytest.raises(ConfigError, match="dan recombines the filters of dense and conv layers"):
        DAN(tiny_space("dan", network={"layers": [{"resblock": {"channels": 4}}]})).specs_for((1, 8, 8))
    with pytest.raises(ConfigError, match="options.choices\\[1\\]: expected one of"):
        DAN(tiny_space("dan", options={"choices": ["combination", "prune"]}))
    with pytest.raises(ConfigError, match="options.choices: expected distinct choices"):
        DAN(tiny_space("dan", options={"choices": ["reuse", "reuse"]}))
