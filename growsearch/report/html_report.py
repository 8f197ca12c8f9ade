"""`growsearch report RUN`: the run's figures, metrics.csv and one self-contained report.html.

`write_report(run_path)` reads metrics.json, the committed task records, the Optuna storage and the
committed graphs, and writes into the run folder: accuracy_matrix.png, parameter_growth.png,
trial_history.png, metrics.csv and report.html. The page needs no network: its style is inline and every
figure is embedded (PNG, or the grown graphs as SVG) as a data URI. It shows the config, every metric,
one row per task, the accuracy heat-map, accuracy per task over time, forgetting and backward transfer,
parameter growth, each task's search (trials, objective, pruned, chosen, Pareto front) with its learning
curves (the committed trial's training loss and accuracy and validation accuracy per epoch, from curves.csv,
the other trials faint) and the grown graph after each task, plus the commands that open the run in
optuna-dashboard, TensorBoard and MLflow.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from growsearch.atomic_files import atomic_write_text
from growsearch.errors import RunFolderError
from growsearch.report import html_page as html
from growsearch.report import report_figures as figures
from growsearch.report.inspect import recorded_moves
from growsearch.report.metrics_export import CSV_FILE, write_metrics_csv
from growsearch.report.run_metrics import rebuild_metrics
from growsearch.report.search_history import TaskSearch, task_searches, trials_for_plot
from growsearch.search.loggers import CURVES_FILE, read_curves
from growsearch.store.run_folder import METRICS_FILE, RunFolder
from growsearch.task_record import TaskRecord
from growsearch.train.epoch_stats import EpochStats

REPORT_FILE = "report.html"
log = logging.getLogger("growsearch")
FIGURES = ("accuracy_matrix", "parameter_growth", "trial_history")


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    csv: Path
    figures: list[Path]


def search_gaps(records: list[TaskRecord], searches: list[TaskSearch]) -> list[str]:
    """Committed tasks whose search history the Optuna storage lost (a deleted or truncated journal)."""
    by_task = {s.task: s for s in searches}
    gaps = []
    for record in records:
        task, chosen = record.task, record.chosen_trial
        search = by_task.get(task)
        if search is None:
            gaps.append(f"task {task}'s search history is missing from the Optuna storage")
        elif not any(t.number == chosen and t.state == "COMPLETE" for t in search.trials):
            gaps.append(
                f"task {task}'s search history is incomplete: its committed trial {chosen} is not among "
                f"the {len(search.trials)} trials the storage holds"
            )
    return gaps


def _well_formed(metrics: Any) -> bool:
    """metrics.json's fields have the types the report reads (else it is rebuilt)."""
    if not isinstance(metrics, dict) or not isinstance(metrics.get("metrics"), dict):
        return False
    rows = metrics.get("accuracy")
    numbers = (int, float, type(None))
    return (
        isinstance(metrics.get("n_tasks"), int)
        and isinstance(metrics.get("tasks_committed"), int)
        and isinstance(rows, list)
        and all(isinstance(row, list) and all(isinstance(a, numbers) for a in row) for row in rows)
        and isinstance(metrics.get("parameters"), list)
        and all(isinstance(v, numbers) for v in metrics["metrics"].values() if not isinstance(v, list))
    )


def load_metrics(run: RunFolder) -> dict[str, Any]:
    """metrics.json, rebuilt from the committed records when it is missing, torn or edited."""
    path = run.path / METRICS_FILE
    if not run.committed_tasks():
        raise RunFolderError(f"{run.path} has no committed task yet: there are no metrics to report")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if _well_formed(metrics):
            return metrics
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        pass
    if not os.access(run.path, os.W_OK):  # rebuilding writes it: an archived run is only read
        raise RunFolderError(
            f"{path} is missing or unreadable and {run.path} is read-only, so it cannot be rebuilt there; "
            "report a writable copy of the run folder (cp -r)"
        )
    log.warning("%s was missing or unreadable: rebuilt from the committed tasks' records", path)
    return rebuild_metrics(run)


def accuracy_matrix(metrics: dict[str, Any]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in metrics["accuracy"]], dtype=float)


