"""Each plot writes a readable PNG of the expected size, atomically."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from growsearch.report.metrics import MetricsError
from growsearch.report.plots import plot_accuracy_matrix, plot_parameter_growth, plot_trial_history

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAN = math.nan


def check_png(path: Path, width: int, height: int) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 5000
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width)
    assert image[..., :3].std() > 0.01  # not a blank canvas
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_accuracy_matrix(tmp_path: Path) -> None:
    a = np.array([[0.9, NAN, NAN], [0.8, 0.85, NAN], [0.7, 0.75, 0.95]])
    out = tmp_path / "acc.png"
    assert plot_accuracy_matrix(a, out, title="3 tasks") == out
    check_png(out, 520, 400)  # figure (4 + 1.2) x 4 inches at 100 dpi for T <= 4


def test_accuracy_matrix_overwrites_and_accepts_percentages(tmp_path: Path) -> None:
    out = tmp_path / "acc.png"
    plot_accuracy_matrix(np.eye(2), out)
    plot_accuracy_matrix(np.full((8, 8), 55.0) + np.arange(8), out)
    check_png(out, 750, 630)  # side = 0.6 * 8 + 1.5 = 6.3 inches, width 6.3 + 1.2


def test_accuracy_matrix_rejects_non_square(tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match="square"):
        plot_accuracy_matrix(np.zeros((2, 3)), tmp_path / "x.png")


def test_parameter_growth(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "params.png"
    params = np.array([1000, 1500, 1500, NAN])
    assert plot_parameter_growth(params, out) == out
    check_png(out, 800, 450)
    out2 = tmp_path / "params2.png"
    plot_parameter_growth(params, out2, per_task_added=np.array([1000, 500, 0, NAN]))
    assert out2.read_bytes()[:8] == PNG_SIGNATURE
    assert matplotlib.image.imread(out2).shape[:2] == (450, 800)


def test_parameter_growth_rejects_mismatch(tmp_path: Path) -> None:
    with pytest.raises(MetricsError, match="per_task_added"):
        plot_parameter_growth(np.array([1, 2]), tmp_path / "x.png", per_task_added=np.array([1]))
    with pytest.raises(MetricsError, match="1-D"):
        plot_parameter_growth(np.zeros((2, 2)), tmp_path / "x.png")


def trials() -> list[dict]:
    rows = []
    for task in range(3):
        for number in range(5):
            state = "COMPLETE" if number < 3 else ("PRUNED" if number == 3 else "FAIL")
            value = None if state == "FAIL" else 0.5 + 0.1 * task + 0.02 * number
            rows.append(
                {"task": task, "number": number, "value": value, "state": state, "chosen": number == 2}
            )
    rows.append({"task": 2, "number": 5, "value": None, "state": "PRUNED", "chosen": False})
    return rows


def test_trial_history(tmp_path: Path) -> None:
    out = tmp_path / "trials.png"
    assert plot_trial_history(trials(), out) == out
    check_png(out, 800, 450)


def test_trial_history_many_tasks_and_empty(tmp_path: Path) -> None:
    many = [{"task": t, "number": 0, "value": t / 12, "state": "COMPLETE", "chosen": True} for t in range(12)]
    out = tmp_path / "many.png"
    plot_trial_history(many, out)
    assert matplotlib.image.imread(out).shape[:2] == (450, 800)
    empty = tmp_path / "empty.png"
    plot_trial_history([], empty)
    assert empty.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    ("trial", "message"),
    [
        ({"task": 0, "number": 0, "value": 1.0, "state": "COMPLETE"}, "lacks key"),
        ({"task": 0, "number": 0, "value": 1.0, "state": "RUNNING", "chosen": False}, "state"),
        ({"task": 0, "number": 0, "value": "high", "state": "COMPLETE", "chosen": False}, "non-numeric"),
    ],
)
def test_trial_history_rejects_bad_trials(tmp_path: Path, trial: dict, message: str) -> None:
    with pytest.raises(MetricsError, match=message):
        plot_trial_history([trial], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
