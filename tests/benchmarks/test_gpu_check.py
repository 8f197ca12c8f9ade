"""The prepared device check (benchmarks/gpu.py) keeps working: its --smoke run on the CPU goes through every
part it measures on a GPU (the ResNet methods, both precisions, packed and single trials) and ends with the
two lines a device run reports."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_device_check_runs_on_the_cpu_with_smoke_sizes():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [
        sys.executable,
        "-W",
        "ignore",
        str(ROOT / "benchmarks" / "gpu.py"),
        "--smoke",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"gpu packed speed-up: \d+\.\d\d", lines[-2])
    assert re.fullmatch(r"gpu amp speed-up: \d+\.\d\d", lines[-1])
    assert "images/s" in done.stdout and "packed" in done.stdout
