"""metrics.json of a run: the accuracy matrix and the survey's metrics, rebuilt from the committed records."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from growsearch.atomic_files import atomic_write_json
from growsearch.report.metrics import RunRecord, compute_metrics
from growsearch.store.run_folder import METRICS_FILE, RunFolder
from growsearch.task_record import TaskRecord


def _none_for_nan(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]


def run_record(records: list[TaskRecord], n_tasks: int, baseline: list[float] | None) -> RunRecord:
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
        parameters=column("parameters"),
        train_ops=column("train_macs"),
        pass_ops=column("pass_macs"),
    )


def _companion(records: list[TaskRecord], n_tasks: int, key: str) -> list[list[float | None]]:
    """A matrix beside the accuracy matrix (row t: after task t), from each record's `key` row."""
    matrix = np.full((n_tasks, n_tasks), np.nan)
    for record in records:
        if getattr(record, key) is not None:
            matrix[record.task] = getattr(record, key)
    return [_none_for_nan(row) for row in matrix]


def write_metrics(
    run: RunFolder, n_tasks: int, baseline: list[float] | None, epsilon: float = 1.0
) -> dict[str, Any]:
    records = run.records()
    if not records:
        return {}
    record = run_record(records, n_tasks, baseline)
    metrics = compute_metrics(record, epsilon=epsilon)
    data = {
        "tasks_committed": len(records),
        "n_tasks": n_tasks,
        "accuracy": [_none_for_nan(row) for row in record.accuracy],
        "random_init_accuracy": baseline,
        "parameters": [r.parameters for r in records],
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
    run's config, b_j from baseline.json when it is readable, epsilon from the config."""
    from growsearch.data.benchmarks import get_benchmark_info

    config = run.config()
    n_tasks = config["run"].get("n_tasks") or get_benchmark_info(config["run"]["benchmark"]).default_tasks
    baseline = None
    try:
        kept = json.loads((run.path / "baseline.json").read_text(encoding="utf-8"))
        if isinstance(kept, list) and len(kept) == n_tasks:
            baseline = [float(b) for b in kept]
    except (OSError, UnicodeDecodeError, ValueError, TypeError):
        pass
    epsilon = float((config["space"].get("metrics") or {}).get("epsilon", 1.0))
    return write_metrics(run, int(n_tasks), baseline, epsilon)
