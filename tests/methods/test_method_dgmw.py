"""DGMw (Ostapenko et al. 2019): a later task's generator mask never changes the weights an earlier task's
mask uses, so an old class's samples are bit-identical after later tasks; the generator grows so its free
weights never shrink; the solver's training really includes generated samples of old classes; one head
over every class seen so far is scored (class-IL)."""

from __future__ import annotations

import optuna
import pytest
import torch

from growsearch.errors import ConfigError
from growsearch.methods.base import TaskContext
from growsearch.methods.dgmw import GENERATOR, DGMw, generator_memory, replay_set
from growsearch.runner import RunOptions, start_run
from growsearch.store.run_folder import RunFolder
from growsearch.train.candidate import TrainingPlan, evaluate, train_candidate

from tiny_runs import tiny_space

SECTIONS = {
    "options": {"gan_epochs": 150, "generator_widths": [16, 32], "discriminator_width": 32, "latent": 8},
    "training": {"epochs": 20, "lr": 0.01},
}


@pytest.fixture(scope="module")
def dgmw_run(tmp_path_factory):
    options = RunOptions(benchmark="split-digits", scenario="class-il", max_per_task=80, seed=0)
    return start_run(tiny_space("dgmw", **SECTIONS), options, tmp_path_factory.mktemp("dgmw") / "run")


def test_later_masks_hold_the_weights_earlier_masks_use_so_old_samples_are_bit_identical(dgmw_run):
    run = RunFolder.open(dgmw_run.path)
    final = generator_memory(run.load_task(4)[0])
    z = torch.randn(12, final.latent, generator=torch.Generator().manual_seed(1))
    for t in range(4):
        at_commit = generator_memory(run.load_task(t)[0])
        for i in range(final.n_layers):
            mask = at_commit.mask(t, i)
            assert mask.any() and not mask.all(), (t, i)  # the mask learnt to use some weights, not all
            assert torch.equal(final.mask(t, i), mask)
            rows, columns = mask.shape
            before, after = at_commit.weight(i)[:rows, :columns], final.weight(i)[:rows, :columns]
            assert torch.equal(after[mask], before[mask]), (t, i)  # what task t uses never changed
        labels = at_commit.classes(t).repeat(6)
        assert torch.equal(final.generate(t, z, labels), at_commit.generate(t, z, labels)), t
    trained = [run.load_task(t)[0].node(GENERATOR).state["L0.weight"] for t in (0, 1)]
    assert not torch.equal(
        trained[1][: trained[0].shape[0], : trained[0].shape[1]], trained[0]
    )  # free ones did


def test_expansion_keeps_the_free_weights_and_grows_by_what_each_task_reserved(dgmw_run):
    widths = [16, 32]
    for record in dgmw_run.records:
        done = record["mechanism"]
        before, after_task = done["free_weights_before"], done["free_weights_after_task"]
        reserved = [b - a for b, a in zip(before, after_task, strict=True)]
        assert done["newly_used_weights"] == reserved and all(n > 0 for n in reserved)
        widths = [w + a for w, a in zip(widths, done["units_added"], strict=True)]
        assert done["generator_widths"] == widths
        reading = [SECTIONS["options"]["latent"], *widths[:-1]]  # each layer's inputs after the expansion
        for i, free in enumerate(done["free_weights"]):
            assert free >= before[i], (i, done)  # as many free weights as before the task...
            if done["units_added"][i]:  # ...and not a unit more than that takes
                assert free - reading[i] < before[i], (i, done)
    assert sum(sum(r["mechanism"]["units_added"]) for r in dgmw_run.records) > 0


def test_the_solver_trains_on_generated_samples_of_the_old_classes(dgmw_run, digits_stream):
    """Task 1's candidate with the replay plan remembers task 0's classes; without it, it forgets them."""
    method = DGMw(tiny_space("dgmw", **SECTIONS))
    stream = _class_il_stream()
    committed, _ = RunFolder.open(dgmw_run.path).load_task(0)
    ctx = TaskContext(1, stream.tasks[1], committed, method.specs_for(stream.input_shape), (), 7, n_tasks=5)
    torch.manual_seed(0)
    candidate = method.build({}, ctx)
    replay = replay_set(candidate.graph, ctx, 1.0)
    assert set(replay.y.tolist()) == {0, 1} and len(replay) == candidate.mechanism["replayed"] > 0
    memory = generator_memory(candidate.graph)
    assert torch.equal(memory.classes(0), torch.tensor([0, 1]))
    config = method.space.training
    accuracy = {}
    for name, plan in (("replay", method.training_plan(candidate, ctx)), ("none", TrainingPlan())):
        trained = train_candidate(candidate.graph, 1, ctx.task.train, ctx.task.val, config, seed=3, plan=plan)
        accuracy[name] = evaluate(trained.graph, 1, stream.tasks[0].test)
    assert accuracy["none"] < 0.1 < 0.5 < accuracy["replay"], accuracy


def test_one_head_over_every_class_seen_answers_for_every_task(dgmw_run):
    run, stream = RunFolder.open(dgmw_run.path), _class_il_stream()
    for t, record in enumerate(dgmw_run.records):
        graph, _ = run.load_task(t)
        assert graph.node(graph.head(t)).spec.out_features == 2 * (t + 1)
        assert GENERATOR not in graph.view(t)  # the generator is in no task's view
        assert all(a == 0.0 for a in record["accuracy_row"][t + 1 :])
        per_class = -(-len(stream.tasks[t].train) // 2)  # as many per old class as the task's per class
        assert record["mechanism"]["replayed"] == 2 * t * per_class
        assert record["mechanism"]["accuracy_on_generated"] > 0.8
    final = dgmw_run.records[-1]["accuracy_row"]
    assert sum(final) / 5 > 0.4, final  # generated replay keeps old classes (naive fine-tuning: ~0.1)
    assert min(final[:4]) > 0.15, final  # fine-tuning without replay scores 0 on every old task


def test_options_are_validated_and_the_search_starts_from_the_papers_sparsity(digits_stream):
    with pytest.raises(ConfigError, match="generator_widths"):
        DGMw(tiny_space("dgmw", options={"generator_widths": []}))
    with pytest.raises(ConfigError, match="sparsity_range"):
        DGMw(tiny_space("dgmw", options={"sparsity_range": [0.5, 0.1]}))
    method = DGMw(tiny_space("dgmw", options={"search": True}))
    ctx = TaskContext(0, digits_stream.tasks[0], None, (), (), 0)
    assert method.initial_trials(ctx) == [{"sparsity": 0.08}]
    decided = method.decide(optuna.create_study().ask(), ctx)
    assert 0.01 <= decided["sparsity"] <= 1.0


def _class_il_stream():
    from growsearch.data.benchmarks import load_benchmark

    return load_benchmark("split-digits", scenario="class-il", max_per_task=80, seed=0)
