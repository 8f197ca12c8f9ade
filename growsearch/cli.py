"""The `growsearch` command: run, resume, inspect, report, compare, list.

Errors a user can cause are printed as one line naming what was wrong, with exit code 2; an interrupted
run (Ctrl-C, or SIGTERM from a scheduler, Ray or `timeout`) says how to resume it and exits 130 (143 for
SIGTERM). Nothing already written is lost either way.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from pathlib import Path


class _Signals:
    """SIGINT and SIGTERM, whenever they come, as one line and exit 128 + the signal's number.

    While a command runs, either raises where it lands (SIGTERM as `Terminated`, a KeyboardInterrupt), so
    the run stops as Ctrl-C stops it: the trial it cut is retried with its seed by `resume`. A second one
    while the first unwinds stops the process at once (like kill -9, which resume also finishes). Once the
    command is over (`finished`), one stops the process at once with a line saying the command had
    finished; the interpreter's own exit (threads joined, atexit) is covered, and its last moments block
    both signals, so no traceback and no silent exit code can come from a signal at any moment. Installed
    at import when this module runs as the program (`python -m growsearch`, the console script), and when
    the app reads its own command line; never inside another program that hands the app its arguments
    (the tests' CliRunner keeps its own handlers)."""

    def __init__(self) -> None:
        self.active = False
        self.parsing = False  # the command line is being read: the program has begun
        self.start()

    def start(self) -> None:
        """A command begins: nothing received, nothing written yet."""
        self.received: int | None = None
        self.finished: int | None = None  # the command's exit code, once it is over
        self.after = "its output is whole"  # what a signal after the command says of it
        self.run: Path | None = None  # the run folder the command writes
        self.creating = False  # `run`: the command creates that folder
        self.existed = False  # `run`: the folder held a run before this command (it then writes nothing)
        self.was_there = True  # `run`: the folder (or a link) was there before this command
        self.said = False  # whether the command printed its interrupt line
        self.nothing = "nothing was written"  # what an interrupt means where no run folder is written
        self.group: Path | None = None  # `--seeds`: the group folder the runs belong to

    def install(self) -> None:
        if self.active:
            return
        self.active = True
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, self.handle)
        atexit.register(self.block)  # registered first: runs last

    def handle(self, number: int, frame: object) -> None:
        what = "terminated" if number == signal.SIGTERM else "interrupted"
        if not self.parsing:  # still importing: nothing has begun
            self.stop(128 + number, f"{what} before the command started: nothing was written")
        if self.finished is not None:  # the command is over; a failed one has said why
            line = None if self.finished else f"{what} after the command had finished: {self.after}"
            self.stop(self.finished or 128 + number, line)
        if self.received is not None:  # a second signal while the first unwinds: stop now
            self.stop(128 + self.received, interrupt_line(self.received))
        self.received = number
        if number == signal.SIGTERM:
            from growsearch.errors import Terminated

            raise Terminated
        raise KeyboardInterrupt

    def stop(self, code: int, line: str | None) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # a write the signal cut: nothing more to save
                pass
        if line:
            os.write(2, f"{line}\n".encode(errors="replace"))
        os._exit(code)

    def block(self) -> None:
        """The interpreter's last moments (after every atexit function): a signal now is held, and dropped
        when the process ends with the command's own exit code."""
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


SIGNALS = _Signals()
_main_spec = getattr(sys.modules.get("__main__"), "__spec__", None)
if getattr(_main_spec, "name", None) == "growsearch.__main__" or Path(sys.argv[0]).name == "growsearch":
    SIGNALS.install()  # `python -m growsearch` or the console script, before anything slow is imported

import functools  # noqa: E402
import logging  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from typing import TYPE_CHECKING, Annotated, Any, TypeVar  # noqa: E402

import typer  # noqa: E402
import typer.core  # noqa: E402
from rich import box  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from growsearch.errors import GrowsearchError, Terminated  # noqa: E402

