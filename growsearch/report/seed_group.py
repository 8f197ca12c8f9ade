"""A group of runs over seeds (`growsearch run ... --seeds 0,1,2`): every summary metric and every task's
accuracy as mean ± sample standard deviation over the seeds, beside each seed's own figure."""

from __future__ import annotations

from growsearch.report import html_page as html
from growsearch.report.compare import METRIC_COLUMNS, RunSummary, mean_std


def group_rows(summaries: list[RunSummary]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows: one row per metric, then per task its accuracy after the last task and when it was
    learnt (the diagonal), over the tasks every member committed."""
    headers = ["", f"mean ± std ({len(summaries)} seeds)", *(f"seed {s.seed}" for s in summaries)]

    def row(label: str, values: list, digits: int = 4) -> list[str]:
        shown = [html.fmt_number(v, digits) if isinstance(v, float) else html.fmt_number(v) for v in values]
        return [label, mean_std(values, digits), *shown]

    rows = [row(label, [s.metrics.get(key) for s in summaries]) for key, label in METRIC_COLUMNS]
    rows.append(row("parameters", [s.parameters[-1] for s in summaries], 0))
    rows.append(row("seconds", [round(s.seconds, 1) for s in summaries], 1))
    tasks = min(s.tasks_committed for s in summaries)
    for task in range(tasks):
        rows.append(
            row(
                f"task {task}: accuracy after task {tasks - 1}",
                [_accuracy(s, tasks - 1, task) for s in summaries],
            )
        )
    for task in range(tasks):
        rows.append(row(f"task {task}: accuracy when learnt", [_accuracy(s, task, task) for s in summaries]))
    return headers, rows


def _accuracy(summary: RunSummary, after: int, task: int) -> float | None:
    value = float(summary.accuracy[after, task])
    return None if value != value else value


def group_section(summaries: list[RunSummary]) -> str:
    """The rows above as a section of the group's report page."""
    headers, rows = group_rows(summaries)
    return html.section("Mean and spread over the seeds", html.table(headers, rows, "seeds"), "seeds")
