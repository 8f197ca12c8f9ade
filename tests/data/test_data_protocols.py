"""Split CIFAR-100's protocols (B0 / B50, PyCIL's class order), class orders, per-dataset normalisation,
and the old benchmarks' tasks unchanged."""

import hashlib

import numpy as np
import pytest
import torch

from growsearch.data import cifar, get_benchmark_info, list_benchmarks, load_benchmark
from growsearch.data.normalize import CIFAR10_STATS, CIFAR100_STATS
from growsearch.data.streams import class_order, split_sizes
from growsearch.errors import ConfigError

# PyCIL's CIFAR-100 order (DataManager with shuffle=True, seed=1993; iCaRL's order), its first 20 classes
PYCIL_HEAD = [68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38]


@pytest.fixture
def cifar100_root(tmp_path, make_cifar_root):
    return make_cifar_root(tmp_path, cifar.CIFAR100, train_per_class=3, test_per_class=1)


def test_pycil_order_is_numpy_seed_1993_permutation():
    order = class_order("pycil", tuple(range(100)), seed=5)
    assert list(order[:20]) == PYCIL_HEAD
    assert list(order) == np.random.RandomState(1993).permutation(100).tolist()
    # a permutation of positions in the sorted classes, whatever the ids
    assert class_order("pycil", tuple(range(1000, 1100)), 0) == tuple(1000 + c for c in order)
    assert class_order("sorted", (3, 1, 2), 0) == (1, 2, 3)
    seeded = class_order("seeded", tuple(range(100)), 1)
    assert sorted(seeded) == list(range(100)) and seeded == class_order("seeded", tuple(range(100)), 1)
    assert seeded != class_order("seeded", tuple(range(100)), 2) and seeded != order


@pytest.mark.parametrize(
    ("name", "sizes"),
    [
        ("split-cifar100-b0-10", (10,) * 10),
        ("split-cifar100-b0-20", (5,) * 20),
        ("split-cifar100-b50-5", (50, *(10,) * 5)),
        ("split-cifar100-b50-10", (50, *(5,) * 10)),
    ],
)
def test_cifar100_protocols(cifar100_root, label_of, name, sizes):
    task_il = load_benchmark(name, data_root=cifar100_root, normalize=False)
    class_il = load_benchmark(name, data_root=cifar100_root, normalize=False, scenario="class-il")
    order = class_order("pycil", tuple(range(100)), 0)
    assert get_benchmark_info(name).default_tasks == len(task_il) == len(sizes)
    start = 0
    for a, b, size in zip(task_il.tasks, class_il.tasks, sizes, strict=True):
        assert a.classes == b.classes == order[start : start + size]
        assert a.n_outputs == size and b.n_outputs == 100
        assert (len(a.train), len(a.test)) == (3 * size, size)  # 15% of 3 rounds to no validation
        assert label_of(a.train.x) == [a.classes[i] for i in a.train.y.tolist()]  # label: place in the task
        # class-IL: the class's place in the stream's order, so task t holds labels start..start+size-1
        assert sorted(b.test.y.tolist()) == list(range(start, start + size))
        assert label_of(b.test.x) == [order[i] for i in b.test.y.tolist()]
        assert torch.equal(a.train.x, b.train.x)
        start += size
    assert start == 100


def test_b50_task_counts(cifar100_root):
    assert split_sizes(100, 6, 50) == (50, 10, 10, 10, 10, 10) and split_sizes(100, 1, 50) == (100,)
    assert [
        len(t.classes)
        for t in load_benchmark("split-cifar100-b50-5", n_tasks=3, data_root=cifar100_root).tasks
    ] == [
        50,
        25,
        25,
    ]
    with pytest.raises(
        ConfigError, match=r"n_tasks=5 .*b50-5.*50 classes first.*allowed n_tasks: 1, 2, 3, 6, 11, 26, 51"
    ):
        load_benchmark("split-cifar100-b50-5", n_tasks=5)  # checked before any data is read


def test_split_cifar100_class_order_option(cifar100_root):
    sorted_stream = load_benchmark("split-cifar100", data_root=cifar100_root, normalize=False)
    assert [t.classes for t in sorted_stream.tasks] == [tuple(range(10 * t, 10 * t + 10)) for t in range(10)]
    pycil = load_benchmark("split-cifar100", data_root=cifar100_root, normalize=False, class_order="pycil")
    b0 = load_benchmark("split-cifar100-b0-10", data_root=cifar100_root, normalize=False)
    for a, b in zip(pycil.tasks, b0.tasks, strict=True):
        assert (
            a.classes == b.classes and torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
        )
    assert b0.tasks[0].classes == tuple(PYCIL_HEAD[:10])
    sorted_b0 = load_benchmark("split-cifar100-b0-10", data_root=cifar100_root, class_order="sorted")
    assert sorted_b0.tasks[1].classes == tuple(range(10, 20))
    one = load_benchmark("split-cifar100", data_root=cifar100_root, class_order="seeded", seed=1)
    two = load_benchmark("split-cifar100", data_root=cifar100_root, class_order="seeded", seed=2)
    assert one.tasks[0].classes != two.tasks[0].classes


