"""PNG figures of a run: accuracy matrix, parameter growth, search-trial history.

Figures are drawn on the Agg canvas directly (no pyplot, no display, no global backend switch) at
:data:`DPI` dots per inch, and written atomically: to a temporary file in the target folder, then
``os.replace``. Each function returns the path it wrote.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from growsearch.atomic_files import atomic_write_bytes
from growsearch.report.metrics import MetricsError

__all__ = ["DPI", "plot_accuracy_matrix", "plot_parameter_growth", "plot_trial_history"]

DPI = 100
"""Resolution of every figure; image size in pixels is figure size in inches times this."""

_WIDE = (8.0, 4.5)
_TRIAL_STATES = ("COMPLETE", "PRUNED", "FAIL")


def _new_figure(size: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


FIGURE_FORMATS = ("png", "svg", "pdf")


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` to ``path`` atomically, in the format its suffix names (png, svg or pdf)."""
    path = Path(path)
    kind = path.suffix.lstrip(".").lower() or "png"
    if kind not in FIGURE_FORMATS:
        raise MetricsError(f"figure {path}: expected a .png, .svg or .pdf file")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=kind, dpi=DPI)
    return atomic_write_bytes(path, buffer.getvalue())


def _matrix_size(tasks: int) -> tuple[float, float]:
    side = min(14.0, max(4.0, 0.6 * tasks + 1.5))
    return (side + 1.2, side)


def plot_accuracy_matrix(accuracy: np.ndarray, path: Path, title: str = "Accuracy matrix") -> Path:
    """Heat-map of ``accuracy[i][j]`` (after training task ``i``, evaluated on task ``j``), values in cells.

    NaN (unknown) cells are left blank. The colour scale is ``[0, 1]`` when all values lie there, else the
    data range. Raises :class:`MetricsError` for a non-square or empty matrix.
    """
    a = np.array(accuracy, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] == 0:
        raise MetricsError(f"accuracy matrix must be square (T, T) with T >= 1, got shape {a.shape}")
    tasks = a.shape[0]
    finite = a[np.isfinite(a)]
    if finite.size == 0 or (finite.min() >= 0.0 and finite.max() <= 1.0):
        vmin, vmax = 0.0, 1.0
    else:
        vmin, vmax = float(finite.min()), float(finite.max())
        if vmin == vmax:
            vmin, vmax = vmin - 0.5, vmax + 0.5
    fig = _new_figure(_matrix_size(tasks))
    ax = fig.add_subplot()
    cmap = colormaps["viridis"].with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(a), cmap=cmap, vmin=vmin, vmax=vmax)
    fig.colorbar(image, ax=ax, label="accuracy")
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_title(title)
    ticks = np.arange(tasks)
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    if tasks <= 30:
        fontsize = max(5.0, min(10.0, 60.0 / tasks))
        decimals = 2 if vmax <= 1.0 else 1
        for i in range(tasks):
            for j in range(tasks):
                if not math.isfinite(a[i, j]):
                    continue
                shade = (a[i, j] - vmin) / (vmax - vmin)
                ax.text(
                    j,
                    i,
                    f"{a[i, j]:.{decimals}f}",
                    ha="center",
                    va="center",
                    fontsize=fontsize,
                    color="black" if shade > 0.6 else "white",
                )
    return _save(fig, path)