if TYPE_CHECKING:
    import optuna

    from growsearch.task_record import TaskRecord


class _OneLineUsage(typer.core.TyperGroup):
    """A mistyped command line (an unknown option, a value of the wrong type) is one line and exit 2, like
    every other bad input, not click's usage box."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not args and kwargs.get("args") is None:  # the program reading its own command line
            SIGNALS.install()
        SIGNALS.parsing = True
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.exceptions.TyperException as error:  # click's usage errors, as Typer raises them
            format_message = getattr(error, "format_message", None)
            message = " ".join((format_message() if format_message else str(error)).split())
            ctx = getattr(error, "ctx", None)
            command = ctx.command_path if ctx is not None else "growsearch"
            errors.print(f"error: {message} (see `{command} --help`)", highlight=False)
            code = getattr(error, "exit_code", 2)
        except typer.exceptions.Abort:
            code = 1
        if isinstance(code, int) and code in (130, 143) and not SIGNALS.said:  # before a command ran
            number = SIGNALS.received or signal.SIGINT
            errors.print(interrupt_line(number), highlight=False)
            code = 128 + number
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(add_completion=False, no_args_is_help=False, help=__doc__.split("\n")[0], cls=_OneLineUsage)
console = Console(markup=False, soft_wrap=True)  # printed as they are: no markup, no hard wraps
errors = Console(stderr=True, markup=False, soft_wrap=True)
F = TypeVar("F", bound=Callable[..., Any])
SET_HELP = "section.key=value, read as YAML (repeatable): e.g. --set training.lr=0.01 --set search.n_trials=8"


def _print_version(asked: bool) -> None:
    if not asked:
        return
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "not installed"

    parts = ", ".join(f"{p} {installed(p)}" for p in ("torch", "optuna", "ray"))
    console.print(f"growsearch {installed('growsearch')} (python {sys.version.split()[0]}, {parts})")
    raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the versions and exit."
        ),
    ] = False,
) -> None:
    pass


def friendly_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        outcome = 1  # a bug: Typer prints its traceback
        SIGNALS.start()
        try:
            result = _one_line_errors(command, args, kwargs)
            outcome = 0
            return result
        except typer.Exit as done:
            outcome = done.exit_code
            raise
        finally:
            if SIGNALS.active:
                SIGNALS.finished = outcome

    return wrapper  # type: ignore[return-value]


def _one_line_errors(command: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    try:
        return command(*args, **kwargs)
    except KeyboardInterrupt as error:
        _interrupted(error)
    except Exception as error:
        # a library's clean-up that fails while a Ctrl-C passes through it (Optuna's journal lock release,
        # interrupted between its rename and its unlink, raises FileNotFoundError in the interrupt's place)
        behind = _interrupt_behind(error)
        if behind is not None:
            _interrupted(behind)
        line = escape(_one_line(error).removeprefix("error: "))
        errors.print(f"[bold red]error:[/] {line}", markup=True, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _one_line(error: Exception) -> str:
    """The error a user can fix, as the one line that says so; any other (a bug) raises again."""
    if isinstance(error, GrowsearchError):
        return f"error: {error}"
    if isinstance(error, OSError):  # a folder or storage growsearch did not write through atomic_files
        where = f" {error.filename}" if error.filename else ""
        reason = error.strerror or str(error)
        return f"error: cannot read or write{where}: {reason}; files already written are intact"
    if isinstance(error, RecursionError):  # a file nested past Python's limit no reader caught by name
        return "error: an input is nested too deep to read (past Python's recursion limit)"
    if _too_large(error):
        reason = " ".join(str(error).split("\n", 1)[0].split())[:200] or "out of memory"
        return (
            f"error: a size in the configuration is too large for a tensor ({reason}); expected smaller "
            "network or method sizes (the YAML's network and options)"
        )
    raise error


class _OneLineWarnings(logging.Handler):
    """growsearch's warnings (a torn journal repaired, a search history missing) as one line each."""

    def emit(self, record: logging.LogRecord) -> None:
        errors.print(f"warning: {record.getMessage()}", highlight=False)


