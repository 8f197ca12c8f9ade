"""A researcher's daily use through the real command line: overrides, resume's guard and summary, file
permissions, what Optuna's own tools see, curves and loggers, compare by seed, figure formats, and light
commands that load neither torch nor Ray."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from typer.testing import CliRunner

from growsearch.cli import app
from growsearch.report.report_figures import _objective_plot, new_figure
from growsearch.report.search_history import TaskSearch, TrialRow
from growsearch.store.run_folder import RunFolder

from tiny_runs import tiny_space

runner = CliRunner()
SMALL = ["--tasks", "2", "--max-per-task", "40"]


def growsearch(*args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    """The installed command in its own process (`python -m growsearch`)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    return subprocess.run(
        [sys.executable, "-m", "growsearch", *args],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=(lambda: os.umask(umask)) if umask is not None else None,
        timeout=300,
    )


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spaces") / "mntdp.yaml"
    path.write_text(yaml.safe_dump(tiny_space("mntdp-d", training={"epochs": 2}).to_dict()))
    return path


@pytest.fixture(scope="module")
def overridden(space_file, tmp_path_factory):
    """One run with overrides and the TensorBoard logger, made once, in its own process, umask 022."""
    root = tmp_path_factory.mktemp("daily")
    done = growsearch(
        "run", str(space_file), *SMALL, "--runs-dir", str(root), "--name", "r",
        "--epochs", "3", "--lr", "0.05", "--set", "search.accuracy_tolerance=0.0",
        "--set", "network.layers=[{linear: 12}, {linear: 12}]", "--logger", "tensorboard",
        umask=0o022,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "r", done.stdout


def test_overrides_change_the_run_and_config_yaml_records_them(overridden):
    run, output = overridden
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["overrides"] == [
        "training.epochs=3",
        "training.lr=0.05",
        "search.accuracy_tolerance=0.0",
        "network.layers=[{linear: 12}, {linear: 12}]",
    ]
    space = config["space"]
    assert space["training"]["epochs"] == 3 and space["training"]["lr"] == 0.05
    assert [layer["linear"]["width"] for layer in space["network"]["layers"]] == [12, 12]
    assert "commit rule: the best score; on a tie, the candidate that adds the fewest" in output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "training.lr=fast"], "--set training.lr=fast: training.lr: expected a number, got 'fast'"),
        (["--set", "colour.x=1"], "unknown section 'colour'"),
        (["--set", "training.lr"], "expected section.key=value"),
        (["--epochs", "0"], "training.epochs: expected an integer >= 1, got 0"),
        (["--logger", "wandb"], "pip install 'growsearch[wandb]'"),
        (["--logger", "paper"], "unknown logger 'paper'"),
    ],
)
def test_a_bad_override_is_one_line_and_writes_nothing(space_file, tmp_path, args, message):
    done = growsearch("run", str(space_file), *SMALL, "--runs-dir", str(tmp_path), "--name", "x", *args)
    if args[:2] == ["--logger", "wandb"] and done.returncode == 0:
        pytest.fail("wandb is installed here: the missing-extra message cannot be checked")
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "x").exists()


def test_every_file_a_run_writes_respects_the_umask(overridden):
    run, _ = overridden
    modes = {str(p.relative_to(run)): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes


def test_resume_refuses_a_changed_config_unless_forced_and_says_what_it_keeps(overridden, tmp_path):
    import shutil

    run = Path(shutil.copytree(overridden[0], tmp_path / "copy"))
    done = growsearch("resume", str(run), "--set", "training.lr=0.2")
    assert done.returncode == 2 and "training.lr: 0.05 -> 0.2" in done.stderr and "--force" in done.stderr
    assert "2 task(s) committed (0..1): the run is complete" in done.stdout
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("epochs: 3", "epochs: 4"))
    done = growsearch("resume", str(run))
    assert done.returncode == 2 and "config.yaml was edited since the run started" in done.stderr
    done = growsearch("resume", str(run), "--force", "--set", "training.lr=0.2")
    assert done.returncode == 0, done.stderr[-2000:]
    recorded = yaml.safe_load(config.read_text())
    assert recorded["space"]["training"]["lr"] == 0.2 and recorded["overrides"][-1] == "training.lr=0.2"
    assert growsearch("resume", str(run)).returncode == 0  # the forced configuration is the run's now


