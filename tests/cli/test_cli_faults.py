"""The run folder under faults and bad input, through the real command line: every error a user can
cause is one line with exit code 2, nothing already written is lost, and loading checks meaning, not
only bytes."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

from growsearch.atomic_files import sha256_of

from tiny_runs import tiny_space

ROOT = Path(__file__).parents[2]
FAST = ["--tasks", "2", "--max-per-task", "40", "--epochs", "1"]


def growsearch(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "growsearch", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def one_line(done: subprocess.CompletedProcess, *expected: str) -> None:
    """Exit code 2 and exactly one line on stderr, holding every expected part (no traceback)."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    for part in expected:
        assert part in lines[0], lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    done = growsearch("run", "pnn", *FAST, "--runs-dir", str(root), "--name", "done")
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "done"


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "copy"))


def _space(tmp_path: Path, **sections) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(tiny_space("pnn", **sections).to_dict()))
    return path


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"network": {"layers": [{"linear": 200000}, {"linear": 200000}]}}, "network.max_parameters allows"),
        (
            {"network": {"layers": [{"conv": {"channels": 4, "stride": 0}}]}},
            "stride: expected an integer >= 1",
        ),
        (
            {"network": {"layers": [{"conv": {"channels": 4, "kernel": 20, "padding": 0}}]}},
            "expected kernel, stride, padding and pool that fit the input",
        ),
        ({"network": {"layers": [{"linear": {"width": 8, "activation": "swish"}}]}}, "unknown activation"),
        ({"training": {"device": "cuda"}}, "no CUDA device is available"),
    ],
)
def test_a_bad_space_is_one_line_and_leaves_no_folder(tmp_path, setting, expected):
    data = tiny_space("pnn").to_dict()
    for section, values in setting.items():
        data[section] = {**data[section], **values}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    done = growsearch("run", str(path), *FAST, "--runs-dir", str(tmp_path / "runs"), "--name", "x")
    one_line(done, expected)
    assert not (tmp_path / "runs" / "x").exists()  # nothing written: the same --name works once fixed
    data = tiny_space("pnn").to_dict()
    path.write_text(yaml.safe_dump(data))
    assert (
        growsearch("run", str(path), *FAST, "--runs-dir", str(tmp_path / "runs"), "--name", "x").returncode
        == 0
    )


def test_a_method_level_mistake_is_one_line_and_leaves_no_folder(tmp_path):
    """Found once the method is known (its options' sizes, a sampler only another method serves), still
    before the run folder exists: one process runs every case."""
    cases = [
        (
            ["pnn", "--set", "options.adapter_hidden=10000000000"],
            "options.adapter_hidden: expected null or an integer",
        ),
        (["rcl", "--set", "options.controller_hidden=0"], "options.controller_hidden: expected an integer"),
        (
            ["cleas", "--set", "options.max_new_units=1000000000"],
            "options.max_new_units: expected an integer from 1 to 10,000",
        ),
        (["hat", "--set", "search.sampler=grid"], "search.sampler: 'grid' is mntdp-d's own"),
        # finite, but past what a float32 optimiser step holds (it overflowed inside the first step; 1e30
        # still trains, to the NaN loss the tests below expect)
        (["pnn", "--lr", "1e308"], "training.lr: expected at most 3.4e38"),
        (
            ["pnn", "--set", "training.weight_decay=1e300"],
            "training.weight_decay: expected at most 3.4e38",
        ),
    ]
    script = (
        "import contextlib, io, json\n"
        "from growsearch.cli import app\n"
        "out = []\n"
        f"for args in {[args for args, _ in cases]!r}:\n"
        f"    err = io.StringIO()\n"
        "    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        f"            app(['run', *args, '--runs-dir', {str(tmp_path / 'runs')!r}], prog_name='growsearch')\n"
        "            code = 0\n"
        "        except SystemExit as done:\n"
        "            code = done.code\n"
        "    out.append((code, err.getvalue()))\n"
        "print(json.dumps(out))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for (args, expected), (code, stderr) in zip(cases, results, strict=True):
        lines = stderr.strip().splitlines()
        assert code == 2 and len(lines) == 1 and expected in lines[0], (args, stderr)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--tasks", "0"], "--tasks: expected an integer from 1 to"),
        (["--max-per-task", "0"], "--max-per-task: expected an integer from 1 to"),
        (["--name", "../../x"], "expected one folder name"),
        (["--name", "/abs"], "expected one folder name"),
        (["--name", "."], "expected one folder name"),
        (["--name", ".."], "expected one folder name"),
        (["--name", "x" * 300], "at most 100"),
    ],
)
def test_bad_options_are_one_line(tmp_path, args, expected):
    runs = tmp_path / "runs"
    one_line(growsearch("run", "pnn", "--runs-dir", str(runs), *args), expected)
    assert not runs.exists() or not any(runs.iterdir())