logging.getLogger("growsearch").addHandler(_OneLineWarnings(logging.WARNING))
logging.getLogger("growsearch").propagate = False


_TOO_LARGE = ("size calculation overflowed", "can't allocate memory", "negative dimension", "Overflow when")


def _too_large(error: BaseException) -> bool:
    """A tensor size from the configuration that no tensor can hold (torch's own words for it)."""
    if isinstance(error, MemoryError):
        return True
    return isinstance(error, RuntimeError) and any(words in str(error) for words in _TOO_LARGE)


def _interrupt_behind(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM) this error unwound from, if any."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, KeyboardInterrupt):
            return seen
        seen = seen.__context__
    return None


def interrupt_line(number: int) -> str:
    """What a signal at this moment means for the run: how to resume it, or that there is nothing to."""
    what = "terminated" if number == signal.SIGTERM else "interrupted"
    run = SIGNALS.run
    if SIGNALS.group is not None:
        return f"{what}: resume the seeds' runs with `growsearch resume {SIGNALS.group}`"
    if run is None:
        return f"{what}: {SIGNALS.nothing}"
    run = Path(run)
    if SIGNALS.creating and SIGNALS.existed:
        return f"{what}: nothing was written ({run} held a run already)"
    if not (run / "config.yaml").is_file():
        return f"{what} before {run} held a run: nothing to resume; run the same command again"
    tasks = run / "tasks"
    committed = (
        sum(1 for p in tasks.iterdir() if p.name.isascii() and p.name.isdigit()) if tasks.is_dir() else 0
    )
    if committed and _complete(run, committed):
        return f"{what} after the run completed: {run} holds all {committed} tasks; nothing to resume"
    return f"{what}: {committed} task(s) committed; resume with `growsearch resume {run}`"


def _complete(run: Path, committed: int) -> bool:
    import json

    from growsearch.store.run_folder import run_complete

    try:
        return run_complete(json.loads((run / "metrics.json").read_text(encoding="utf-8")), committed)
    except (OSError, ValueError, RecursionError):
        return False


def _interrupted(error: KeyboardInterrupt) -> None:
    """Ctrl-C or SIGTERM: one line, exit 130 or 143. The trial it stopped is retried with its seed by
    `resume`; a folder this command created but had not written yet is removed."""
    number = signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT
    run = SIGNALS.run
    if run is not None and SIGNALS.creating and not SIGNALS.was_there:
        _remove_unwritten(Path(run))
    SIGNALS.said = True
    errors.print(interrupt_line(number), highlight=False)
    raise typer.Exit(128 + number)


def _remove_unwritten(run: Path) -> None:
    """The folder `run` made before the Ctrl-C, holding nothing but its lock file: gone, so the name is
    free and nothing half-made is left."""
    try:
        if (run / "config.yaml").exists() or run.is_symlink() or not run.is_dir():
            return
        if {p.name for p in run.iterdir()} <= {".lock"}:
            (run / ".lock").unlink(missing_ok=True)
            run.rmdir()
    except OSError:
        pass


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
            f"test accuracy on tasks 0..{task}: {accuracies}{_margin_note(record.decision)}"
        )
        self.progress.console.print(f"[bold]task {task} committed[/]{escape(detail)}", markup=True)


