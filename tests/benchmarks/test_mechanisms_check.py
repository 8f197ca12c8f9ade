"""The conditional-mechanisms benchmark (benchmarks/mechanisms.py) reads what it claims from a real run: on a
small stream, PackNet's pruning row fires on the tasks its records show pruned, with the shipped schedule
read from them, and the last line counts it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_mechanisms_benchmark_reads_each_rows_verdict_from_the_runs_records():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    script = str(ROOT / "benchmarks" / "mechanisms.py")
    command = [sys.executable, "-W", "ignore", script, "--only", "packnet", "--max-per-task", "40"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert "pruning" in lines[1] and "fired on tasks [0, 1, 2, 3]" in lines[1]
    assert "pruned fraction per task [0.5, 0.75, 0.75, 0.75, 0.0]" in lines[2]  # the shipped schedule
    assert lines[-1] == "mechanisms fired: 1 of 1"
