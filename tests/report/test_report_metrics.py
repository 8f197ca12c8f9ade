"""Metrics of survey section 4.2 on small matrices computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from growsearch.errors import GrowsearchError
from growsearch.report.metrics import (
    Metrics,
    MetricsError,
    RunRecord,
    accuracy_rows_complete,
    compute_metrics,
    metrics_table,
)

NAN = math.nan

# a[i][j]: accuracy on task j after training task i.
A3 = [
    [0.90, 0.20, 0.10],
    [0.80, 0.85, 0.30],
    [0.70, 0.75, 0.95],
]


def full_record() -> RunRecord:
    return RunRecord(
        accuracy=np.array(A3),
        random_init_accuracy=np.array([0.1, 0.1, 0.2]),
        parameters=np.array([100, 200, 400]),
        train_ops=np.array([100.0, 200.0, 100.0]),
        pass_ops=np.array([10.0, 10.0, 20.0]),
    )


def test_full_3x3_by_hand() -> None:
    m = compute_metrics(full_record(), epsilon=2.0)
    assert m.tasks == 3
    # A_T = (0.70 + 0.75 + 0.95) / 3 = 2.40 / 3
    assert m.average_accuracy == pytest.approx(0.8)
    # A = (0.90 + 0.80 + 0.85 + 0.70 + 0.75 + 0.95) / (3*4/2) = 4.95 / 6
    assert m.accuracy_whole_run == pytest.approx(0.825)
    # f_0 = max(0.90 - 0.70, 0.80 - 0.70) = 0.20; f_1 = max(0.20 - 0.75, 0.85 - 0.75) = 0.10
    assert m.forgetting_per_task == pytest.approx((0.2, 0.1))
    # F_T = (0.20 + 0.10) / 2
    assert m.forgetting == pytest.approx(0.15)
    # FWT (eq. 10) = (a01 + a02 + a12) / (3*2/2) = (0.20 + 0.10 + 0.30) / 3
    assert m.fwt == pytest.approx(0.2)
    # FWT_LP = ((a01 - b1) + (a12 - b2)) / 2 = ((0.20 - 0.10) + (0.30 - 0.20)) / 2
    assert m.fwt_lopez_paz == pytest.approx(0.1)
    # FWT_b, the headline = ((a01 - b1) + (a02 - b2) + (a12 - b2)) / 3 = (0.10 - 0.10 + 0.10) / 3
    assert m.fwt_baseline == pytest.approx(0.1 / 3)
    # BWT (eq. 11) = ((a10 - a00) + (a20 - a00) + (a21 - a11)) / 3 = (-0.10 - 0.20 - 0.10) / 3
    assert m.bwt == pytest.approx(-0.4 / 3)
    # BWT_LP = ((a20 - a00) + (a21 - a11)) / 2 = (-0.20 - 0.10) / 2
    assert m.bwt_lopez_paz == pytest.approx(-0.15)
    # MS = min(1, (100/100 + 100/200 + 100/400) / 3) = 1.75 / 3
    assert m.model_size_efficiency == pytest.approx(1.75 / 3)
    # CE = min(1, (10*2/100 + 10*2/200 + 20*2/100) / 3) = (0.2 + 0.1 + 0.4) / 3
    assert m.computational_efficiency == pytest.approx(0.7 / 3)


def test_epsilon_default_is_one() -> None:
    # CE = (10/100 + 10/200 + 20/100) / 3 = 0.35 / 3
    assert compute_metrics(full_record()).computational_efficiency == pytest.approx(0.35 / 3)


def test_perfect_no_forgetting() -> None:
    a = np.array([[0.9, NAN, NAN], [0.9, 0.8, NAN], [0.9, 0.8, 1.0]])
    m = compute_metrics(RunRecord(a))
    assert m.forgetting == 0.0
    assert m.forgetting_per_task == (0.0, 0.0)
    assert m.bwt == 0.0
    assert m.bwt_lopez_paz == 0.0
    # A_T = (0.9 + 0.8 + 1.0) / 3; A = (0.9 + 0.9 + 0.8 + 0.9 + 0.8 + 1.0) / 6
    assert m.average_accuracy == pytest.approx(0.9)
    assert m.accuracy_whole_run == pytest.approx(5.3 / 6)
    # Upper triangle unknown: eq. 10 FWT is undefined; no b: Lopez-Paz FWT undefined; no counts: MS, CE too.
    assert math.isnan(m.fwt)
    assert math.isnan(m.fwt_lopez_paz)
    assert math.isnan(m.model_size_efficiency)
    assert math.isnan(m.computational_efficiency)


def test_forgetting_and_negative_bwt() -> None:
    a = np.array([[1.0, NAN], [0.4, 0.9]])
    m = compute_metrics(RunRecord(a))
    # f_0 = a00 - a10 = 0.6; BWT = (a10 - a00) / 1 = -0.6; BWT_LP = (a10 - a00) / 1
    assert m.forgetting == pytest.approx(0.6)
    assert m.bwt == pytest.approx(-0.6)
    assert m.bwt_lopez_paz == pytest.approx(-0.6)
    # A_T = (0.4 + 0.9) / 2; A = (1.0 + 0.4 + 0.9) / 3
    assert m.average_accuracy == pytest.approx(0.65)
    assert m.accuracy_whole_run == pytest.approx(2.3 / 3)


def test_forgetting_ignores_scores_from_before_a_task_was_learned() -> None:
    # a[0][1] = 0.9 was measured before task 1 was trained (an untrained head): it is not knowledge
    # that can be forgotten, so f_1 = max over rows 1..T-2 only = 0.6 - 0.6 = 0.
    a = np.array([[0.5, 0.9, 0.0], [0.5, 0.6, 0.0], [0.5, 0.6, 0.7]])
    assert compute_metrics(RunRecord(a)).forgetting_per_task == pytest.approx((0.0, 0.0))
    a[1, 1] = 0.8  # learned to 0.8, now 0.6: forgotten 0.2
    assert compute_metrics(RunRecord(a)).forgetting_per_task == pytest.approx((0.0, 0.2))
    a[0, 1] = NAN  # unknown pre-training value: irrelevant
    assert compute_metrics(RunRecord(a)).forgetting_per_task == pytest.approx((0.0, 0.2))


def test_single_task() -> None:
    record = RunRecord([[0.75]], random_init_accuracy=[0.1], parameters=[10], train_ops=[50], pass_ops=[5])
    m = compute_metrics(record, epsilon=3.0)
    assert m.tasks == 1
    assert m.average_accuracy == 0.75
    assert m.accuracy_whole_run == 0.75
    assert m.forgetting_per_task == ()
    for value in (m.forgetting, m.fwt, m.fwt_lopez_paz, m.bwt, m.bwt_lopez_paz):
        assert math.isnan(value)
    assert m.model_size_efficiency == 1.0
    # CE = 5 * 3 / 50
    assert m.computational_efficiency == pytest.approx(0.3)


def test_partial_run_uses_leading_complete_rows() -> None:
    a = np.full((4, 4), NAN)
    a[0] = [0.90, 0.20, 0.10, 0.05]  # rows 0, 1 complete, including their upper triangle
    a[1] = [0.80, 0.85, 0.30, 0.15]
    a[2, 0] = 0.5  # row 2 is being evaluated: partly filled, ignored
    record = RunRecord(
        a,
        random_init_accuracy=[0.1, 0.1, 0.2, 0.3],
        parameters=[100, 150, NAN, NAN],
        train_ops=[100, 100, NAN, NAN],
        pass_ops=[10, 30, NAN, NAN],
    )
    assert accuracy_rows_complete(a) == 2
    m = compute_metrics(record)
    assert m.tasks == 2
    # Same as a 2-task run over the leading 2x2 block [[0.90, 0.20], [0.80, 0.85]]:
    assert m.average_accuracy == pytest.approx((0.80 + 0.85) / 2)
    assert m.accuracy_whole_run == pytest.approx((0.90 + 0.80 + 0.85) / 3)
    assert m.forgetting == pytest.approx(0.10)  # 0.90 - 0.80
    assert m.fwt == pytest.approx(0.20)  # a01 / 1; a02, a03, a12, a13 lie outside the block
    assert m.fwt_lopez_paz == pytest.approx(0.10)  # a01 - b1
    assert m.bwt == pytest.approx(-0.10)
    assert m.bwt_lopez_paz == pytest.approx(-0.10)
    assert m.model_size_efficiency == pytest.approx((1 + 100 / 150) / 2)
    assert m.computational_efficiency == pytest.approx((10 / 100 + 30 / 100) / 2)
    block = compute_metrics(
        RunRecord(
            a[:2, :2],
            random_init_accuracy=[0.1, 0.1],
            parameters=[100, 150],
            train_ops=[100, 100],
            pass_ops=[10, 30],
        )
    )
    assert block == m


def test_nan_upper_triangle_entry_makes_fwt_unknown() -> None:
    a = np.array(A3)
    a[0, 2] = NAN
    m = compute_metrics(RunRecord(a, random_init_accuracy=[0.1, 0.1, 0.2]))
    assert math.isnan(m.fwt)
    assert m.fwt_lopez_paz == pytest.approx(0.1)  # uses a01 and a12 only, both known
    a[1, 2] = NAN
    m = compute_metrics(RunRecord(a, random_init_accuracy=[0.1, 0.1, 0.2]))
    assert math.isnan(m.fwt_lopez_paz)
    assert m.average_accuracy == pytest.approx(0.8)  # the lower triangle is unaffected


def test_ms_and_ce_clamp_to_one() -> None:
    record = RunRecord([[0.5, NAN], [0.5, 0.5]], parameters=[100, 50], train_ops=[10, 10], pass_ops=[10, 30])
    m = compute_metrics(record)
    # MS = min(1, (1 + 100/50) / 2) = min(1, 1.5); CE = min(1, (10/10 + 30/10) / 2) = min(1, 2)
    assert m.model_size_efficiency == 1.0
    assert m.computational_efficiency == 1.0


def test_as_dict_is_json_friendly() -> None:
    d = compute_metrics(RunRecord([[0.5, NAN], [0.25, 0.5]])).as_dict()
    assert d["fwt"] is None
    assert d["model_size_efficiency"] is None
    assert d["forgetting_per_task"] == [0.25]
    assert d["tasks"] == 2
    assert set(d) == {f for f in Metrics.__dataclass_fields__}
    assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_metrics_table() -> None:
    table = metrics_table(compute_metrics(full_record(), epsilon=2.0))
    rows = dict(table)
    assert rows["A_T  average accuracy"] == "0.8000"
    assert rows["BWT  backward transfer (eq. 11)"] == "-0.1333"
    assert rows["f_j  forgetting per task"] == "0.2000, 0.1000"
    assert rows["T    tasks measured"] == "3"
    assert all(isinstance(name, str) and isinstance(value, str) for name, value in table)
    single = dict(metrics_table(compute_metrics(RunRecord([[0.5]]))))
    assert single["F_T  average forgetting"] == "n/a"
    assert single["f_j  forgetting per task"] == "n/a"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accuracy": np.zeros((2, 3))}, "square"),
        ({"accuracy": np.zeros(3)}, "square"),
        ({"accuracy": np.zeros((0, 0))}, "empty"),
        ({"accuracy": [[0.5, math.inf], [0.5, 0.5]]}, "infinite"),
        ({"accuracy": [["a"]]}, "numeric"),
        ({"accuracy": np.zeros((3, 3)), "parameters": [1, 2]}, r"parameters must have shape \(3,\)"),
        ({"accuracy": np.zeros((2, 2)), "random_init_accuracy": np.zeros((2, 1))}, "random_init_accuracy"),
        ({"accuracy": np.zeros((2, 2)), "train_ops": [1, 2, 3]}, "train_ops"),
    ],
)
def test_bad_shapes_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(MetricsError, match=message):
        RunRecord(**kwargs)


def test_nan_hole_raises() -> None:
    a = np.array([[0.9, NAN, NAN], [NAN, 0.8, NAN], [0.7, 0.7, 0.7]])
    with pytest.raises(MetricsError, match=r"NaN hole: row 1 lacks a\[1\]\[0\]"):
        compute_metrics(RunRecord(a))


def test_no_complete_row_raises() -> None:
    with pytest.raises(MetricsError, match="no complete row"):
        compute_metrics(RunRecord(np.full((2, 2), NAN)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"parameters": [100, 0]}, r"parameters\[1\] = 0.0"),
        ({"parameters": [100, NAN]}, r"parameters\[1\] = nan"),
        ({"train_ops": [10, -1], "pass_ops": [1, 1]}, r"train_ops\[1\]"),
        ({"train_ops": [10, 10], "pass_ops": [-1, 1]}, r"pass_ops\[0\]"),
    ],
)
def test_bad_counts_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(MetricsError, match=message):
        compute_metrics(RunRecord([[0.5, NAN], [0.5, 0.5]], **kwargs))


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.nan, math.inf, True, "2"])
def test_bad_epsilon_raises(epsilon: object) -> None:
    with pytest.raises(MetricsError, match="epsilon"):
        compute_metrics(RunRecord([[0.5]]), epsilon=epsilon)  # type: ignore[arg-type]


def test_errors_are_growsearch_errors() -> None:
    assert issubclass(MetricsError, GrowsearchError)


def test_the_headline_fwt_reads_no_transfer_where_untrained_heads_score_chance(tmp_path) -> None:
    """Task-IL on split digits: before task j is learned its head is untrained, so a[i][j] is chance (about
    0.5 on two classes), as is the random-init baseline b_j. Eq. 10 as printed reads that as transfer; the
    headline FWT, against b_j, reads about none."""
    from growsearch.runner import RunOptions, start_run

    from tiny_runs import tiny_space

    options = RunOptions(benchmark="split-digits", max_per_task=80, seed=0)
    metrics = start_run(tiny_space("pnn", training={"epochs": 1}), options, tmp_path / "run").metrics[
        "metrics"
    ]
    assert metrics["fwt"] > 0.3  # chance, counted as transfer
    assert abs(metrics["fwt_baseline"]) < 0.1
    assert ("FWT  forward transfer (eq. 10 - b_j)", f"{metrics['fwt_baseline']:.4f}") in metrics_table(
        Metrics(
            **{k: tuple(v) if isinstance(v, list) else (NAN if v is None else v) for k, v in metrics.items()}
        )
    )