def open_elsewhere(run: RunFolder, config: dict[str, Any]) -> list[tuple[str, str]]:
    """(tool, command) pairs that open this run's search in other tools, as they are."""
    storage = config["space"]["search"].get("storage", "sqlite")
    target = run.path / ("study.journal" if storage == "journal" else "study.db")
    url = str(target) if storage == "journal" else f"sqlite:///{target}"
    commands = [("Optuna dashboard", f"pip install optuna-dashboard && optuna-dashboard {url}")]
    ray = run.path / "ray"
    if ray.is_dir() or config["run"].get("backend") == "ray":
        commands.append(
            ("TensorBoard (Ray Tune results)", f"pip install tensorboard && tensorboard --logdir {ray}")
        )
    curves = run.path / "tensorboard"  # --logger tensorboard
    if curves.is_dir():
        commands.append(("TensorBoard (curves)", f"pip install tensorboard && tensorboard --logdir {curves}"))
    store = run.path / "mlruns" / "mlflow.db"  # --logger mlflow (the UI is in mlflow, not mlflow-skinny)
    if store.is_file():
        commands.append(("MLflow", f"pip install mlflow && mlflow ui --backend-store-uri sqlite:///{store}"))
    return commands


def _metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    from growsearch.report.metrics import Metrics, metrics_table

    fields = {
        k: (
            tuple(np.nan if x is None else x for x in v)
            if isinstance(v, list)
            else (np.nan if v is None else v)
        )
        for k, v in metrics["metrics"].items()
    }
    return metrics_table(Metrics(**fields))


def _task_table(records: list[TaskRecord]) -> tuple[tuple[str, ...], list[tuple[object, ...]]]:
    """The tasks table: a row per committed task, with its growth move where the run records one."""
    moves = recorded_moves(records)
    headers = (*TASK_HEADERS[:3], "move", *TASK_HEADERS[3:]) if moves else TASK_HEADERS
    rows, previous = [], 0
    for record in records:
        task = record.task
        seen = record.accuracy_row[: task + 1]
        trials = record.trials
        move = (moves.get(task, ""),) if moves else ()
        rows.append(
            (
                f"task {task}",
                ", ".join(str(c) for c in record.classes),
                record.chosen_trial,
                *move,
                ", ".join(f"{k}={v}" for k, v in record.decisions.items()) or "-",
                html.fmt_number(record.val_accuracy, 3),
                " ".join(f"{a:.3f}" for a in seen),
                html.fmt_number(float(np.mean(seen)), 3),
                record.parameters,
                record.parameters - previous,
                "" if record.view_parameters is None else record.view_parameters,
                _kept(record),
                _train_macs(record),
                f"{trials.get('complete', 0)}/{trials.get('pruned', 0)}/{trials.get('fail', 0)}",
                html.fmt_number(record.seconds, 1),
            )
        )
        previous = record.parameters
    return headers, rows


TASK_HEADERS = (
    "task",
    "classes",
    "chosen trial",
    "decisions",
    "val acc",
    "test acc on tasks 0..i",
    "mean",
    "parameters",
    "added",
    "in view",
    "kept whole (parts; memory)",
    "train MACs (task inference's)",
    "complete/pruned/failed",
    "seconds",
)


def _train_macs(record: TaskRecord) -> str:
    """The task's training compute, and the share of it that trained the task inference."""
    if not record.inference_macs:
        return f"{record.train_macs:,}"
    return f"{record.train_macs:,} (task inference {record.inference_macs:,})"


def _kept(record: TaskRecord) -> str:
    """Everything the run keeps to answer after the task, its parts and its exemplar memory."""
    kept = record.kept
    if not kept:
        return ""
    names = ("weights", "state", "gates", "mask_bits", "owner_bits", "task_inference")
    parts = ", ".join(
        f"{name.removesuffix('_bits').replace('_', ' ')} {kept[name]:,}{' bits' * name.endswith('_bits')}"
        for name in names
        if kept.get(name)
    )
    memory = kept.get("memory") or {}
    held = f"; {memory['samples']:,} samples, {memory['bytes']:,} bytes" if memory.get("samples") else ""
    return f"{kept['kept_parameters']:,} ({parts}{held})"


def _objective(value: float | None) -> str:
    """Accuracy with 4 decimals; counts (parameters, MACs as objectives) as integers."""
    if value is not None and value == value and float(value).is_integer() and abs(value) >= 2:
        return f"{int(value):,}"
    return html.fmt_number(value)


