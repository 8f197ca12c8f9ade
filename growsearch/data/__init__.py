"""Benchmarks as task streams under the four continual-learning scenarios."""

from growsearch.data.benchmarks import (
    DEFAULT_BENCHMARK,
    BenchmarkInfo,
    get_benchmark_info,
    list_benchmarks,
    load_benchmark,
)
from growsearch.data.scenarios import SCENARIOS, Scenario, get_scenario
from growsearch.data.task import Split, Task, TaskStream

__all__ = [
    "DEFAULT_BENCHMARK",
    "SCENARIOS",
    "BenchmarkInfo",
    "Scenario",
    "Split",
    "Task",
    "TaskStream",
    "get_benchmark_info",
    "get_scenario",
    "list_benchmarks",
    "load_benchmark",
]