def test_optuna_sees_the_objective_names_and_the_committed_trial(overridden):
    run, _ = overridden
    storage = RunFolder.open(run).storage()
    for task in range(2):
        study = optuna.load_study(study_name=f"task-{task}", storage=storage)
        record = json.loads((run / "tasks" / str(task) / "record.json").read_text())
        assert study.metric_names == ["accuracy"]
        assert study.user_attrs["committed"] == record["chosen_trial"]
        for trial in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
            assert len(trial.intermediate_values) == 3  # the validation accuracy of every epoch


def test_curves_go_to_the_run_folder_tensorboard_and_the_report(overridden, tmp_path):
    run, _ = overridden
    with open(run / "curves.csv") as handle:
        rows = list(csv.DictReader(handle))
    trials = {(int(r["task"]), int(r["trial"])) for r in rows}
    assert trials == {(0, 0), (1, 0), (1, 1), (1, 2)}
    assert len(rows) == 3 * len(trials) and all(float(r["train_loss"]) > 0 for r in rows)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert "task 1/trial 2/val_accuracy" in events.Tags()["scalars"]
    assert len(events.Scalars("task 1/trial 2/train_loss")) == 3
    done = growsearch("report", str(run), "--figures", "svg", "--figures", "pdf")
    assert done.returncode == 0, done.stderr
    for name in ("accuracy_matrix", "parameter_growth", "trial_history"):
        assert (run / f"{name}.svg").read_text().lstrip().startswith("<?xml")
        assert (run / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    page = (run / "report.html").read_text()
    assert 'id="figure-curves-0"' in page and 'id="figure-curves-1"' in page


def test_compare_labels_runs_by_name_and_seed_and_aggregates_seeds(space_file, tmp_path):
    for seed in ("0", "1"):
        done = growsearch(
            "run", str(space_file), *SMALL, "--epochs", "1", "--seed", seed,
            "--runs-dir", str(tmp_path), "--name", f"seed{seed}",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    runs = [str(tmp_path / "seed0"), str(tmp_path / "seed1")]
    result = runner.invoke(app, ["compare", *runs, "--output", str(tmp_path / "c.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "c.html").read_text()
    assert "seed0 (seed 0)" in page and "seed1 (seed 1)" in page
    assert "mntdp-d: mean ± std of 2 runs (seeds 0, 1)" in page and page.count(" ± ") >= 7
    with open(tmp_path / "c.csv") as handle:
        assert [row["seed"] for row in csv.DictReader(handle)] == ["0", "1"]


def test_many_trials_get_spaced_tick_labels():
    rows = [
        TrialRow(n, "COMPLETE", (0.5 + n / 200,), {"units": n}, None, None, 0, n == 7, n == 59, 1)
        for n in range(60)
    ]
    figure = new_figure()
    ax = figure.add_subplot()
    _objective_plot(ax, TaskSearch(1, ("accuracy",), ("maximize",), rows))
    figure.canvas.draw()
    visible = [t for t in ax.get_xticklabels() if t.get_text()]
    assert 2 <= len(visible) <= 13  # spaced integer ticks, not 60 overlapping labels


def test_help_and_list_start_without_torch_or_ray(tmp_path):
    script = (
        "import sys\n"
        "from growsearch.cli import app\n"
        "for args in (['--help'], ['run', '--help'], ['list', 'methods']):\n"
        "    try:\n"
        "        app(args, prog_name='growsearch')\n"
        "    except SystemExit as done:\n"
        "        assert not done.code, done.code\n"
        "print('HEAVY', sorted(m for m in ('torch', 'ray') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert "HEAVY []" in done.stdout and "--set" in done.stdout
