"""The `growsearch` command: run, resume, inspect, report, list.

Errors a user can cause are printed as one line naming what was wrong, with exit code 2; an interrupted
run (Ctrl-C) says how to resume it and exits 130. Nothing already written is lost either way.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from growsearch.errors import GrowsearchError

if TYPE_CHECKING:
    import optuna

    from growsearch.task_record import TaskRecord

app = typer.Typer(add_completion=False, no_args_is_help=False, help=__doc__.split("\n")[0])
console = Console(markup=False, soft_wrap=True)  # printed as they are: no markup, no hard wraps
errors = Console(stderr=True, markup=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])
SET_HELP = "section.key=value, read as YAML (repeatable): e.g. --set training.lr=0.01 --set search.n_trials=8"


def friendly_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OSError as error:  # a folder or storage growsearch did not write through atomic_files
            if _interrupt_behind(error):
                _interrupted(kwargs.get("run_path"))
            where = f" {error.filename}" if error.filename else ""
            reason = error.strerror or str(error)
            errors.print(f"error: cannot read or write{where}: {reason}; files already written are intact")
            raise typer.Exit(2) from None
        except GrowsearchError as error:
            errors.print(
                f"[bold red]error:[/] {escape(str(error))}", markup=True, highlight=False, soft_wrap=True
            )
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            _interrupted(kwargs.get("run_path"))

    return wrapper  # type: ignore[return-value]


class _OneLineWarnings(logging.Handler):
    """growsearch's warnings (a torn journal repaired, a search history missing) as one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        errors.print(f"warning: {record.getMessage()}", highlight=False)


logging.getLogger("growsearch").addHandler(_OneLineWarnings(logging.WARNING))
logging.getLogger("growsearch").propagate = False


