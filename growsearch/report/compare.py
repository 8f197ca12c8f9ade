"""`growsearch compare RUN_A RUN_B ...`: several runs side by side (method vs method on one benchmark).

`load_summaries` reads each run's config, metrics.json and committed records; `compare_rows` gives the
table (one row per run, labelled by its name and seed: method, benchmark, tasks, every summary metric,
final parameters, seconds; then, for a method run with several seeds on one benchmark, a row of
mean ± standard deviation over those runs);
`write_compare` writes a self-contained HTML page (the table, average accuracy and parameters against the
number of tasks, the summary metrics as bars, each run's accuracy matrix) and the table as CSV beside it.
"""

from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from growsearch.atomic_files import atomic_write_text
from growsearch.errors import ConfigError
from growsearch.report import html_page as html
from growsearch.report import report_figures as figures
from growsearch.report.html_report import accuracy_matrix, load_metrics
from growsearch.store.run_folder import RunFolder

METRIC_COLUMNS = (
    ("average_accuracy", "A_T"),
    ("accuracy_whole_run", "A"),
    ("forgetting", "F_T"),
    ("fwt_baseline", "FWT"),  # eq. 10 against the random-init baseline
    ("bwt", "BWT"),
    ("model_size_efficiency", "MS"),
    ("computational_efficiency", "CE"),
)


@dataclass(frozen=True)
class RunSummary:
    name: str
    path: Path
    method: str
    benchmark: str
    scenario: str
    n_tasks: int
    tasks_committed: int
    metrics: dict[str, Any]
    accuracy: np.ndarray
    parameters: list[int]
    seconds: float
    seed: int = 0

    @property
    def label(self) -> str:
        return f"{self.name} (seed {self.seed})"

    @property
    def group(self) -> tuple[str, str, str, int]:
        """Runs of one method on one benchmark: the seeds a mean and deviation aggregate."""
        return (self.method, self.benchmark, self.scenario, self.n_tasks)

    @property
    def accuracy_so_far(self) -> list[float]:
        """Average accuracy on tasks 0..i after training task i, for each committed task i."""
        return [float(np.mean(self.accuracy[i, : i + 1])) for i in range(self.tasks_committed)]


def _unique_names(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]


def load_summaries(paths: list[Path]) -> list[RunSummary]:
    if len(paths) < 2:
        raise ConfigError(f"compare needs two or more run folders, got {len(paths)}")
    summaries = []
    for path, name in zip(paths, _unique_names([Path(p) for p in paths]), strict=True):
        run = RunFolder.open(path)
        metrics = load_metrics(run)
        config = run.config()
        records = run.records()
        space = config["space"]
        summaries.append(
            RunSummary(
                name=name,
                path=run.path,
                method=space["method"],
                benchmark=config["run"]["benchmark"],
                scenario=config["run"].get("scenario") or space.get("benchmark", {}).get("scenario", ""),
                n_tasks=int(metrics["n_tasks"]),
                tasks_committed=int(metrics["tasks_committed"]),
                metrics=metrics["metrics"],
                accuracy=accuracy_matrix(metrics),
                parameters=[int(p) for p in metrics["parameters"]],
                seconds=float(sum(r.seconds or 0.0 for r in records)),
                seed=int(config["run"].get("seed", 0)),
            )
        )
    return summaries


def mean_std(values: list[float | None], digits: int = 4) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return "n/a"
    return f"{np.mean(known):,.{digits}f} ± {np.std(known, ddof=1) if len(known) > 1 else 0.0:,.{digits}f}"


def seed_groups(summaries: list[RunSummary]) -> dict[tuple[str, str, str, int], list[RunSummary]]:
    """The groups of two or more runs of one method on one benchmark (seeds to aggregate)."""
    groups: dict[tuple[str, str, str, int], list[RunSummary]] = {}
    for s in summaries:
        groups.setdefault(s.group, []).append(s)
    return {key: runs for key, runs in groups.items() if len(runs) > 1}