def _margin_note(decision: dict | None) -> str:
    """How clear the commit was, where another candidate competed: in validation samples, ties said."""
    if not decision or decision.get("samples") is None:
        return ""
    samples, of = decision["samples"], decision["validation_samples"]
    runner_up = decision["runner_up_trial"]
    if decision["tie"]:
        return f" (a tie with trial {runner_up}: {samples:+d} of {of} validation samples; size broke it)"
    return f" ({samples:+d} of {of} validation samples over trial {runner_up})"


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
    val_fraction: Annotated[
        float | None,
        typer.Option(help="share of each task's training pool held out for validation (default 0.15)"),
    ] = None,
    min_val_per_task: Annotated[
        int | None,
        typer.Option(
            help="floor on each task's validation samples, met where training can spare a tenth (default "
            "100; 0: none)"
        ),
    ] = None,
    data_root: Annotated[str | None, typer.Option(help="folder of datasets in their standard layout")] = None,
    download: Annotated[bool, typer.Option(help="fetch a missing dataset into --data-root")] = False,
    seed: Annotated[int | None, typer.Option(help="the run's seed (default 0)")] = None,
    seeds: Annotated[
        str | None,
        typer.Option(help="several seeds, e.g. 0,1,2 or 0-4: a group folder holding one run per seed"),
    ] = None,
    parallel: Annotated[
        int, typer.Option(help="--seeds: how many of the seeds' runs go at once, each in its own process")
    ] = 1,
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
    network: Annotated[
        str | None, typer.Option(help="network.preset: a named backbone, e.g. resnet18-reduced")
    ] = None,
    logger: Annotated[
        list[str] | None,
        typer.Option(help="also log curves to tensorboard, wandb or mlflow (repeatable; curves.csv always)"),
    ] = None,
) -> None:
    """Run a growth search over a task stream (default: MNTDP-D on split digits)."""
    from growsearch.config.overrides import apply_overrides, shortcut_overrides
    from growsearch.config.run_options import RunOptions, check_run_name, check_run_options
    from growsearch.config.space import load_space

    # every check that needs neither torch nor data comes first: a mistake is one line in well under a
    # second, and nothing is written
    overrides = [*shortcut_overrides(epochs, trials, lr, device, network), *(set_ or [])]
    base = load_space(space)
    loaded = apply_overrides(base, overrides)
    if data_root is not None and not data_root.strip():
        raise_config("--data-root '': expected a folder")
    if seeds is not None and seed is not None:
        raise_config("--seed and --seeds: give one (--seeds runs each of its seeds)")
    seed_list = _parse_seeds(seeds) if seeds is not None else None
    if not 1 <= parallel <= 64:
        raise_config(f"--parallel {parallel}: expected an integer from 1 to 64")
    options = RunOptions(
        benchmark=benchmark,
        scenario=scenario,
        n_tasks=tasks,
        max_per_task=max_per_task,
        val_fraction=val_fraction,
        min_val_per_task=min_val_per_task,
        data_root=str(Path(data_root).expanduser().resolve()) if data_root is not None else None,
        download=download,
        seed=seed if seed is not None else (seed_list[0] if seed_list else 0),
        backend=backend,
        loggers=tuple(logger or ()),
    )
    check_run_options(options, lambda field: CLI_OPTIONS.get(field, f"--{field}"))
    shown = _check_names(loaded, options)
    path = runs_dir / check_run_name(name if name is not None else _default_name(loaded.method, shown))
    if seed_list is not None:
        from growsearch.backends.ray_options import RayOptions
        from growsearch.run_group import RunGroup, write_group

        group = RunGroup(
            path,
            seed_list,
            base.to_dict(),
            base.source,
            tuple(overrides),
            options,
            RayOptions(address, shared_fs),
        )
        console.print(
            f"growsearch: {loaded.method} on {shown} ({loaded.source}), seeds {seeds}, group {path}"
        )
        write_group(group)
        _run_group(group, seed_list, parallel)
        return
    SIGNALS.run, SIGNALS.creating = path, True
    SIGNALS.was_there, SIGNALS.existed = path.exists() or path.is_symlink(), (path / "config.yaml").exists()
    console.print(f"growsearch: {loaded.method} on {shown} ({loaded.source}), run folder {path}{_link(path)}")
    console.print(f"commit rule: {loaded.search.commit_rule()} (search.accuracy_tolerance)", highlight=False)

    from growsearch.backends.ray_options import RayOptions

    runner = _runner()
    scenario_plan, start_run = runner.scenario_plan, runner.start_run

    note = scenario_plan(loaded, options).note
    if note is not None:
        console.print(note, highlight=False)
    ray = RayOptions(address=address, shared_fs=shared_fs)
    with _progress() as progress:
        result = start_run(loaded, options, path, ProgressReporter(progress), overrides, ray)
    SIGNALS.after = f"the run in {path} is complete; nothing to resume"
    _print_summary(result)


