"""Commands that only read a run start quickly: `growsearch inspect` (text, json, graphml, --diff),
`compare` and `report` work where torch (and Ray; for inspect also Optuna and matplotlib) cannot be
imported, and inspect prints exactly what it prints of the graphs the torch loader gives
(`RunFolder.load_task`).
(`--help` and `list` without torch: tests/cli/test_cli_daily_use.py.)"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

from growsearch.report.graph.diff import diff_picture, graph_diff, render_diff_text
from growsearch.report.inspect import recorded_moves, render_inspect, render_picture_as
from growsearch.store.run_folder import RunFolder

from report_runs import finished_run

ROOT = Path(__file__).parents[2]
# each command runs with these modules unimportable: one that imports them fails, its traceback naming
# the import chain
SCRIPT = """
import contextlib, io, json, sys
commands, blocked = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in blocked:
    sys.modules[name] = None
from growsearch.cli import app
results = {}
for name, args in commands.items():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            app(args, prog_name="growsearch")
            code = 0
        except SystemExit as done:
            code = done.code
    results[name] = [code, out.getvalue()]
print(json.dumps(results))
"""


def _without(blocked: list[str], commands: dict[str, list[str]]) -> dict[str, list]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(commands), json.dumps(blocked)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    failed = {name: code for name, (code, _) in results.items() if code}
    assert not failed, (failed, done.stderr[-3000:])
    return results


def test_inspect_needs_no_torch_and_prints_what_the_torch_loader_shows(tmp_path_factory):
    run = RunFolder.open(finished_run("packnet", tmp_path_factory))
    path = str(run.path)
    commands = {
        "text": ["inspect", path, "--task", "2"],
        "json": ["inspect", path, "--task", "2", "--format", "json"],
        "graphml": ["inspect", path, "--format", "graphml"],
        "diff": ["inspect", path, "--diff", "0", "3"],
        "diff json": ["inspect", path, "--diff", "0", "3", "--format", "json"],
    }
    printed = _without(["torch", "ray", "optuna", "matplotlib"], commands)

    graphs = {task: run.load_task(task)[0] for task in run.committed_tasks()}  # the torch path
    last = max(graphs)
    moves = recorded_moves(run.records())
    changes = graph_diff(graphs[0], graphs[3], 0, 3)
    expected = {
        "text": render_inspect(graphs[2], 2, "text", moves=moves),
        "json": render_inspect(graphs[2], 2, "json", moves=moves),
        "graphml": render_inspect(graphs[last], last, "graphml", moves=moves),
        "diff": render_diff_text(changes, graphs[3]),
        "diff json": render_picture_as(diff_picture(changes, graphs[3], moves), "json"),
    }
    for name, text in expected.items():
        assert printed[name][1] == f"{text}\n", name
    assert "free/pruned" in printed["text"][1] and "claimed from the free pool" in printed["diff"][1]


def test_compare_and_report_need_no_torch(tmp_path_factory, tmp_path):
    runs = [str(finished_run(method, tmp_path_factory)) for method in ("pnn", "packnet")]
    page = tmp_path / "compare.html"
    commands = {
        "compare": ["compare", *runs, "--output", str(page)],
        "report": ["report", runs[1], "--output", str(tmp_path / "report")],
    }
    printed = _without(["torch", "ray"], commands)
    assert "A_T" in printed["compare"][1] and page.is_file()
    rows = list(csv.DictReader(page.with_suffix(".csv").open()))
    assert [r["method"] for r in rows] == ["pnn", "packnet"]
    assert "A_T" in printed["report"][1]
    assert 'id="figure-graph-3"' in (tmp_path / "report" / "report.html").read_text()  # graphs drawn
