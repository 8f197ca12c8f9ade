"""The one training loop: hooks, masks, divergence, compute counting, and the one optimiser factory that
every method's training goes through."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from growsearch.config.training import OptimizerSettings
from growsearch.errors import TrainingError
from growsearch.graph.compile import MaskedParameter
from growsearch.graph.module_graph import ModuleGraph
from growsearch.methods import get_method
from growsearch.methods.base import TaskContext
from growsearch.train import trainer
from growsearch.train.batches import Minibatches
from growsearch.train.extension import Phase, Training
from growsearch.train.optim import make_optimizer
from growsearch.train.trainer import count_macs, fit

from tiny_runs import tiny_space

SGD = OptimizerSettings("sgd", lr=0.1, momentum=0.9, weight_decay=0.01)


def _data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


def test_a_nonfinite_loss_fails_naming_the_epoch_and_step():
    x, y = _data()
    model = _model()
    with pytest.raises(
        TrainingError, match=r"training loss became (nan|inf) at epoch 2, step \d+; expected a finite"
    ):
        fit(
            model,
            Minibatches([x], y, 16, seed=0),
            list(model.parameters()),
            SGD,
            epochs=3,
            training=Training(
                before_step=lambda step: step == 6 and model[0].weight.data.fill_(float("nan"))
            ),
        )


def test_on_divergence_restore_puts_the_parameters_back_and_says_so():
    x, y = _data()
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    exploding = OptimizerSettings("sgd", lr=1e30)
    result = fit(
        model,
        Minibatches([x], y, 8, seed=0),
        list(model.parameters()),
        exploding,
        steps=20,
        training=Training(on_divergence="restore"),
    )
    assert result.diverged and 0 < result.steps <= 20
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


def test_masked_entries_never_move_whatever_the_optimiser_does():
    x, y = _data()
    model = _model()
    weight = model[0].weight
    keep = torch.rand(weight.shape, generator=torch.Generator().manual_seed(1)) < 0.5
    masked = MaskedParameter(weight, keep, weight.detach().clone())
    before = weight.detach().clone()
    fit(model, Minibatches([x], y, 16, seed=0), list(model.parameters()), SGD, epochs=2, masked=[masked])
    assert torch.equal(weight[~keep], before[~keep])  # momentum and weight decay included
    assert not torch.equal(weight[keep], before[keep])


def test_hooks_add_a_penalty_run_after_each_step_and_an_extra_phase_on_its_own_batches():
    x, y = _data()
    model = _model()
    gate = nn.Parameter(torch.zeros(3))
    gated = nn.ModuleDict({"model": model})

    class Gated(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner, self.gate = gated, gate

        def forward(self, inputs):
            return self.inner["model"](inputs) + self.gate

    steps, penalties = [], []

    def penalty():
        penalties.append(1)
        return 0.1 * model[2].weight.abs().sum()

    extra = Phase(
        [gate], OptimizerSettings("adam", 0.01), Minibatches([x[:16]], y[:16], 4, seed=1), macs_per_sample=7
    )
    with count_macs() as spent:
        result = fit(
            Gated(),
            Minibatches([x], y, 16, seed=0),
            list(model.parameters()),
            SGD,
            epochs=2,
            training=Training(penalty=penalty, after_step=lambda o: steps.append(o.step), phases=(extra,)),
            macs_per_sample=100,
        )
    assert steps == list(range(1, 9)) and len(penalties) == 8 and result.steps == 8
    assert not torch.equal(gate.detach(), torch.zeros(3))  # only the extra phase trains the gate
    assert spent.macs == result.macs == 3 * 100 * 128 + 3 * 7 * 4 * 8
    assert [e.epoch for e in result.epochs] == [0, 1] and all(e.train_loss > 0 for e in result.epochs)


def test_the_factory_builds_each_optimiser_with_every_setting():
    parameter = [nn.Parameter(torch.zeros(2))]
    adam = make_optimizer(parameter, OptimizerSettings("adam", 0.01, weight_decay=0.1, betas=(0.5, 0.9)))
    sgd = make_optimizer(parameter, SGD)
    rmsprop = make_optimizer(parameter, OptimizerSettings("rmsprop", 0.01, alpha=0.9, eps=1e-10))
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.5, 0.9)
    assert adam.defaults["weight_decay"] == 0.1
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.9
    assert isinstance(rmsprop, torch.optim.RMSprop) and rmsprop.defaults["alpha"] == 0.9


TRAINING_IN_BUILD = {  # methods that train while building a candidate, with tiny settings
    "mntdp-s": {"sampler_epochs": 1},
    "den": {"max_iterations": 3, "head_iterations": 1, "expand_units": 2},
    "pathnet": {
        "modules_per_layer": 2,
        "active_per_layer": 1,
        "population": 2,
        "generations": 1,
        "minibatches": 2,
    },
    "learn-to-grow": {"search_epochs": 1},
}


@pytest.mark.parametrize("method_name", sorted(TRAINING_IN_BUILD))
def test_every_method_trains_with_the_yamls_optimiser(method_name, digits_stream, monkeypatch):
    training = {"optimizer": "adam", "lr": 0.003, "weight_decay": 1e-4}
    space = tiny_space(method_name, options=TRAINING_IN_BUILD[method_name], training=training)
    method = get_method(method_name)(space)
    specs = method.specs_for(digits_stream.input_shape)
    used = []
    monkeypatch.setattr(
        trainer,
        "make_optimizer",
        lambda params, settings: used.append(settings) or make_optimizer(params, settings),
    )
    graph = ModuleGraph(digits_stream.input_shape)
    for task in (0, 1):
        ctx = TaskContext(task, digits_stream.tasks[task], graph, specs, ({},) * task, seed=0)
        torch.manual_seed(task)
        graph = method.commit(method.build({}, ctx).graph, ctx, lambda g, *args: g)
    weight_steps = [s for s in used if s.betas != (0.5, 0.999)]  # DARTS's architecture optimiser aside
    decay = 1e-4 + (method.options.l2 if method_name == "den" else 0.0)  # DEN's L2 term is coupled decay
    assert weight_steps and all(
        (s.name, s.lr) == ("adam", 0.003) and s.weight_decay == pytest.approx(decay) for s in weight_steps
    ), used
