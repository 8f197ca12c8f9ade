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


def test_the_graph_and_its_growth_know_no_benchmark():
    """What a network looks like depends on its input's shape, never on which benchmark feeds it."""
    graph = import_graph()
    for module in graph:
        if module.startswith(("growsearch.graph", "growsearch.grow")):
            reached = nx.descendants(graph, module)
            assert not any(m.startswith("growsearch.data") for m in reached), module


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


def _method_modules() -> dict[str, Path]:
    """Every method module and shared algorithm: what may import only the toolkit and the algorithms."""
    folder = ROOT / "methods"
    paths = [*folder.glob("*.py"), *(folder / "algorithms").glob("*.py")]
    infrastructure = {"__init__", "__main__", "base", "registry", "toolkit"}
    return {_module_name(p): p for p in paths if p.stem not in infrastructure}


def test_method_modules_import_only_the_toolkit_and_the_algorithms():
    allowed = ("growsearch.methods.toolkit", "growsearch.methods.algorithms")
    graph = import_graph()
    for module in _method_modules():
        reached = [t for t in graph.successors(module) if not t.startswith(allowed)]
        # a method's own helpers sit beside it: methods/_NAME_*.py, imported by methods/NAME.py alone
        stem = module.rsplit(".", 1)[1]
        own = [t for t in reached if t.rsplit(".", 1)[1].startswith(f"_{stem}_")]
        assert set(reached) == set(own), f"{module} imports {sorted(set(reached) - set(own))}"


def test_a_methods_own_helpers_serve_it_alone():
    graph = import_graph()
    names = {m.rsplit(".", 1)[1] for m in _method_modules()}
    for module in _method_modules():
        stem = module.rsplit(".", 1)[1]
        if not stem.startswith("_"):
            continue
        owner = next((n for n in names if stem.startswith(f"_{n}_")), None)
        assert owner is not None, f"{module}: a helper is named _METHOD_what.py after the method it serves"
        importers = {m for m in graph.predecessors(module) if m.startswith("growsearch.methods")}
        assert importers <= {f"growsearch.methods.{owner}"}, f"{module} is imported by {sorted(importers)}"


NODE_FIELDS = {"spec", "owner", "inputs", "frozen", "merge", "layer", "weights", "owners", "shares"}
NODE_FIELDS |= {"gates", "masks", "state"}
MUTATORS = {"pop", "update", "setdefault", "clear", "popitem", "__setitem__", "__delitem__"}


def _changes_a_node_field(target: ast.AST) -> bool:
    """Whether an assignment target writes a node's field: `x.gates[...] = `, `x.weights = `, ... on
    anything but `self` (a class's own attribute of the same name)."""
    while isinstance(target, ast.Subscript):
        target = target.value
    if not isinstance(target, ast.Attribute) or target.attr not in NODE_FIELDS:
        return False
    return not (isinstance(target.value, ast.Name) and target.value.id == "self")


def test_graph_state_changes_only_through_graph_and_grow():
    """Outside graph/ and grow/, nothing assigns to a node's fields or mutates its dicts: methods and the
    trainer change a graph through growth operators (grow.operators, grow.node_data)."""
    offending = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in ("graph", "grow"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[ast.AST] = []
            if isinstance(node, ast.Assign):
                targets = [*node.targets]
                targets = [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            elif isinstance(node, ast.Delete):
                targets = list(node.targets)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in MUTATORS
            ):
                targets = [node.func.value]
            offending += [f"{relative}:{node.lineno}" for t in targets if _changes_a_node_field(t)]
    assert not offending, offending


def test_no_search_module_is_over_300_lines():
    long = {p.name: n for p in (ROOT / "search").glob("*.py") if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long
