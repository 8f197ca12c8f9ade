"""CCGN (Abati et al., CVPR 2020): per task and layer an input-conditional gating module over a shared layer
(binary at test, Gumbel straight-through while training; on real digits a real share of every layer's
channels open for some samples and not others, in the record as in the run folder; the module reads a grid
of a one-channel image and batch-normalises apart from the test batch); the sparsity objective closes gates;
the channels a task fires for are frozen (old tasks bit-identical), the rest stay free; the conditional-gate
node kind; class-IL through task inference; the search's first trial is the paper's configuration; kill -9
and resume."""

import optuna
import pytest
import torch

from growsearch.config.training import OptimizerSettings
from growsearch.data.memory import ExemplarMemory
from growsearch.errors import ConfigError, GraphError
from growsearch.graph.compile import compile_for_training, compile_view
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.serialize import load_graph, save_graph
from growsearch.graph.specs import Conv2d, Head, spec_from_dict
from growsearch.methods import _ccgn_channel_gates as channel_gates
from growsearch.methods._ccgn_channel_gates import ConditionalGate
from growsearch.methods._ccgn_gate_firing import gate_firing
from growsearch.methods.base import TaskContext
from growsearch.methods.ccgn import CCGN
from growsearch.runner import RunOptions, resume_run, start_run
from growsearch.search.pipeline import SilentReporter
from growsearch.store.run_folder import AUTOENCODER_FILE, MEMORY_FILE, RunFolder
from growsearch.train.batches import Minibatches
from growsearch.train.candidate import train_candidate
from growsearch.train.extension import TrainingRun
from growsearch.train.trainer import fit

from tiny_runs import (
    assert_old_tasks_unchanged,
    assert_same_commits,
    kill,
    start_cli_run,
    tiny_options,
    tiny_space,
    wait_for,
)

CONV = {"layers": [{"conv": {"channels": 16, "kernel": 3, "padding": 1, "pool": 2}}, {"linear": 32}]}
TRAINING = {"epochs": 8, "lr": 0.01}
LAYERS = ("shared/L0", "shared/L1")


def _space(**sections):
    return tiny_space("ccgn", network=CONV, training=TRAINING, **sections)


@pytest.fixture(scope="module")
def ccgn_run(tmp_path_factory):
    return start_run(_space(), tiny_options(), tmp_path_factory.mktemp("ccgn") / "run")


def _context(method, committed, stream, task):
    return TaskContext(task, stream.tasks[task], committed, method.specs_for(stream.input_shape), (), 0, 5)


def test_old_tasks_outputs_and_their_channels_weights_are_bit_identical_after_later_tasks(
    ccgn_run, digits_stream
):
    assert_old_tasks_unchanged(ccgn_run.path, digits_stream)
    assert ccgn_run.metrics["metrics"]["forgetting"] == 0.0
    run = RunFolder.open(ccgn_run.path)
    after_0, _ = run.load_task(0)
    final, _ = run.load_task(4)
    frozen = channel_gates.frozen_units(after_0, LAYERS, 1)
    for node_id in LAYERS:
        held = frozen[node_id]
        assert held.any() and not held.all(), node_id  # the sparsity objective left channels free
        for name, before in after_0.node(node_id).weights.items():
            assert torch.equal(final.node(node_id).weights[name][held], before[held]), (node_id, name)
            assert not torch.equal(final.node(node_id).weights[name][~held], before[~held]), (node_id, name)
    assert sorted(final.tasks) == [0, 1, 2, 3, 4]
    assert all(
        final.node(f"t{t}/gate1").frozen and final.node(f"t{t}/gate1").shares == "shared/L1" for t in range(5)
    )


