"""Start-up time of the commands that only read: each in a fresh process, without torch and with torch
imported first.

Commands: `growsearch --help`, `growsearch list methods`, `growsearch inspect RUN` (text and
`--format json`), `growsearch compare RUN1 RUN2` and `import growsearch`. Each runs in a fresh Python
process started the same way on both sides (`python -c`, calling the console script's `main`), once as it
is and once with `import torch` first: what the command cost when it loaded torch, measured beside it.
The two sides alternate run by run (who goes first alternating too), after one untimed warm-up of each,
and the median of `--repeats` wall times is reported with their ratio (torch first / as is). The warm-up
also records whether the command, as it is, imported torch (a command that still does shows a ratio near
1). The runs are made first (`growsearch run --tasks 2 --epochs 1`, two seeds), unless given.

Run:  python benchmarks/startup.py [--repeats 5] [--runs RUN1 RUN2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# prints, at exit, whether torch was imported (checked in the warm-up of each command as it is)
LAUNCH = (
    "{prelude}import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write('TORCH=%s\\n' % ('torch' in sys.modules)))\n"
    "{body}"
)
MAIN = "from growsearch.cli import main\nsys.argv = ['growsearch', *{args!r}]\nmain()\n"


def make_runs(root: Path) -> list[Path]:
    """Two tiny runs (2 tasks, 1 epoch, seeds 0 and 1) to inspect and compare."""
    runs = []
    for seed in (0, 1):
        name = f"startup-{seed}"
        command = ["run", "--tasks", "2", "--epochs", "1", "--seed", str(seed)]
        command += ["--runs-dir", str(root), "--name", name]
        subprocess.run(
            [sys.executable, "-m", "growsearch", *command], check=True, stdout=subprocess.DEVNULL, timeout=600
        )
        runs.append(root / name)
    return runs


def commands(runs: list[Path], scratch: Path) -> dict[str, str | None]:
    """Name -> the code after the prelude (None: `import growsearch` alone)."""
    run = str(runs[0])
    cli = {
        "growsearch --help": ["--help"],
        "growsearch list methods": ["list", "methods"],
        "inspect RUN (text)": ["inspect", run],
        "inspect RUN --format json": ["inspect", run, "--format", "json"],
        "compare RUN1 RUN2": ["compare", *map(str, runs), "--output", str(scratch / "compare.html")],
    }
    return {**{name: MAIN.format(args=args) for name, args in cli.items()}, "import growsearch": None}


def timed(code: str) -> tuple[float, bool]:
    """Wall seconds of one fresh process running `code`, and whether it imported torch."""
    env = {**os.environ, "COLUMNS": "120"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}):\n{code}\n{done.stderr[-2000:]}")
    return seconds, "TORCH=True" in done.stderr


def measure(body: str | None, repeats: int) -> tuple[list[float], list[float], bool]:
    """Wall times as it is and with torch imported first, alternating; whether it imports torch itself."""
    body = body if body is not None else "import growsearch\n"
    plain = LAUNCH.format(prelude="", body=body)
    torch_first = LAUNCH.format(prelude="import torch\n", body=body)
    _, imports_torch = timed(plain)  # warm-up: files cached, torch's too
    timed(torch_first)
    without, with_torch = [], []
    for round_ in range(repeats):
        order = [(plain, without), (torch_first, with_torch)]
        for code, times in order if round_ % 2 == 0 else order[::-1]:
            times.append(timed(code)[0])
    return without, with_torch, imports_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per side (median reported)")
    parser.add_argument("--runs", type=Path, nargs=2, help="two run folders (default: made first)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        runs = list(args.runs) if args.runs else make_runs(scratch)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
        print(f"median of {args.repeats} fresh processes per side; runs {runs[0]} {runs[1]}\n")
        header = f"{'command':<28} {'as is':>8} {'torch first':>12} {'ratio':>7}  imports torch"
        print(header)
        print("-" * len(header))
        for name, body in commands(runs, scratch).items():
            without, with_torch, imports_torch = measure(body, args.repeats)
            a, b = statistics.median(without), statistics.median(with_torch)
            print(f"{name:<28} {a:>7.2f}s {b:>11.2f}s {b / a:>6.1f}x  {'yes' if imports_torch else 'no'}")


if __name__ == "__main__":
    main()
