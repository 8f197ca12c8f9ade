"""The methods benchmark from two checkouts side by side: what a change did to each method's accuracy and
wall time, measured in one run.

`benchmarks/methods.py` runs in a fresh process from each tree (this one and `--baseline`, e.g. a
`git worktree add ../before <commit>` of the code before a change), one method at a time, the two trees
alternating which goes first, `--repeats` times each; both sides run the identical protocol and data with
one torch thread and their own untimed warm-up. Printed per method: A_T of both (deterministic for a given
seed and tree), the fastest wall time of each side and their ratio (this tree / baseline; other load only
ever adds time, so the fastest repeats are compared).

Run:  python benchmarks/compare_trees.py --baseline ../before [--methods pnn,packnet] [--repeats 3]
      [--benchmark split-mnist5k] [--epochs 5] [--scenario task-il|class-il]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
DEFAULT_METHODS = ",".join(
    ["pnn", "packnet", "mntdp-d", "mntdp-s", "pathnet", "rcl", "cleas", "den", "learn-to-grow"]
    + ["search_spaces/learn-to-grow-categorical.yaml"]
)


@dataclass
class Side:
    accuracy: float | None = None
    params: int | None = None
    walls: list[float] = field(default_factory=list)


def run_row(tree: Path, method: str, args: argparse.Namespace) -> tuple[float, float, int]:
    """(wall seconds, A_T, parameters) of one run of `method` by `tree`'s methods benchmark."""
    command = [sys.executable, str(tree / "benchmarks" / "methods.py"), "--methods", method, "--no-avalanche"]
    command += ["--benchmark", args.benchmark, "--epochs", str(args.epochs), "--threads", "1"]
    command += ["--scenario", args.scenario]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {method} failed:\n{done.stderr[-3000:]}")
    for line in done.stdout.splitlines():
        tokens = line.split()
        if len(tokens) > 8 and tokens[1] == "growsearch":
            return float(tokens[2]), float(tokens[6]), int(tokens[7].replace(",", ""))
    raise RuntimeError(f"{tree}: no row for {method} in:\n{done.stdout[-2000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other checkout")
    parser.add_argument("--methods", default=DEFAULT_METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--benchmark", default="split-mnist5k")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--scenario", default="task-il", help="task-il, or class-il (DER, RPS-Net, DGMw)")
    args = parser.parse_args()
    trees = {"baseline": args.baseline.resolve(), "this": HERE}
    print(
        f"methods benchmark, this tree {HERE} vs baseline {trees['baseline']}: {args.benchmark} "
        f"{args.scenario}, "
        f"{args.epochs} epochs, {args.repeats} repeat(s) each, interleaved"
    )
    print(
        f"{'method':<14} {'A_T before':>10} {'A_T after':>10} {'params before':>14} {'params after':>13} "
        f"{'min s before':>12} {'min s after':>11} {'ratio':>6}",
        flush=True,
    )
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        sides = {name: Side() for name in trees}
        for repeat in range(args.repeats):
            order = list(trees) if repeat % 2 == 0 else list(trees)[::-1]
            for name in order:
                wall, accuracy, params = run_row(trees[name], method, args)
                side = sides[name]
                side.walls.append(wall)
                side.accuracy, side.params = accuracy, params
        before, after = sides["baseline"], sides["this"]
        ratio = min(after.walls) / min(before.walls)
        print(
            f"{method:<14} {before.accuracy:>10.4f} {after.accuracy:>10.4f} {before.params:>14,} "
            f"{after.params:>13,} {min(before.walls):>12.2f} {min(after.walls):>11.2f} {ratio:>6.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