CLI_OPTIONS = {
    "benchmark": "--benchmark",
    "scenario": "--scenario",
    "n_tasks": "--tasks",
    "max_per_task": "--max-per-task",
    "val_fraction": "--val-fraction",
    "min_val_per_task": "--min-val-per-task",
    "data_root": "--data-root",
    "seed": "--seed",
}


def _runner() -> Any:
    """growsearch.runner, imported with SIGINT and SIGTERM held: importing torch runs C++ (pybind11) that
    aborts the process (SIGABRT, no line) when a Python handler raises inside it. A signal held here
    arrives as soon as the import is over, and stops the command with its one line like any other."""
    held = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        import growsearch.runner as runner
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
    return runner


def raise_config(message: str) -> None:
    from growsearch.errors import ConfigError

    raise ConfigError(message)


def _check_names(space: Any, options: Any) -> str:
    """The names a run uses, checked against the registries (none loads torch or data): the method, the
    benchmark, the scenario. Returns the benchmark's name."""
    from growsearch.data.benchmarks import get_benchmark_info
    from growsearch.data.scenarios import get_scenario
    from growsearch.errors import UnknownNameError
    from growsearch.methods.registry import method_infos

    known = [info.name for info in method_infos()]
    if space.method not in known:
        raise UnknownNameError("method", space.method, known)
    benchmark = options.benchmark if options.benchmark is not None else space.benchmark.name
    get_benchmark_info(benchmark)
    scenario = options.scenario if options.scenario is not None else space.benchmark.scenario
    if scenario is not None:
        get_scenario(scenario)
    return benchmark


def _default_name(method: str, benchmark: str) -> str:
    import time

    return f"{method}-{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}"


def _link(path: Path) -> str:
    """How a run folder given as a symbolic link is followed, said where the command names the folder."""
    if not path.is_symlink():
        return ""
    return f" (a symbolic link, followed: the files are in {path.resolve()})"


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
    seeds: Annotated[
        str | None, typer.Option(help="a group of seeds: resume only these of its seeds, e.g. 1,2")
    ] = None,
    parallel: Annotated[
        int, typer.Option(help="a group of seeds: how many seeds' runs go at once, each in its own process")
    ] = 1,
) -> None:
    """Continue an interrupted run, or a group of seeds' runs: finished work is not redone.

    Committed tasks and finished trials are kept; the trial a stop cut is retried with its seed."""
    from growsearch.config.overrides import parse_override, shortcut_overrides

    overrides = [*shortcut_overrides(device=device), *(set_ or [])]
    for text in overrides:
        parse_override(text)  # a malformed --set is refused before torch is imported
    if _is_group(run_path):
        if overrides or force:
            raise_config("--set, --device and --force resume one run: give a seed's folder (GROUP/seed-S)")
        from growsearch.run_group import read_group

        group = read_group(run_path)
        chosen = _parse_seeds(seeds, at_least=1) if seeds is not None else group.seeds
        if address is not None:
            from dataclasses import replace

            group = replace(group, ray=replace(group.ray, address=address))
        _run_group(group, chosen, parallel)
        return
    if seeds is not None or parallel != 1:
        raise_config(f"--seeds and --parallel resume a group of seeds; {run_path} is one run")
    _check_run_folder(run_path)
    SIGNALS.run = run_path
    resume_run = _runner().resume_run

    link = _link(run_path)
    with _progress() as progress:
        result = resume_run(
            run_path,
            ProgressReporter(progress),
            address=address,
            overrides=overrides,
            force=force,
            announce=lambda kept: progress.console.print(
                f"resuming {run_path}{link}: {kept}", highlight=False
            ),
        )
    SIGNALS.after = f"the run in {run_path} is complete; nothing to resume"
    _print_summary(result)