def _search_section(
    search: TaskSearch, chosen: int | None = None, curves: Mapping[int, list[EpochStats]] | None = None
) -> str:
    """A task's search: its trials as a figure and a table, and its learning curves (`curves`: curves.csv's
    epochs of its trials) with the committed trial `chosen` (None: none yet) bold."""
    objectives = ", ".join(f"{o} ({d})" for o, d in zip(search.objectives, search.directions, strict=True))
    summary = (
        f"<p>{len(search.trials)} trials: {search.count('COMPLETE')} complete, "
        f"{search.count('PRUNED')} pruned, {search.count('FAIL')} failed; "
        f"objective: {html.esc(objectives)}.</p>"
    )
    disagreement = search.optuna_disagreement()
    if disagreement:
        summary += f"<p>{html.esc(disagreement)}.</p>"
    headers = (
        "trial",
        "state",
        *search.objectives,
        "decisions",
        "added params",
        "MACs spent",
        "epochs reported",
        "",
    )
    rows = []
    for t in search.trials:
        values = t.values or (None,) * len(search.objectives)
        mark = "chosen" if t.chosen else ""
        if search.multi_objective and t.pareto:
            mark = (mark + " pareto").strip()
        rows.append(
            (
                t.number,
                t.state.lower(),
                *(_objective(v) for v in values),
                ", ".join(f"{k}={v}" for k, v in t.params.items()) or "-",
                html.fmt_number(t.record.added_parameters if t.record else None),
                html.fmt_number(t.spent_macs or None),
                t.epochs_reported,
                mark,
            )
        )
    figure = html.figure(
        figures.search_figure(search), "png", f"task {search.task}'s search", f"search-{search.task}"
    )
    caption = f"task {search.task}'s learning curves" + (
        "" if chosen is None else f" (committed trial {chosen})"
    )
    figure += html.figure(
        figures.curves_figure(search.task, chosen, curves or {}), "png", caption, f"curves-{search.task}"
    )
    trials = html.table(headers, rows, f"trials-{search.task}", text_columns=2)
    body = f'{summary}<div class="grid">{figure}<div>{trials}</div></div>'

    return f'<div id="search-task-{search.task}"><h3>Task {search.task}</h3>{body}</div>'


MAX_LISTED = 12  # items of a list shown in the mechanism table before "... (N in all)"


