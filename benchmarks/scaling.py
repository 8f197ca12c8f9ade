"""Throughput of one growth search on the ray backend with 1 vs 2 workers, and the ray backend's overhead
per trial over the optuna backend, measured side by side in one run.

The search: MNTDP-D on split-mnist5k (2 tasks), task 1 searched with `--trials` random candidates of a
2x100 MLP, each trained `--epochs` epochs so a trial lasts several seconds (the target applies to trials
of >= 5 s). `--method rcl --pack 5` (or cleas, or `--pack auto`) measures packed trials instead: each Ray
trial carries a pack of candidates its worker trains together, so the per-trial overhead is paid per
pack. Throughput is trials per minute over task 1's search (first trial started to last trial
finished, from the Optuna storage). Every run uses one CPU thread per trial, as Ray gives a 1-CPU
worker, so the optuna backend's in-process trials are comparable.

Ray must bind to loopback on these machines:
    tools/loopback-only python benchmarks/scaling.py [--epochs 40 --trials 6] [--method rcl --pack 5]
With a GPU, `--gpus-per-trial 0.5` runs the same with fractional GPUs per trial (training.device cuda).
Targets: >= 1.7x trials per minute with 2 workers (>= 1.6x with packed trials); ray overhead per trial
<= 10%.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import optuna
import torch

from growsearch.backends import RayOptions
from growsearch.config.space import load_space, space_from_dict
from growsearch.runner import RunOptions, start_run
from growsearch.store.run_folder import RunFolder


def search_space(args: argparse.Namespace):
    raw = load_space(args.method).to_dict()
    device = "cuda" if args.gpus_per_trial else "cpu"
    raw["network"] = {"layers": [{"linear": 100}, {"linear": 100}]}
    raw["training"] = {**raw["training"], "epochs": args.epochs, "device": device}
    raw["search"] = {**raw["search"], "n_trials": args.trials, "pack": args.pack}
    if args.method == "mntdp-d":  # random candidates (its grid has only L + 1)
        raw["search"]["sampler"] = "random"
    raw["backend"] = {**raw["backend"], "gpus_per_trial": args.gpus_per_trial}
    return space_from_dict(raw, "benchmarks/scaling.py")


def trials_per_minute(run: Path, task: int = 1) -> tuple[float, int]:
    storage = RunFolder.open(run).storage()
    trials = optuna.load_study(study_name=f"task-{task}", storage=storage).get_trials()
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    start = min(t.datetime_start for t in done)
    end = max(t.datetime_complete for t in done)
    return len(done) / ((end - start).total_seconds() / 60), len(done)


def run_search(
    root: Path, name: str, backend: str, workers: int, args: argparse.Namespace
) -> tuple[float, int]:
    space = search_space(args)
    options = RunOptions(benchmark="split-mnist5k", n_tasks=2, seed=0, backend=backend)
    start_run(space, options, root / name, ray=RayOptions(local_cpus=workers))
    return trials_per_minute(root / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--method", default="mntdp-d", help="mntdp-d (random candidates) or rcl, cleas")
    parser.add_argument("--pack", default="1", help="trials a Ray trial carries: 1, K or auto")
    args = parser.parse_args()
    args.pack = args.pack if args.pack == "auto" else int(args.pack)
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        optuna_rate, n = run_search(root, "optuna", "optuna", 1, args)
        one_rate, _ = run_search(root, "ray-1", "ray", 1, args)
        two_rate, _ = run_search(root, "ray-2", "ray", 2, args)
    seconds = 60 / optuna_rate
    packed = f", packs of {args.pack}" if args.pack != 1 else ""
    search = f"{args.method}, split-mnist5k task 1{packed}"
    print(f"one growth search: {n} trials of ~{seconds:.1f} s each ({search})")
    print(f"{'backend':<22}{'trials/min':>12}")
    for label, rate in (
        ("optuna (in-process)", optuna_rate),
        ("ray, 1 worker", one_rate),
        ("ray, 2 workers", two_rate),
    ):
        print(f"{label:<22}{rate:>12.2f}")
    target = "1.7x for trials >= 5 s" if args.pack == 1 else "1.6x for packed trials"
    print(f"speed-up with 2 workers: {two_rate / one_rate:.2f}x (target >= {target})")
    print(f"ray overhead per trial over optuna: {100 * (optuna_rate / one_rate - 1):+.1f}% (target <= 10%)")


if __name__ == "__main__":
    main()
