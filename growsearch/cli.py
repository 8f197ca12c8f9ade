"""The `growsearch` command: run, resume, inspect, report, list.

Errors a user can cause are printed as one line naming what was wrong, with exit code 2; an interrupted
run (Ctrl-C) says how to resume it and exits 130. Nothing already written is lost either way.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
import optuna
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from growsearch.errors import GrowsearchError

app = typer.Typer(add_completion=False, no_args_is_help=False, help=__doc__.split("\n")[0])
console = Console()
errors = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except GrowsearchError as error:
            errors.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            run = kwargs.get("run_path") or kwargs.get("name")
            hint = f" Resume with: growsearch resume {run}" if run else ""
            errors.print(f"interrupted; everything committed so far is kept.{hint}")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


class ProgressReporter:
    """Progress bars for tasks and for the trials of the current task."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.tasks_bar: Any = None
        self.trials_bar: Any = None

    def task_started(self, task: int, n_tasks: int, n_trials: int, done: int) -> None:
        if self.tasks_bar is None:
            self.tasks_bar = self.progress.add_task("tasks", total=n_tasks, completed=task)
        if self.trials_bar is not None:
            self.progress.remove_task(self.trials_bar)
        self.trials_bar = self.progress.add_task(f"task {task} trials", total=n_trials, completed=done)

    def trial_finished(self, task: int, trial: optuna.trial.FrozenTrial) -> None:
        self.progress.advance(self.trials_bar)
        value = "" if trial.value is None else f" val acc {trial.value:.3f}"
        params = ", ".join(f"{k}={v}" for k, v in trial.params.items())
        self.progress.console.print(
            f"  task {task} trial {trial.number}: {trial.state.name.lower()}{value} {params}"
        )

    def task_committed(self, task: int, record: dict[str, Any]) -> None:
        self.progress.advance(self.tasks_bar)
        row = record["accuracy_row"][: task + 1]
        self.progress.console.print(
            f"[bold]task {task} committed[/]: trial {record['chosen_trial']} {record['decisions']}, "
            f"{record['parameters']:,} parameters, test accuracy on tasks 0..{task}: "
            + " ".join(f"{a:.3f}" for a in row)
        )


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _print_summary(result: Any) -> None:
    from growsearch.report.metrics import Metrics, metrics_table

    metrics = result.metrics.get("metrics")
    if not metrics:
        return
    table = Table(title=f"metrics of {result.path}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    fields = {
        k: (tuple(v) if isinstance(v, list) else (float("nan") if v is None else v))
        for k, v in metrics.items()
    }
    for name, value in metrics_table(Metrics(**fields)):
        table.add_row(name, value)
    console.print(table)
    console.print(f"run folder: {result.path}  (inspect: growsearch inspect {result.path} --task 0)")


@app.command()
@friendly_errors
def run(
    space: Annotated[str, typer.Argument(help="search-space YAML, or a method name")] = "mntdp-d",
    benchmark: Annotated[str | None, typer.Option(help="benchmark name (see `growsearch list`)")] = None,
    scenario: Annotated[
        str | None, typer.Option(help="task-il, domain-il, class-il or task-agnostic")
    ] = None,
    tasks: Annotated[int | None, typer.Option(help="number of tasks in the stream")] = None,
    max_per_task: Annotated[int | None, typer.Option(help="cap each task's training split")] = None,
    data_root: Annotated[str | None, typer.Option(help="folder of datasets in their standard layout")] = None,
    download: Annotated[bool, typer.Option(help="fetch a missing dataset into --data-root")] = False,
    seed: int = 0,
    backend: Annotated[str, typer.Option(help="where trials run: optuna (this process) or ray")] = "optuna",
    address: Annotated[
        str | None,
        typer.Option(help="ray backend: cluster address, e.g. auto (default: $RAY_ADDRESS or local)"),
    ] = None,
    shared_fs: Annotated[
        bool,
        typer.Option(help="ray backend: the run folder is on a filesystem every node of the cluster sees"),
    ] = False,
    name: Annotated[str | None, typer.Option(help="run folder name under --runs-dir")] = None,
    runs_dir: Path = Path("runs"),
) -> None:
    """Run a growth search over a task stream (default: MNTDP-D on split digits)."""
    from growsearch.runner import RunOptions, default_run_name, start_run
    from growsearch.search.space import load_space

    loaded = load_space(space)
    defaults = loaded.benchmark
    options = RunOptions(
        benchmark=benchmark or defaults.name,
        scenario=scenario or defaults.scenario,
        n_tasks=tasks or defaults.n_tasks,
        max_per_task=max_per_task or defaults.max_per_task,
        data_root=str(Path(data_root).expanduser().resolve()) if data_root else None,
        download=download,
        seed=seed,
        backend=backend,
        address=address,
        shared_fs=shared_fs,
    )
    path = runs_dir / (name or default_run_name(loaded, options))
    console.print(f"growsearch: {loaded.method} on {options.benchmark} ({loaded.source}), run folder {path}")
    try:
        with _progress() as progress:
            result = start_run(loaded, options, path, ProgressReporter(progress))
    except KeyboardInterrupt:
        errors.print(
            f"interrupted; everything committed so far is kept. Resume with: growsearch resume {path}"
        )
        raise typer.Exit(130) from None
    _print_summary(result)