def test_one_step_moves_no_weight_of_a_frozen_channel_and_trains_the_free_ones(ccgn_run, digits_stream):
    method = CCGN(_space())
    committed, _ = RunFolder.open(ccgn_run.path).load_task(0)
    ctx = _context(method, committed, digits_stream, task=1)
    candidate = method.build({}, ctx)
    training = candidate.training
    program = compile_for_training(candidate.graph, 1, train_masks=training.train_masks)
    task = digits_stream.tasks[1]
    batches = Minibatches([task.train.x], task.train.y, 16, seed=0)
    training.start(TrainingRun(program, batches, epochs=1))
    before = {
        n: {k: v.detach().clone() for k, v in program.full.node_modules[n].state_dict().items()}
        for n in LAYERS
    }
    parameters = [p for p in program.suffix.parameters() if p.requires_grad]
    fit(program.suffix, batches, parameters, OptimizerSettings(name="sgd", lr=0.5, momentum=0.9), steps=3,
        masked=program.full.masked, training=training)  # fmt: skip
    frozen = channel_gates.frozen_units(committed, LAYERS, 1)
    for node_id in LAYERS:
        for name, after in program.full.node_modules[node_id].state_dict().items():
            held = frozen[node_id]
            assert torch.equal(after[held], before[node_id][name][held]), (node_id, name)
            assert (after[~held] != before[node_id][name][~held]).any(), (node_id, name)


def _gate_graph() -> ModuleGraph:
    """A conv layer and one task's gate over it whose channel c opens when the input's mean exceeds c / 4."""
    graph = ModuleGraph((1, 4, 4))
    layer = Conv2d(1, 4, 3, 1, 1, "relu", 1)
    graph.add("shared/L0", layer, [INPUT], 0)
    graph = channel_gates.add_gated_path(graph, 0, ["shared/L0"], hidden=1, temperature=2 / 3)
    gate = graph.node("t0/gate0").weights
    gate["hidden.weight"], gate["hidden.bias"] = torch.ones(1, 1), torch.zeros(1)  # relu(mean) >= 0
    gate["logits.weight"] = torch.tensor([[0.0]] * 4 + [[1.0]] * 4) * 4  # on - off = 4 mean - c
    gate["logits.bias"] = torch.cat([torch.arange(4.0), torch.zeros(4)])
    graph.add("t0/head", Head(64, 2, flatten=True), ["t0/gate0"], 0)
    graph.set_head(0, "t0/head")
    return graph


def test_gates_are_binary_at_test_and_depend_on_the_input(ccgn_run, digits_stream, tmp_path):
    graph = _gate_graph()
    x = torch.stack([torch.full((1, 4, 4), v) for v in (0.1, 0.6, 1.0)])  # means 0.1, 0.6, 1.0
    firing = gate_firing(graph, 0, ["t0/gate0"], x)
    expected = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]])  # 4 mean > c
    assert torch.equal(firing.gates["t0/gate0"], expected)
    gated = compile_view(graph, 0, output="t0/gate0").module(x)
    plain = compile_view(graph, 0, output="shared/L0").module(x)
    assert torch.equal(gated, plain * expected.view(3, 4, 1, 1))  # closed channels are exactly zero
    loaded = load_graph(save_graph(graph, tmp_path / "gated"))  # JSON + safetensors, gates included
    assert loaded.node("t0/gate0").spec == spec_from_dict(graph.node("t0/gate0").spec.to_dict())
    assert torch.equal(compile_view(loaded, 0).module(x), compile_view(graph, 0).module(x))
    # a trained run's gates on real digits: binary, and in every task and layer a real share of the channels
    # open for some of the task's test digits and stay closed for others (not one mask for every sample)
    final, _ = RunFolder.open(ccgn_run.path).load_task(4)
    for task in range(5):
        test = digits_stream.tasks[task].test.x
        trained = gate_firing(final, task, channel_gates.path_ids(task, 2), test).gates
        for node_id, gates in trained.items():
            assert set(gates.unique().tolist()) <= {0.0, 1.0}
            rates = gates.mean(0)  # the share of the test digits each channel opens for
            varying = (rates >= 0.05) & (rates <= 0.95)
            assert varying.float().mean() >= 0.2, (node_id, rates)