def _parse_seeds(text: str, at_least: int = 2) -> tuple[int, ...]:
    from growsearch.run_group import parse_seeds

    return parse_seeds(text, at_least=at_least)


def _is_group(path: Path) -> bool:
    from growsearch.run_group import is_group

    return is_group(path)


def _run_group(group: Any, seeds: Sequence[int], parallel: int) -> None:
    """Each seed's run of the group, started, resumed or kept by its state; here one after another, or
    `parallel` at once as `growsearch resume GROUP --seeds S` processes (each writing GROUP/seed-S.log);
    then the group's mean ± std."""
    from growsearch.run_group import run_members

    SIGNALS.group = group.path
    if parallel > 1:
        _run_in_processes(group, seeds, parallel)
    else:
        run_members(group, seeds, lambda seed, state: _run_member(group, seed, state))
    SIGNALS.after = f"the seeds' runs in {group.path} are complete; nothing to resume"
    _print_group_summary(group)


def _run_member(group: Any, seed: int, state: str) -> None:
    runner = _runner()
    resume_run, start_run = runner.resume_run, runner.start_run

    path = group.member(seed)
    SIGNALS.run, SIGNALS.creating = path, state == "new"
    SIGNALS.was_there, SIGNALS.existed = path.exists() or path.is_symlink(), False
    if state == "complete":
        console.print(f"seed {seed}: {path} is complete; kept", highlight=False)
        return
    console.print(
        f"seed {seed}: {'resuming' if state == 'started' else 'run folder'} {path}", highlight=False
    )
    with _progress() as progress:
        reporter = ProgressReporter(progress)
        if state == "started":

            def announce(kept: str) -> None:
                progress.console.print(f"  kept: {kept}", highlight=False)

            result = resume_run(path, reporter, address=group.ray.address, announce=announce)
        else:
            space, options = group.member_space(), group.member_options(seed)
            result = start_run(space, options, path, reporter, group.overrides, group.ray)
    _print_summary(result)


def _run_in_processes(group: Any, seeds: Sequence[int], parallel: int) -> None:
    """The seeds' runs in child processes, `parallel` at a time; a signal here stops them all (each then
    resumes exactly). A child that fails is named with the last line of its log."""
    import subprocess
    import time

    from growsearch.errors import TrainingError
    from growsearch.run_group import check_members

    check_members(group, seeds)
    waiting, running, failed = list(seeds), {}, []
    try:
        while waiting or running:
            while waiting and len(running) < parallel:
                seed = waiting.pop(0)
                log = group.path / f"seed-{seed}.log"
                command = [
                    sys.executable,
                    "-m",
                    "growsearch",
                    "resume",
                    str(group.path),
                    "--seeds",
                    str(seed),
                    *(["--address", group.ray.address] if group.ray.address else []),
                ]
                with open(log, "ab") as out:
                    # its own session: a Ctrl-C at the terminal reaches this process, which stops each
                    # child once (SIGTERM), rather than every process at once
                    running[seed] = subprocess.Popen(
                        command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                    )
                console.print(
                    f"seed {seed}: started in process {running[seed].pid}, log {log}", highlight=False
                )
            for seed, child in list(running.items()):
                if child.poll() is not None:
                    del running[seed]
                    if child.returncode:
                        failed.append(f"seed {seed}: {_last_line(group.path / f'seed-{seed}.log')}")
                    console.print(f"seed {seed}: exit {child.returncode}", highlight=False)
            time.sleep(0.2)
    finally:
        for child in running.values():
            child.terminate()  # SIGTERM: the child stops as Ctrl-C stops it, resumable
        for child in running.values():
            child.wait()
    if failed:
        raise TrainingError(f"{len(failed)} of the seeds' runs failed: {'; '.join(failed)}")


