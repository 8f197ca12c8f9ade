"""CTrL's transfer (Veniat et al. 2021, sec. 4): the last task's accuracy against an independent model's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from growsearch.report.html_report import _metric_rows
from growsearch.report.metrics import MetricsError, RunRecord, compute_metrics, metrics_table
from growsearch.report.metrics_export import metric_rows

A3 = [[0.90, 0.20, 0.10], [0.80, 0.85, 0.30], [0.70, 0.75, 0.95]]
LABEL = "TR   transfer on the last task (CTrL)"


def test_transfer_is_the_last_diagonal_entry_minus_the_independent_accuracy():
    metrics = compute_metrics(RunRecord(np.array(A3), independent_accuracy=0.8))
    assert metrics.transfer == pytest.approx(0.95 - 0.8)
    assert metrics.as_dict()["transfer"] == pytest.approx(0.15)
    assert dict(metrics_table(metrics))[LABEL] == "0.1500"


def test_transfer_waits_for_the_last_task_and_needs_the_independent_model():
    partial = np.array(A3)
    partial[2] = np.nan
    assert math.isnan(compute_metrics(RunRecord(partial, independent_accuracy=0.8)).transfer)
    unmeasured = compute_metrics(RunRecord(np.array(A3)))
    assert math.isnan(unmeasured.transfer) and unmeasured.as_dict()["transfer"] is None
    assert LABEL not in dict(metrics_table(unmeasured))  # no n/a row where no benchmark measures it


@pytest.mark.parametrize("bad", [math.nan, math.inf, [0.5, 0.5], "high"])
def test_a_bad_independent_accuracy_is_refused(bad):
    with pytest.raises(MetricsError, match="independent_accuracy"):
        RunRecord(np.array(A3), independent_accuracy=bad)


def test_report_table_and_csv_read_metrics_json_with_and_without_transfer():
    measured = compute_metrics(RunRecord(np.array(A3), independent_accuracy=0.8)).as_dict()
    data = {"n_tasks": 3, "accuracy": A3, "independent_accuracy": 0.8, "metrics": measured}
    assert (LABEL, "0.1500") in _metric_rows(data)
    csv = list(metric_rows(data))
    assert ("independent_accuracy", "", 2, 0.8) in csv
    assert ("transfer", "", "", pytest.approx(0.15)) in csv
    older = {k: v for k, v in measured.items() if k != "transfer"}  # a run folder from before CTrL
    assert LABEL not in dict(_metric_rows({"metrics": older}))
    assert not [row for row in metric_rows({"accuracy": A3, "metrics": older}) if "transfer" in row[0]]
