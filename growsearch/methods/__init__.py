"""Methods: one module each (`pnn.py`, `packnet.py`, ...), registered by name; algorithms that serve one
method (PathNet's tournament, the REINFORCE controller, DARTS, MNTDP's prior) live in `algorithms/`."""

from growsearch.methods.base import Candidate, Decisions, Method, Retrain, TaskContext
from growsearch.methods.registry import get_method, method_names, register_method

__all__ = [
    "Candidate",
    "Decisions",
    "Method",
    "Retrain",
    "TaskContext",
    "get_method",
    "method_names",
    "register_method",
]