def _runs_of(paths: Sequence[Path]) -> list[Path]:
    """Run folders, a group of seeds standing for its runs that are complete."""
    from growsearch.run_group import read_group

    runs: list[Path] = []
    for path in paths:
        if _is_group(path):
            group = read_group(path)
            runs += [group.member(s) for s in group.seeds if group.state(s) == "complete"]
        else:
            runs.append(path)
    return runs


def _report_group(path: Path, output: Path | None) -> None:
    from growsearch.report.compare import load_summaries, write_compare
    from growsearch.report.seed_group import group_section
    from growsearch.run_group import read_group

    group = read_group(path)
    done = [group.member(s) for s in group.seeds if group.state(s) == "complete"]
    if len(done) < 2:
        raise_config(f"{path}: {len(done)} of its seeds' runs complete; a group's report needs two")
    _print_group_summary(group)
    folder = output if output is not None else _writable_or_elsewhere(path, "report", folder=True)
    summaries = load_summaries(done)
    Path(folder).mkdir(parents=True, exist_ok=True)
    html_path, csv_path = write_compare(summaries, Path(folder) / "report.html", (group_section(summaries),))
    console.print(f"wrote {html_path}\nwrote {csv_path}", highlight=False)


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"{log} cannot be read"
    return lines[-1] if lines else f"{log} is empty"


def _print_group_summary(group: Any) -> None:
    from growsearch.report.compare import load_summaries
    from growsearch.report.seed_group import group_rows

    done = [s for s in group.seeds if group.state(s) == "complete"]
    if len(done) < 2:
        console.print(f"{len(done)} of {len(group.seeds)} seeds complete in {group.path}", highlight=False)
        return
    headers, rows = group_rows(load_summaries([group.member(s) for s in done]))
    table = Table(title=f"{group.path}: {len(done)} of {len(group.seeds)} seeds complete")
    table.add_column(headers[0], no_wrap=True)
    for header in headers[1:]:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _check_run_folder(run_path: Path) -> None:
    """A run folder, checked before torch is imported (RunFolder.open says the same)."""
    if not (run_path / "config.yaml").is_file():
        from growsearch.errors import RunFolderError

        raise RunFolderError(f"{run_path} is not a run folder: {run_path / 'config.yaml'} is missing")


