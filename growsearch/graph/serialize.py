"""Save and load a module graph: structure as readable JSON, weights as safetensors, and checksums.

The folder's layout, and how reading it checks every file, is in `graph.checkpoint`; this module writes it
and loads it with torch tensors (to compile, train, resume). Loading refuses a torn or edited checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import torch
from safetensors.torch import load_file, save

from growsearch.atomic_files import atomic_write_bytes, atomic_write_json, sha256_of
from growsearch.graph.checkpoint import (
    CHECKSUM_FILE,
    GATE,
    GRAPH_FILE,
    MASK,
    NORM,
    STATE,
    WEIGHTS_FILE,
    read_checkpoint,
    verify_checksums,
)
from growsearch.graph.module_graph import ModuleGraph
from growsearch.graph.node_link_checks import FORMAT_VERSION

__all__ = ["GRAPH_FILE", "WEIGHTS_FILE", "graph_to_json", "load_graph", "save_graph", "verify_checksums"]


def graph_to_json(graph: ModuleGraph) -> dict:
    """The graph as node-link data a person (or networkx, or Gephi) can read."""
    plain = nx.DiGraph()
    for node_id, node in graph.nodes():
        plain.add_node(
            node_id,
            spec=node.spec.to_dict(),
            owner=node.owner,
            inputs=list(node.inputs),
            frozen=node.frozen,
            merge=node.merge,
            layer=node.layer,
            parameters=node.n_parameters,
            owner_tracked=sorted(node.owners),
            shares=node.shares,
            gated_tasks=sorted(node.gates),
            masked_tasks=sorted(node.masks),
            state=sorted(node.state),
        )
    plain.add_edges_from(graph.edges())
    data = nx.node_link_data(plain, edges="edges")
    data["graph"] = {
        "format_version": FORMAT_VERSION,
        "input_shape": list(graph.input_shape),
        "heads": {str(t): h for t, h in sorted(graph.heads.items())},
    }
    return data


def save_graph(
    graph: ModuleGraph,
    folder: Path,
    extra_json: dict[str, object] | None = None,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write the checkpoint; `extra_json` files (e.g. a task's record) and `extra_tensors` safetensors files
    (a task's gate) join it under the same checksums."""
    folder = Path(folder)
    extra_json = extra_json or {}
    extra_tensors = extra_tensors or {}
    tensors = {}
    for node_id, node in graph.nodes():
        for name, value in node.weights.items():
            tensors[f"{node_id}|{name}"] = value.contiguous()
        for name, value in node.owners.items():
            tensors[f"{node_id}|{name}|owners"] = value.contiguous()
        for task, value in node.gates.items():
            tensors[f"{node_id}|{GATE}|{task}"] = value.contiguous()
        for task, masks in node.masks.items():
            for name, value in masks.items():
                tensors[f"{node_id}|{MASK}|{task}|{name}"] = value.contiguous()
        for name, value in node.state.items():
            tensors[f"{node_id}|{STATE}|{name}"] = value.contiguous()
        for task, norm in node.norms.items():
            for name, value in norm.items():
                tensors[f"{node_id}|{NORM}|{task}|{name}"] = value.contiguous()
    atomic_write_json(folder / GRAPH_FILE, graph_to_json(graph))
    atomic_write_bytes(folder / WEIGHTS_FILE, save(tensors))
    for name, data in extra_json.items():
        atomic_write_json(folder / name, data)
    for name, named in extra_tensors.items():
        atomic_write_bytes(folder / name, save({k: v.contiguous() for k, v in named.items()}))
    files = (GRAPH_FILE, WEIGHTS_FILE, *extra_json, *extra_tensors)
    checksums = {name: sha256_of(folder / name) for name in files}
    atomic_write_json(folder / CHECKSUM_FILE, checksums)
    return folder


def load_graph(folder: Path, *, verify: bool = True) -> ModuleGraph:
    return read_checkpoint(folder, verify, load_file, lambda value: bool(torch.isfinite(value).all()))
