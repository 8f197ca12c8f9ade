"""Real-size networks on a tiny generated split CIFAR-100: the reduced ResNet-18 preset with batch norm per
task, where each method either grows it (old tasks' outputs bit-identical) or refuses by name before
writing anything; batch norm that is not the task's own never moves."""

from __future__ import annotations

import pytest
import torch

from growsearch.config.training import TrainingConfig
from growsearch.data.synthetic import write_synthetic_cifar100
from growsearch.data.task import Split
from growsearch.errors import ConfigError
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.graph.serialize import load_graph, save_graph
from growsearch.graph.specs import Conv2d, GlobalAvgPool, ResBlock
from growsearch.grow import node_data
from growsearch.grow import operators as ops
from growsearch.methods import get_method
from growsearch.runner import RunOptions, load_stream, start_run
from growsearch.train.candidate import train_candidate

from tiny_runs import assert_old_tasks_unchanged, tiny_space

RESNET = {"preset": "resnet18-reduced"}
# each method's smallest settings on a ResNet (budgets, inner searches)
TINY = {
    "pathnet": {
        "options": {
            "modules_per_layer": 2,
            "active_per_layer": 1,
            "population": 2,
            "generations": 1,
            "minibatches": 1,
        }
    },
    "learn-to-grow": {"options": {"search_epochs": 1}},
    "side-tuning": {"options": {"distill_epochs": 1}},
    "packnet": {"options": {"retrain_epochs": 1}},
    "mntdp-s": {"options": {"sampler_epochs": 1}},
}
CLASS_IL = {"der", "rps-net", "dgmw"}


@pytest.fixture(scope="module")
def cifar(tmp_path_factory, one_thread):
    root = write_synthetic_cifar100(tmp_path_factory.mktemp("cifar"), train_per_class=4)
    return RunOptions(benchmark="split-cifar100", n_tasks=2, max_per_task=40, data_root=str(root), seed=0)


def _methods() -> list[str]:
    from growsearch.methods import method_names

    return method_names()


@pytest.mark.parametrize("method", _methods())
def test_every_method_grows_a_reduced_resnet18_or_refuses_by_name(method, cifar, tmp_path):
    space = tiny_space(
        method, network=RESNET, training={"epochs": 1}, search={"n_trials": 1}, **TINY.get(method, {})
    )
    scenario = "class-il" if method in CLASS_IL else "task-il"
    options = RunOptions(**{**vars(cifar), "scenario": scenario})
    if "resnet" not in get_method(method).backbones:
        with pytest.raises(ConfigError, match=rf"method {method} does not grow resnet backbones \(.+\)"):
            start_run(space, options, tmp_path / "run")
        assert not (tmp_path / "run").exists()  # refused before anything was written
        return
    result = start_run(space, options, tmp_path / "run")
    assert len(result.records) == 2
    assert_old_tasks_unchanged(result.path, load_stream(options))


def _blocks() -> list:
    return [
        Conv2d(3, 8, norm=True),
        ResBlock(8, 8, norm=True),
        ResBlock(8, 16, 2, norm=True),
        GlobalAvgPool(),
    ]


def test_a_reused_resnet_block_normalises_each_task_with_its_own_statistics(one_thread, tmp_path):
    torch.manual_seed(0)
    x, y = torch.rand(64, 3, 16, 16), torch.randint(0, 4, (64,))
    split, config = Split(x, y), TrainingConfig(epochs=2, lr=0.05, batch_size=16)
    first = ops.reuse_prefix(ModuleGraph((3, 16, 16)), 0, None, 0, _blocks(), 4)
    first = train_candidate(first, 0, split, split, config, seed=0).graph
    first = ops.freeze(first, [n for n, node in first.nodes() if node.owner == 0])
    before = compile_view(first, 0).module.eval()(x)
    for own in (True, False):  # task 1 reuses three frozen blocks, with a normalisation of its own or not
        grown = ops.reuse_prefix(first, 1, 0, 3, _blocks(), 4)
        reused = [n for n in grown.view(1) if grown.node(n).owner == 0]
        if own:
            grown = node_data.with_task_norms(grown, 1, reused)
        trained = train_candidate(grown, 1, split, split, config, seed=1).graph
        assert torch.equal(compile_view(trained, 0).module.eval()(x), before)  # task 0 exact
        block = trained.node(reused[1])
        assert block.frozen and torch.equal(
            block.weights["bn1.running_mean"], first.node(reused[1]).weights["bn1.running_mean"]
        )
        if own:  # task 1's statistics and affine parameters moved, in its own set, kept by a checkpoint
            assert not torch.equal(block.norms[1]["bn1.running_mean"], block.weights["bn1.running_mean"])
            assert not torch.equal(block.norms[1]["bn1.weight"], block.weights["bn1.weight"])
            loaded = load_graph(save_graph(trained, tmp_path / "checkpoint"))
            for task in (0, 1):
                expected = compile_view(trained, task).module.eval()(x)
                assert torch.equal(compile_view(loaded, task).module.eval()(x), expected)
        else:
            assert not block.norms