def plot_parameter_growth(
    parameters: np.ndarray, path: Path, per_task_added: np.ndarray | None = None
) -> Path:
    """Parameter count after each task against task index; optional bars of the parameters each task added.

    NaN entries (tasks not yet run) leave gaps. Raises :class:`MetricsError` on a non-1-D input, an empty
    array, or ``per_task_added`` of a different length.
    """
    params = np.array(parameters, dtype=np.float64)
    if params.ndim != 1 or params.size == 0:
        raise MetricsError(
            f"parameters must be a non-empty 1-D array (one count per task), got {params.shape}"
        )
    tasks = np.arange(params.size)
    fig = _new_figure(_WIDE)
    ax = fig.add_subplot()
    handles = []
    if per_task_added is not None:
        added = np.array(per_task_added, dtype=np.float64)
        if added.shape != params.shape:
            raise MetricsError(
                f"per_task_added must have shape {params.shape} like parameters, got shape {added.shape}"
            )
        bars_ax = ax.twinx()
        bars = bars_ax.bar(
            tasks, np.nan_to_num(added), width=0.5, color="tab:orange", alpha=0.45, label="added by task"
        )
        bars_ax.set_ylabel("parameters added")
        bars_ax.set_ylim(bottom=0)
        ax.set_zorder(bars_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        handles.append(bars)
    (line,) = ax.plot(tasks, params, marker="o", color="tab:blue", label="total after task")
    handles.insert(0, line)
    ax.set_xlabel("task index")
    ax.set_ylabel("parameters")
    ax.set_xticks(tasks if tasks.size <= 30 else np.linspace(0, tasks[-1], 11).round())
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title("Parameter growth")
    ax.legend(handles=handles, loc="upper left")
    return _save(fig, path)


def _check_trial(index: int, trial: Mapping[str, object]) -> tuple[int, int, float | None, str, bool]:
    if not isinstance(trial, Mapping):
        raise MetricsError(f"trial {index} must be a dict, got {type(trial).__name__}")
    missing = [k for k in ("task", "number", "value", "state", "chosen") if k not in trial]
    if missing:
        raise MetricsError(f"trial {index} lacks key(s) {', '.join(missing)}; got keys {sorted(trial)}")
    state = str(trial["state"]).upper()
    if state not in _TRIAL_STATES:
        raise MetricsError(
            f"trial {index} has state {trial['state']!r}; expected one of {', '.join(_TRIAL_STATES)}"
        )
    value = trial["value"]
    if value is not None:
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise MetricsError(f"trial {index} has non-numeric value {trial['value']!r}") from exc
        if not math.isfinite(value):
            value = None
    try:
        task, number = int(trial["task"]), int(trial["number"])  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise MetricsError(
            f"trial {index}: task and number must be integers, got {trial['task']!r}, {trial['number']!r}"
        ) from exc
    return task, number, value, state, bool(trial["chosen"])


def plot_trial_history(trials: Sequence[Mapping[str, object]], path: Path) -> Path:
    """Objective value of every search trial, in (task, number) order, coloured by task.

    Completed trials are dots, pruned ones crosses; trials without a value (failed, or pruned before
    reporting) are ticks along the bottom edge. Chosen trials get a black-edged star; dashed lines separate
    tasks. Raises :class:`MetricsError` when a trial lacks a key or has an unknown state.
    """
    rows = sorted((_check_trial(i, t) for i, t in enumerate(trials)), key=lambda r: (r[0], r[1]))
    fig = _new_figure(_WIDE)
    ax = fig.add_subplot()
    ax.set_xlabel("trial (ordered by task, then trial number)")
    ax.set_ylabel("objective")
    ax.set_title("Search trials")
    if not rows:
        ax.text(0.5, 0.5, "no trials", ha="center", va="center", transform=ax.transAxes)
        return _save(fig, path)
    task_ids = sorted({r[0] for r in rows})
    colour = {t: _task_colour(n, len(task_ids)) for n, t in enumerate(task_ids)}
    bottom = ax.get_xaxis_transform()
    for x, (task, _number, value, state, chosen) in enumerate(rows):
        c = colour[task]
        if value is None:
            ax.plot(x, 0.02, marker="|", markersize=10, color=c, transform=bottom)
            continue
        ax.plot(x, value, marker="x" if state == "PRUNED" else "o", linestyle="", color=c, markersize=6)
        if chosen:
            ax.plot(x, value, marker="*", markersize=16, color=c, markeredgecolor="black", linestyle="")
    starts = [x for x in range(1, len(rows)) if rows[x][0] != rows[x - 1][0]]
    for x in starts:
        ax.axvline(x - 0.5, color="grey", linestyle="--", linewidth=0.8)
    handles = [Line2D([], [], marker="o", linestyle="", color=colour[t], label=f"task {t}") for t in task_ids]
    handles += [
        Line2D([], [], marker="x", linestyle="", color="grey", label="pruned"),
        Line2D([], [], marker="|", linestyle="", color="grey", markersize=10, label="no value (fail)"),
        Line2D(
            [],
            [],
            marker="*",
            linestyle="",
            color="grey",
            markeredgecolor="black",
            markersize=12,
            label="chosen",
        ),
    ]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _task_colour(n: int, count: int) -> tuple[float, ...]:
    """Colour of the ``n``-th of ``count`` tasks: tab10 for up to 10 tasks, else evenly spaced on viridis."""
    if count <= 10:
        return tuple(colormaps["tab10"](n))
    return tuple(colormaps["viridis"](n / (count - 1)))
