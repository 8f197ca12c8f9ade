"""Pictures of grown graphs: layout by layer and owner, SVG/PNG through Graphviz and through matplotlib,
GraphML/JSON for other tools, and what a later task added (--diff)."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import matplotlib.image
import networkx as nx
import pytest

from growsearch.graph.module_graph import INPUT, ModuleGraph
from growsearch.graph.specs import Activation, Head, Linear
from growsearch.methods import method_names
from growsearch.report.graph.diff import diff_picture, graph_diff, render_diff_text
from growsearch.report.graph.export import picture_to_graphml, picture_to_json
from growsearch.report.graph.layout import layout_graph
from growsearch.report.graph.picture import graph_picture
from growsearch.report.graph.render import (
    RenderError,
    graphviz_available,
    picture_to_dot,
    render_picture,
    resolve_engine,
)
from growsearch.store.run_folder import RunFolder

from report_runs import finished_run

# PathNet joins the list as soon as it is registered; until then the hand-built pool graph stands in.
METHODS = ["pnn", "packnet", "mntdp-d"] + (["pathnet"] if "pathnet" in method_names() else [])


def last_graph(method: str, factory) -> ModuleGraph:
    run = RunFolder.open(finished_run(method, factory))
    graph, _ = run.load_task(run.committed_tasks()[-1])
    return graph


def pool_graph() -> ModuleGraph:
    """A PathNet-like graph: a pool of 3 modules per layer (one per task); each task's path sums the
    modules it uses at a layer (task 0: its own; task 1: modules of tasks 0 and 1; task 2: of tasks 1, 2)."""
    graph = ModuleGraph((1, 8, 8))
    out = {task: INPUT for task in range(3)}
    uses = {0: (0,), 1: (0, 1), 2: (1, 2)}
    for layer in range(2):
        for owner in range(3):
            spec = Linear(64, 8, flatten=True) if layer == 0 else Linear(8, 8)
            graph.add(f"L{layer}/m{owner}", spec, [out[owner]], owner, layer=layer, frozen=owner < 2)
        for task, modules in uses.items():
            inputs = [f"L{layer}/m{m}" for m in modules]
            if len(inputs) == 1:
                out[task] = inputs[0]
                continue
            out[task] = f"L{layer}/join{task}"
            graph.add(out[task], Activation(None), inputs, task, merge="sum", layer=layer)
    for task in range(3):
        graph.add(f"t{task}/head", Head(8, 2), [out[task]], task)
        graph.set_head(task, f"t{task}/head")
    return graph


def check_png(data: bytes, path: Path) -> None:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    path.write_bytes(data)
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert image[..., :3].std() > 0.05  # not a blank canvas


def svg_texts(data: bytes) -> set[str]:
    assert len(data) > 5_000
    root = ElementTree.fromstring(data)
    assert root.tag.endswith("svg")
    return {"".join(e.itertext()).strip() for e in root.iter() if e.tag.endswith("text")}


def require_graphviz() -> None:
    if not graphviz_available():
        pytest.fail(
            "Graphviz's `dot` is not installed: `apt-get install -y graphviz` (CI's .ci/run installs it)"
        )


@pytest.mark.parametrize("engine", ["graphviz", "matplotlib"])
@pytest.mark.parametrize("method", METHODS)
def test_run_graphs_render_to_png_and_svg(method, engine, tmp_path_factory, tmp_path):
    if engine == "graphviz":
        require_graphviz()
    graph = last_graph(method, tmp_path_factory)
    picture = graph_picture(graph, 2)
    check_png(render_picture(picture, "png", engine), tmp_path / "graph.png")
    texts = svg_texts(render_picture(picture, "svg", engine))
    missing = [node_id for node_id in graph.node_ids() if node_id not in texts]
    assert not missing, f"the {engine} SVG does not name {missing}"
    assert any("task 2" in t for t in texts)  # the legend: parameters per task, the selected one marked


@pytest.mark.parametrize("engine", ["graphviz", "matplotlib"])
def test_module_pools_render(engine, tmp_path):
    if engine == "graphviz":
        require_graphviz()
    graph = pool_graph()
    picture = graph_picture(graph, 1)
    check_png(render_picture(picture, "png", engine), tmp_path / "pools.png")
    assert set(graph.node_ids()) <= svg_texts(render_picture(picture, "svg", engine))


def test_pnn_layout_puts_each_task_in_its_own_band_and_layers_in_columns(tmp_path_factory):
    graph = last_graph("pnn", tmp_path_factory)
    layout = layout_graph(graph)
    assert [label for _, label in layout.columns] == ["input", "L0", "L1", "head"]
    assert sorted(layout.bands) == [0, 1, 2, 3, 4]
    for node_id, place in layout.places.items():
        if node_id != INPUT:
            first, height = layout.bands[graph.node(node_id).owner]
            assert first <= place.row < first + height, node_id
    for source, target in graph.edges():  # every edge runs left to right
        assert layout.places[source].column < layout.places[target].column
    assert layout.places["t0/L0"].column == layout.places["t4/L0"].column  # layer 0 of every column


def test_mntdp_layers_show_module_pools(tmp_path_factory):
    graph = last_graph("mntdp-d", tmp_path_factory)
    pools = layout_graph(graph).pools()
    assert any(len(owners) >= 2 for owners in pools.values()), pools
    layout = layout_graph(pool_graph())
    assert sorted(layout.pools()[0]) == [0, 1, 2] and sorted(layout.pools()[1]) == [0, 1, 2]
    rows = [layout.places[f"L0/m{owner}"] for owner in range(3)]
    assert len({p.column for p in rows}) == 1 and len({p.row for p in rows}) == 3


def test_dot_highlights_the_view_dims_the_rest_and_marks_frozen_and_pruned(tmp_path_factory):
    graph = last_graph("packnet", tmp_path_factory)
    dot = picture_to_dot(graph_picture(graph, 2))
    assert dot.startswith('digraph "task 2"') and "rank=same" in dot
    assert '"shared/L1" -> "t2/head";' in dot  # on the view: drawn in full
    assert '"shared/L1" -> "t3/head" [color=' in dot  # elsewhere: dimmed
    t2 = next(line for line in dot.splitlines() if line.startswith('  "t2/head" ['))
    t3 = next(line for line in dot.splitlines() if line.startswith('  "t3/head" ['))
    assert "penwidth=2" in t2 and "peripheries=2" in t2 and 'fontcolor="#777777"' in t3
    shared = next(line for line in dot.splitlines() if line.startswith('  "shared/L0" ['))
    assert "free " in shared and "bgcolor" in shared  # weight shares per owner task, free ones white


def test_without_graphviz_auto_uses_matplotlib_and_graphviz_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on this PATH
    assert not graphviz_available() and resolve_engine("auto") == "matplotlib"
    picture = graph_picture(pool_graph(), 0)
    assert render_picture(picture, "svg", "auto").startswith(b"<?xml")
    with pytest.raises(RenderError, match="apt-get install graphviz"):
        render_picture(picture, "png", "graphviz")
    with pytest.raises(RenderError, match="engine 'nope'"):
        resolve_engine("nope")


def test_graphml_and_json_open_in_networkx(tmp_path_factory):
    graph = last_graph("packnet", tmp_path_factory)
    picture = graph_picture(graph, 1)
    from_graphml = nx.read_graphml(io.BytesIO(picture_to_graphml(picture).encode()))
    from_json = nx.node_link_graph(json.loads(picture_to_json(picture)), edges="edges")
    for loaded in (from_graphml, from_json):
        assert set(loaded.nodes) == set(graph.node_ids()) and set(loaded.edges) == set(graph.edges())
        assert loaded.nodes["t1/head"]["highlighted"] and not loaded.nodes["t3/head"]["highlighted"]
        assert loaded.nodes["shared/L0"]["parameters"] == graph.node("shared/L0").n_parameters
    assert (
        from_json.nodes["shared/L0"]["free_fraction"] == 0
    )  # the authors' schedule: the last task keeps all
    before_last, _ = RunFolder.open(finished_run("packnet", tmp_path_factory)).load_task(3)
    free = json.loads(picture_to_json(graph_picture(before_last, 3))).get("nodes")
    assert 0 < next(n["free_fraction"] for n in free if n["id"] == "shared/L0") < 1
    assert from_json.graph["task_parameters"]["0"] > from_json.graph["task_parameters"]["1"] > 0


def test_diff_shows_what_a_later_task_added(tmp_path_factory):
    run = RunFolder.open(finished_run("pnn", tmp_path_factory))
    (before, _), (after, _) = run.load_task(1), run.load_task(3)
    diff = graph_diff(before, after, 1, 3)
    assert "t2/L0" in diff.added and "t3/head" in diff.added and not diff.removed
    assert diff.added_parameters == after.n_parameters() - before.n_parameters() > 0
    text = render_diff_text(diff, after)
    assert text.startswith("what tasks 2..3 added over task 1") and "+   L0 t3/L0" in text
    picture = diff_picture(diff, after)
    assert {n.node_id for n in picture.nodes if n.highlighted} == set(diff.added)

    packnet = RunFolder.open(finished_run("packnet", tmp_path_factory))
    (before, _), (after, _) = packnet.load_task(0), packnet.load_task(1)
    diff = graph_diff(before, after, 0, 1)
    assert diff.added == ["t1/head"] and diff.claimed["shared/L0"] > 0
    assert "claimed from the free pool" in render_diff_text(diff, after)


def test_gated_and_masked_nodes_show_units_per_owner_and_what_a_mask_keeps():
    import torch

    from growsearch.report.inspect import render_text

    graph = ModuleGraph((4,))
    graph.add("shared", Linear(4, 10), [INPUT], 0)
    for task in (0, 1, 2):
        graph.add(f"t{task}/head", Head(10, 2), ["shared"], task)
        graph.set_head(task, f"t{task}/head")
    graph.node("shared").gates = {
        0: torch.tensor([1.0] * 4 + [0.0] * 6),
        1: torch.tensor([1.0] * 2 + [0.0] * 2 + [1.0] * 3 + [0.0] * 3),
        2: torch.zeros(10),
    }
    weight = graph.node("shared").weights["0.weight"]
    graph.node("shared").masks[1] = {"0.weight": (torch.arange(weight.numel()) % 4 == 0).view(weight.shape)}
    node = graph_picture(graph, 1).node("shared")
    assert node.granularity == "units" and node.shares == ((0, 0.4), (1, 0.3), (-1, 0.3))
    assert (node.used_fraction, node.own_fraction, node.free_fraction) == (0.5, 0.3, 0.3)
    assert node.mask_kept == 0.25
    assert node.detail_lines()[1:] == ["units: uses 50% · own 30% · free 30%", "mask keeps 25% of weights"]
    assert graph_picture(graph, 0).node("shared").mask_kept is None
    assert "units used 50%, own 30%, free/pruned 30%; mask keeps 25% of weights" in render_text(graph, 1)
    assert json.loads(picture_to_json(graph_picture(graph, 1)))["nodes"][1]["shares_of"] == "units"