def test_the_gating_module_reads_a_grid_of_a_thin_input_and_gates_a_test_sample_apart_from_its_batch():
    """A one-channel image is pooled to a grid (two digits with the same ink read the same globally pooled);
    batch norm on the hidden units: the batch's statistics while the module learns, the running ones at test
    and in a frozen module, whose running statistics never move."""
    image = ConditionalGate.over(Conv2d(1, 6, 3, 1, 1), (1, 8, 8), hidden=4, min_summary=16, batch_norm=True)
    assert (image.grid, image.summary_features) == (4, 16)
    assert ConditionalGate.over(Conv2d(32, 6, 3, 1, 1), (32, 4, 4), min_summary=16).grid == 1  # the paper's
    assert ConditionalGate.over(Conv2d(3, 6, 3, 1, 1), (3, 8, 8), min_summary=16).summary_features == 27
    torch.manual_seed(0)
    module = image.build()
    left, right = torch.zeros(2, 1, 8, 8), torch.zeros(2, 1, 8, 8)
    left[:, :, :, :4], right[:, :, :, 4:] = 1.0, 1.0
    assert not torch.equal(module.summary(left[:1]), module.summary(right[:1]))
    x = torch.rand(32, 1, 8, 8)
    module.train()
    module.gates(x)
    assert not torch.equal(module.running_mean, torch.zeros(4))  # the batch's statistics, followed
    module.eval()
    assert torch.equal(module.gates(x)[:1], module.gates(x[:1]))  # a test sample's gates: its own
    module.train()
    for parameter in module.parameters():
        parameter.requires_grad_(False)  # a frozen gating module, as a committed task's
    statistics = module.running_mean.clone(), module.running_var.clone()
    module.gates(x)
    assert torch.equal(module.running_mean, statistics[0]) and torch.equal(module.running_var, statistics[1])


def test_training_samples_gates_by_gumbel_straight_through():
    torch.manual_seed(0)
    module = ConditionalGate.over(Conv2d(1, 6, 3, 1, 1), (1, 4, 4), hidden=4).build()
    module.train()
    x = torch.rand(32, 1, 4, 4)
    gates = module.gates(x)
    assert set(gates.detach().unique().tolist()) <= {0.0, 1.0}  # hard forward
    assert 0 < float(gates.detach().mean()) < 1  # sampled: neither all open nor all closed
    gates.sum().backward()  # the relaxation's gradient reaches the gating module
    assert module.logits.weight.grad.abs().sum() > 0
    module.eval()
    assert torch.equal(module.gates(x), module.gates(x))  # deterministic at test


def test_a_higher_sparsity_weight_opens_fewer_gates(digits_stream):
    method = CCGN(_space())
    ctx = _context(method, ModuleGraph(digits_stream.input_shape), digits_stream, task=0)
    task = digits_stream.tasks[0]
    shares = {}
    for sparsity in (0.0, 5.0):
        torch.manual_seed(0)
        candidate = method.build({"sparsity": sparsity}, ctx)
        training, config = candidate.training, method.space.training
        result = train_candidate(candidate.graph, 0, task.train, task.val, config, seed=0, training=training)
        firing = gate_firing(result.graph, 0, method.path(ctx), task.val.x)
        shares[sparsity] = sum(firing.open_share(n) for n in method.path(ctx)) / 2
    assert shares[5.0] < shares[0.0] - 0.2, shares


def test_the_record_shows_per_layer_the_open_frozen_and_free_channels(ccgn_run, digits_stream):
    free_before = {0: 1.0, 1: 1.0}
    run = RunFolder.open(ccgn_run.path)
    for record in ccgn_run.records:
        mechanism = record.mechanism
        assert 0 <= mechanism["capacity_used"] <= 1
        # how far the gates depend on the input: what the committed graph in the run folder does on the
        # task's validation digits
        committed, _ = run.load_task(record.task)
        val = digits_stream.tasks[record.task].val
        firing = gate_firing(committed, record.task, channel_gates.path_ids(record.task, 2), val.x)
        for layer, node_id in zip(mechanism["gates"], channel_gates.path_ids(record.task, 2), strict=True):
            gates = firing.gates[node_id]
            rates = gates.mean(0)
            assert layer["input_dependent"] == pytest.approx(
                float(((rates > 0) & (rates < 1)).float().mean())
            )
            assert layer["input_dependent"] > 0 and layer["patterns"] == len(gates.unique(dim=0)) > 1
            assert 0 < layer["class_mask"] <= 1
        for layer in mechanism["gates"]:
            i = layer["layer"]
            assert layer["frozen"] + layer["free"] == pytest.approx(1.0)
            assert layer["free"] <= free_before[i] and layer["newly_frozen"] <= layer["important"]
            assert layer["open"] <= layer["important"] + 1e-9  # a committed task opens only what it froze
            free_before[i] = layer["free"]
    assert all(layer["open"] < 0.9 for layer in ccgn_run.records[0].mechanism["gates"])


