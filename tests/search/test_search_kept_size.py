"""What a run keeps, counted whole: a task's record counts the graph's weights and also the methods' node
state, gates, masks and owners (in bits) and task inference, its exemplar memory apart; MS reads the
whole count, so a method that keeps a generator or masks beside its weights is no longer counted small."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from growsearch.report.metrics import compute_metrics
from growsearch.report.run_metrics import run_record
from growsearch.runner import start_run
from growsearch.search.kept_size import kept_size
from growsearch.store.run_folder import RunFolder

from tiny_runs import tiny_options, tiny_space


@pytest.fixture(scope="module")
def piggyback_run(tmp_path_factory, one_thread):
    return start_run(tiny_space("piggyback"), tiny_options(), tmp_path_factory.mktemp("kept") / "run")


def test_a_records_kept_size_is_what_its_saved_folder_holds_and_ms_reads_it(piggyback_run):
    run = RunFolder.open(piggyback_run.path)
    for record in piggyback_run.records:
        graph, _ = run.load_task(record.task)
        masks = sum(
            m.numel() for n in graph.node_ids() for mm in graph.node(n).masks.values() for m in mm.values()
        )
        kept = record.kept
        assert kept == kept_size(graph, record.task + 1, [])  # no task inference in task-IL, no memory
        assert kept["weights"] == record.parameters and kept["mask_bits"] == masks
        assert kept["kept_parameters"] == record.parameters + math.ceil(masks / 32)
        assert (kept["mask_bits"] > 0) == (record.task > 0)  # each later task's binary masks
    records = piggyback_run.records
    metrics = compute_metrics(run_record(records, len(records), None))
    whole = [r.kept["kept_parameters"] for r in records]
    assert metrics.model_size_efficiency == pytest.approx(sum(whole[0] / w for w in whole) / len(whole))
    assert metrics.model_size_efficiency < sum(records[0].parameters / r.parameters for r in records) / 5
    saved = json.loads((piggyback_run.path / "metrics.json").read_text())
    assert saved["kept_parameters"] == whole


def test_gates_count_a_value_per_unit_and_task(tmp_path, one_thread):
    space = tiny_space("xdg", training={"epochs": 1})
    run = start_run(space, dataclasses.replace(tiny_options(), n_tasks=2), tmp_path / "run")
    for record in run.records:
        graph, _ = RunFolder.open(run.path).load_task(record.task)
        gates = sum(g.numel() for n in graph.node_ids() for g in graph.node(n).gates.values())
        assert record.kept["gates"] == gates > 0


def test_memory_samples_are_counted_apart_and_task_inference_models_as_parameters(digits_stream):
    from growsearch.data.memory import ExemplarMemory
    from growsearch.graph.module_graph import ModuleGraph

    memory = ExemplarMemory(20)
    task = digits_stream.tasks[0]
    memory.add_task(0, task.train.x, task.train.y, seed=0)
    inference = {"network.0.weight": task.train.x.new_zeros(3, 64), "mean": task.train.x.new_zeros(64)}
    kept = kept_size(ModuleGraph((64,)), 1, [memory.tensors(), inference])
    assert kept["memory"] == {"samples": 20, "bytes": 20 * 64 * task.train.x.element_size()}
    assert kept["task_inference"] == 3 * 64 + 64 and kept["kept_parameters"] == 3 * 64 + 64