@pytest.mark.parametrize(
    ("name", "order", "match"),
    [
        ("split-cifar100", "random", "class_order='random' .*expected one of sorted, pycil, seeded"),
        ("permuted-digits", "pycil", "class_order='pycil' .*only split streams"),
        ("ctrl-minus", "sorted", "class_order='sorted' .*CTrL"),
    ],
)
def test_bad_class_orders(name, order, match):
    with pytest.raises(ConfigError, match=match):
        load_benchmark(name, class_order=order)


def test_registry_of_the_new_benchmarks():
    infos = {i.name: i for i in list_benchmarks()}
    for name in ("split-cifar100-b0-10", "split-cifar100-b50-10", "split-tinyimagenet", "split-imagenet100"):
        assert infos[name].needs_data_root and infos[name].crop_padding == 4
    assert (
        infos["split-cifar100"].class_order == "sorted"
        and infos["split-cifar100-b50-5"].class_order == "pycil"
    )
    assert (
        infos["split-imagenet100"].class_order == "pycil" and infos["split-tinyimagenet"].default_tasks == 10
    )
    assert infos["split-cifar100"].normalization == CIFAR100_STATS
    assert infos["split-digits"].normalization is None and infos["split-mnist"].crop_padding is None
    assert all(len(i.description) <= 55 for i in infos.values())  # `list benchmarks` at 80 columns


def test_rgb_inputs_normalised_like_torchvision(cifar100_root, make_cifar_root):
    from torchvision.transforms.functional import normalize

    make_cifar_root(cifar100_root, cifar.CIFAR10)
    for name, stats in (("split-cifar100", CIFAR100_STATS), ("split-cifar10", CIFAR10_STATS)):
        plain = load_benchmark(name, data_root=cifar100_root, normalize=False)
        stream = load_benchmark(name, data_root=cifar100_root)
        assert plain.normalization is None and stream.normalization == stats
        for a, b in zip(plain.tasks, stream.tasks, strict=True):
            for split in ("train", "val", "test"):
                x, y = getattr(a, split).x, getattr(b, split).x
                assert torch.equal(y, normalize(x, list(stats.mean), list(stats.std)))
                assert torch.allclose(stats.invert(y), x, atol=1e-6)
    digits = load_benchmark("split-digits")
    assert digits.normalization is None and all(
        0 <= t.train.x.min() and t.train.x.max() <= 1 for t in digits.tasks
    )


def _digest(stream) -> str:
    m = hashlib.sha256()
    m.update(repr((stream.benchmark, stream.scenario.name, stream.input_shape)).encode())
    for t in stream.tasks:
        m.update(repr((t.task_id, t.classes, t.n_outputs)).encode())
        for s in (t.train, t.val, t.test):
            m.update(repr((s.x.dtype, tuple(s.x.shape))).encode())
            m.update(s.x.numpy().tobytes())
            m.update(s.y.numpy().tobytes())
    return m.hexdigest()


# every task (classes, labels, inputs bit for bit) as the code before class orders, protocols and
# normalisation made them (numpy's generators draw the cuts: a new numpy that changed their streams
# would change these too)
BEFORE = {
    ("split-digits", "task-il", None, 0): "a0740021f142ae3eeff554f9f40b33b1fafd87f833cef3bc125a349eb5a863a2",
    ("split-digits", "class-il", None, 0): "df95d972e59497a312d7ea82dedce3305f9fcd1c3d7a45a36f5324ab9d109b56",
    ("split-digits", "class-il", 30, 3): "42b084b01934eb415b889ebb3862053fbab15ef61b5d08df7ac520833c61545c",
    (
        "split-digits",
        "domain-il",
        None,
        0,
    ): "da7673ab714b7d420c747db3cebab6e126e1600e01132315ecce58ed3819fba2",
}
BEFORE_CIFAR = {  # on the generated root: 3 training and 1 test image a class
    ("split-cifar100", "task-il", 10): "b288e185436536dfb5120e6c3d05f29c7c12b326955b6c38d4711740d6dbcbc4",
    ("split-cifar100", "task-il", 20): "3351ef2cc647915909c0255b96e42c6835b140ac398158be5a755811837f5627",
    ("split-cifar100", "class-il", 10): "e5a9b54d5a9d6042bd7c0bc8a8b4bc3ba985cc15b7dd711b8001b7b956a2e689",
    ("split-cifar100", "class-il", 20): "f4ab6a0c53435905e1b5256aebb0d880bce8ce49867f71c024e43da9d4d63292",
    ("split-cifar10", "class-il", 5): "c833b72c302cf2db49837fac83b238978a8298363224db290f009780c7d07643",
}


def test_old_benchmarks_tasks_unchanged(cifar100_root, make_cifar_root):
    for (name, scenario, cap, seed), digest in BEFORE.items():
        assert _digest(load_benchmark(name, scenario=scenario, max_per_task=cap, seed=seed)) == digest
    make_cifar_root(cifar100_root, cifar.CIFAR10, train_per_class=3, test_per_class=1)
    for (name, scenario, n_tasks), digest in BEFORE_CIFAR.items():
        stream = load_benchmark(
            name, data_root=cifar100_root, scenario=scenario, n_tasks=n_tasks, normalize=False
        )
        assert _digest(stream) == digest
