"""Side-Tuning (Zhang et al., ECCV 2020): a frozen base network, and per later task a smaller side network
blended with it, alpha B(x) + (1 - alpha) S(x), and a head; alpha learned or annealed by the curriculum; a
learned alpha leaves a base of little use for the side and keeps one that fits; the record's accuracy of
the base alone, the side alone and the blend; the blend node kind; the search's first trial is the paper's
configuration; kill -9 and resume."""

import math
from pathlib import Path

import optuna
import pytest
import torch

from growsearch.data.benchmarks import load_benchmark
from growsearch.errors import ConfigError, GraphError
from growsearch.graph.compile import compile_for_training, compile_view
from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.serialize import load_graph, save_graph
from growsearch.graph.specs import Head, Linear, spec_from_dict
from growsearch.methods._side_tuning_blend import Blend, alone_and_blended
from growsearch.methods.base import TaskContext
from growsearch.methods.side_tuning import SideTuning, curriculum_alpha
from growsearch.runner import RunOptions, resume_run, start_run
from growsearch.store.run_folder import RunFolder
from growsearch.train.batches import Minibatches
from growsearch.train.candidate import accuracy, train_candidate
from growsearch.train.extension import TrainingRun
from growsearch.train.optim import make_optimizer

from tiny_runs import (
    assert_old_tasks_unchanged,
    assert_same_commits,
    kill,
    start_cli_run,
    tiny_options,
    tiny_space,
    wait_for,
)

TRAINING = {"epochs": 10, "lr": 0.01}
FAST = {"distill_epochs": 2}
CURRICULUM = {**FAST, "alpha": "curriculum"}


def _space(**options):
    return tiny_space("side-tuning", training=TRAINING, options={**FAST, **options})


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A learned alpha and the curriculum, five tasks of 80 training samples each."""
    root = tmp_path_factory.mktemp("side-tuning")
    return {
        "learned": start_run(_space(), tiny_options(), root / "learned"),
        "curriculum": start_run(_space(alpha="curriculum"), tiny_options(), root / "curriculum"),
    }


def _final(path: Path) -> ModuleGraph:
    run = RunFolder.open(path)
    return run.load_task(run.committed_tasks()[-1])[0]


@pytest.mark.parametrize("mode", ["learned", "curriculum"])
def test_the_base_never_changes_and_old_tasks_outputs_are_bit_identical(runs, digits_stream, mode):
    result = runs[mode]
    base, _ = RunFolder.open(result.path).load_task(0)
    final = _final(result.path)
    for node_id, node in base.nodes():
        assert node.frozen
        assert all(torch.equal(v, final.node(node_id).weights[k]) for k, v in node.weights.items()), node_id
    assert_old_tasks_unchanged(result.path, digits_stream)
    assert result.metrics["metrics"]["forgetting"] == 0.0
    assert result.metrics["metrics"]["average_accuracy"] > 0.8  # chance: 0.5


@pytest.mark.parametrize("mode", ["learned", "curriculum"])
def test_each_later_task_adds_a_smaller_distilled_side_network_a_blend_and_a_head(runs, mode):
    result = runs[mode]
    final, records = _final(result.path), RunFolder.open(result.path).records()
    base_layers = ["t0/L0", "t0/L1"]
    base_parameters = final.n_parameters(base_layers)
    assert records[0].mechanism["base_parameters"] == base_parameters
    for task in range(1, 5):
        owned = sorted(n for n, node in final.nodes() if node.owner == task)
        assert owned == sorted([f"t{task}/side0", f"t{task}/side1", f"t{task}/blend", f"t{task}/head"])
        assert all(final.node(n).frozen for n in owned)
        assert final.node(f"t{task}/side0").spec.out_features == 4  # a quarter of the base's 16 units
        assert final.node(f"t{task}/side1").spec.out_features == 16  # as wide as the base's features
        blend = final.node(f"t{task}/blend")
        assert isinstance(blend.spec, Blend) and blend.merge == "stack"
        assert blend.inputs == ("t0/L1", f"t{task}/side1")  # the base first, the side second
        assert final.node(final.head(task)).inputs == (f"t{task}/blend",)
        mechanism = records[task].mechanism
        side = final.n_parameters([f"t{task}/side0", f"t{task}/side1"])
        assert mechanism["side_parameters"] == side < base_parameters
        assert mechanism["side_fraction_of_base"] == side / base_parameters
        assert mechanism["alpha_end"] == blend.spec.alpha(blend.weights)
        assert mechanism["alpha_start"] == (0.5 if mode == "learned" else 1.0)
        assert set(mechanism["accuracy"]) == {"base_alone", "side_alone", "blend"}
        assert mechanism["accuracy"]["blend"]["test"] == records[task].accuracy_row[task]
        distillation = mechanism["distillation"]
        assert distillation["steps"] == 2 * 3  # two epochs of 80 samples in batches of 32
        assert distillation["mse_after"] < distillation["mse_before"]  # the side learnt the base's features
        added = result.metrics["parameters"][task] - result.metrics["parameters"][task - 1]
        assert added == side + 1 + final.node(f"t{task}/head").n_parameters  # one alpha


def test_a_learned_alpha_trains_inside_its_range_and_each_task_keeps_its_own(runs):
    final, records = _final(runs["learned"].path), RunFolder.open(runs["learned"].path).records()
    alphas = [records[t].mechanism["alpha_end"] for t in range(1, 5)]
    assert all(0 < a < 1 for a in alphas) and len(set(alphas)) == 4
    assert all(abs(a - 0.5) > 0.05 for a in alphas)  # training moved it from sigmoid(0)
    # stored as its logit over the shipped scale: the committed value is the one recorded
    for t in range(1, 5):
        blend = final.node(f"t{t}/blend")
        assert blend.spec.logit_scale == 10
        assert torch.sigmoid(10 * blend.weights["logit"]).item() == pytest.approx(alphas[t - 1])


def _force_alpha(view, node: str, alpha: float) -> None:
    """Set a compiled learned blend's alpha to exactly 0 or 1 through its logit (not `forced`)."""
    with torch.no_grad():
        view.node_modules[node].logit.fill_(math.inf if alpha == 1 else -math.inf)


