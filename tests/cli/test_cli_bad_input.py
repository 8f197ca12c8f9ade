"""Bad input on the command line, round 3: each case is one line and exit code 2, found before torch is
imported and before anything is written (the run's name stays free); files of a run folder that pass their
checksum but lie are refused by `inspect`, `report` and `resume` naming the file and the field; a read-only
(archived) run folder is read; a run folder given as a symbolic link is followed, and said so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from growsearch.atomic_files import sha256_of
from growsearch.cli import app

from tiny_runs import tiny_space

ROOT = Path(__file__).parents[2]
runner = CliRunner()

DEEP = "method: pnn\nnetwork: {layers: [{linear: 8}]}\noptions: {x: " + "[" * 3000 + "]" * 3000 + "}\n"
FILES = {
    "twice.yaml": "method: pnn\nnetwork: {layers: [{linear: 8}]}\ntraining: {lr: 0.1}\ntraining: {lr: 9}\n",
    "deep.yaml": DEEP,
    "mixed.yaml": "method: pnn\nnetwork: {layers: [{linear: 8}]}\ntraining: {1: 2, lr: 0.1}\n",
    "nomethod.yaml": "method: nosuch\nnetwork: {layers: [{linear: 8}]}\n",
}
CASES = [
    (["run", "pnn", "--benchmark", ""], "--benchmark: expected a name, got ''"),
    (["run", "pnn", "--scenario", ""], "--scenario: expected a name"),
    (["run", "pnn", "--data-root", ""], "--data-root '': expected a folder"),
    (["run", "pnn", "--name", ""], "--name '': expected one folder name"),
    (["run", "pnn", "--seed", str(2**64)], "--seed: expected an integer from 0 to 2**63 - 1"),
    (["run", "pnn", "--seed", "-1"], "--seed: expected an integer from 0 to 2**63 - 1"),
    (["run", "pnn", "--trials", str(10**26)], "search.n_trials: expected at most 100,000"),
    (["run", "pnn", "--tasks", "0"], "--tasks: expected an integer from 1 to"),
    (["run", "pnn", "--tasks", "many"], "Invalid value for '--tasks'"),
    (["run", "pnn", "--lr", "inf"], "training.lr: expected a finite number"),
    (["run", "pnn", "--set", "metrics.epsilon=.inf"], "metrics.epsilon: expected a finite number"),
    (
        ["run", "pnn", "--set", "inference.temperature=.inf"],
        "inference.temperature: expected a finite number",
    ),
    (
        ["run", "pnn", "--set", "backend.gpus_per_trial=.inf"],
        "backend.gpus_per_trial: expected a finite number",
    ),
    (["run", "pnn", "--set", "search.sampler=nosuch"], "search.sampler: unknown sampler 'nosuch'"),
    (["run", "pnn", "--set", "network.layers=[{linear: 100000000000000000000}]"], "width: expected at most"),
    (["run", "pnn", "--logger", "nosuch"], "unknown logger 'nosuch'"),
    (["run", "pnn", "--backend", "nosuch"], "unknown backend 'nosuch'"),
    (["run", "pnn", "--benchmark", "nosuch"], "unknown benchmark 'nosuch'"),
    (["run", "pnn", "--scenario", "nosuch"], "unknown scenario 'nosuch'"),
    (["run", "pnn", "--bogus"], "No such option: --bogus"),
    (["run", "{dir}/twice.yaml"], "twice.yaml: line 4: key 'training' is given twice (first on line 3)"),
    (["run", "{dir}/deep.yaml"], "deep.yaml: line 3: nested more than 64 levels deep"),
    (["run", "{dir}/mixed.yaml"], "mixed.yaml: line 3: key '1' is read as int"),
    (["run", "{dir}/nomethod.yaml"], "unknown method 'nosuch'"),
    (["resume", "{dir}/nowhere"], "nowhere is not a run folder"),
    (["resume", "{dir}/nowhere", "--set", "lr"], "--set 'lr': expected section.key=value"),
]


def test_bad_input_is_one_line_before_torch_and_before_any_folder(tmp_path):
    """Every case in one process that never imports torch: the mistake is found by the cheap checks."""
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    runs = tmp_path / "runs"
    cases = [[a.replace("{dir}", str(tmp_path)) for a in args] for args, _ in CASES]
    script = (
        "import contextlib, io, json, sys\n"
        "from growsearch.cli import app\n"
        "out = []\n"
        f"for args in {cases!r}:\n"
        f"    extra = ['--runs-dir', {str(runs)!r}] if args[0] == 'run' else []\n"
        "    extra += ['--name', 'x'] if args[0] == 'run' and '--name' not in args else []\n"
        "    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            app(args + extra, prog_name='growsearch')\n"
        "            code = 0\n"
        "        except SystemExit as done:\n"
        "            code = done.code\n"
        "    out.append((code, err.getvalue()))\n"
        "print(json.dumps({'results': out, 'torch': 'torch' in sys.modules}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for (args, expected), (code, stderr) in zip(CASES, report["results"], strict=True):
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and expected in lines[0], (args, code, stderr)
    assert not report["torch"]  # found before torch was imported
    assert not runs.exists() or not any(runs.iterdir())  # nothing written: every name is still free


# ---- files that pass their checksum and lie --------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lying")
    config = root / "pnn.yaml"
    config.write_text(yaml.safe_dump(tiny_space("pnn", training={"epochs": 1}).to_dict()))
    args = [
        "run",
        str(config),
        "--tasks",
        "2",
        "--max-per-task",
        "40",
        "--runs-dir",
        str(root),
        "--name",
        "r",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return root / "r"


def _rechecksum(folder: Path) -> None:
    names = json.loads((folder / "checksums.json").read_text())
    (folder / "checksums.json").write_text(json.dumps({n: sha256_of(folder / n) for n in names}))


def _edit_record(field, value):
    def edit(folder: Path) -> None:
        data = json.loads((folder / "record.json").read_text())
        data[field] = value
        (folder / "record.json").write_text(json.dumps(data))  # NaN is written as NaN

    return edit


def _edit_graph(edit_data):
    def edit(folder: Path) -> None:
        data = json.loads((folder / "graph.json").read_text())
        edit_data(data)
        (folder / "graph.json").write_text(json.dumps(data))

    return edit


def _first_dense(data):
    return next(n for n in data["nodes"] if n["spec"]["kind"] == "Linear")


def _cycle(data):
    first = _first_dense(data)
    head = data["graph"]["heads"]["0"]
    data["edges"] = [e for e in data["edges"] if e["target"] != first["id"]] + [
        {"source": head, "target": first["id"]}
    ]
    first["inputs"] = [head]


def _cast(dtype):
    def edit(folder: Path) -> None:
        tensors = load_file(folder / "weights.safetensors")
        save_file(
            {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()},
            folder / "weights.safetensors",
        )

    return edit


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_edit_record("trials", "many"), "record.json: trials: expected a mapping of trial states to counts"),
        (
            _edit_record("val_accuracy", float("nan")),
            "record.json: val_accuracy: expected null or an accuracy",
        ),
        (
            _edit_record("parameters", -5),
            "record.json: parameters: expected a count of parameters >= 0, got -5",
        ),
        (_edit_record("seconds", float("inf")), "record.json: seconds: expected null or a number of seconds"),
        (_edit_graph(_cycle), "graph.json: the nodes' inputs form a cycle"),
        (_edit_graph(lambda d: _first_dense(d)["inputs"].append(_first_dense(d)["id"])), "(a self-loop)"),
        (
            _edit_graph(lambda d: _first_dense(d)["spec"].update(out_features=-3)),
            "spec.out_features: expected",
        ),
        (_edit_graph(lambda d: _first_dense(d).update(owner="zero")), "owner: expected a task number"),
        (_edit_graph(lambda d: d["nodes"].pop(0)), "graph.json: the graph has no 'input' node"),
        (_cast(torch.float16), "weights.safetensors: node"),
        (_cast(torch.int64), "is int64; its spec expects float32"),
        (_cast(torch.bool), "is bool; its spec expects float32"),
    ],
)
def test_a_file_that_lies_is_one_line_for_inspect_report_and_resume(finished, tmp_path, edit, expected):
    run = Path(shutil.copytree(finished, tmp_path / "run"))
    edit(run / "tasks" / "0")
    _rechecksum(run / "tasks" / "0")
    for command in (["inspect", str(run), "--task", "0"], ["report", str(run)], ["resume", str(run)]):
        result = runner.invoke(app, command)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (command, result.output)
        assert expected in lines[0] and str(run / "tasks" / "0") in lines[0], (command, lines)


# ---- read-only and linked run folders -------------------------------------------------------------------
def test_a_read_only_run_is_read_and_its_report_goes_elsewhere(finished, tmp_path):
    """An archived run on a read-only mount: `report` and `inspect` read it without its lock and write
    their files into the current folder, saying so; a damaged journal is read up to the damage."""
    copy = Path(shutil.copytree(finished, tmp_path / "archived"))
    journal = copy / "study.journal"
    data = journal.read_bytes()
    middle = data.index(b"\n", len(data) // 2) + 1
    journal.write_bytes(data[:middle] + b"\0" * 4096 + data[middle:])
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    here = tmp_path / "here"
    here.mkdir()
    user = [] if os.getuid() == 0 else ["--map-root-user"]
    growsearch = f"{sys.executable} -m growsearch"
    inner = (
        f"mount --bind {copy} {copy} && mount -o remount,ro,bind {copy} && cd {here} && "
        f"{growsearch} report {copy}; echo EXIT=$?; {growsearch} inspect {copy} --format svg; echo EXIT=$?"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["unshare", "--mount", *user, "sh", "-c", inner], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.stdout.count("EXIT=0") == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"note: {copy} is read-only; writing {here / 'archived-report'} instead" in done.stdout
    assert (here / "archived-report" / "report.html").is_file() and (
        here / "archived-graph-task-1.svg"
    ).is_file()
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warnings and all(
        "not repaired (the run folder is read-only)" in w or "search history" in w for w in warnings
    )
    assert "Traceback" not in done.stderr
    after = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert after == before  # nothing in the run folder changed


def test_a_symlinked_run_folder_is_followed_and_said_so(finished, tmp_path):
    target = Path(shutil.copytree(finished, tmp_path / "disk" / "real"))
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "link").symlink_to(target)
    result = runner.invoke(app, ["inspect", str(runs / "link"), "--task", "0"])
    assert result.exit_code == 0 and f"a symbolic link, followed: the files are in {target}" in result.output
    result = runner.invoke(app, ["resume", str(runs / "link")])
    assert result.exit_code == 0 and "the run is complete" in result.output, result.output
    (runs / "dangling").symlink_to(tmp_path / "gone")
    config = tmp_path / "pnn.yaml"
    config.write_text(yaml.safe_dump(tiny_space("pnn").to_dict()))
    result = runner.invoke(app, ["run", str(config), "--runs-dir", str(runs), "--name", "dangling"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "is a symbolic link to" in lines[0], result.output
    assert "which does not exist" in lines[0]
