import pytest
import torch

from growsearch.data import digits, load_benchmark
from growsearch.data.streams import label_permutation, pixel_permutation, rotation_angle
from growsearch.errors import ConfigError


def base_train_x() -> torch.Tensor:
    return digits.load("split-digits", None, False, 0.15).train.x.float() / 16.0


def test_permuted_task0_is_identity_and_later_tasks_a_fixed_bijection():
    stream = load_benchmark("permuted-digits", seed=7)
    assert stream.scenario.name == "domain-il"
    first = stream.tasks[0]
    assert torch.equal(first.train.x, base_train_x())
    assert torch.equal(pixel_permutation(7, 0, 64), torch.arange(64))
    perms = []
    for task in stream.tasks[1:]:
        perm = pixel_permutation(7, task.task_id, 64)
        assert torch.equal(torch.sort(perm).values, torch.arange(64))  # a bijection of the 64 pixels
        assert not torch.equal(perm, torch.arange(64))
        for mine, orig in ((task.train, first.train), (task.test, first.test)):  # same perm for every split
            assert torch.equal(mine.x.reshape(len(mine), 64), orig.x.reshape(len(orig), 64)[:, perm])
            assert torch.equal(mine.y, orig.y)
        assert task.classes == tuple(range(10)) and task.n_outputs == 10
        perms.append(perm)
    assert len({tuple(p.tolist()) for p in perms}) == len(perms)
    assert not torch.equal(pixel_permutation(8, 1, 64), pixel_permutation(7, 1, 64))


def test_rotated_task0_equals_base_and_task_t_turns_by_t_180_over_n():
    stream = load_benchmark("rotated-digits", n_tasks=2)
    zero, half = stream.tasks
    assert torch.equal(zero.train.x, base_train_x())
    assert rotation_angle(1, 2) == 90.0
    turned = torch.rot90(zero.train.x, k=1, dims=(2, 3))  # 90 degrees anticlockwise
    assert torch.allclose(half.train.x, turned, atol=1e-5)
    assert torch.equal(half.train.y, zero.train.y)
    five = load_benchmark("rotated-digits")
    assert [rotation_angle(t.task_id, 5) for t in five.tasks] == [0.0, 36.0, 72.0, 108.0, 144.0]
    assert not torch.allclose(five.tasks[1].train.x, five.tasks[0].train.x)


def test_label_permuted_keeps_inputs_and_permutes_labels():
    stream = load_benchmark("label-permuted-digits", seed=2)
    assert stream.scenario.name == "task-agnostic"
    first = stream.tasks[0]
    assert label_permutation(2, 0, 10) == tuple(range(10))
    assert torch.equal(first.train.y, digits.load("", None, False, 0.15).train.y)
    for task in stream.tasks[1:]:
        perm = label_permutation(2, task.task_id, 10)
        assert sorted(perm) == list(range(10)) and perm != tuple(range(10))
        assert torch.equal(task.train.x, first.train.x)
        assert torch.equal(task.train.y, torch.tensor(perm)[first.train.y])
        assert torch.equal(task.test.y, torch.tensor(perm)[first.test.y])
        assert task.n_outputs == 10


def test_non_split_streams_refuse_class_il():
    for name in ("permuted-digits", "rotated-digits", "label-permuted-digits"):
        with pytest.raises(ConfigError, match=f"{name}.*class-il.*allowed"):
            load_benchmark(name, scenario="class-il")
    with pytest.raises(ConfigError, match="domain-il"):
        load_benchmark("label-permuted-digits", scenario="domain-il")
    assert load_benchmark("label-permuted-digits", scenario="task-il").tasks[1].n_outputs == 10