def _shown(value: Any) -> str:
    """A mechanism value in a table cell: numbers rounded, long lists cut."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_shown(v)}" for k, v in value.items())
    if isinstance(value, list):
        shown = ", ".join(_shown(v) for v in value[:MAX_LISTED])
        return shown + (f", ... ({len(value)} in all)" if len(value) > MAX_LISTED else "")
    return str(value)


def _task_inference_section(metrics: dict[str, Any]) -> list[str]:
    """A class-IL run that infers the task: per task, after the last committed task, the share of its test
    samples the gate routed to it, its class-IL accuracy and its task-IL accuracy (the task given)."""
    routed = metrics.get("task_inference_accuracy")
    if not routed:
        return []
    last = metrics["tasks_committed"] - 1
    rows = [
        (
            j,
            _rate(routed[last][j]),
            _rate(metrics["accuracy"][last][j]),
            _rate(metrics["task_il_accuracy"][last][j]),
        )
        for j in range(last + 1)
    ]
    headers = ("task", "routed to it", "class-IL accuracy", "task-IL accuracy")
    kind = metrics.get("task_inference")
    how = {
        "expert-gate": "ExpertGate's gate, an autoencoder per task, routes each sample to the task whose "
        "autoencoder reconstructs it best",
        "task-classifier": "a task classifier, trained as each task is learnt on its samples and an exemplar "
        "memory of the earlier tasks', routes each sample to its most likely task",
    }.get(str(kind), "the method routes each sample itself")
    inferred = f"The task of a test sample is inferred ({html.esc(str(kind))}): {html.esc(how)}."
    note = f"<p>{inferred} After the last committed task:</p>"
    return [html.section("Task inference", note + html.table(headers, rows, "task-inference"), "inference")]


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _mechanism_section(records: list[TaskRecord]) -> str:
    """Per task, what the method's mechanism did (the record's `mechanism`: units selected, weights
    pruned, modules reused, architecture weights, rewards, ...)."""
    parts = []
    for record in records:
        mechanism = record.mechanism
        rows = [(key, _shown(value)) for key, value in mechanism.items()]
        table = html.table(("", ""), rows, f"mechanism-{record.task}", text_columns=2) if rows else ""
        parts.append(f"<h3>Task {record.task}</h3>{table or '<p>nothing recorded</p>'}")
    return "".join(parts)


def _tasks_html(records: list[TaskRecord]) -> str:
    headers, rows = _task_table(records)
    text = 5 if "move" in headers else 4  # task, classes, chosen trial, (move,) decisions
    return html.table(headers, rows, "tasks", text_columns=text)


def _graph_section(run: RunFolder, records: list[TaskRecord], engine: str) -> str:
    from growsearch.report.graph.picture import graph_picture
    from growsearch.report.graph.render import render_picture

    parts, moves = [], recorded_moves(records)
    for task in (r.task for r in records):
        graph, _ = run.read_task(task)  # described, never trained: no torch
        picture = graph_picture(graph, task, moves={t: m for t, m in moves.items() if t <= task})
        title = f"after task {task}: {picture.total_parameters:,} parameters, task {task}'s path highlighted"
        parts.append(html.figure(render_picture(picture, "svg", engine), "svg", title, f"graph-{task}"))
    return "".join(parts)


def write_report(
    run_path: Path, engine: str = "auto", formats: tuple[str, ...] = ("png",), output: Path | None = None
) -> ReportFiles:
    """Write the figures (PNG, and SVG or PDF too when asked), metrics.csv and report.html into `output`
    (None: the run folder; a read-only run is read, never written); return their paths."""
    from growsearch.report.plots import plot_accuracy_matrix, plot_parameter_growth, plot_trial_history

    run = RunFolder.open(run_path)
    folder = Path(output) if output is not None else run.path
    folder.mkdir(parents=True, exist_ok=True)
    metrics = load_metrics(run)
    config = run.config()
    records = run.records()
    searches = task_searches(run)
    gaps = search_gaps(records, searches)
    for gap in gaps:
        log.warning(gap)
    matrix = accuracy_matrix(metrics)
    done = int(metrics["tasks_committed"])
    parameters = np.array(metrics["parameters"], dtype=float)
    added = np.diff(parameters, prepend=0.0)
    history = trials_for_plot(searches)
    curves, chosen = read_curves(run.path), {r.task: r.chosen_trial for r in records}
    written = []
    for kind in dict.fromkeys(("png", *formats)):  # the page embeds the PNGs
        written += [
            plot_accuracy_matrix(matrix, folder / f"{FIGURES[0]}.{kind}"),
            plot_parameter_growth(parameters, folder / f"{FIGURES[1]}.{kind}", per_task_added=added),
            plot_trial_history(history, folder / f"{FIGURES[2]}.{kind}"),
        ]
    pngs = written[:3]
    csv_path = write_metrics_csv(metrics, folder / CSV_FILE)
    space = config["space"]
    title = f"growsearch report: {run.path.name} ({space['method']} on {config['run']['benchmark']})"
    overview = html.table(
        ("", ""),
        [
            ("method", f"{space['method']}: {space.get('paper', '')}"),
            ("benchmark", config["run"]["benchmark"]),
            ("scenario", config["run"].get("scenario") or space.get("benchmark", {}).get("scenario", "")),
            ("tasks committed", f"{done} of {metrics['n_tasks']}"),
            ("parameters after the last task", f"{int(parameters[-1]):,}"),
            ("seed", config["run"].get("seed")),
        ],
        "overview",
        text_columns=2,
    )
    figure_list = [
        html.figure(pngs[0].read_bytes(), "png", "accuracy matrix a[i][j]", "accuracy-matrix"),
        html.figure(
            figures.accuracy_over_time(matrix, done), "png", "accuracy per task over time", "accuracy-time"
        ),
        html.figure(
            figures.forgetting_and_bwt(matrix, done), "png", "forgetting and BWT per task", "forgetting"
        ),
        html.figure(
            figures.summary_bars({run.path.name: metrics["metrics"]}),
            "png",
            "A_T, A, F, FWT, BWT, MS, CE",
            "summary",
        ),
        html.figure(
            pngs[1].read_bytes(), "png", "parameters per task against the number of tasks", "parameters"
        ),
        html.figure(pngs[2].read_bytes(), "png", "every trial of every task's search", "trials"),
    ]
    elsewhere = "".join(
        f"<p>{html.esc(tool)}:</p><pre>{html.esc(command)}</pre>"
        for tool, command in open_elsewhere(run, config)
    )
    body = [
        html.section("Run", overview, "run"),
        html.section(
            "Metrics", html.table(("metric", "value"), _metric_rows(metrics), "metrics"), "metrics-section"
        ),
        html.section("Tasks", _tasks_html(records), "tasks-section"),
        *_task_inference_section(metrics),
        html.section("Mechanism per task", _mechanism_section(records), "mechanism"),
        html.section("Figures", f'<div class="grid">{"".join(figure_list)}</div>', "figures"),
        html.section(
            "Search per task",
            "".join(f'<p class="warning">{html.esc(gap)}.</p>' for gap in gaps)
            + "".join(_search_section(s, chosen.get(s.task), curves.get(s.task, {})) for s in searches),
            "search",
        ),
        html.section("Grown graph per task", _graph_section(run, records, engine), "graphs"),
        html.section("Config", f"<pre>{html.esc(yaml.safe_dump(config, sort_keys=False))}</pre>", "config"),
        html.section(
            "Open elsewhere",
            elsewhere
            + f"<p>Data for notebooks: {METRICS_FILE}, {CSV_FILE} and {CURVES_FILE} in the run folder.</p>",
            "elsewhere",
        ),
    ]
    report = atomic_write_text(folder / REPORT_FILE, html.page(title, body))
    return ReportFiles(html=report, csv=csv_path, figures=written)