def test_a_learned_alpha_leaves_a_base_of_little_use_for_the_side_and_keeps_one_that_fits(tmp_path):
    """permuted-digits: task 0's digits train the base; task 1's pixels are permuted, so the base's features
    tell it little. The shipped training (Adam 1e-3, 15 epochs) and network, on 300 samples a task."""
    space = tiny_space(
        "side-tuning",
        network={"layers": [{"linear": 100}, {"linear": 100}]},
        training={"epochs": 15, "lr": 0.001},
        options=FAST,
    )
    options = RunOptions(benchmark="permuted-digits", n_tasks=2, max_per_task=300, seed=0)
    result = start_run(space, options, tmp_path / "permuted")
    mechanism = RunFolder.open(result.path).records()[1].mechanism
    assert mechanism["alpha_start"] == 0.5
    assert mechanism["alpha_end"] < 0.4  # a real move toward the side (the authors' rate: about 0.48)
    measured = mechanism["accuracy"]
    assert measured["side_alone"]["val"] > measured["base_alone"]["val"] + 0.2
    # the record is what probing the saved run folder finds: alpha forced through the committed logit
    graph = _final(result.path)
    stream = load_benchmark("permuted-digits", n_tasks=2, max_per_task=300, seed=0)
    permuted = stream.tasks[1]
    for name, alpha in (("base_alone", 1.0), ("side_alone", 0.0), ("blend", None)):
        view = compile_view(graph, 1)
        if alpha is not None:
            _force_alpha(view, "t1/blend", alpha)
        for split in ("val", "test"):
            data = getattr(permuted, split)
            assert accuracy(view.module, [data.x], data.y) == measured[name][split], (name, split)
    before = compile_view(graph, 1).module(permuted.test.x)
    alone_and_blended(graph, 1, {"test": permuted.test}, torch.device("cpu"))
    assert torch.equal(compile_view(graph, 1).module(permuted.test.x), before)  # the probe changed nothing
    # the same candidate on the base's own digits: the base fits them, and alpha moves toward it
    method, base = SideTuning(space), RunFolder.open(result.path).load_task(0)[0]
    torch.manual_seed(0)
    same = stream.tasks[0]
    ctx = TaskContext(1, same, base, method.specs_for(stream.input_shape), (), 0, 2)
    trained = train_candidate(
        method.build(method.defaults(), ctx).graph, 1, same.train, same.val, space.training, seed=0
    ).graph
    blend = trained.node("t1/blend")
    assert blend.spec.alpha(blend.weights) > 0.6


