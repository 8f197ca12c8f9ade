"""Conditional mechanisms: does each method's mechanism that acts only when its paper's condition holds fire
on a stream where that condition can arise, run as a user would?

Every row runs a method's shipped YAML unchanged (`growsearch run <method> --benchmark <stream>`: its
network, training and options as shipped; only the stream is named), in a fresh process on one thread with
the same seed, and reads the run's task records: the mechanism fired when the record says it acted on some
task (the tasks where it did are listed). The streams are chosen for the condition: CTrL's S^- (t1 again
at the end, with a tenth of its data) for a task related to an earlier one, a long permuted stream for a
network that fills up. A row that does not fire prints why, from the records (the relatedness reached
against the threshold, the free share left...).

Run:  python benchmarks/mechanisms.py [--only expert-gate,cpg] [--seed 0] [--max-per-task N]
Last line: `mechanisms fired: N of M`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
Records = list[dict[str, Any]]  # each task's record.json, as the run folder keeps it


@dataclass(frozen=True)
class Row:
    method: str
    mechanism: str
    benchmark: str
    n_tasks: int | None
    fired_on: Callable[[Records], list[int]]  # the tasks where it acted
    detail: Callable[[Records], str]  # what the records say about the condition


def _mech(record: dict[str, Any]) -> dict[str, Any]:
    return record.get("mechanism") or {}


def _tasks(records: Records, acted: Callable[[dict[str, Any]], bool]) -> list[int]:
    return [r["task"] for r in records if acted(_mech(r))]


def _relatedness(records: Records) -> str:
    peaks = [max(_mech(r).get("relatedness", {}).values(), default=0.0) for r in records[1:]]
    sources = [_mech(r).get("source") for r in records[1:]]
    return f"peak relatedness per task {[round(p, 2) for p in peaks]}; sources {sources}"


def _free(records: Records) -> str:
    free = [
        round(min(layer["free"] for layer in _mech(r).get("capacity", [{"free": 1.0}])), 2) for r in records
    ]
    return f"smallest free share after each task {free}"


ROWS = (
    Row(
        "expert-gate",
        "LwF from the most related expert (relatedness >= 0.85)",
        "ctrl-minus",
        None,
        lambda rs: _tasks(rs, lambda m: m.get("transfer") == "lwf"),
        _relatedness,
    ),
    Row(
        "expert-gate",
        "an expert other than the first task's as the source",
        "ctrl-minus",
        None,
        lambda rs: _tasks(rs, lambda m: m.get("source") not in (None, "task-0")),  # "task-j": expert j
        _relatedness,
    ),
    Row(
        "cpg",
        "growth (the accuracy goal missed)",
        "permuted-digits",
        20,
        lambda rs: _tasks(rs, lambda m: m.get("growth_steps", 0) > 0),
        lambda rs: f"goals {[round(_mech(r).get('accuracy_goal', 0), 3) for r in rs]}; " + _free(rs),
    ),
    Row(
        "pae",
        "expansion (free capacity below its threshold)",
        "permuted-digits",
        20,
        lambda rs: _tasks(rs, lambda m: m.get("expansions", 0) > 0),
        _free,
    ),
    Row(
        "den",
        "dynamic expansion (loss above tau)",
        "split-digits",
        None,
        lambda rs: _tasks(rs, lambda m: bool(m.get("expanded"))),
        lambda rs: f"units added per task {[_mech(r).get('expanded_units') for r in rs]}",
    ),
    Row(
        "den",
        "split/duplication (drift above sigma)",
        "split-digits",
        None,
        lambda rs: _tasks(rs, lambda m: any(m.get("split_units") or [])),
        lambda rs: f"units split per task {[_mech(r).get('split_units') for r in rs]}",
    ),
    Row(
        "rps-net",
        "path switching (saturation above its threshold)",
        "split-digits",
        None,
        lambda rs: _tasks(rs, lambda m: bool(m.get("switched"))),
        lambda rs: f"saturation per task {[round(_mech(r).get('saturation', 0), 3) for r in rs]}",
    ),
    Row(
        "packnet",
        "pruning (a share of each task's weights freed)",
        "split-digits",
        None,
        lambda rs: _tasks(rs, lambda m: (m.get("pruned_fraction") or 0) > 0),
        lambda rs: f"pruned fraction per task {[_mech(r).get('pruned_fraction') for r in rs]}",
    ),
    Row(
        "dgmw",
        "generator expansion (units added)",
        "split-digits",
        None,
        lambda rs: _tasks(rs, lambda m: sum(m.get("units_added") or []) > 0),
        lambda rs: f"units added per task {[_mech(r).get('units_added') for r in rs]}",
    ),
)


def run_one(method: str, benchmark: str, n_tasks: int | None, seed: int, max_per_task: int | None) -> Records:
    """The method's shipped YAML on `benchmark`, in this process; each task's record as a dict."""
    import torch

    from growsearch.config.space import load_space
    from growsearch.runner import RunOptions, start_run
    from growsearch.store.run_folder import RunFolder

    torch.set_num_threads(1)
    options = RunOptions(benchmark=benchmark, n_tasks=n_tasks, seed=seed, max_per_task=max_per_task)
    with tempfile.TemporaryDirectory(prefix=f"mechanisms-{method}-") as folder:
        result = start_run(load_space(method), options, Path(folder) / "run")
        return [r.to_json() for r in RunFolder.open(result.path).records()]


def measure(row: Row, seed: int, max_per_task: int | None, cache: dict) -> Records | str:
    """The row's run in a fresh process (one run per method and stream, shared by its rows)."""
    key = (row.method, row.benchmark, row.n_tasks)
    if key not in cache:
        command = [sys.executable, str(Path(__file__)), "--one", row.method, row.benchmark, str(row.n_tasks)]
        command += ["--seed", str(seed)] + (["--max-per-task", str(max_per_task)] if max_per_task else [])
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False
        )
        last = (done.stderr or "failed").strip().splitlines()[-1]
        cache[key] = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else last
    return cache[key]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None, help="methods to run (default: every row's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-per-task", type=int, default=None)
    parser.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        method, benchmark, n_tasks = args.one
        tasks = None if n_tasks == "None" else int(n_tasks)
        print(json.dumps(run_one(method, benchmark, tasks, args.seed, args.max_per_task)))
        return 0
    only = set(args.only.split(",")) if args.only else None
    rows = [r for r in ROWS if only is None or r.method in only]
    print(f"conditional mechanisms, shipped YAMLs, seed {args.seed}, one thread, a fresh process per run")
    cache: dict = {}
    fired = 0
    for row in rows:
        stream = row.benchmark + (f" ({row.n_tasks} tasks)" if row.n_tasks else "")
        records = measure(row, args.seed, args.max_per_task, cache)
        if isinstance(records, str):
            print(f"{row.method:<12} {row.mechanism:<56} {stream:<26} failed: {records}")
            continue
        tasks = row.fired_on(records)
        fired += bool(tasks)
        verdict = f"fired on tasks {tasks}" if tasks else "not fired"
        print(f"{row.method:<12} {row.mechanism:<56} {stream:<26} {verdict}")
        print(f"{'':<12} {row.detail(records)}")
    print(f"mechanisms fired: {fired} of {len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
