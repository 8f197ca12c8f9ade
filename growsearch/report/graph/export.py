"""A `GraphPicture` as data for other tools: GraphML (Gephi, yEd, networkx) and node-link JSON (networkx).

Both carry every fact the pictures show, per node: kind, owner task, layer, frozen, parameter count,
weight shares of owner-tracked nodes, whether the node is highlighted, its colour and layout position; per
edge whether it is highlighted; per graph the selected task and the parameters each task owns. GraphML
allows only scalar attributes, so missing values are left out and lists are written as JSON text.
"""

from __future__ import annotations

import io
import json
from typing import Any

import networkx as nx

from growsearch.report.graph.picture import GraphPicture


def picture_to_networkx(picture: GraphPicture) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.graph.update(
        title=picture.title,
        selected_task=picture.task,
        total_parameters=picture.total_parameters,
        free_parameters=picture.free_parameters,
        task_parameters={str(t): n for t, n in picture.task_parameters.items()},
        view_parameters={str(t): n for t, n in picture.view_parameters.items()},
        moves={str(t): m for t, m in picture.moves.items()},
    )
    for node in picture.nodes:
        x, y = picture.layout.xy(node.node_id)
        graph.add_node(
            node.node_id,
            label=node.node_id,
            kind=node.kind,
            owner=node.owner,
            layer=node.layer,
            frozen=node.frozen,
            parameters=node.parameters,
            used_fraction=node.used_fraction,
            own_fraction=node.own_fraction,
            free_fraction=node.free_fraction,
            weight_shares={str(owner): share for owner, share in node.shares} or None,
            shares_of=node.granularity if node.shares else None,
            mask_kept=node.mask_kept,
            move=node.move,
            highlighted=node.highlighted,
            colour=node.colour,
            x=x,
            y=y,
        )
    for source, target, lit in picture.edges:
        graph.add_edge(source, target, highlighted=lit)
    return graph


def picture_to_json(picture: GraphPicture) -> str:
    """networkx node-link JSON (`nx.node_link_graph(json.loads(text), edges="edges")` reads it back)."""
    data = nx.node_link_data(picture_to_networkx(picture), edges="edges")
    return json.dumps(data, indent=2) + "\n"


def _scalar(value: Any) -> Any:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return value


def picture_to_graphml(picture: GraphPicture) -> str:
    graph = picture_to_networkx(picture)
    plain = nx.DiGraph()
    plain.graph.update({k: _scalar(v) for k, v in graph.graph.items()})
    for node_id, data in graph.nodes(data=True):
        plain.add_node(node_id, **{k: _scalar(v) for k, v in data.items() if v is not None})
    plain.add_edges_from(graph.edges(data=True))
    buffer = io.BytesIO()
    nx.write_graphml(plain, buffer, encoding="utf-8")
    return buffer.getvalue().decode("utf-8")