def test_the_curriculum_anneals_alpha_from_the_base_alone_to_the_side_alone(runs, digits_stream):
    assert [curriculum_alpha(s, 5, 1.0, 0.0) for s in range(1, 6)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert curriculum_alpha(7, 5, 1.0, 0.0) == 0.0 and curriculum_alpha(1, 1, 0.8, 0.2) == 0.2
    records = RunFolder.open(runs["curriculum"].path).records()
    assert [records[t].mechanism["alpha_end"] for t in range(1, 5)] == [0.0] * 4  # where training ended
    # the candidate's training over a real training program: alpha steps from 1 to 0
    space = _space(alpha="curriculum")
    method, base = SideTuning(space), RunFolder.open(runs["curriculum"].path).load_task(0)[0]
    task = digits_stream.tasks[1]
    ctx = TaskContext(1, task, base, method.specs_for(digits_stream.input_shape), (), 0, 5)
    candidate = method.build(method.defaults(), ctx)
    x = task.test.x  # untrained, at alpha = 1, the task computes exactly the base's features
    features = compile_view(base, 0, output="t0/L1").module(x)
    assert torch.equal(compile_view(candidate.graph, 1, output="t1/blend").module(x), features)
    program = compile_for_training(candidate.graph, 1)
    batches = Minibatches([task.train.x], task.train.y, 32, 0)
    training = candidate.training
    training.start(TrainingRun(program, batches, TRAINING["epochs"]))
    blend = program.full.node_modules["t1/blend"]
    seen = []
    for step in range(1, TRAINING["epochs"] * math.ceil(len(batches) / 32) + 1):
        training.before_step(step)
        seen.append(blend.alpha.item())
    assert seen[0] == 1.0 and seen[-1] == 0.0 and len(set(seen)) == len(seen)
    assert all(a > b for a, b in zip(seen, seen[1:], strict=False)) and all(0 <= a <= 1 for a in seen)
    learned = SideTuning(_space())
    assert learned.build(learned.defaults(), ctx).training is None  # a learned alpha: plain training


def test_a_blend_node_weights_base_and_side_and_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    for learned in (True, False):
        spec = Blend(learned=learned)
        assert spec_from_dict(spec.to_dict()) == spec
        assert spec.output_shape((2, 8, 4, 4)) == (8, 4, 4)
        with pytest.raises(GraphError, match="2 stacked inputs"):
            spec.output_shape((3, 8))
        graph = ModuleGraph((6,))
        graph.add("base", Linear(6, 5), [INPUT], 0, frozen=True)
        graph.add("side", Linear(6, 5, activation="tanh"), [INPUT], 1)
        graph.add("blend", spec, ["base", "side"], 1, merge="stack", weights=spec.start(0.3))
        graph.add("head", Head(5, 2), ["blend"], 1)
        graph.set_head(1, "head")
        assert spec.alpha(graph.node("blend").weights) == pytest.approx(0.3)
        x = torch.randn(7, 6)
        b = compile_view(graph, 1, output="base").module(x)
        s = compile_view(graph, 1, output="side").module(x)
        torch.testing.assert_close(compile_view(graph, 1, output="blend").module(x), 0.3 * b + 0.7 * s)
        loaded = load_graph(save_graph(graph, tmp_path / f"learned-{learned}"))
        assert loaded.node("blend").spec == spec
        assert torch.equal(compile_view(loaded, 1).module(x), compile_view(graph, 1).module(x))
    with pytest.raises(GraphError, match=r"inside \(0, 1\)"):
        Blend(learned=True).start(1.0)
    # a graph saved before `logit_scale` existed blends at scale 1
    assert spec_from_dict({"kind": "Blend", "learned": True}) == Blend(learned=True, logit_scale=1.0)
    scaled = Blend(learned=True, logit_scale=10)
    assert spec_from_dict(scaled.to_dict()) == scaled
    assert scaled.alpha(scaled.start(0.3)) == pytest.approx(0.3)


def test_the_logit_scale_multiplies_the_step_adam_takes_on_alpha():
    """Adam's step does not depend on the gradient's scale: alpha's logit moves `logit_scale` times as far."""
    torch.manual_seed(0)
    stacked, target = torch.randn(16, 2, 5), torch.randn(16, 5)
    settings = _space().training.optimizer_settings()  # the YAML's Adam
    moved = {}
    for scale in (1.0, 10.0):
        spec = Blend(learned=True, logit_scale=scale)
        module = spec.build()
        module.load_state_dict(spec.start(0.5))
        optimizer = make_optimizer(module.parameters(), settings)
        ((module(stacked) - target) ** 2).mean().backward()
        optimizer.step()
        moved[scale] = scale * module.logit.item()  # alpha's logit after one step, from 0
    assert abs(moved[1.0]) == pytest.approx(settings.lr, rel=1e-4)
    assert moved[10.0] == pytest.approx(10 * moved[1.0], rel=1e-4)


def test_the_search_decides_width_and_alpha_with_the_papers_configuration_first(digits_stream):
    method = SideTuning(tiny_space("side-tuning", search={"n_trials": 3}))
    specs = method.specs_for(digits_stream.input_shape)
    graph = ModuleGraph(digits_stream.input_shape)
    contexts = [TaskContext(t, digits_stream.tasks[t], graph, specs, (), 0, 5) for t in (0, 1)]
    plans = [method.search_plan(c) for c in contexts]
    assert [plan.budget for plan in plans] == [1, 3]
    assert plans[0].initial == ()
    assert plans[1].initial == ({"side_width": 0.25, "alpha_init": 0.5},)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    decided = method.decide(study.ask(), contexts[1])
    assert 0.1 <= decided["side_width"] <= 0.5 and 0.1 <= decided["alpha_init"] <= 0.9
    assert method.decide(study.ask(), contexts[0]) == {}
    curriculum = SideTuning(tiny_space("side-tuning", options={"alpha": "curriculum"}))
    assert curriculum.search_plan(contexts[1]).initial == ({"side_width": 0.25},)
    with pytest.raises(ConfigError, match="side_width_range"):
        SideTuning(tiny_space("side-tuning", options={"side_width_range": [0.3, 0.5]}))
    with pytest.raises(ConfigError, match="alpha_start"):
        SideTuning(tiny_space("side-tuning", options={"alpha_start": 1.5}))
    with pytest.raises(ConfigError, match="alpha_logit_scale"):
        SideTuning(tiny_space("side-tuning", options={"alpha_logit_scale": 0}))


def test_side_tuning_runs_class_il_with_the_task_inferred(tmp_path):
    options = RunOptions(benchmark="split-digits", scenario="class-il", max_per_task=80, seed=0)
    result = start_run(_space(), options, tmp_path / "run")
    final = result.records[-1]
    assert final.task_inference == "task-classifier"  # inference: auto's pick in class-IL
    assert all(0 <= a <= t for a, t in zip(final.accuracy_row, final.task_il_accuracy_row, strict=True))
    assert sum(final.task_il_accuracy_row) / 5 > 0.8


def test_kill_minus_9_and_resume_commits_what_an_uninterrupted_run_commits(tmp_path):
    space = tiny_space("side-tuning", training=TRAINING, options=FAST, search={"n_trials": 2})
    run = tmp_path / "runs" / "killed"
    process = start_cli_run(space, run, "--max-per-task", "80")
    wait_for(lambda: (run / "tasks" / "1").is_dir(), process)  # kill in whatever follows task 1's commit
    kill(process)
    resumed = resume_run(run)
    reference = start_run(space, tiny_options(), tmp_path / "reference")
    assert_same_commits(resumed, reference, 4)