def test_sharing_a_trainable_node_is_for_wrapping_nodes_only_and_options_are_checked():
    graph = ModuleGraph((1, 4, 4))
    layer = Conv2d(1, 4, 3, 1, 1, "relu", 1)
    graph.add("layer", layer, [INPUT], 0)
    with pytest.raises(GraphError, match="may share only a frozen node"):
        graph.add("copy", layer, [INPUT], 0, shares="layer")
    graph.add("gate", ConditionalGate.over(layer, (1, 4, 4)), [INPUT], 0, shares="layer")
    with pytest.raises(ConfigError, match="sparsity_range"):
        CCGN(tiny_space("ccgn", options={"sparsity": 9.0}))
    with pytest.raises(ConfigError, match="firing_threshold"):
        CCGN(tiny_space("ccgn", options={"firing_threshold": 1.0}))


def test_the_search_decides_lambda_with_the_papers_value_first(digits_stream):
    method = CCGN(tiny_space("ccgn", options={"search": True}, search={"n_trials": 3}))
    ctx = _context(method, ModuleGraph(digits_stream.input_shape), digits_stream, task=0)
    plan = method.search_plan(ctx)
    assert plan.budget == 3 and plan.initial == ({"sparsity": 0.5},)
    decided = method.decide(optuna.create_study().ask(), ctx)
    assert 0.05 <= decided["sparsity"] <= 5.0
    fixed = CCGN(tiny_space("ccgn"))
    plan = fixed.search_plan(ctx)
    assert plan.budget == 1 and plan.initial == () and fixed.decide(None, ctx) == {}


def test_ccgn_infers_the_task_with_its_task_classifier_and_resumes_with_it(tmp_path):
    """Class-IL (sec. 3.3): after each task a task classifier over every task's gated features, trained on
    the episodic memory (an equal share of exemplars per task, in the run folder) and the task's samples,
    picks a test sample's task together with its class; no task-inference autoencoder is trained."""
    options = RunOptions(benchmark="split-digits", scenario="class-il", max_per_task=80, seed=0)
    space = _space(options={"memory_size": 40})
    result = start_run(space, options, tmp_path / "run")
    run = RunFolder.open(result.path)
    for t, record in enumerate(result.records):
        assert record.task_inference == "ccgn"
        assert run.load_task_tensors(t, AUTOENCODER_FILE) is None
        memory = ExemplarMemory.from_tensors(run.load_task_tensors(t, MEMORY_FILE))
        assert sorted(memory.x) == list(range(t + 1)) and {len(x) for x in memory.x.values()} == {
            40 // (t + 1)
        }
        classifier = record.mechanism["task_classifier"]
        assert (classifier is None) == (t == 0)
        for scored, given, routed in zip(
            record.accuracy_row, record.task_il_accuracy_row, record.task_inference_row, strict=True
        ):
            assert scored <= min(given, routed) + 1e-9
    final = result.records[-1]
    assert final.mechanism["task_classifier"]["exemplars"] == 40
    assert sum(final.task_inference_row) / 5 > 0.5  # chance: 0.2

    class StopAfterTaskOne(SilentReporter):
        def task_committed(self, task, record):
            if task == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        start_run(space, options, tmp_path / "stopped", reporter=StopAfterTaskOne())
    resumed = resume_run(tmp_path / "stopped")  # the memory and the task classifiers come back
    assert [r.task_inference_row for r in resumed.records] == [r.task_inference_row for r in result.records]
    assert_same_commits(resumed, result, 4)


def test_kill_minus_9_and_resume_commits_what_an_uninterrupted_run_commits(tmp_path):
    space = _space(options={"search": True}, search={"n_trials": 2})
    run = tmp_path / "runs" / "killed"
    process = start_cli_run(space, run, "--max-per-task", "80")
    wait_for(lambda: (run / "tasks" / "1").is_dir(), process)  # kill in whatever follows task 1's commit
    kill(process)
    resumed = resume_run(run)
    reference = start_run(space, tiny_options(), tmp_path / "reference")
    assert_same_commits(resumed, reference, 4)
    study = optuna.load_study(study_name="task-0", storage=RunFolder.open(run).storage())
    assert study.trials[0].params == {"sparsity": 0.5}  # the paper's configuration first
