import pytest

from growsearch.data import get_benchmark_info, list_benchmarks, load_benchmark
from growsearch.errors import ConfigError, UnknownNameError

NAMES = {
    "split-digits", "permuted-digits", "rotated-digits", "label-permuted-digits",
    "split-mnist5k", "permuted-mnist5k", "rotated-mnist5k",
    "split-mnist", "permuted-mnist", "rotated-mnist", "label-permuted-mnist",
    "split-fashionmnist", "split-cifar10", "split-cifar100",
    "split-cifar100-b0-10", "split-cifar100-b0-20", "split-cifar100-b50-5", "split-cifar100-b50-10",
    "split-tinyimagenet", "split-imagenet100",
    "seq-split-digits", "seq-split-mnist5k",
    "ctrl-minus", "ctrl-plus", "ctrl-in", "ctrl-out", "ctrl-pl", "ctrl-long",
}  # fmt: skip


def test_registry_lists_every_benchmark():
    infos = {info.name: info for info in list_benchmarks()}
    assert set(infos) == NAMES
    assert infos["split-digits"].scenarios == ("task-il", "class-il", "domain-il", "task-agnostic")
    assert set(infos["permuted-mnist"].scenarios) == {"domain-il", "task-il", "task-agnostic"}
    assert infos["label-permuted-digits"].default_scenario == "task-agnostic"
    assert not infos["split-mnist5k"].needs_data_root and infos["split-cifar10"].needs_data_root
    defaults = {name: info.default_tasks for name, info in infos.items()}
    assert defaults["split-cifar100"] == 10 and defaults["permuted-mnist"] == 10
    assert (
        defaults["permuted-digits"] == 5
        and defaults["rotated-mnist5k"] == 5
        and defaults["split-cifar10"] == 5
    )
    assert all(info.default_scenario in info.scenarios and info.description for info in infos.values())


def test_unknown_names():
    with pytest.raises(UnknownNameError, match="unknown benchmark 'split-imagenet'"):
        load_benchmark("split-imagenet")
    with pytest.raises(UnknownNameError, match="benchmark"):
        get_benchmark_info("nope")
    with pytest.raises(UnknownNameError, match="unknown scenario 'online'"):
        load_benchmark("split-digits", scenario="online")


@pytest.mark.parametrize("n_tasks", [3, 0, -1, 11, "5", True])
def test_bad_n_tasks_for_split(n_tasks):
    with pytest.raises(ConfigError, match=r"n_tasks=.*split-digits.*allowed n_tasks: 1, 2, 5, 10"):
        load_benchmark("split-digits", n_tasks=n_tasks)


def test_bad_n_tasks_for_permuted():
    with pytest.raises(ConfigError, match=r"n_tasks=0 .*integer >= 1"):
        load_benchmark("permuted-digits", n_tasks=0)
    assert len(load_benchmark("permuted-digits", n_tasks=7)) == 7


@pytest.mark.parametrize(
    "option", [{"val_fraction": 0.9}, {"val_fraction": -0.1}, {"max_per_task": 0}, {"seed": -1}]
)
def test_bad_options(option):
    with pytest.raises(ConfigError, match=next(iter(option))):
        load_benchmark("split-digits", **option)


def test_zero_val_fraction_gives_empty_validation():
    stream = load_benchmark("split-digits", val_fraction=0.0)
    assert all(len(t.val) == 0 and t.val.x.shape == (0, 1, 8, 8) for t in stream.tasks)


def test_n_tasks_checked_before_any_data_is_read():
    with pytest.raises(ConfigError, match=r"n_tasks=3 .*split-cifar100.*allowed n_tasks: .*10, 20"):
        load_benchmark("split-cifar100", n_tasks=3)  # no data root needed to see this


def test_rotated_with_empty_validation():
    stream = load_benchmark("rotated-digits", val_fraction=0.0, max_per_task=10)
    assert all(len(t.val) == 0 and len(t.train) == 10 for t in stream.tasks)