@app.command()
@friendly_errors
def resume(
    run_path: Annotated[Path, typer.Argument(help="the run folder to continue")],
    address: Annotated[str | None, typer.Option(help="ray backend: the cluster to continue on")] = None,
) -> None:
    """Continue an interrupted run: committed tasks and finished trials are not redone."""
    from growsearch.runner import resume_run

    with _progress() as progress:
        result = resume_run(run_path, ProgressReporter(progress), address=address)
    _print_summary(result)


def _committed_graph(run_path: Path, task: int | None) -> tuple[Any, int]:
    from growsearch.errors import RunFolderError
    from growsearch.search.run_folder import RunFolder

    run = RunFolder.open(run_path)
    committed = run.committed_tasks()
    if not committed:
        raise RunFolderError(f"{run_path} has no committed task yet")
    task = committed[-1] if task is None else task
    if task not in committed:
        raise RunFolderError(f"task {task} is not committed in {run_path}; committed: {committed}")
    graph, _ = run.load_task(task)
    return graph, task


@app.command()
@friendly_errors
def inspect(
    run_path: Annotated[Path, typer.Argument(help="a run folder")],
    task: Annotated[
        int | None, typer.Option(help="show the graph committed after this task, as it sees it")
    ] = None,
    format: Annotated[str, typer.Option(help="text or dot")] = "text",
    output: Annotated[Path | None, typer.Option(help="write to this file instead of the terminal")] = None,
) -> None:
    """Show the grown graph as a task sees it: owned, shared, frozen and pruned nodes, parameter counts."""
    from growsearch.errors import ConfigError
    from growsearch.report.inspect import render_dot, render_text

    renderers = {"text": render_text, "dot": render_dot}
    if format not in renderers:
        raise ConfigError(f"--format {format!r}; expected one of {', '.join(renderers)}")
    graph, task = _committed_graph(run_path, task)
    text = renderers[format](graph, task)
    if output:
        from growsearch.atomic_files import atomic_write_text

        atomic_write_text(output, text)
        console.print(f"wrote {output}")
    else:
        console.print(text, highlight=False, markup=False, soft_wrap=True)


@app.command()
@friendly_errors
def report(run_path: Annotated[Path, typer.Argument(help="a run folder")]) -> None:
    """Print the metrics and draw the accuracy matrix, parameter growth and trial history as PNGs."""
    from growsearch.errors import RunFolderError
    from growsearch.report.plots import plot_accuracy_matrix, plot_parameter_growth, plot_trial_history
    from growsearch.report.trial_history import trial_history
    from growsearch.runner import RunResult
    from growsearch.search.run_folder import METRICS_FILE, RunFolder

    run = RunFolder.open(run_path)
    path = run.path / METRICS_FILE
    if not path.is_file():
        raise RunFolderError(f"{path} is missing: no task of this run has been committed yet")
    import json

    metrics = json.loads(path.read_text())
    matrix = np.array([[np.nan if v is None else v for v in row] for row in metrics["accuracy"]])
    figures = [
        plot_accuracy_matrix(matrix, run.path / "accuracy_matrix.png"),
        plot_parameter_growth(
            np.array(metrics["parameters"], dtype=float), run.path / "parameter_growth.png"
        ),
        plot_trial_history(trial_history(run), run.path / "trial_history.png"),
    ]
    _print_summary(RunResult(run.path, [], metrics))
    for figure in figures:
        console.print(f"wrote {figure}")


@app.command(name="list")
@friendly_errors
def list_(what: Annotated[str, typer.Argument(help="methods, benchmarks or scenarios")] = "methods") -> None:
    """List the methods, benchmarks or scenarios growsearch knows."""
    from growsearch.data.benchmarks import list_benchmarks
    from growsearch.data.scenarios import SCENARIOS
    from growsearch.errors import UnknownNameError
    from growsearch.methods import get_method, method_names

    table = Table()
    if what == "methods":
        for column in ("method", "scenarios", "paper"):
            table.add_column(column)
        for name in method_names():
            cls = get_method(name)
            table.add_row(name, ", ".join(cls.scenarios), cls.paper)
    elif what == "benchmarks":
        for column in ("benchmark", "tasks", "scenarios", "data", "description"):
            table.add_column(column)
        for info in list_benchmarks():
            table.add_row(
                info.name,
                str(info.default_tasks),
                ", ".join(info.scenarios),
                "--data-root" if info.needs_data_root else "embedded",
                info.description,
            )
    elif what == "scenarios":
        for column in ("scenario", "task id at training", "task id at inference", "labels"):
            table.add_column(column)
        for s in SCENARIOS.values():
            table.add_row(s.name, str(s.task_id_at_training), str(s.task_id_at_inference), s.labels)
    else:
        raise UnknownNameError("list", what, ["methods", "benchmarks", "scenarios"])
    console.print(table)


def main() -> None:  # pragma: no cover - the console script
    app(prog_name="growsearch")
    sys.exit(0)
