"""Task-agnostic streams: the tasks are found again from the samples alone (ExpertGate's autoencoders as
novelty detectors), near where the benchmark cut them, and a task-IL method learns the tasks it found."""

from __future__ import annotations

import pytest
import torch

from growsearch.config.space import InferenceConfig
from growsearch.data.benchmarks import load_benchmark
from growsearch.inference.boundaries import _change_point, detect_boundaries, task_free_stream
from growsearch.runner import RunOptions, resume_run, scenario_plan, start_run
from growsearch.search.pipeline import SilentReporter

from tiny_runs import assert_same_commits, tiny_space

SMALL = {"boundary_warmup": 50, "boundary_chunk": 25}  # tasks of ~134 samples (80 training ones)


def true_starts(stream) -> list[int]:
    starts, n = [], 0
    for task in stream.tasks:
        starts.append(n)
        n += len(task.train) + len(task.val)
    return starts


@pytest.mark.parametrize(
    ("benchmark", "settings", "tolerance"), [("permuted-digits", {}, 0), ("split-digits", {}, 40)]
)
def test_the_tasks_are_found_where_the_benchmark_cut_them(benchmark, settings, tolerance):
    stream = load_benchmark(
        benchmark, scenario="task-agnostic", seed=0, n_tasks=3 if "permuted" in benchmark else None
    )
    found, report = task_free_stream(stream, InferenceConfig(**settings), seed=0)
    expected = true_starts(stream)
    assert len(report.starts) == len(expected), report.describe()
    assert all(abs(a - b) <= tolerance for a, b in zip(report.starts, expected, strict=True)), report.starts
    for j, task in enumerate(found.tasks):  # each found task is tested on the benchmark task it holds
        assert max(report.sources[j], key=report.sources[j].get) == j
        assert torch.equal(task.test.x, stream.tasks[j].test.x)
        assert len(task.train) + len(task.val) == sum(report.sources[j].values())


def test_one_task_is_one_task_and_the_change_point_splits_familiar_from_novel(digits_stream):
    x = torch.cat([digits_stream.tasks[0].train.x, digits_stream.tasks[0].val.x])
    assert detect_boundaries(x, InferenceConfig(**SMALL), seed=0) == [0]
    flags = torch.tensor([False, True, False, False, True, True, False, True, True, True])
    assert _change_point(flags) == 4


def test_a_novel_tail_too_short_to_learn_from_stays_with_the_task_before_it():
    """Three odd samples at the end of a stream start no task (it would hold no validation sample)."""
    torch.manual_seed(0)
    x = torch.cat([0.1 * torch.rand(300, 1, 8, 8), torch.ones(3, 1, 8, 8)])
    assert detect_boundaries(x, InferenceConfig(), seed=0) == [0]
    longer = torch.cat([x[:300], torch.rand(160, 1, 8, 8)])  # a real second task is still found
    starts = detect_boundaries(longer, InferenceConfig(), seed=0)
    assert len(starts) == 2 and abs(starts[1] - 300) <= 5, starts


def small_task_agnostic() -> RunOptions:
    return RunOptions(benchmark="split-digits", scenario="task-agnostic", max_per_task=80, seed=0)


def test_a_task_il_method_runs_task_agnostic_and_resumes(tmp_path):
    space = tiny_space("pnn", inference=SMALL)
    assert "no task boundaries" in scenario_plan(space, small_task_agnostic()).note
    reference = start_run(space, small_task_agnostic(), tmp_path / "reference")
    assert len(reference.records) == 5
    last = reference.records[-1]
    assert last.task_inference == "expert-gate"
    assert sum(last.task_inference_row) / 5 > 0.6  # the found tasks' gates route held-out samples

    class StopAfterTaskOne(SilentReporter):
        def task_committed(self, task, record):
            if task == 1:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        start_run(space, small_task_agnostic(), tmp_path / "run", reporter=StopAfterTaskOne())
    resumed = resume_run(tmp_path / "run")  # finds the same tasks again
    assert_same_commits(resumed, reference, 4)
