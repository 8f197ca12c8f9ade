"""metrics.json of a run: the accuracy matrix and the survey's metrics, rebuilt from the committed records.

Beside them the run folder keeps what the metrics compare against, computed once at the run's start:
baseline.json (b_j, a random-init network's accuracy per task) and, for a benchmark that measures CTrL's
transfer, independent.json (`{"task": T-1, "accuracy": ...}`: an independent model trained on the last task
alone). A folder without independent.json (older runs, other benchmarks) has `transfer` null.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from growsearch.atomic_files import atomic_write_json, read_json
from growsearch.errors import CheckpointError
from growsearch.report.metrics import RunRecord, compute_metrics
from growsearch.store.run_folder import METRICS_FILE, RunFolder
from growsearch.task_record import TaskRecord

INDEPENDENT_FILE = "independent.json"


def _none_for_nan(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def run_record(
    records: list[TaskRecord],
    n_tasks: int,
    baseline: list[float] | None,
    independent: float | None = None,
) -> RunRecord:
    """The metrics input for the committed tasks (rows of tasks not yet committed are NaN)."""
    accuracy = np.full((n_tasks, n_tasks), np.nan)
    for record in records:
        accuracy[record.task] = record.accuracy_row

    def column(key: str) -> np.ndarray:
        values = np.full(n_tasks, np.nan)
        for record in records:
            values[record.task] = getattr(record, key)
        return values

    return RunRecord(
        accuracy=accuracy,
        random_init_accuracy=None if baseline is None else np.asarray(baseline, dtype=float),
        parameters=column("kept_parameters"),  # MS counts everything a method keeps to answer
        train_ops=column("train_macs"),
        pass_ops=column("pass_macs"),
        independent_accuracy=independent,
    )


def _companion(records: list[TaskRecord], n_tasks: int, key: str) -> list[list[float | None]]:
    """A matrix beside the accuracy matrix (row t: after task t), from each record's `key` row."""
    matrix = np.full((n_tasks, n_tasks), np.nan)
    for record in records:
        if getattr(record, key) is not None:
            matrix[record.task] = getattr(record, key)
    return [_none_for_nan(row) for row in matrix]


def write_metrics(
    run: RunFolder,
    n_tasks: int,
    baseline: list[float] | None,
    epsilon: float = 1.0,
    independent: float | None = None,
) -> dict[str, Any]:
    """metrics.json from the committed records; `independent`: the independent model's accuracy on the last
    task where the benchmark measures CTrL's transfer (metrics' `transfer`), else None."""
    records = run.records()
    if not records:
        return {}
    record = run_record(records, n_tasks, baseline, independent)
    metrics = compute_metrics(record, epsilon=epsilon)
    data = {
        "tasks_committed": len(records),
        "n_tasks": n_tasks,
        "accuracy": [_none_for_nan(row) for row in record.accuracy],
        "random_init_accuracy": baseline,
        "independent_accuracy": independent,
        "parameters": [r.parameters for r in records],
        "kept_parameters": [r.kept_parameters for r in records],
        "memory_samples": [(r.kept or {}).get("memory", {}).get("samples") for r in records],
        "train_macs": [r.train_macs for r in records],
        "pass_macs": [r.pass_macs for r in records],
        "decisions": [r.decisions for r in records],
        "epsilon": epsilon,
        "metrics": metrics.as_dict(),
    }
    if any(r.task_inference_row is not None for r in records):  # the task inferred: the companions
        data["task_inference"] = records[-1].task_inference
        data["task_inference_accuracy"] = _companion(records, n_tasks, "task_inference_row")
        data["task_il_accuracy"] = _companion(records, n_tasks, "task_il_accuracy_row")
    atomic_write_json(run.path / METRICS_FILE, data)
    return data


def rebuild_metrics(run: RunFolder) -> dict[str, Any]:
    """metrics.json again from the committed records (it is derived data): the stream's length from the
    run's config, b_j from baseline.json and the independent accuracy from independent.json when they are
    readable, epsilon from the config."""
    from growsearch.data.benchmarks import get_benchmark_info

    config = run.config()
    n_tasks = config["run"].get("n_tasks") or get_benchmark_info(config["run"]["benchmark"]).default_tasks
    baseline = None
    try:
        kept = read_json(run.path / "baseline.json")
        if isinstance(kept, list) and len(kept) == n_tasks:
            baseline = [float(b) for b in kept]
    except (CheckpointError, ValueError, TypeError):
        pass
    epsilon = float((config["space"].get("metrics") or {}).get("epsilon", 1.0))
    return write_metrics(run, int(n_tasks), baseline, epsilon, read_independent(run, int(n_tasks)))


def read_independent(run: RunFolder, n_tasks: int) -> float | None:
    """The independent model's accuracy on task n_tasks - 1 from independent.json; None when the file is
    missing, torn, edited or about another task."""
    try:
        kept = read_json(run.path / INDEPENDENT_FILE)
    except CheckpointError:
        return None
    if not isinstance(kept, dict) or kept.get("task") != n_tasks - 1:
        return None
    value = kept.get("accuracy")
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        return None
    return float(value)