def _interrupt_behind(error: BaseException) -> bool:
    """Whether Ctrl-C is what this error unwound from: a library's clean-up that fails while a
    KeyboardInterrupt passes through it (Optuna's journal lock release, interrupted between its rename
    and its unlink, raises FileNotFoundError in the interrupt's place)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return True
        seen = seen.__context__
    return False


def _interrupted(run: Path | None) -> None:
    """Ctrl-C: one line, exit 130. The trial it stopped is retried with its seed by `resume`."""
    if run is None:
        errors.print("interrupted")
        raise typer.Exit(130)
    tasks = Path(run) / "tasks"
    committed = sum(1 for p in tasks.iterdir() if p.name.isdigit()) if tasks.is_dir() else 0
    errors.print(f"interrupted: {committed} task(s) committed; resume with `growsearch resume {run}`")
    raise typer.Exit(130)


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
        values = trial.values or []
        value = "".join(
            f" {name} {v:.3f}" if isinstance(v, float) and v < 10 else f" {name} {v:,.0f}"
            for name, v in zip(("val acc", "cost", "cost 2"), values, strict=False)
        )
        params = ", ".join(f"{k}={v}" for k, v in trial.params.items())
        self.progress.console.print(
            f"  task {task} trial {trial.number}: {trial.state.name.lower()}{value} {params}"
        )

    def task_committed(self, task: int, record: TaskRecord) -> None:
        self.progress.advance(self.tasks_bar)
        row = record.accuracy_row[: task + 1]
        accuracies = " ".join(f"{a:.3f}" for a in row)
        detail = (
            f": trial {record.chosen_trial} {record.decisions}, {record.parameters:,} parameters, "
            f"test accuracy on tasks 0..{task}: {accuracies}"
        )
        self.progress.console.print(f"[bold]task {task} committed[/]{escape(detail)}", markup=True)


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
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
    epochs: Annotated[int | None, typer.Option(help="training.epochs")] = None,
    trials: Annotated[int | None, typer.Option(help="search.n_trials: trials per task")] = None,
    lr: Annotated[float | None, typer.Option(help="training.lr")] = None,
    device: Annotated[str | None, typer.Option(help="training.device: cpu, cuda, cuda:N or auto")] = None,
    logger: Annotated[
        list[str] | None,
        typer.Option(help="also log curves to tensorboard or wandb (repeatable; curves.csv always)"),
    ] = None,
) -> None:
    """Run a growth search over a task stream (default: MNTDP-D on split digits)."""
    from growsearch.backends.ray_options import RayOptions
    from growsearch.config.overrides import apply_overrides, shortcut_overrides
    from growsearch.config.space import load_space
    from growsearch.runner import (
        RunOptions,
        check_run_name,
        default_run_name,
        resolve_options,
        scenario_plan,
        start_run,
    )

    overrides = [*shortcut_overrides(epochs, trials, lr, device), *(set_ or [])]
    loaded = apply_overrides(load_space(space), overrides)
    options = RunOptions(
        benchmark=benchmark,
        scenario=scenario,
        n_tasks=tasks,
        max_per_task=max_per_task,
        data_root=str(Path(data_root).expanduser().resolve()) if data_root else None,
        download=download,
        seed=seed,
        backend=backend,
        loggers=tuple(logger or ()),
    )
    ray = RayOptions(address=address, shared_fs=shared_fs)
    path = runs_dir / check_run_name(name or default_run_name(loaded, options))
    shown = resolve_options(loaded, options).benchmark
    console.print(f"growsearch: {loaded.method} on {shown} ({loaded.source}), run folder {path}")
    console.print(f"commit rule: {loaded.search.commit_rule()} (search.accuracy_tolerance)", highlight=False)
    note = scenario_plan(loaded, options).note
    if note is not None:
        console.print(note, highlight=False)
    try:
        with _progress() as progress:
            result = start_run(loaded, options, path, ProgressReporter(progress), overrides, ray)
    except KeyboardInterrupt:
        _interrupted(path)
    except OSError as error:
        if not _interrupt_behind(error):
            raise
        _interrupted(path)
    _print_summary(result)


@app.command()
@friendly_errors
def resume(
    run_path: Annotated[Path, typer.Argument(help="the run folder to continue")],
    address: Annotated[str | None, typer.Option(help="ray backend: the cluster to continue on")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=SET_HELP)] = None,
    device: Annotated[str | None, typer.Option(help="training.device: cpu, cuda, cuda:N or auto")] = None,
    force: Annotated[
        bool, typer.Option(help="continue although config.yaml was edited or --set changes it")
    ] = False,
) -> None:
    """Continue an interrupted run: committed tasks and finished trials are not redone."""
    from growsearch.config.overrides import shortcut_overrides
    from growsearch.runner import resume_run

    overrides = [*shortcut_overrides(device=device), *(set_ or [])]
    with _progress() as progress:
        result = resume_run(
            run_path,
            ProgressReporter(progress),
            address=address,
            overrides=overrides,
            force=force,
            announce=lambda kept: progress.console.print(f"resuming {run_path}: {kept}", highlight=False),
        )
    _print_summary(result)


def _committed_graph(run_path: Path, task: int | None) -> tuple[Any, int, dict[int, str]]:
    """The graph committed after `task` (the last one when None), and each task's growth move up to it
    where the run records them (auto-grow)."""
    from growsearch.errors import RunFolderError
    from growsearch.report.inspect import recorded_moves
    from growsearch.store.run_folder import RunFolder

    run = RunFolder.open(run_path)
    committed = run.committed_tasks()
    if not committed:
        raise RunFolderError(f"{run_path} has no committed task yet")
    task = committed[-1] if task is None else task
    if task not in committed:
        raise RunFolderError(f"task {task} is not committed in {run_path}; committed: {committed}")
    graph, _ = run.load_task(task)
    moves = recorded_moves([r for r in run.records() if r.task <= task])
    return graph, task, moves


@app.command()
@friendly_errors
def inspect(
    run_path: Annotated[Path, typer.Argument(help="a run folder")],
    task: Annotated[
        int | None, typer.Option(help="show the graph committed after this task, its view highlighted")
    ] = None,
    format: Annotated[str, typer.Option(help="text, dot, svg, png, html, graphml or json")] = "text",
    output: Annotated[Path | None, typer.Option(help="write to this file instead of the default")] = None,
    engine: Annotated[str, typer.Option(help="draws svg/png/html: auto, graphviz or matplotlib")] = "auto",
    diff: Annotated[
        tuple[int, int] | None, typer.Option(help="T1 T2: what task T2 added over task T1")
    ] = None,
) -> None:
    """Show the grown graph: layers, owner tasks, frozen and pruned nodes, parameters, a task's path.

    svg, png and html go to --output (default: graph-task-T.EXT or graph-diff-T1-T2.EXT in the run folder);
    the other formats go to the terminal unless --output is given.
    """
    from growsearch.atomic_files import atomic_write_bytes
    from growsearch.errors import ConfigError
    from growsearch.report.graph.render import resolve_engine
    from growsearch.report.inspect import FORMATS, render_inspect, render_picture_as

    resolve_engine(engine)
    if format not in FORMATS:
        raise ConfigError(f"--format {format!r}; expected one of {', '.join(FORMATS)}")
    if diff is not None:
        from growsearch.report.graph.diff import diff_picture, graph_diff, render_diff_text

        first, second = diff
        if first >= second:
            raise ConfigError(f"--diff {first} {second}: the first task must come before the second")
        before, _, _ = _committed_graph(run_path, first)
        after, _, moves = _committed_graph(run_path, second)
        changes = graph_diff(before, after, first, second)
        rendered = (
            render_diff_text(changes, after)
            if format == "text"
            else render_picture_as(diff_picture(changes, after, moves), format, engine)
        )
        default_name = f"graph-diff-{first}-{second}.{format}"
    else:
        graph, task, moves = _committed_graph(run_path, task)
        rendered = render_inspect(graph, task, format, engine, moves)
        default_name = f"graph-task-{task}.{format}"
    if output is None and format in ("svg", "png", "html"):
        output = run_path / default_name
    if output:
        atomic_write_bytes(output, rendered if isinstance(rendered, bytes) else rendered.encode("utf-8"))
        console.print(f"wrote {output}")
    else:
        console.print(rendered, highlight=False, markup=False, soft_wrap=True)


@app.command()
@friendly_errors
def report(
    run_path: Annotated[Path, typer.Argument(help="a run folder")],
    engine: Annotated[str, typer.Option(help="draws the grown graphs: auto, graphviz or matplotlib")] = (
        "auto"
    ),
    figures: Annotated[
        list[str] | None, typer.Option("--figures", help="also write the figures as svg or pdf (repeatable)")
    ] = None,
) -> None:
    """Print the metrics; write the figures, metrics.csv and a self-contained report.html."""
    from growsearch.errors import ConfigError
    from growsearch.report.graph.render import resolve_engine
    from growsearch.report.html_report import load_metrics, open_elsewhere, write_report
    from growsearch.report.search_history import task_searches
    from growsearch.runner import RunResult
    from growsearch.store.run_folder import RunFolder

    resolve_engine(engine)
    unknown = [f for f in figures or () if f not in ("png", "svg", "pdf")]
    if unknown:
        raise ConfigError(f"--figures {unknown[0]!r}; expected png, svg or pdf")
    run = RunFolder.open(run_path)
    metrics = load_metrics(run)
    files = write_report(run.path, engine, tuple(figures or ()))
    _print_summary(RunResult(run.path, [], metrics))
    for path in (*files.figures, files.csv, run.path / "metrics.json", files.html):
        console.print(f"wrote {path}" if path != run.path / "metrics.json" else f"metrics as JSON: {path}")
    for tool, command in open_elsewhere(run, run.config()):
        console.print(f"{tool}: {command}", highlight=False, soft_wrap=True)
    for search in task_searches(run):
        note = search.optuna_disagreement()
        if note:
            console.print(f"note: {note}", highlight=False, soft_wrap=True)


@app.command()
@friendly_errors
def compare(
    run_paths: Annotated[list[Path], typer.Argument(help="two or more run folders")],
    output: Annotated[Path, typer.Option(help="the HTML page to write; a CSV goes beside it")] = Path(
        "compare.html"
    ),
) -> None:
    """Compare runs side by side: a table of their metrics, and plots of accuracy and parameters per task."""
    from growsearch.report.compare import compare_rows, load_summaries, write_compare

    summaries = load_summaries(run_paths)
    headers, rows = compare_rows(summaries)
    table = Table(title=f"{len(summaries)} runs side by side")  # one column per run fits a terminal
    table.add_column("")
    for row in rows:
        table.add_column(str(row[0]), justify="right")
    for index, header in enumerate(headers[1:], start=1):
        table.add_row(header, *(str(row[index]) for row in rows))
    console.print(table)
    html_path, csv_path = write_compare(summaries, output)
    console.print(f"wrote {html_path}\nwrote {csv_path}")


@app.command(name="list")
@friendly_errors
def list_(what: Annotated[str, typer.Argument(help="methods, benchmarks or scenarios")] = "methods") -> None:
    """List the methods, benchmarks or scenarios growsearch knows."""
    from growsearch.data.benchmarks import list_benchmarks
    from growsearch.data.scenarios import SCENARIOS
    from growsearch.errors import UnknownNameError
    from growsearch.methods.registry import method_infos
    from growsearch.search.scenario_plan import scenarios_shown

    if what == "methods":
        headers = ("method", "scenarios", "paper")
        rows = [(i.name, scenarios_shown(i.scenarios), i.paper) for i in method_infos()]
    elif what == "benchmarks":
        headers = ("benchmark", "tasks", "scenarios", "data", "description")
        rows = [
            (
                i.name,
                str(i.default_tasks),
                ", ".join(i.scenarios),
                "--data-root" if i.needs_data_root else "embedded",
                i.description,
            )
            for i in list_benchmarks()
        ]
    elif what == "scenarios":
        headers = ("scenario", "task id at training", "task id at inference", "labels")
        rows = [
            (s.name, str(s.task_id_at_training), str(s.task_id_at_inference), s.labels)
            for s in SCENARIOS.values()
        ]
    else:
        raise UnknownNameError("list", what, ["methods", "benchmarks", "scenarios"])
    table = Table()
    names = [row[0] for row in rows]  # a name is what a user types: never wrapped or cut
    table.add_column(headers[0], no_wrap=True, min_width=max(len(n) for n in [headers[0], *names]))
    for header in headers[1:]:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def main() -> None:  # pragma: no cover - the console script
    app(prog_name="growsearch")
    sys.exit(0)
