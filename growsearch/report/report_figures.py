"""The report's figures beyond `plots.py`, returned as PNG bytes for embedding in HTML.

Accuracy on each task over the run, forgetting and backward transfer per task, the summary metrics as bars,
and one task's search: objective per trial (pruned, failed and chosen trials marked, the best so far as a
line) or, for a multi-objective search, the first two objectives against each other with the Pareto front;
and its learning curves, the committed trial's against the others'.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from growsearch.report.plots import DPI
from growsearch.report.search_history import TaskSearch
from growsearch.train.epoch_stats import EpochStats

SUMMARY_METRICS = (
    ("average_accuracy", "A_T"),
    ("accuracy_whole_run", "A"),
    ("forgetting", "F_T"),
    ("fwt_baseline", "FWT"),  # eq. 10 against the random-init baseline
    ("bwt", "BWT"),
    ("model_size_efficiency", "MS"),
    ("computational_efficiency", "CE"),
)


def series_colour(n: int, count: int) -> tuple[float, ...]:
    """tab10 for up to 10 series (tasks, runs), else evenly spaced on viridis (as `plots.py` does)."""
    return tuple(colormaps["tab10"](n) if count <= 10 else colormaps["viridis"](n / (count - 1)))


def new_figure(size: tuple[float, float] = (8.0, 4.5)) -> Figure:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def accuracy_over_time(accuracy: np.ndarray, tasks_done: int) -> bytes:
    """Accuracy on each task j after each task i: solid once j is trained, dotted before (a fresh head)."""
    fig = new_figure()
    ax = fig.add_subplot()
    n = accuracy.shape[0]
    steps = np.arange(tasks_done)
    for j in range(n):
        column = accuracy[:tasks_done, j]
        colour = series_colour(j, n)
        if j < tasks_done:
            ax.plot(steps[j:], column[j:], marker="o", color=colour, label=f"task {j}")
        if j > 0:
            before = steps[: min(j + 1, tasks_done)]
            ax.plot(before, column[: len(before)], linestyle=":", color=colour, alpha=0.6)
    ax.set_xlabel("after training task i")
    ax.set_ylabel("test accuracy on task j")
    ax.set_xticks(steps)
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.set_title("Accuracy per task over the run (dotted: before the task is trained)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return png_bytes(fig)


def forgetting_and_bwt(accuracy: np.ndarray, tasks_done: int) -> bytes:
    """Per task j < T-1: forgetting max_l a[l][j] - a[T-1][j] and backward transfer a[T-1][j] - a[j][j]."""
    fig = new_figure()
    ax = fig.add_subplot()
    a = accuracy[:tasks_done, :tasks_done]
    last = tasks_done - 1
    tasks = np.arange(max(last, 0))
    if last < 1:
        ax.text(0.5, 0.5, "one task: nothing to forget yet", ha="center", va="center", transform=ax.transAxes)
    else:
        forgetting = [np.nanmax(a[:last, j]) - a[last, j] for j in tasks]
        bwt = [a[last, j] - a[j, j] for j in tasks]
        ax.bar(tasks - 0.2, forgetting, width=0.4, color="tab:red", label="forgetting f_j")
        ax.bar(tasks + 0.2, bwt, width=0.4, color="tab:blue", label="backward transfer a[T-1][j] - a[j][j]")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(tasks)
        ax.legend(fontsize=8)
    ax.set_xlabel("task j")
    ax.set_ylabel("accuracy difference")
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title(f"Forgetting and backward transfer per task, after task {last}")
    return png_bytes(fig)


def summary_bars(runs: Mapping[str, Mapping[str, float | None]]) -> bytes:
    """The summary metrics of one or several runs as grouped bars (missing metrics left out)."""
    fig = new_figure((8.0 if len(runs) <= 3 else 11.0, 4.5))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(runs))
    x = np.arange(len(SUMMARY_METRICS))
    for index, (name, metrics) in enumerate(runs.items()):
        values = [metrics.get(key) for key, _ in SUMMARY_METRICS]
        heights = [math.nan if v is None else float(v) for v in values]
        offset = (index - (len(runs) - 1) / 2) * width
        ax.bar(x + offset, heights, width=width, label=name, color=series_colour(index, len(runs)))
        for position, height in zip(x + offset, heights, strict=True):
            if math.isnan(height):
                ax.text(position, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.set_xticks(x, [label for _, label in SUMMARY_METRICS])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title("Summary metrics")
    if len(runs) > 1:
        ax.legend(fontsize=8)
    return png_bytes(fig)


def _decision_label(params: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def search_figure(search: TaskSearch) -> bytes:
    """One task's trials: objective per trial, or the first two objectives with the Pareto front."""
    fig = new_figure((7.0, 3.6))
    ax = fig.add_subplot()
    if search.multi_objective:
        _pareto_plot(ax, search)
    else:
        _objective_plot(ax, search)
    return png_bytes(fig)


