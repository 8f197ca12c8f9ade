"""metrics.csv: a run's metrics.json as one tidy table for notebooks and spreadsheets.

One row per number, columns ``metric,after_task,on_task,value`` (empty where a column does not apply or a
value is unknown), so ``pandas.read_csv("metrics.csv").pivot(...)`` gets any view back: ``accuracy`` rows
(after task i, on task j), per-task series (``parameters``, ``parameters_added``, ``train_macs``,
``pass_macs``, ``random_init_accuracy``, ``forgetting_per_task``, ``decision.NAME``), the independent model's
accuracy on the last task (``independent_accuracy``, where CTrL's transfer is measured) and the summary
metrics (``average_accuracy``, ``bwt``, ``transfer``, ...).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from growsearch.atomic_files import atomic_write_text

CSV_FILE = "metrics.csv"
HEADER = ("metric", "after_task", "on_task", "value")


def _value(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return value


def metric_rows(metrics: Mapping[str, Any]) -> Iterator[tuple[Any, ...]]:
    for i, row in enumerate(metrics.get("accuracy", [])):
        for j, value in enumerate(row):
            yield ("accuracy", i, j, _value(value))
    for j, value in enumerate(metrics.get("random_init_accuracy") or []):
        yield ("random_init_accuracy", "", j, _value(value))
    if metrics.get("independent_accuracy") is not None and metrics.get("n_tasks"):
        yield ("independent_accuracy", "", metrics["n_tasks"] - 1, _value(metrics["independent_accuracy"]))
    parameters = metrics.get("parameters", [])
    for i, value in enumerate(parameters):
        yield ("parameters", i, "", value)
        yield ("parameters_added", i, "", value - (parameters[i - 1] if i else 0))
    for key in ("train_macs", "pass_macs"):
        for i, value in enumerate(metrics.get(key, [])):
            yield (key, i, "", _value(value))
    for i, decisions in enumerate(metrics.get("decisions", [])):
        for name, value in (decisions or {}).items():
            yield (f"decision.{name}", i, "", _value(value))
    summary = metrics.get("metrics", {})
    for j, value in enumerate(summary.get("forgetting_per_task") or []):
        yield ("forgetting_per_task", "", j, _value(value))
    for key, value in summary.items():
        if not isinstance(value, list):
            yield (key, "", "", _value(value))


def metrics_csv(metrics: Mapping[str, Any]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(metric_rows(metrics))
    return buffer.getvalue()


def write_metrics_csv(metrics: Mapping[str, Any], path: Path) -> Path:
    return atomic_write_text(path, metrics_csv(metrics))
