"""DGMw (Ostapenko et al. 2019): a later task's generator mask never changes the weights an earlier task's
mask uses, so an old class's samples are bit-identical after later tasks; the generator grows so its free
weights never shrink; the solver's training really includes generated samples of old classes; one head
over every class seen so far is scored (class-IL); the critic learns with WGAN-GP's gradient penalty."""

from __future__ import annotations

import optuna
import pytest
import torch
from torch.nn import functional as F

from growsearch.errors import ConfigError
from growsearch.methods._dgmw_generator import ConditionalGAN, Discriminator, GeneratorMemory, TaskGenerator
from growsearch.methods.base import TaskContext
from growsearch.methods.dgmw import GENERATOR, DGMw, generator_memory, replay_set
from growsearch.runner import RunOptions, start_run
from growsearch.store.run_folder import RunFolder
from growsearch.train.batches import Batch
from growsearch.train.candidate import evaluate, train_candidate
from growsearch.train.extension import PLAIN

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
        done = record.mechanism
        before, after_task = done["free_weights_before"], done["free_weights_after_task"]
        reserved = [b - a for b, a in zip(before, after_task, strict=True)]
        # a task reserves what its masks newly use, somewhere (a layer may reuse only old weights: on
        # some CPUs' rounding tasks 3 and 4 of this run reuse layer 0's)
        assert done["newly_used_weights"] == reserved and sum(reserved) > 0 and min(reserved) >= 0
        widths = [w + a for w, a in zip(widths, done["units_added"], strict=True)]
        assert done["generator_widths"] == widths
        reading = [SECTIONS["options"]["latent"], *widths[:-1]]  # each layer's inputs after the expansion
        for i, free in enumerate(done["free_weights"]):
            assert free >= before[i], (i, done)  # as many free weights as before the task...
            if done["units_added"][i]:  # ...and not a unit more than that takes
                assert free - reading[i] < before[i], (i, done)
    assert sum(sum(r.mechanism["units_added"]) for r in dgmw_run.records) > 0
    for layer in range(len(widths)):  # every layer gives some task new weights
        assert any(r.mechanism["newly_used_weights"][layer] > 0 for r in dgmw_run.records), layer


def test_the_solver_trains_on_generated_samples_of_the_old_classes(dgmw_run, digits_stream):
    """Task 1's candidate trained with its replay remembers task 0's classes; without it, it forgets them."""
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
    accuracy, spent = {}, {}
    for name, training in (("replay", candidate.training), ("none", PLAIN)):
        trained = train_candidate(
            candidate.graph, 1, ctx.task.train, ctx.task.val, config, seed=3, training=training
        )
        accuracy[name] = evaluate(trained.graph, 1, stream.tasks[0].test)
        spent[name] = trained.train_macs
    assert accuracy["none"] < 0.1 < 0.5 < accuracy["replay"], accuracy
    # CE counts the replayed samples' passes: about as many samples again, forward and backward
    replayed = 3 * candidate.graph.macs(candidate.graph.view(1)) * len(replay) * config.epochs
    assert spent["replay"] - spent["none"] == pytest.approx(replayed, rel=0.1)


