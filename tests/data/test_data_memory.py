"""The exemplar memory: class-balanced within a fixed total, herding that approximates each class's mean
better than chance does, shrinking that keeps herding's best prefix, and a run folder round trip under
checksums (a torn file refused)."""

from __future__ import annotations

import pytest
import torch

from growsearch.data.memory import ExemplarMemory, herding_order
from growsearch.errors import CheckpointError, ConfigError
from growsearch.graph.module_graph import ModuleGraph
from growsearch.store.run_folder import MEMORY_FILE, RunFolder
from growsearch.task_record import TaskRecord


def _mean_gap(features: torch.Tensor, chosen: torch.Tensor) -> float:
    normalised = torch.nn.functional.normalize(features.double(), dim=1)
    return float((normalised.mean(0) - normalised[chosen].mean(0)).norm())


def test_herding_approximates_the_class_mean_better_than_random_choices(digits_stream):
    x = digits_stream.tasks[0].train.x.flatten(1)
    chosen = herding_order(x, 10)
    assert len(set(chosen.tolist())) == 10  # without replacement
    generator = torch.Generator().manual_seed(0)
    random_gaps = [_mean_gap(x, torch.randperm(len(x), generator=generator)[:10]) for _ in range(50)]
    assert _mean_gap(x, chosen) < min(random_gaps)


def test_the_memory_stays_class_balanced_within_its_capacity(digits_stream):
    memory = ExemplarMemory(capacity=40)
    for task in digits_stream.tasks[:3]:
        classes = torch.tensor(task.classes)[task.train.y]  # the stream's per-task labels as dataset classes
        memory.add_task(task.task_id, task.train.x, classes, seed=task.task_id)
        assert len(memory) <= 40
        assert len({len(v) for v in memory.x.values()}) == 1  # every class the same share
    assert memory.per_class == 40 // 6 and len(memory) == 6 * (40 // 6)
    x, y, tasks = memory.samples()
    assert sorted(set(y.tolist())) == [0, 1, 2, 3, 4, 5] and tasks.tolist().count(2) == 2 * (40 // 6)


def test_shrinking_keeps_the_herding_prefix(digits_stream):
    task = digits_stream.tasks[0]
    memory = ExemplarMemory(capacity=20)
    memory.add_task(0, task.train.x, task.train.y, seed=0)
    before = {c: v.clone() for c, v in memory.x.items()}
    other = digits_stream.tasks[1]
    memory.add_task(1, other.train.x, other.train.y + 2, seed=1)
    for c, kept in before.items():
        assert torch.equal(memory.x[c], kept[: memory.per_class])


def test_bad_capacities_and_repeated_classes_are_refused(digits_stream):
    task = digits_stream.tasks[0]
    with pytest.raises(ConfigError, match="capacity: expected an integer >= 1"):
        ExemplarMemory(capacity=0)
    memory = ExemplarMemory(capacity=1)
    with pytest.raises(ConfigError, match="cannot hold one sample of each of 2 classes"):
        memory.add_task(0, task.train.x, task.train.y, seed=0)
    memory = ExemplarMemory(capacity=10, strategy="random")
    memory.add_task(0, task.train.x, task.train.y, seed=0)
    with pytest.raises(ConfigError, match=r"classes \[0, 1\] are already stored"):
        memory.add_task(1, task.train.x, task.train.y, seed=0)


def test_the_memory_survives_the_run_folder_and_a_torn_file_is_refused(digits_stream, tmp_path):
    task = digits_stream.tasks[0]
    memory = ExemplarMemory(capacity=12, strategy="random")
    memory.add_task(0, task.train.x, task.train.y, seed=3)
    run = RunFolder.create(tmp_path / "run", {"run": {}, "space": {"search": {"storage": "journal"}}})
    graph = ModuleGraph(digits_stream.input_shape)
    record = TaskRecord(
        task=0, chosen_trial=0, decisions={}, accuracy_row=[0.5], parameters=0, train_macs=0, pass_macs=0
    )
    run.commit_task(0, graph, record, {MEMORY_FILE: memory.tensors()})
    again = ExemplarMemory.from_tensors(run.load_task_tensors(0, MEMORY_FILE))
    assert again.strategy == "random" and again.capacity == 12
    assert all(torch.equal(again.x[c], memory.x[c]) for c in memory.x) and again.task == memory.task
    path = run.task_dir(0) / MEMORY_FILE
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(CheckpointError, match="memory.safetensors does not match its checksum"):
        run.load_task_tensors(0, MEMORY_FILE)