def test_a_binary_yaml_is_one_line(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary")
    one_line(growsearch("run", str(path), "--runs-dir", str(tmp_path)), "space.yaml: not a text file")


def test_an_exponent_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 reads 1e-3 as a string; growsearch reads it as the number it is."""
    data = tiny_space("pnn").to_dict()
    data["training"]["lr"] = "1e-2"
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    assert growsearch("run", str(path), *FAST, "--runs-dir", str(tmp_path), "--name", "e").returncode == 0
    assert yaml.safe_load((tmp_path / "e" / "config.yaml").read_text())["space"]["training"]["lr"] == 0.01


def test_a_nan_loss_is_one_line_without_optunas_traceback(tmp_path):
    done = growsearch("run", "pnn", *FAST, "--lr", "1e30", "--runs-dir", str(tmp_path), "--name", "nan")
    one_line(done, "task 0: no trial completed", "training loss became")


def test_an_unwritable_runs_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    one_line(growsearch("run", "pnn", *FAST, "--runs-dir", str(blocker), "--name", "x"), str(blocker))


def test_a_full_disk_is_one_line_and_committed_work_survives(tmp_path):
    """On a 300 kB filesystem the run stops where space runs out: one line naming the file and the reason;
    every task committed before loads whole."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    user = [] if os.getuid() == 0 else ["--map-root-user"]
    check = (
        "from growsearch.store.run_folder import RunFolder; "
        f"r = RunFolder.open('{mount}/full'); "
        "print('LOADED', [r.load_task(t)[1].task for t in r.committed_tasks()])"
    )
    run = f"{sys.executable} -m growsearch run pnn --tasks 5 --max-per-task 40 --epochs 1"
    inner = (
        f"mount -t tmpfs -o size=300k tmpfs {mount} && {run} --runs-dir {mount} --name full; "
        f'echo EXIT=$?; {sys.executable} -c "{check}"'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["unshare", "--mount", *user, "sh", "-c", inner], capture_output=True, text=True, env=env, timeout=300
    )
    assert "EXIT=2" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "LOADED [" in done.stdout  # whatever was committed loads, checksums and all


def test_a_corrupted_config_is_one_line(run_copy):
    (run_copy / "config.yaml").write_bytes(b"\xff\xfe\x00 not yaml")
    one_line(growsearch("resume", str(run_copy)), "config.yaml is not text")


def test_a_config_with_wrong_types_is_one_line(run_copy):
    config = yaml.safe_load((run_copy / "config.yaml").read_text())
    config["run"]["seed"] = "zero"
    (run_copy / "config.yaml").write_text(yaml.safe_dump(config))
    one_line(growsearch("resume", str(run_copy), "--force"), "config.yaml: run.seed: expected an integer")


def test_a_torn_baseline_or_metrics_file_is_rebuilt(run_copy):
    (run_copy / "baseline.json").write_text('{"torn": ')
    (run_copy / "metrics.json").write_bytes(b"\x00\x01")
    done = growsearch("report", str(run_copy))
    assert done.returncode == 0 and "metrics.json was missing or unreadable: rebuilt" in done.stderr
    metrics = json.loads((run_copy / "metrics.json").read_text())
    assert metrics["tasks_committed"] == 2 and metrics["random_init_accuracy"] is None
    assert growsearch("resume", str(run_copy)).returncode == 0
    assert len(json.loads((run_copy / "baseline.json").read_text())) == 2  # recomputed


def _rewrite_checksums(folder: Path) -> None:
    sums = json.loads((folder / "checksums.json").read_text())
    (folder / "checksums.json").write_text(json.dumps({name: sha256_of(folder / name) for name in sums}))


def test_an_edited_record_is_refused_by_checksum_and_by_meaning(run_copy):
    record = run_copy / "tasks" / "1" / "record.json"
    data = json.loads(record.read_text())
    data["accuracy_row"] = ["high", 0.5]
    record.write_text(json.dumps(data))
    one_line(growsearch("report", str(run_copy)), "record.json does not match its checksum")
    _rewrite_checksums(record.parent)
    one_line(growsearch("report", str(run_copy)), "record.json: accuracy_row: expected accuracies in [0, 1]")


def test_weights_rewritten_to_nan_are_refused_even_with_checksums(run_copy):
    folder = run_copy / "tasks" / "1"
    tensors = load_file(folder / "weights.safetensors")
    tensors = {k: v * float("nan") if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, folder / "weights.safetensors")
    _rewrite_checksums(folder)
    for command in (["inspect", str(run_copy)], ["report", str(run_copy)]):
        one_line(growsearch(*command), "holds NaN or infinite values, not weights")


def test_a_lost_journal_is_reported_not_hidden(run_copy):
    (run_copy / "study.journal").unlink()
    done = growsearch("report", str(run_copy))
    assert done.returncode == 0
    assert "task 0's search history is missing" in done.stderr and "task 1's" in done.stderr
    assert "task 1&#x27;s search history is missing" in (run_copy / "report.html").read_text()


def test_a_torn_journal_tail_is_moved_aside_and_the_run_resumes(tmp_path):
    space = _space(tmp_path, training={"epochs": 1})
    run = tmp_path / "runs" / "torn"
    assert (
        growsearch(
            "run",
            str(space),
            "--tasks",
            "2",
            "--max-per-task",
            "40",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--name",
            "torn",
        ).returncode
        == 0
    )
    journal = run / "study.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole[:-15])  # as if killed while the last record was being appended
    (run / "study.journal.lock").symlink_to(journal)  # and the journal's lock left behind by the kill
    done = growsearch("resume", str(run))
    assert done.returncode == 0, done.stderr[-2000:]
    notes = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(notes) == 1 and "ended in a torn record" in notes[0]
    aside = list(run.glob("study.journal.torn-*"))
    assert len(aside) == 1 and whole[:-15].endswith(aside[0].read_bytes())
    assert not (run / "study.journal.lock").is_symlink()  # removed, not waited out (Optuna: 30 s)
    assert growsearch("report", str(run)).returncode == 0


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    space = _space(tmp_path, training={"epochs": 5000})  # still running while the others are refused
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "growsearch", "run", str(space), "--tasks", "2"]
    command += ["--runs-dir", str(tmp_path), "--name", "busy"]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "busy" / "config.yaml").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.05)
        one_line(growsearch("resume", str(tmp_path / "busy")), "is in use by pid", str(first.pid), "on host")
        one_line(
            growsearch("run", str(space), "--runs-dir", str(tmp_path), "--name", "busy"), "in use by pid"
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel released the lock (and the rest of the run is cut short)
    assert (
        growsearch("resume", str(tmp_path / "busy"), "--set", "training.epochs=1", "--force").returncode == 0
    )


def test_a_truncated_journal_is_reported_not_hidden(run_copy):
    journal = run_copy / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[: len(lines) // 2]))  # whole records, half of them lost
    done = growsearch("report", str(run_copy))
    assert done.returncode == 0
    assert "task 1's search history is" in done.stderr, done.stderr[-2000:]


def _mnist_root(tmp_path: Path) -> Path:
    """torchvision's MNIST layout with every raw file present but holding garbage."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x03garbage")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"")
    return tmp_path / "data"


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (subprocess.call, (["touch", self.marker],))


def test_garbage_or_hostile_mnist_files_are_one_line(tmp_path):
    root = _mnist_root(tmp_path)
    command = ["run", "pnn", "--benchmark", "split-mnist", "--data-root", str(root), "--runs-dir"]
    one_line(growsearch(*command, str(tmp_path / "runs")), "cannot read the MNIST train files", str(root))
    processed = root / "MNIST" / "processed"
    processed.mkdir()
    marker = tmp_path / "ran"
    for name in ("training.pt", "test.pt"):
        (processed / name).write_bytes(pickle.dumps(_RunsCode(marker), protocol=2))
    one_line(growsearch(*command, str(tmp_path / "runs")), "processed", "refuses to load")
    assert not marker.exists() and not (tmp_path / "runs").exists()


def test_a_read_only_run_folder_is_one_line_and_intact(finished, tmp_path):
    """`resume` of a run folder on a read-only mount: one line naming the path it could not write."""
    copy = Path(shutil.copytree(finished, tmp_path / "ro"))
    (copy / "metrics.json").unlink()  # something for resume to write
    before = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    user = [] if os.getuid() == 0 else ["--map-root-user"]
    inner = (
        f"mount --bind {copy} {copy} && mount -o remount,ro,bind {copy} && "
        f"{sys.executable} -m growsearch resume {copy}; echo EXIT=$?"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["unshare", "--mount", *user, "sh", "-c", inner], capture_output=True, text=True, env=env, timeout=300
    )
    assert "EXIT=2" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(copy) in lines[0] and "Read-only file system" in lines[0], lines
    after = {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    assert after == before


def test_an_interrupt_that_breaks_a_library_clean_up_still_reads_as_an_interrupt(tmp_path, monkeypatch):
    """Ctrl-C between Optuna's journal lock rename and unlink makes its release raise FileNotFoundError in
    the interrupt's place: the run still says it was interrupted (exit 130), not a file error."""
    from typer.testing import CliRunner

    import growsearch.runner
    from growsearch.cli import app

    def interrupted_mid_release(space, options, path, *args, **kwargs):
        path.mkdir(parents=True)
        (path / "config.yaml").write_text("run: {}\nspace: {}\n")  # the run folder exists by then
        try:
            raise KeyboardInterrupt
        except BaseException:
            os.unlink(tmp_path / "study.journal.lock-gone.rename")  # what Optuna's release does then

    monkeypatch.setattr(growsearch.runner, "start_run", interrupted_mid_release)
    result = CliRunner().invoke(app, ["run", "pnn", "--runs-dir", str(tmp_path), "--name", "cut"])
    assert result.exit_code == 130, result.output
    assert "interrupted: 0 task(s) committed; resume with" in result.output
