import os
import pickle

import numpy as np
import pytest

from growsearch.data import cifar, load_benchmark
from growsearch.data.safe_pickle import safe_load
from growsearch.errors import DataError


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_split_cifar10_from_pickled_batches(tmp_path, make_cifar_root, label_of):
    make_cifar_root(tmp_path, cifar.CIFAR10, train_per_class=4, test_per_class=1)
    stream = load_benchmark("split-cifar10", data_root=tmp_path, scenario="class-il", normalize=False)
    assert stream.input_shape == (3, 32, 32) and len(stream) == 5
    for task in stream.tasks:
        assert len(task.train) == 6 and len(task.val) == 2 and len(task.test) == 2
        assert task.n_outputs == 10
        assert label_of(task.train.x) == task.train.y.tolist()
        assert task.train.x.shape[1:] == (3, 32, 32)


@pytest.mark.parametrize("n_tasks", [10, 20])
def test_split_cifar100_fine_labels(tmp_path, make_cifar_root, label_of, n_tasks):
    make_cifar_root(tmp_path, cifar.CIFAR100, train_per_class=2, test_per_class=1)
    stream = load_benchmark("split-cifar100", data_root=tmp_path, n_tasks=n_tasks, normalize=False)
    size = 100 // n_tasks
    assert len(stream) == n_tasks
    assert stream.tasks[1].classes == tuple(range(size, 2 * size))
    for task in stream.tasks:
        assert task.n_outputs == size and len(task.test) == size
        assert label_of(task.test.x) == [task.classes[i] for i in task.test.y.tolist()]


def test_disallowed_global_is_refused_and_never_run(tmp_path, make_cifar_root):
    make_cifar_root(tmp_path, cifar.CIFAR10)
    marker = tmp_path / "pwned"
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(pickle.dumps({b"data": _Evil(marker), b"labels": []}))
    with pytest.raises(DataError, match="refusing to unpickle the global .*system") as info:
        load_benchmark("split-cifar10", data_root=tmp_path)
    assert "data_batch_3" in str(info.value)
    assert not marker.exists()


def test_safe_load_refuses_builtins_eval(tmp_path):
    path = tmp_path / "evil"
    path.write_bytes(b"cbuiltins\neval\n(S'1+1'\ntR.")
    with pytest.raises(DataError, match="builtins.eval"):
        safe_load(path)


def test_safe_load_reads_arrays_of_both_protocols(tmp_path):
    for protocol in (2, 5):
        path = tmp_path / f"p{protocol}"
        path.write_bytes(
            pickle.dumps({b"data": np.arange(6, dtype=np.uint8).reshape(2, 3)}, protocol=protocol)
        )
        assert safe_load(path)[b"data"].tolist() == [[0, 1, 2], [3, 4, 5]]


def test_bad_batches_are_data_errors(tmp_path, make_cifar_root):
    make_cifar_root(tmp_path, cifar.CIFAR10)
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    batch.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.float32), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="test_batch.*uint8 \\(n, 3072\\)"):
        load_benchmark("split-cifar10", data_root=tmp_path)
    batch.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="cannot read .*test_batch"):
        load_benchmark("split-cifar10", data_root=tmp_path)


def test_missing_cifar_names_expected_file(tmp_path, make_cifar_root):
    with pytest.raises(DataError) as info:
        load_benchmark("split-cifar100", data_root=tmp_path)
    assert str(tmp_path / "cifar-100-python" / "train") in str(info.value)
    assert "--download" in str(info.value)
    make_cifar_root(tmp_path, cifar.CIFAR10)
    (tmp_path / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(DataError, match="batches.meta"):
        load_benchmark("split-cifar10", data_root=tmp_path)