def test_one_head_over_every_class_seen_answers_for_every_task(dgmw_run):
    run, stream = RunFolder.open(dgmw_run.path), _class_il_stream()
    for t, record in enumerate(dgmw_run.records):
        graph, _ = run.load_task(t)
        assert graph.node(graph.head(t)).spec.out_features == 2 * (t + 1)
        assert GENERATOR not in graph.view(t)  # the generator is in no task's view
        assert all(a == 0.0 for a in record.accuracy_row[t + 1 :])
        per_class = -(-len(stream.tasks[t].train) // 2)  # as many per old class as the task's per class
        assert record.mechanism["replayed"] == 2 * t * per_class
        assert record.mechanism["accuracy_on_generated"] > 0.8
    final = dgmw_run.records[-1].accuracy_row
    assert sum(final) / 5 > 0.4, final  # generated replay keeps old classes (naive fine-tuning: ~0.1)
    assert min(final[:4]) > 0.15, final  # fine-tuning without replay scores 0 on every old task


def test_options_are_validated_and_the_search_starts_from_the_papers_sparsity(digits_stream):
    with pytest.raises(ConfigError, match="generator_widths"):
        DGMw(tiny_space("dgmw", options={"generator_widths": []}))
    with pytest.raises(ConfigError, match="sparsity_range"):
        DGMw(tiny_space("dgmw", options={"sparsity_range": [0.5, 0.1]}))
    with pytest.raises(ConfigError, match="gradient_penalty"):
        DGMw(tiny_space("dgmw", options={"gradient_penalty": -1.0}))
    method = DGMw(tiny_space("dgmw", options={"search": True}))
    ctx = TaskContext(0, digits_stream.tasks[0], None, (), (), 0)
    assert method.search_plan(ctx).initial == ({"sparsity": 0.08},)
    decided = method.decide(optuna.create_study().ask(), ctx)
    assert 0.01 <= decided["sparsity"] <= 1.0


def test_the_critics_loss_holds_wgan_gps_gradient_penalty_which_pulls_its_gradient_norm_to_one():
    """The critic's step minimises D(fake) - D(real) + lambda (||grad D(x_hat)||_2 - 1)^2 + its class loss,
    x_hat random interpolates of the real batch and samples of its labels (Gulrajani et al. 2017). On a tiny
    steep critic (input-gradient norm ~2.8), 30 such steps bring the norm to ~1 with the penalty (lambda
    10); without it the norm grows without bound."""
    torch.manual_seed(0)
    classes = torch.tensor([0, 1])
    generator = TaskGenerator(GeneratorMemory.fresh(4, [8], seed=0), classes, (1, 2, 2), seed=0)
    x, y = torch.rand(16, 1, 2, 2), torch.tensor([0, 1] * 8)
    batch = Batch((x, y), y)

    def drawn(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples and interpolates that a critic step seeded `seed` draws, in its order."""
        noise = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            fake = generator(torch.randn(16, 4, generator=noise), y)
        a = torch.rand(16, generator=noise).view(-1, 1, 1, 1)
        return fake, (a * x + (1 - a) * fake).requires_grad_(True)

    critic = Discriminator(4, 16, 2)
    fake, x_hat = drawn(3)
    with torch.no_grad():
        (real_score, real_classes), fake_score = critic(x), critic(fake)[0]
    wasserstein = fake_score.mean() - real_score.mean() + F.cross_entropy(real_classes, y)
    penalty = ((_gradient_norms(critic, x_hat) - 1) ** 2).mean()
    for weight in (0.0, 10.0):
        loss = ConditionalGAN(generator, critic, seed=3).critic_loss(batch, classes, weight)
        assert loss.item() == pytest.approx((wasserstein + weight * penalty).item(), rel=1e-5)

    after = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(1)
        critic = Discriminator(4, 16, 2)
        with torch.no_grad():
            critic.source.weight.mul_(30)  # a steep critic
        before = float(_gradient_norms(critic, drawn(5)[1]).mean())
        optimiser = torch.optim.Adam(critic.parameters(), lr=0.01, betas=(0.5, 0.999))
        for step in range(30):
            optimiser.zero_grad()
            ConditionalGAN(generator, critic, seed=step).critic_loss(batch, classes, weight).backward()
            optimiser.step()
        after[weight] = float(_gradient_norms(critic, drawn(5)[1]).mean())
    assert before > 2.5 and abs(after[10.0] - 1) < 0.1 and after[0.0] > 10 * before, (before, after)


def _gradient_norms(critic: Discriminator, x_hat: torch.Tensor) -> torch.Tensor:
    """||grad_x D(x)||_2 of each sample of `x_hat`."""
    (gradient,) = torch.autograd.grad(critic(x_hat)[0].sum(), x_hat)
    return gradient.flatten(1).norm(dim=1)


def _class_il_stream():
    from growsearch.data.benchmarks import load_benchmark

    return load_benchmark("split-digits", scenario="class-il", max_per_task=80, seed=0)
