"""Sequence benchmarks: images read row by row, (T, F) per sample, split into tasks like their image
benchmarks, in every scenario a split stream allows."""

import torch

from growsearch.data import get_benchmark_info, load_benchmark
from growsearch.data.benchmarks import SEQUENCE_BENCHMARKS


def test_each_digit_becomes_its_rows_as_steps_in_the_same_tasks():
    sequences, images = load_benchmark("seq-split-digits"), load_benchmark("split-digits")
    assert sequences.input_shape == (8, 8)
    assert [t.classes for t in sequences.tasks] == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    for seq_task, image_task in zip(sequences.tasks, images.tasks, strict=True):
        for split in ("train", "val", "test"):
            seq, image = getattr(seq_task, split), getattr(image_task, split)
            assert seq.x.shape == (len(seq), 8, 8) and seq.x.dtype == torch.float32
            assert torch.equal(seq.x, image.x[:, 0]) and torch.equal(seq.y, image.y)


def test_mnist5k_sequences_are_28_steps_of_28_features_under_class_il():
    stream = load_benchmark("seq-split-mnist5k", scenario="class-il", n_tasks=2, max_per_task=50)
    assert stream.input_shape == (28, 28) and len(stream) == 2
    assert stream.tasks[1].train.x.shape == (50, 28, 28)
    assert set(stream.tasks[1].train.y.tolist()) == {5, 6, 7, 8, 9}  # class-IL: global labels


def test_the_registry_lists_them_with_a_split_streams_scenarios():
    assert SEQUENCE_BENCHMARKS == ("seq-split-digits", "seq-split-mnist5k")
    info = get_benchmark_info("seq-split-digits")
    assert info.scenarios == ("task-il", "class-il", "domain-il", "task-agnostic")
    assert "8 steps of 8 features" in info.description and not info.needs_data_root
