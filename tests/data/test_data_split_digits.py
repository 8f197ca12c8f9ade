import time

import numpy as np
import pytest
import torch

from growsearch.data import DEFAULT_BENCHMARK, list_benchmarks, load_benchmark
from growsearch.data.splitting import rng_for, stratified_cap, stratified_cut


def test_default_benchmark_is_split_digits_and_loads_fast():
    assert DEFAULT_BENCHMARK == list_benchmarks()[0].name == "split-digits"
    start = time.perf_counter()
    stream = load_benchmark("split-digits")
    assert time.perf_counter() - start < 1.0
    assert stream.scenario.name == "task-il"
    assert len(stream) == 5


def test_tasks_hold_disjoint_class_pairs_with_shapes():
    stream = load_benchmark("split-digits")
    assert stream.input_shape == (1, 8, 8)
    assert [t.classes for t in stream.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert [t.task_id for t in stream.tasks] == list(range(5))
    total = 0
    for task in stream.tasks:
        for split in (task.train, task.val, task.test):
            assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
            assert split.x.shape == (len(split), 1, 8, 8)
            assert 0.0 <= split.x.min() and split.x.max() <= 1.0
            total += len(split)
        assert len(task.train) > 4 * len(task.test) > 0
    assert total == 1797


def test_task_il_labels_per_task_and_class_il_labels_global():
    task_il = load_benchmark("split-digits", scenario="task-il")
    class_il = load_benchmark("split-digits", scenario="class-il")
    domain_il = load_benchmark("split-digits", scenario="domain-il")
    for a, b, c in zip(task_il.tasks, class_il.tasks, domain_il.tasks, strict=True):
        assert a.n_outputs == 2 and c.n_outputs == 2 and b.n_outputs == 10
        assert set(a.train.y.tolist()) == {0, 1}
        assert set(b.train.y.tolist()) == set(a.classes)
        assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.x, b.test.x)
        classes = torch.tensor(a.classes)
        assert torch.equal(classes[a.train.y], b.train.y)  # 0/1 is the position in the sorted classes
        assert torch.equal(a.val.y, c.val.y)


def test_deterministic_for_a_seed():
    one = load_benchmark("split-digits", seed=3, max_per_task=40)
    two = load_benchmark("split-digits", seed=3, max_per_task=40)
    other = load_benchmark("split-digits", seed=4, max_per_task=40)
    for a, b, c in zip(one.tasks, two.tasks, other.tasks, strict=True):
        for name in ("train", "val", "test"):
            assert torch.equal(getattr(a, name).x, getattr(b, name).x)
            assert torch.equal(getattr(a, name).y, getattr(b, name).y)
        assert torch.equal(a.test.x, c.test.x)  # the train/val/test cut does not move with the seed
    assert any(not torch.equal(a.train.x, c.train.x) for a, c in zip(one.tasks, other.tasks, strict=True))


def test_max_per_task_caps_train_stratified():
    stream = load_benchmark("split-digits", max_per_task=21)
    for task in stream.tasks:
        assert len(task.train) == 21
        counts = torch.bincount(task.train.y, minlength=2).tolist()
        assert sorted(counts) == [10, 11]
        assert len(task.val) > 40  # val and test are not capped


def test_stratified_cut_is_a_partition():
    y = np.repeat(np.arange(4), [20, 30, 40, 10])
    val, test, train = stratified_cut(y, (0.15, 0.15), rng_for(0))
    joined = np.concatenate([val, test, train])
    assert sorted(joined.tolist()) == list(range(len(y)))
    assert np.bincount(y[val]).tolist() == [3, 4, 6, 2]  # round(0.15 * n_c) per class


def test_stratified_cap_keeps_proportions():
    y = np.repeat(np.arange(3), [50, 30, 20])
    idx = stratified_cap(y, 10, rng_for(1))
    assert np.bincount(y[idx]).tolist() == [5, 3, 2]
    assert len(set(idx.tolist())) == 10
    assert stratified_cap(y, 500, rng_for(1)).tolist() == list(range(100))


@pytest.mark.parametrize("n_tasks, sizes", [(2, 5), (10, 1), (1, 10)])
def test_other_task_counts(n_tasks, sizes):
    stream = load_benchmark("split-digits", n_tasks=n_tasks, scenario="class-il")
    assert len(stream) == n_tasks
    assert all(len(t.classes) == sizes and t.n_outputs == 10 for t in stream.tasks)
