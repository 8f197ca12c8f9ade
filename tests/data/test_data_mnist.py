import pytest
import torch

from growsearch.data import load_benchmark
from growsearch.errors import DataError


def test_split_mnist_reads_torchvision_raw_layout(tmp_path, make_mnist_root, label_of):
    root = make_mnist_root(tmp_path, "MNIST", train_per_class=8, test_per_class=2)
    stream = load_benchmark("split-mnist", data_root=root)
    assert stream.input_shape == (1, 28, 28) and len(stream) == 5 and stream.scenario.name == "task-il"
    for task in stream.tasks:
        assert len(task.train) == 14 and len(task.val) == 2 and len(task.test) == 4  # val: round(.15 * 8)
        for split in (task.train, task.val, task.test):
            originals = label_of(split.x)
            assert originals == [task.classes[i] for i in split.y.tolist()]  # images and labels stay paired
    class_il = load_benchmark("split-mnist", data_root=str(root), scenario="class-il")
    assert label_of(class_il.tasks[3].test.x) == class_il.tasks[3].test.y.tolist()


def test_split_fashionmnist_and_other_mnist_streams(tmp_path, make_mnist_root, label_of):
    make_mnist_root(tmp_path, "FashionMNIST")
    fashion = load_benchmark("split-fashionmnist", data_root=tmp_path, scenario="class-il")
    assert [t.classes for t in fashion.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    assert label_of(fashion.tasks[0].train.x) == fashion.tasks[0].train.y.tolist()
    make_mnist_root(tmp_path, "MNIST")
    permuted = load_benchmark("permuted-mnist", data_root=tmp_path, n_tasks=3)
    assert len(permuted) == 3 and permuted.tasks[0].n_outputs == 10
    labels = load_benchmark("label-permuted-mnist", data_root=tmp_path)
    assert len(labels) == 10 and torch.equal(labels.tasks[4].train.x, labels.tasks[0].train.x)


def test_missing_root_names_the_expected_file(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError) as info:
        load_benchmark("split-mnist", data_root=missing)
    message = str(info.value)
    assert "split-mnist" in message and str(missing) in message and "--download" in message
    assert str(missing / "MNIST" / "raw" / "train-images-idx3-ubyte") in message


def test_incomplete_root_names_the_missing_file(tmp_path, make_mnist_root):
    make_mnist_root(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_benchmark("split-mnist", data_root=tmp_path)
    with pytest.raises(DataError, match="FashionMNIST/raw/train-images-idx3-ubyte"):
        load_benchmark("split-fashionmnist", data_root=tmp_path)


def test_data_root_required():
    with pytest.raises(DataError, match="--data-root is required"):
        load_benchmark("split-mnist")


def test_corrupt_idx_file_is_a_data_error(tmp_path, make_mnist_root):
    make_mnist_root(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DataError, match="cannot read the MNIST train files"):
        load_benchmark("split-mnist", data_root=tmp_path)


def test_files_missing_classes_are_a_data_error(tmp_path, make_mnist_root):
    make_mnist_root(tmp_path, "MNIST")
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    raw = bytearray(labels.read_bytes())
    raw[8:] = bytes(min(b, 7) for b in raw[8:])  # classes 8 and 9 vanish from train
    labels.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="holds 8 classes, expected 10"):
        load_benchmark("split-mnist", data_root=tmp_path)


class _RunsCode:
    """Pickles to a call of `touch`: what a hostile processed/training.pt would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import subprocess

        return (subprocess.call, (["touch", self.marker],))


def test_a_hostile_processed_file_is_refused_and_never_run(tmp_path, make_mnist_root):
    import pickle

    make_mnist_root(tmp_path, "MNIST")
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir()
    marker = tmp_path / "ran"
    for name in ("training.pt", "test.pt"):  # torchvision reads these before the raw files when present
        (processed / name).write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(DataError) as refused:
        load_benchmark("split-mnist", data_root=tmp_path)
    assert not marker.exists()
    assert "MNIST" in str(refused.value) and "processed" in str(refused.value), str(refused.value)
