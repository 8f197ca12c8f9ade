"""Packing benchmark: the same growth search with its trials trained one at a time and in packs.

What is measured, in this run: for each method in ``--methods`` (default RCL, CLEAS, MNTDP-D, PathNet),
its shipped search space with the network and training sections set to the methods benchmark's protocol
(``benchmarks/methods.py``: a 2x100 MLP, SGD 0.1, momentum 0.9, batch 32, ``--epochs`` epochs, CPU;
PathNet: see below) is run on ``--benchmark`` (default split-mnist5k, task-IL, ``--seed``) twice: with
``search.pack: 1`` (one trial at a time, as before packing) and with ``search.pack`` = ``--pack``
(default ``auto``: the method's limit, see `Method.pack_limit`, and the memory a candidate needs). The
two runs alternate, ``--repeats`` times, each in a fresh process that first runs the method once,
untimed, on a tiny stream (so one-off costs such as torch's lazy imports are charged to neither); the
timed span is `growsearch.runner.start_run` end to end. Each row shows the median repeat's wall seconds,
trials run and trials per minute, final average accuracy A_T, and the process's peak resident memory;
the ratios compare unpacked / packed wall time (speed-up) and packed / unpacked peak memory.
``--trials N`` sets RCL's and CLEAS's architectures per task (shipped: 50 and 200; MNTDP-D trains its
L + 1 candidates, PathNet one GA per task). ``--threads`` is torch's intra-op threads (default 2, the two
cores the targets are set for).

PathNet trains inside its tournaments, not trial by trial: its rows run its shipped YAML as it stands
(its network, training and GA options; ``search.pack``, set as above, has nothing to pack in its one
trial a task) with ``options.pack_contestants: false`` (each contestant in turn: the serial GA) and
``true`` (a wave of tournaments' contestants trained as one computation: `_pathnet_workers`). The packed
GA meets the same pairs and mutates the same genes for the same seed, but a wave's contestants step the
shared pool together, each seeing the others' training, so their fitnesses may differ, and with them,
from the first tournament whose winner changes, the GA: the PathNet line says, per task, how many
tournaments the two runs share before a winner differs (``=``: all of them, and the same committed path).

The packed RCL and CLEAS searches sample each pack from one REINFORCE policy and update it once per
pack, so their decisions (and A_T) may differ from the unpacked ones; MNTDP-D's search is deterministic
and commits the same decisions. The last line prints the smallest speed-up of RCL, CLEAS and PathNet
(of those run; else of all) as ``packing speed-up: X``.

With ``--fidelity halving`` the packed runs also stop losing trials early (``search.fidelity: halving``,
``--min-epochs``, ``--eta``; RCL and CLEAS reward a stopped child its accuracy where it stopped), against
the unpacked runs at full fidelity: the issue's "halving + packing against one trial at a time". With
``--seeds 0,1,2`` every run is made per seed; a row shows the median wall time (its run's trials and
memory) and the median A_T over seeds and repeats.

Run:  python benchmarks/packing.py [--methods rcl,cleas,mntdp-d,pathnet] [--epochs 5] [--trials N]
      [--pack auto|K] [--repeats 1] [--threads 2] [--benchmark split-mnist5k] [--seeds 0]
      [--fidelity full|halving] [--min-epochs 1] [--eta 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
METHODS = ["rcl", "cleas", "mntdp-d", "pathnet"]
SAMPLED = {"rcl", "cleas"}  # searches with a trial budget of their own (`--trials` sets it)
TARGETED = ("rcl", "cleas", "pathnet")  # the last line's smallest speed-up is theirs (MNTDP-D's packs train
# alone on a CPU, where padding its candidates costs more than packing saves)


def _child(spec: dict[str, Any]) -> dict[str, Any]:
    """One timed search in this process (after an untimed tiny one); what the parent prints."""
    import torch

    sys.path.insert(0, str(HERE))
    from methods import protocol_space

    from growsearch.config.space import load_space, space_from_dict
    from growsearch.runner import RunOptions, start_run

    torch.set_num_threads(spec["threads"])
    pathnet = spec["method"] == "pathnet"
    if pathnet:  # its shipped YAML, contestants trained one after another or together
        raw = copy.deepcopy(load_space("pathnet").to_dict())
        raw["options"] = {**raw.get("options", {}), "pack_contestants": spec["pack"] != 1}
    else:
        raw = copy.deepcopy(protocol_space(spec["method"], spec["epochs"]).to_dict())
    raw["search"] = {**raw.get("search", {}), "pack": spec["pack"], "fidelity": spec["fidelity"]}
    if spec["fidelity"] == "halving":
        raw["search"].update(min_epochs=spec["min_epochs"], eta=spec["eta"])
    if spec["trials"] is not None and spec["method"] in SAMPLED:
        raw["search"]["n_trials"] = spec["trials"]
    space = space_from_dict(raw, f"{spec['method']} (packing benchmark)")
    warm = copy.deepcopy(raw)
    warm["search"]["n_trials"] = min(raw["search"].get("n_trials") or 2, 2)
    warm["training"]["epochs"] = 1
    if spec["pack"] != 1:  # warm the packed trainer's code paths too
        warm["search"]["pack"] = 2
    if pathnet:  # a few tournaments warm its code paths
        warm["options"]["generations"] = 4
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as folder:
        tiny = RunOptions(benchmark="split-digits", n_tasks=2, max_per_task=40, seed=spec["seed"])
        start_run(space_from_dict(warm, "warm-up"), tiny, Path(folder) / "warm")
        options = RunOptions(benchmark=spec["benchmark"], scenario="task-il", seed=spec["seed"])
        started = time.perf_counter()
        result = start_run(space, options, Path(folder) / "run")
        seconds = time.perf_counter() - started
    trials = sum(sum(record.trials.values()) for record in result.records)
    return {
        "seconds": seconds,
        "trials": trials,
        "average_accuracy": float(result.metrics["metrics"]["average_accuracy"]),
        "decisions": result.metrics["decisions"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # PathNet: each task's tournament winners (the committed trial's GA)
        "winners": [[t["winner"] for t in record.mechanism["tournaments"]] for record in result.records]
        if pathnet
        else [],
    }


def _shared_tournaments(unpacked: dict[str, Any], packed: dict[str, Any]) -> str:
    """Per task: how many tournaments both GAs ran before a winner differs ("=": all, the same path)."""
    shares = []
    for task, (one, other) in enumerate(zip(unpacked["winners"], packed["winners"], strict=True)):
        same = 0
        while same < min(len(one), len(other)) and one[same] == other[same]:
            same += 1
        path = unpacked["decisions"][task]["path"] == packed["decisions"][task]["path"]
        shares.append("=" if same == len(one) == len(other) and path else f"{same}/{len(one)}")
    return " ".join(shares)


def _run_child(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{spec['method']} (pack {spec['pack']}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--trials", type=int, default=None)
    parser.add_argument("--pack", default="auto")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--benchmark", default="split-mnist5k")
    parser.add_argument("--seeds", default="0", help="comma-separated; medians over them")
    parser.add_argument("--fidelity", choices=("full", "halving"), default="full", help="the packed runs'")
    parser.add_argument("--min-epochs", type=int, default=1)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    pack = args.pack if args.pack == "auto" else int(args.pack)
    methods = args.methods.split(",")
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    seeds = [int(seed) for seed in args.seeds.split(",")]
    for _ in range(args.repeats):
        for seed in seeds:
            for method in methods:
                for label, value, fidelity in (("unpacked", 1, "full"), ("packed", pack, args.fidelity)):
                    spec = {
                        "method": method,
                        "pack": value,
                        "fidelity": fidelity if method != "pathnet" else "full",  # one trial a task
                        "min_epochs": args.min_epochs,
                        "eta": args.eta,
                        "epochs": args.epochs,
                        "trials": args.trials,
                        "threads": args.threads,
                        "benchmark": args.benchmark,
                        "seed": seed,
                    }
                    runs.setdefault((method, label), []).append(_run_child(spec))
    halving = ""
    if args.fidelity == "halving":
        halving = f", halving (min_epochs {args.min_epochs}, eta {args.eta})"
    print(
        f"{args.benchmark}, task-IL, seeds {args.seeds}, {args.epochs} epochs, {args.threads} threads, "
        f"packed: pack {args.pack}{halving}; unpacked: one trial at a time, full fidelity; "
        f"{args.repeats} repeat(s), trials per task: {args.trials or 'shipped'}"
    )
    header = (
        f"{'method':<10} {'run':<9} {'wall s':>8} {'trials':>7} {'trials/min':>11} {'A_T':>7} {'peak MB':>8}"
    )
    print(header)
    print("-" * len(header))
    speedups = {}
    for method in methods:
        medians = {}
        for label in ("unpacked", "packed"):
            rows = sorted(runs[(method, label)], key=lambda r: r["seconds"])
            row = rows[len(rows) // 2]  # the median run (the slower middle one of an even count)
            seconds = row["seconds"]
            accuracies = sorted(r["average_accuracy"] for r in rows)
            medians[label] = (seconds, row, accuracies[len(accuracies) // 2])
            rate = 60 * row["trials"] / seconds
            print(
                f"{method:<10} {label:<9} {seconds:8.1f} {row['trials']:7d} {rate:11.1f} "
                f"{medians[label][2]:7.4f} {row['peak_rss_mb']:8.0f}"
            )
        (slow, unpacked, slow_at), (fast, packed, fast_at) = medians["unpacked"], medians["packed"]
        speedups[method] = slow / fast
        same = "same decisions" if unpacked["decisions"] == packed["decisions"] else "other decisions"
        memory = packed["peak_rss_mb"] / unpacked["peak_rss_mb"]
        accuracy = fast_at - slow_at
        print(f"{method:<10} speed-up {slow / fast:.2f}x, memory {memory:.2f}x, A_T {accuracy:+.4f} ({same})")
        if method == "pathnet":
            print(f"{method:<10} tournaments shared before a winner differs, per task: ", end="")
            print(_shared_tournaments(unpacked, packed))
    targeted = [speedups[m] for m in TARGETED if m in speedups] or list(speedups.values())
    print(f"packing speed-up: {min(targeted):.2f}")


if __name__ == "__main__":
    main()
