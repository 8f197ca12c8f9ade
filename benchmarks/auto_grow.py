"""auto-grow against every fixed method, stream by stream: is a method that picks among methods' moves ever
beaten on both accuracy and size?

For each stream (split-mnist5k, permuted-digits with 20 tasks, CTrL's S^-, S_in and S_out built from the
embedded data), auto-grow and every fixed method that runs task-IL run under one protocol (`methods.py`'s: a
2x100 MLP, 5 epochs, SGD 0.1 momentum 0.9, batch 32; DEN, XdG and CCGN keep their YAMLs' optimisers), each in
a fresh process, one torch thread, the same seed. Printed per stream: A_T, parameters after the last task,
wall time and CTrL's transfer (last task's accuracy minus an independent model's, where the stream measures
it) of every method, and what it keeps counted whole (metrics' `kept_parameters`: masks and owners in bits,
state, gates; blank for a row cached before it was counted); the fixed methods whose (A_T, parameters) point
dominates auto-grow's (at least as accurate and at least as small); auto-grow's wall time over MNTDP-D's; and
the move auto-grow committed for the last task with the best candidate of every other move. Last line: `auto-
grow: dominated on N of M streams`.

Run:  python benchmarks/auto_grow.py [--streams ctrl-minus,ctrl-in] [--methods pnn,packnet]
      [--max-per-task N] [--seed 0] [--jobs 2] [--cache DIR]

`--jobs` runs that many fresh processes at once (wall times then share the machine: auto-grow and MNTDP-D
always run side by side, so their ratio stays fair). `--cache DIR` keeps each fixed method's row as JSON in
DIR and reads it back on the next call with the same stream, seed and cap (a fixed method's row does not
depend on auto-grow); auto-grow and MNTDP-D always run afresh. With `--cached-only` a fixed method without a
cached row is not run, and its row says so (it then cannot be counted as dominating).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
STREAMS = {  # name -> (benchmark, tasks: None for the benchmark's own)
    "split-mnist5k": ("split-mnist5k", None),
    "permuted-digits-20": ("permuted-digits", 20),
    "ctrl-minus": ("ctrl-minus", None),
    "ctrl-in": ("ctrl-in", None),
    "ctrl-out": ("ctrl-out", None),
}
GIVEN = "auto-grow"
REFERENCE = "mntdp-d"


def fixed_methods() -> list[str]:
    """Every method but auto-grow with a task-IL run under the protocol (GIM's columns are recurrent)."""
    from methods import runs_in

    from growsearch.methods import method_names

    return [m for m in method_names() if m not in (GIVEN, "gim") and runs_in(m, "task-il")]


def run_one(stream: str, method: str, seed: int, max_per_task: int | None) -> dict:
    """One run, in this process (the parent starts a fresh one per run): its figures as a dict."""
    import torch
    from methods import protocol_space

    from growsearch.runner import RunOptions, start_run

    torch.set_num_threads(1)
    benchmark, tasks = STREAMS[stream]
    options = RunOptions(
        benchmark=benchmark, scenario="task-il", n_tasks=tasks, seed=seed, max_per_task=max_per_task
    )
    with tempfile.TemporaryDirectory(prefix=f"auto-grow-bench-{method}-") as folder:
        started = time.perf_counter()
        result = start_run(protocol_space(method, 5), options, Path(folder) / "run")
        seconds = time.perf_counter() - started
    metrics, last = result.metrics, result.records[-1]
    row = {
        "method": method,
        "accuracy": float(metrics["metrics"]["average_accuracy"]),
        "parameters": int(metrics["parameters"][-1]),
        "kept_parameters": (metrics.get("kept_parameters") or [None])[-1],
        "seconds": seconds,
        "transfer": metrics["metrics"].get("transfer"),
    }
    if method == GIVEN:
        mechanism = last.mechanism
        row["last_move"] = {k: mechanism.get(k) for k in ("move", "source", "parameters")}
        row["alternatives"] = mechanism.get("alternatives", {})
        row["moves"] = [r.mechanism.get("move") for r in result.records]
    return row


def measure(
    stream: str,
    method: str,
    seed: int,
    max_per_task: int | None,
    cache: Path | None = None,
    cached_only: bool = False,
) -> dict:
    """One run in a fresh process (or a fixed method's cached row; with `cached_only`, a fixed method
    without one is not run and says so)."""
    cached = None
    if cache is not None and method not in (GIVEN, REFERENCE):
        cached = cache / stream / f"{method}-seed{seed}-cap{max_per_task}.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        if cached_only:
            return {"method": method, "error": "not run (no cached row, --cached-only)"}
    command = [sys.executable, str(Path(__file__)), "--one", stream, method, "--seed", str(seed)]
    if max_per_task is not None:
        command += ["--max-per-task", str(max_per_task)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"method": method, "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(row))
    return row


def dominates(row: dict, given: dict) -> bool:
    return row["accuracy"] >= given["accuracy"] and row["parameters"] <= given["parameters"]


def report(stream: str, rows: list[dict]) -> bool:
    """Print one stream's table; whether a fixed method dominates auto-grow on it."""
    print(f"\n== {stream} ==")
    print(f"{'method':<28} {'A_T':>7} {'parameters':>11} {'kept whole':>11} {'seconds':>8} {'transfer':>9}")
    for row in sorted(rows, key=lambda r: (r["method"] != GIVEN, r["method"])):
        if "error" in row:
            print(f"{row['method']:<28} failed: {row['error']}")
            continue
        transfer = "" if row["transfer"] is None else f"{row['transfer']:+.4f}"
        kept = "" if row.get("kept_parameters") is None else f"{row['kept_parameters']:,}"
        print(
            f"{row['method']:<28} {row['accuracy']:>7.4f} {row['parameters']:>11,} {kept:>11} "
            f"{row['seconds']:>8.1f} {transfer:>9}"
        )
    given = next((r for r in rows if r["method"] == GIVEN and "error" not in r), None)
    if given is None:
        print("auto-grow failed: no comparison")
        return True
    winners = [r["method"] for r in rows if r["method"] != GIVEN and "error" not in r and dominates(r, given)]
    print(
        f"dominating auto-grow (A_T >= {given['accuracy']:.4f} and parameters <= {given['parameters']:,}): "
        f"{', '.join(winners) or 'none'}"
    )
    reference = next((r for r in rows if r["method"] == REFERENCE and "error" not in r), None)
    if reference is not None:
        print(f"auto-grow wall time / MNTDP-D's: {given['seconds'] / reference['seconds']:.2f}")
    last = given["last_move"]
    print(f"auto-grow's moves per task: {', '.join(str(m) for m in given['moves'])}")
    print(f"last task committed: {last['move']} from task {last['source']} {last['parameters']}")
    for move, best in given["alternatives"].items():
        stopped = best.get("stopped_after_epochs")
        where = "" if stopped is None else f" (stopped by halving after {stopped} epoch{'s' * (stopped > 1)})"
        print(
            f"  best {move:<12} trial {best['trial']:>2}: val acc {best['val_accuracy']:.4f}{where}, "
            f"{best['added_parameters']:,} parameters added"
        )
    return bool(winners)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default=",".join(STREAMS))
    parser.add_argument("--methods", default=None, help="the fixed methods (default: every task-IL one)")
    parser.add_argument("--max-per-task", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, each a fresh process")
    parser.add_argument("--cache", type=Path, default=None, help="a folder keeping fixed methods' rows")
    parser.add_argument(
        "--cached-only", action="store_true", help="fixed methods: only the cached rows (others not run)"
    )
    parser.add_argument("--one", nargs=2, metavar=("STREAM", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.seed, args.max_per_task)))
        return 0
    streams = [s for s in args.streams.split(",") if s]
    unknown = [s for s in streams if s not in STREAMS]
    if unknown:
        parser.error(f"unknown streams {unknown}; expected some of {', '.join(STREAMS)}")
    methods = args.methods.split(",") if args.methods else fixed_methods()
    print(
        f"auto-grow vs {len(methods)} fixed methods on {len(streams)} streams, seed {args.seed}, one thread, "
        "a fresh process per run"
    )
    order = [GIVEN, *sorted(methods, key=lambda m: m != REFERENCE)]  # auto-grow and MNTDP-D side by side
    runs = [(stream, m) for stream in streams for m in order]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:  # threads wait on the fresh processes
        rows = list(
            pool.map(
                lambda run: measure(*run, args.seed, args.max_per_task, args.cache, args.cached_only), runs
            )
        )
    dominated = 0
    for stream in streams:
        dominated += report(stream, [row for (s, _), row in zip(runs, rows, strict=True) if s == stream])
    skipped = [
        f"{stream} {row['method']}" for (stream, _), row in zip(runs, rows, strict=True) if "error" in row
    ]
    if skipped:
        print(f"\nrows without a result (not counted as dominating): {', '.join(skipped)}")
    print(f"\nauto-grow: dominated on {dominated} of {len(streams)} streams")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
