"""Continual-learning metrics from an accuracy matrix (survey section 4.2, equations 6-13).

Notation: ``a[i][j]`` is the test accuracy on task ``j`` after training task ``i`` (0-based, ``T`` tasks).
Sources: Chaudhry et al. 2018 (``A_T``, forgetting), Diaz-Rodriguez et al. 2018 (``A``, FWT, BWT, MS, CE),
Lopez-Paz & Ranzato 2017 (GEM forms of BWT and FWT with a random-init baseline ``b``), and CTrL's transfer
(Veniat, Denoyer & Ranzato 2021, section 4: the last task against an independent model trained on it alone).

Partial runs: :func:`compute_metrics` takes the full ``(T, T)`` matrix and uses only its leading ``k``
complete rows (row ``i`` is complete when ``a[i][0..i]`` are all finite, see :func:`accuracy_rows_complete`).
Every metric is then computed as if the run had ``k`` tasks: over the leading ``k x k`` block of the matrix
and the first ``k`` entries of the per-task arrays. Later entries (rows not yet run) may be NaN.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import numpy as np

from growsearch.errors import GrowsearchError

__all__ = [
    "Metrics",
    "MetricsError",
    "RunRecord",
    "accuracy_rows_complete",
    "compute_metrics",
    "metrics_table",
]


class MetricsError(GrowsearchError):
    """A run record cannot be turned into metrics: wrong shape, NaN holes, non-positive counts."""


def _as_float_array(value: object, name: str) -> np.ndarray:
    try:
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricsError(f"{name} must be numeric, got {type(value).__name__}: {exc}") from exc


def _check_square(accuracy: np.ndarray) -> int:
    if accuracy.ndim != 2 or accuracy.shape[0] != accuracy.shape[1]:
        raise MetricsError(f"accuracy matrix must be square (T, T), got shape {accuracy.shape}")
    if accuracy.shape[0] == 0:
        raise MetricsError("accuracy matrix is empty (T = 0); expected at least one task")
    if np.isinf(accuracy).any():
        i, j = np.argwhere(np.isinf(accuracy))[0]
        raise MetricsError(f"accuracy[{i}][{j}] is infinite; expected a finite accuracy or NaN (unknown)")
    return accuracy.shape[0]


@dataclass(frozen=True, eq=False)
class RunRecord:
    """What a run measured, per task ``i = 0..T-1``.

    ``accuracy[i][j]``: test accuracy on task ``j`` after training task ``i``; NaN where unknown (tasks not
    yet trained, ``j > i``, or rows of a run still in progress). ``random_init_accuracy[j]``: ``b_j``,
    accuracy of a randomly initialised model on task ``j``. ``parameters[i]``: ``Mem(theta_i)``, parameter
    count after task ``i``. ``train_ops[i]``: multiply-adds spent learning task ``i`` (all trials, all
    epochs). ``pass_ops[i]``: multiply-adds of one forward+backward pass over task ``i``'s training data.
    ``independent_accuracy``: test accuracy on the last task ``T-1`` of an independent model (the base
    network with a fresh head) trained on that task alone, CTrL's reference for transfer; None when the
    benchmark does not measure it.
    Arrays are converted to float64; shapes are checked here, values in :func:`compute_metrics`.
    """

    accuracy: np.ndarray
    random_init_accuracy: np.ndarray | None = None
    parameters: np.ndarray | None = None
    train_ops: np.ndarray | None = None
    pass_ops: np.ndarray | None = None
    independent_accuracy: float | None = None

    def __post_init__(self) -> None:
        accuracy = _as_float_array(self.accuracy, "accuracy")
        tasks = _check_square(accuracy)
        object.__setattr__(self, "accuracy", accuracy)
        for name in ("random_init_accuracy", "parameters", "train_ops", "pass_ops"):
            value = getattr(self, name)
            if value is None:
                continue
            array = _as_float_array(value, name)
            if array.shape != (tasks,):
                raise MetricsError(
                    f"{name} must have shape ({tasks},) to match the {tasks}x{tasks} accuracy matrix, "
                    f"got shape {array.shape}"
                )
            object.__setattr__(self, name, array)
        if self.independent_accuracy is not None:
            value = _as_float_array(self.independent_accuracy, "independent_accuracy")
            if value.shape != () or not np.isfinite(value):
                raise MetricsError(
                    f"independent_accuracy = {self.independent_accuracy!r}; expected one finite accuracy"
                )
            object.__setattr__(self, "independent_accuracy", float(value))

    @property
    def tasks(self) -> int:
        """``T``, the number of tasks of the run (the size of the accuracy matrix)."""
        return int(self.accuracy.shape[0])


@dataclass(frozen=True)
class Metrics:
    """The survey's section 4.2 metrics of one run (over its ``tasks`` leading complete rows).

    NaN marks a metric that is undefined (``T == 1``) or lacks its inputs (unknown upper triangle, no ``b``,
    no parameter or operation counts).
    """

    average_accuracy: float  # A_T, eq. 6
    accuracy_whole_run: float  # A, eq. 7
    forgetting: float  # F_T, eqs. 8-9
    forgetting_per_task: tuple[float, ...]  # f_j^T for j = 0..T-2
    fwt: float  # eq. 10 as the survey states it
    fwt_lopez_paz: float  # (1/(T-1)) sum_{j>=1} (a[j-1][j] - b_j)
    bwt: float  # eq. 11, Diaz-Rodriguez form
    bwt_lopez_paz: float  # (1/(T-1)) sum_{j<T-1} (a[T-1][j] - a[j][j])
    model_size_efficiency: float  # MS, eq. 12
    computational_efficiency: float  # CE, eq. 13
    transfer: float = math.nan  # CTrL: a[T-1][T-1] - the independent model's accuracy on task T-1
    tasks: int = 0  # number of leading task rows the metrics cover (k of a partial run)
    # the headline FWT: eq. 10 against the random-init baseline, sum_{i<j} (a[i][j] - b_j) / (T(T-1)/2); eq.
    # 10 as printed counts an untrained head's chance accuracy as transfer (about 0.5 on two-class task-IL)
    fwt_baseline: float = math.nan

    def as_dict(self) -> dict[str, float | int | list[float | None] | None]:
        """JSON-friendly dict: tuples become lists, NaN becomes None."""
        out: dict[str, float | int | list[float | None] | None] = {}
        for key, value in asdict(self).items():
            if isinstance(value, tuple):
                out[key] = [_nan_to_none(v) for v in value]
            elif isinstance(value, int):
                out[key] = value
            else:
                out[key] = _nan_to_none(value)
        return out


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def accuracy_rows_complete(accuracy: np.ndarray) -> int:
    """How many leading rows ``i`` have their lower triangle ``a[i][0..i]`` all finite.

    Raises :class:`MetricsError` for a non-square matrix, an infinite entry, or a NaN hole: a known
    lower-triangle value in a row after an incomplete row that is not the row right after the complete ones
    (which may be partly filled while its evaluation is in progress).
    """
    accuracy = _as_float_array(accuracy, "accuracy")
    tasks = _check_square(accuracy)
    complete = 0
    while complete < tasks and np.isfinite(accuracy[complete, : complete + 1]).all():
        complete += 1
    for i in range(complete + 1, tasks):
        known = np.flatnonzero(np.isfinite(accuracy[i, : i + 1]))
        if known.size:
            j = int(known[0])
            missing = [c for c in range(complete + 1) if not np.isfinite(accuracy[complete, c])]
            raise MetricsError(
                f"accuracy matrix has a NaN hole: row {complete} lacks a[{complete}][{missing[0]}] "
                f"but a later row has a[{i}][{j}] = {accuracy[i, j]}; rows must be filled in task order"
            )
    return complete


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def _positive_prefix(
    array: np.ndarray | None, name: str, k: int, *, allow_zero: bool = False
) -> np.ndarray | None:
    if array is None:
        return None
    prefix = array[:k]
    bad = ~np.isfinite(prefix) | (prefix < 0 if allow_zero else prefix <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        expected = "a finite count >= 0" if allow_zero else "a finite count > 0"
        raise MetricsError(
            f"{name}[{i}] = {prefix[i]}; expected {expected} for each of the {k} completed tasks"
        )
    return prefix


def compute_metrics(record: RunRecord, *, epsilon: float = 1.0) -> Metrics:
    """Compute all section 4.2 metrics over the leading complete rows of ``record.accuracy``.

    With ``k`` = :func:`accuracy_rows_complete` rows and ``a`` the leading ``k x k`` block (``T = k`` below):

    - ``A_T = (1/T) sum_j a[T-1][j]`` (eq. 6).
    - ``A = sum_{i>=j} a[i][j] / (T(T+1)/2)`` (eq. 7; the survey prints ``i > j``, but its text and the
      original count the diagonal, as does the ``T(T+1)/2`` denominator).
    - ``f_j = max_{j<=l<T-1} (a[l][j] - a[T-1][j])`` for ``j < T-1`` (eq. 8 over the rows after task j
      was learned, as Chaudhry et al. intend: a task cannot be forgotten before it is learned, and
      scores of an untrained head are not knowledge), ``F_T = mean_j f_j`` (eq. 9).
    - ``FWT = sum_{i<j} a[i][j] / (T(T-1)/2)`` (eq. 10 as printed; NaN if any of those entries is unknown).
    - ``FWT_b = sum_{i<j} (a[i][j] - b_j) / (T(T-1)/2)`` (eq. 10 against the random-init baseline the
      survey's section 4.2 defines, the headline FWT: a task's accuracy before it is learned counts only
      above what a random network scores on it; NaN without ``b`` or with an unknown upper entry).
    - ``FWT_LP = (1/(T-1)) sum_{j>=1} (a[j-1][j] - b_j)`` (GEM; NaN without ``b`` or ``a[j-1][j]``).
    - ``BWT = sum_{i>j} (a[i][j] - a[j][j]) / (T(T-1)/2)`` (eq. 11).
    - ``BWT_LP = (1/(T-1)) sum_{j<T-1} (a[T-1][j] - a[j][j])`` (GEM).
    - ``MS = min(1, (1/T) sum_i Mem(theta_0) / Mem(theta_i))`` (eq. 12).
    - ``CE = min(1, (1/T) sum_i pass_ops[i] * epsilon / train_ops[i])`` (eq. 13).
    - ``transfer = a[T-1][T-1] - independent_accuracy`` (CTrL, section 4), over the whole stream: NaN until
      its last task is learned, or without ``independent_accuracy``.

    Transfer and forgetting metrics are NaN when ``T == 1``. Raises :class:`MetricsError` when no row is
    complete, on a NaN hole, a bad ``epsilon``, or a non-positive/non-finite count among the first ``k``.
    """
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not 0 < epsilon < math.inf:
        raise MetricsError(f"epsilon = {epsilon!r}; expected a finite number > 0 (usually >= 1)")
    k = accuracy_rows_complete(record.accuracy)
    if k == 0:
        raise MetricsError(
            "accuracy matrix has no complete row: a[0][0] is unknown (NaN); nothing to measure"
        )
    a = record.accuracy[:k, :k]
    pairs = k * (k - 1) / 2

    average_accuracy = float(np.mean(a[k - 1]))
    accuracy_whole_run = float(a[np.tril_indices(k)].sum() / (k * (k + 1) / 2))

    forgetting_per_task = tuple(float(np.max(a[j : k - 1, j]) - a[k - 1, j]) for j in range(k - 1))
    forgetting = _mean(list(forgetting_per_task))

    upper = a[np.triu_indices(k, 1)]
    fwt = float(upper.sum() / pairs) if k > 1 and np.isfinite(upper).all() else math.nan

    fwt_baseline = math.nan
    if record.random_init_accuracy is not None and k > 1 and np.isfinite(upper).all():
        baseline = np.asarray(record.random_init_accuracy[:k], dtype=float)
        fwt_baseline = float((upper - baseline[np.triu_indices(k, 1)[1]]).sum() / pairs)

    fwt_lopez_paz = math.nan
    if record.random_init_accuracy is not None and k > 1:
        terms = [a[j - 1, j] - record.random_init_accuracy[j] for j in range(1, k)]
        if np.isfinite(terms).all():
            fwt_lopez_paz = _mean(terms)

    bwt = float(sum(a[i, j] - a[j, j] for i in range(k) for j in range(i)) / pairs) if k > 1 else math.nan
    bwt_lopez_paz = _mean([a[k - 1, j] - a[j, j] for j in range(k - 1)])

    parameters = _positive_prefix(record.parameters, "parameters", k)
    model_size_efficiency = math.nan
    if parameters is not None:
        model_size_efficiency = min(1.0, float(np.mean(parameters[0] / parameters)))

    train_ops = _positive_prefix(record.train_ops, "train_ops", k)
    pass_ops = _positive_prefix(record.pass_ops, "pass_ops", k, allow_zero=True)
    computational_efficiency = math.nan
    if train_ops is not None and pass_ops is not None:
        computational_efficiency = min(1.0, float(np.mean(pass_ops * epsilon / train_ops)))

    transfer = math.nan
    if record.independent_accuracy is not None and k == record.tasks:
        transfer = float(a[k - 1, k - 1] - record.independent_accuracy)

    return Metrics(
        average_accuracy=average_accuracy,
        accuracy_whole_run=accuracy_whole_run,
        forgetting=forgetting,
        forgetting_per_task=forgetting_per_task,
        fwt=fwt,
        fwt_lopez_paz=fwt_lopez_paz,
        bwt=bwt,
        bwt_lopez_paz=bwt_lopez_paz,
        model_size_efficiency=model_size_efficiency,
        computational_efficiency=computational_efficiency,
        transfer=transfer,
        tasks=k,
        fwt_baseline=fwt_baseline,
    )


_TABLE_ROWS: tuple[tuple[str, str], ...] = (
    ("tasks", "T    tasks measured"),
    ("average_accuracy", "A_T  average accuracy"),
    ("accuracy_whole_run", "A    accuracy over the whole run"),
    ("forgetting", "F_T  average forgetting"),
    ("forgetting_per_task", "f_j  forgetting per task"),
    ("fwt_baseline", "FWT  forward transfer (eq. 10 - b_j)"),
    ("fwt", "     eq. 10 as printed (chance counts)"),
    ("fwt_lopez_paz", "     Lopez-Paz form (a[j-1][j] - b_j)"),
    ("bwt", "BWT  backward transfer (eq. 11)"),
    ("bwt_lopez_paz", "BWT  backward transfer (Lopez-Paz)"),
    ("model_size_efficiency", "MS   model size efficiency"),
    ("computational_efficiency", "CE   computational efficiency"),
    ("transfer", "TR   transfer on the last task (CTrL)"),
)
_SHOWN_WHEN_MEASURED = ("transfer",)  # only some benchmarks measure it: no n/a row elsewhere


def _format(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"


def metrics_table(metrics: Metrics) -> list[tuple[str, str]]:
    """Human names and formatted values (4 decimals, ``n/a`` for NaN), in a fixed order, for the CLI (CTrL's
    transfer only where it was measured)."""
    rows: list[tuple[str, str]] = []
    for field, label in _TABLE_ROWS:
        value = getattr(metrics, field)
        if field in _SHOWN_WHEN_MEASURED and math.isnan(value):
            continue
        if isinstance(value, tuple):
            text = ", ".join(_format(v) for v in value) if value else "n/a"
        elif isinstance(value, int):
            text = str(value)
        else:
            text = _format(value)
        rows.append((label, text))
    return rows