def compare_rows(summaries: list[RunSummary]) -> tuple[list[str], list[list[object]]]:
    """Headers, one row per run (labelled by name and seed), and a mean ± std row per group of seeds."""
    headers = ["run", "method", "benchmark", "scenario", "tasks"]
    headers += [label for _, label in METRIC_COLUMNS] + ["parameters", "seconds"]
    rows = []
    for s in summaries:
        rows.append(
            [s.label, s.method, s.benchmark, s.scenario, f"{s.tasks_committed}/{s.n_tasks}"]
            + [html.fmt_number(s.metrics.get(key)) for key, _ in METRIC_COLUMNS]
            + [f"{s.parameters[-1]:,}", f"{s.seconds:.1f}"]
        )
    for (method, benchmark, scenario, n_tasks), runs in seed_groups(summaries).items():
        seeds = ", ".join(str(r.seed) for r in runs)
        rows.append(
            [f"{method}: mean ± std of {len(runs)} runs (seeds {seeds})", method, benchmark, scenario]
            + [f"{min(r.tasks_committed for r in runs)}/{n_tasks}"]
            + [mean_std([r.metrics.get(key) for r in runs]) for key, _ in METRIC_COLUMNS]
            + [mean_std([r.parameters[-1] for r in runs], 0), mean_std([r.seconds for r in runs], 1)]
        )
    return headers, rows


def compare_csv(summaries: list[RunSummary]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["run", "path", "seed", "method", "benchmark", "scenario", "tasks_committed", "n_tasks"]
        + [key for key, _ in METRIC_COLUMNS]
        + ["parameters", "seconds"]
    )
    for s in summaries:
        metrics = ["" if s.metrics.get(key) is None else s.metrics[key] for key, _ in METRIC_COLUMNS]
        writer.writerow(
            [s.name, s.path, s.seed, s.method, s.benchmark, s.scenario, s.tasks_committed, s.n_tasks]
            + metrics
            + [s.parameters[-1], round(s.seconds, 3)]
        )
    return buffer.getvalue()


def _matrix_figures(summaries: list[RunSummary]) -> list[str]:
    from growsearch.report.plots import plot_accuracy_matrix

    parts = []
    with tempfile.TemporaryDirectory() as folder:
        for index, s in enumerate(summaries):
            path = plot_accuracy_matrix(s.accuracy, Path(folder) / f"{index}.png", title=s.label)
            parts.append(
                html.figure(path.read_bytes(), "png", f"accuracy matrix of {s.label}", f"matrix-{index}")
            )
    return parts


def write_compare(
    summaries: list[RunSummary], output: Path, sections: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """Write the comparison page to `output` (`sections`, HTML, after its table) and its table to `output`
    with the suffix .csv."""
    output = Path(output)
    headers, rows = compare_rows(summaries)
    benchmarks = sorted({(s.benchmark, s.scenario, s.n_tasks) for s in summaries})
    note = ""
    if len(benchmarks) > 1:
        listed = "; ".join(f"{b} ({sc}, {n} tasks)" for b, sc, n in benchmarks)
        note = f'<p class="muted">Note: these runs are not on one benchmark: {html.esc(listed)}.</p>'
    plots = [
        html.figure(
            figures.parameter_lines(
                {s.label: s.accuracy_so_far for s in summaries},
                "Average accuracy on the tasks seen so far",
                "accuracy",
            ),
            "png",
            "average accuracy on tasks 0..i after task i",
            "accuracy-so-far",
        ),
        html.figure(
            figures.parameter_lines(
                {s.label: s.parameters for s in summaries}, "Parameters after each task", "parameters"
            ),
            "png",
            "parameters against the number of tasks",
            "parameters",
        ),
        html.figure(
            figures.summary_bars({s.label: s.metrics for s in summaries}),
            "png",
            "summary metrics side by side",
            "summary",
        ),
    ]
    title = "growsearch compare: " + ", ".join(s.label for s in summaries)
    body = [
        html.section("Runs", note + html.table(headers, rows, "compare", text_columns=5), "runs"),
        *sections,
        html.section("Plots", f'<div class="grid">{"".join(plots)}</div>', "plots"),
        html.section(
            "Accuracy matrices", f'<div class="grid">{"".join(_matrix_figures(summaries))}</div>', "matrices"
        ),
    ]
    html_path = atomic_write_text(output, html.page(title, body))
    csv_path = atomic_write_text(output.with_suffix(".csv"), compare_csv(summaries))
    return html_path, csv_path
