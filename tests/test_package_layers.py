"""The package's import graph has no cycle, between modules or between its packages, and nothing below the
command line imports it: every piece can be read (and reused) from the bottom up."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

import growsearch

ROOT = Path(growsearch.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Lines under `if TYPE_CHECKING:` (annotations only: never run)."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def import_graph() -> nx.DiGraph:
    """module -> every growsearch module it imports, at the top or inside a function."""
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_lines(tree)
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from package import submodule` imports the submodule; `from module import name`, the module
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                    for a in node.names
                ]
            for target in targets:
                if target.startswith("growsearch") and target != name:
                    graph.add_edge(name, target)
    return graph


def _unit(module: str) -> str:
    """The layer a module belongs to: its top-level package (growsearch.methods.algorithms.darts -> methods),
    or itself for a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_module_imports_itself_back():
    graph = import_graph()
    cycles = list(nx.simple_cycles(graph))
    assert not cycles, f"import cycles: {cycles[:3]}"


def test_the_packages_form_layers_without_a_cycle():
    modules = import_graph()
    layers = nx.DiGraph()
    for source, target in modules.edges:
        if _unit(source) != _unit(target) and _unit(source) != "growsearch":
            layers.add_edge(_unit(source), _unit(target))
    assert nx.is_directed_acyclic_graph(layers), f"package cycles: {list(nx.simple_cycles(layers))[:3]}"
    # the order data flows in: lower layers never reach up
    below = {
        "growsearch.config",
        "growsearch.data",
        "growsearch.graph",
        "growsearch.grow",
        "growsearch.train",
    }
    for low in below:
        reached = nx.descendants(layers, low) if low in layers else set()
        assert not reached & {"growsearch.methods", "growsearch.search", "growsearch.backends"}, low
    assert "growsearch.search" not in nx.descendants(layers, "growsearch.methods")


def test_nothing_below_the_command_line_imports_it():
    graph = import_graph()
    importers = set(graph.predecessors("growsearch.cli"))
    assert importers <= {"growsearch.__main__"}, importers


def test_the_config_layer_knows_nothing_of_methods_or_torch():
    graph = import_graph()
    reached = set().union(
        *(nx.descendants(graph, m) | {m} for m in graph if m.startswith("growsearch.config"))
    )
    assert not any(
        m.startswith(("growsearch.methods", "growsearch.graph", "growsearch.train")) for m in reached
    )
    for module in reached:
        source = (ROOT.parent / module.replace(".", "/")).with_suffix(".py")
        if source.exists():
            assert "import torch" not in source.read_text(), module


def _sources() -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for p in ROOT.rglob("*.py")}


def test_only_the_trainer_and_the_controller_policy_call_backward():
    # and EWC's Fisher information: gradients measured after a task, never a training step
    allowed = {"train/trainer.py", "methods/algorithms/reinforce.py", "train/stabilisers.py"}
    calling = {name for name, text in _sources().items() if ".backward(" in text or "autograd.grad" in text}
    assert calling <= allowed, calling - allowed


def test_methods_sample_in_decide_only():
    """No method defines its space twice: the only `suggest` left is Ray Tune's Searcher API."""
    defining = {name for name, text in _sources().items() if "def suggest(" in text}
    assert defining <= {"backends/ray_backend.py"}, defining


def test_optuna_user_attributes_are_read_and_written_in_one_module():
    touching = {
        name
        for name, text in _sources().items()
        if ".user_attrs" in text or "set_user_attr(" in text or ".system_attrs" in text
    }
    assert touching <= {"trial_record.py"}, touching