def _writable_or_elsewhere(run_path: Path, name: str, folder: bool = False) -> Path:
    """Where a command that reads a run writes by default: `name` in the run folder (the run folder itself
    for `folder`), or, when the run folder cannot be written (an archived, read-only run),
    `RUN-name` in the current folder, said in a note."""
    if os.access(run_path, os.W_OK):
        return run_path if folder else run_path / name
    elsewhere = Path.cwd() / f"{run_path.resolve().name}-{name}"
    console.print(f"note: {run_path} is read-only; writing {elsewhere} instead", highlight=False)
    return elsewhere


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
    graph, _ = run.read_task(task)  # without torch: a graph to describe
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

    svg, png and html go to --output (default: graph-task-T.EXT or graph-diff-T1-T2.EXT in the run folder,
    graph-task-T-matplotlib.EXT when matplotlib draws it); the other formats go to the terminal unless
    --output is given.
    """
    from growsearch.atomic_files import atomic_write_bytes
    from growsearch.errors import ConfigError
    from growsearch.report.graph.render import resolve_engine
    from growsearch.report.inspect import FORMATS, render_inspect, render_picture_as

    SIGNALS.nothing = "the run folder is as it was (reading it writes nothing)"
    _check_run_folder(run_path)
    if _link(run_path):
        console.print(f"note: {run_path}{_link(run_path)}", highlight=False)
    # each engine's picture keeps its own default name: one never overwrites the other's
    drawn_by = "" if resolve_engine(engine) == "graphviz" else "-matplotlib"
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
        default_name = f"graph-diff-{first}-{second}{drawn_by}.{format}"
    else:
        graph, task, moves = _committed_graph(run_path, task)
        rendered = render_inspect(graph, task, format, engine, moves)
        default_name = f"graph-task-{task}{drawn_by}.{format}"
    if output is None and format in ("svg", "png", "html"):
        output = _writable_or_elsewhere(run_path, default_name)
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
    output: Annotated[
        Path | None,
        typer.Option(help="the folder to write into (default: the run folder; ./NAME-report when read-only)"),
    ] = None,
) -> None:
    """Print the metrics; write the figures, metrics.csv and a self-contained report.html.

    A group of seeds (`run --seeds`): each metric and each task's accuracy as mean ± std over its seeds, and
    GROUP/report.html with the seeds side by side (each seed's own report: `report GROUP/seed-S`)."""
    from types import SimpleNamespace

    if _is_group(run_path):
        _report_group(run_path, output)
        return

    from growsearch.errors import ConfigError
    from growsearch.report.graph.render import resolve_engine
    from growsearch.report.html_report import load_metrics, open_elsewhere, write_report
    from growsearch.report.search_history import task_searches
    from growsearch.store.run_folder import RunFolder

    SIGNALS.nothing = "the files written so far are whole; run the command again"
    _check_run_folder(run_path)
    resolve_engine(engine)
    unknown = [f for f in figures or () if f not in ("png", "svg", "pdf")]
    if unknown:
        raise ConfigError(f"--figures {unknown[0]!r}; expected png, svg or pdf")
    if _link(run_path):
        console.print(f"note: {run_path}{_link(run_path)}", highlight=False)
    if output is None:
        output = _writable_or_elsewhere(run_path, "report", folder=True)
    run = RunFolder.open(run_path)
    metrics = load_metrics(run)
    files = write_report(run.path, engine, tuple(figures or ()), output=output)
    _print_summary(SimpleNamespace(path=run.path, metrics=metrics))  # a RunResult's fields, without torch
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
    run_paths: Annotated[
        list[Path], typer.Argument(help="two or more run folders; a group of seeds stands for its runs")
    ],
    output: Annotated[Path, typer.Option(help="the HTML page to write; a CSV goes beside it")] = Path(
        "compare.html"
    ),
) -> None:
    """Compare runs side by side: a table of their metrics, and plots of accuracy and parameters per task.

    Runs of one method on one benchmark with different seeds (a `--seeds` group, or runs named one by one)
    also get a row of mean ± standard deviation."""
    from growsearch.report.compare import compare_rows, load_summaries, write_compare

    summaries = load_summaries(_runs_of(run_paths))
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
        headers = ("method", "scenarios", "backbones", "paper")
        rows = [
            (i.name, scenarios_shown(i.scenarios), ", ".join(i.backbones), i.paper) for i in method_infos()
        ]
    elif what == "benchmarks":  # scenarios as letters, so a row fits a line or two of 80 columns
        letters = {"task-il": "T", "class-il": "C", "domain-il": "D", "task-agnostic": "A"}
        caption = "scenarios: " + ", ".join(f"{c} {s}" for s, c in letters.items()) + " (first: default)"
        headers = ("benchmark", "tasks", "scenarios", "data", "description")
        rows = [
            (
                i.name,
                str(i.default_tasks),
                "".join(letters[s] for s in i.scenarios),
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
    table = Table(
        caption=caption if what == "benchmarks" else None,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    names = [row[0] for row in rows]  # a name is what a user types: never wrapped or cut
    table.add_column(headers[0], no_wrap=True, min_width=max(len(n) for n in [headers[0], *names]))
    for header in headers[1:]:
        table.add_column(header)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def main() -> None:  # pragma: no cover - the console script
    SIGNALS.install()
    app(prog_name="growsearch")
    sys.exit(0)