def _objective_plot(ax, search: TaskSearch) -> None:
    maximize = search.directions[0] == "maximize"
    best: list[float] = []
    xs: list[int] = []
    for trial in search.trials:
        if not trial.values:
            ax.plot(
                trial.number,
                0.02,
                marker="|",
                markersize=12,
                color="grey",
                transform=ax.get_xaxis_transform(),
            )
            continue
        value = trial.values[0]
        marker = "x" if trial.state == "PRUNED" else "o"
        ax.plot(trial.number, value, marker=marker, color="tab:blue", linestyle="")
        if trial.chosen:
            ax.plot(trial.number, value, marker="*", markersize=16, color="gold", markeredgecolor="black")
        if trial.state == "COMPLETE":
            previous = best[-1] if best else value
            best.append(max(previous, value) if maximize else min(previous, value))
            xs.append(trial.number)
    if xs:
        ax.step(xs, best, where="post", color="tab:green", alpha=0.6, label="best so far")
        ax.legend(fontsize=8, loc="lower right")
    numbers = [t.number for t in search.trials]
    if len(search.trials) <= 8:  # few trials: each tick names the trial's decisions
        ax.set_xticks(
            numbers, [f"{t.number}\n{_decision_label(t.params)}" for t in search.trials], fontsize=7
        )
    else:  # many: integer ticks matplotlib spaces so the labels never overlap
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=12))
        ax.tick_params(axis="x", labelsize=8)
    ax.set_xlabel("trial (o complete, x pruned, | failed, * chosen)")
    ax.set_ylabel(search.objectives[0])
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Task {search.task}: {len(search.trials)} trials")


def curves_figure(task: int, chosen: int | None, trials: Mapping[int, Sequence[EpochStats]]) -> bytes:
    """One task's learning curves per epoch (curves.csv's rows, `trials`: trial -> epochs): the committed
    trial `chosen` bold, its validation and training accuracy and its training loss; every other trial's
    validation accuracy and training loss faint."""
    fig = new_figure((7.0, 3.6))
    accuracy, loss = fig.subplots(1, 2)
    others = [n for n in trials if n != chosen]
    for index, number in enumerate(others):
        epochs = [e.epoch + 1 for e in trials[number]]
        faint = {"color": "grey", "alpha": 0.3}
        label = "other trials (validation)" if index == 0 else None
        accuracy.plot(epochs, [_value(e.val_accuracy) for e in trials[number]], label=label, **faint)
        loss.plot(epochs, [e.train_loss for e in trials[number]], **faint)
    committed = trials.get(chosen, [])
    if committed:
        epochs = [e.epoch + 1 for e in committed]
        bold = {"linewidth": 2.5, "zorder": 3, "marker": "o", "markersize": 3}
        accuracy.plot(
            epochs, [_value(e.val_accuracy) for e in committed], color="tab:blue", label="validation", **bold
        )
        accuracy.plot(
            epochs,
            [_value(e.train_accuracy) for e in committed],
            color="tab:orange",
            linestyle="--",
            label="training",
            **bold,
        )
        loss.plot(epochs, [e.train_loss for e in committed], color="black", **bold)
    if trials:
        accuracy.legend(fontsize=8, loc="best")
    for ax, name in ((accuracy, "accuracy"), (loss, "training loss")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    if chosen is None:
        title = f"Task {task}: no trial committed yet"
    elif committed:
        title = f"Task {task}: trial {chosen} committed" + (
            f", {len(others)} other trials faint" if others else ""
        )
    else:
        title = f"Task {task}: curves.csv holds no epoch of trial {chosen}"
    fig.suptitle(title, fontsize=10)
    return png_bytes(fig)


def _value(value: float | None) -> float:
    return math.nan if value is None else value


def _pareto_plot(ax, search: TaskSearch) -> None:
    points = [(t.values[0], t.values[1], t) for t in search.trials if t.values and len(t.values) > 1]
    for x, y, trial in points:
        colour = "tab:red" if trial.pareto else "tab:blue"
        ax.plot(x, y, marker="x" if trial.state == "PRUNED" else "o", color=colour, linestyle="")
        if trial.chosen:
            ax.plot(x, y, marker="*", markersize=16, color="gold", markeredgecolor="black")
        ax.annotate(str(trial.number), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted((x, y) for x, y, t in points if t.pareto)
    if front:
        ax.plot(*zip(*front, strict=True), color="tab:red", linewidth=1, label="Pareto front")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"{search.objectives[0]} ({search.directions[0]})")
    ax.set_ylabel(f"{search.objectives[1]} ({search.directions[1]})")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"Task {search.task}: {len(search.trials)} trials, Pareto front in red, * chosen")


def parameter_lines(runs: Mapping[str, Sequence[float]], title: str, ylabel: str) -> bytes:
    """One line per run of a per-task series (parameters, accuracy so far) against the number of tasks."""
    fig = new_figure()
    ax = fig.add_subplot()
    for index, (name, series) in enumerate(runs.items()):
        values = np.array(series, dtype=float)
        ax.plot(
            np.arange(1, len(values) + 1),
            values,
            marker="o",
            label=name,
            color=series_colour(index, len(runs)),
        )
    ax.set_xlabel("number of tasks learned")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return png_bytes(fig)
