"""MNTDP's task-driven prior: which earlier task's path to perturb for a new task.

For every earlier task j, the new task's inputs (up to 1,000 training samples) go through task j's
committed path to its last layer; a k-nearest-neighbour classifier (k = 15) fitted on those features is
scored on the new task's validation split. The source is the task whose features classify best
(Veniat, Denoyer & Ranzato 2021, sec. 3.3).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.neighbors import KNeighborsClassifier

from growsearch.methods.toolkit import ModuleGraph, Task, compile_view

MAX_SAMPLES = 1000
NEIGHBOURS = 15


@dataclass(frozen=True)
class PriorChoice:
    source: int
    scores: dict[int, float]  # kNN validation accuracy per earlier task


def _features(graph: ModuleGraph, source: int, x: torch.Tensor) -> torch.Tensor:
    """The outputs of the last layer of `source`'s path (its head's input)."""
    feature_node = graph.node(graph.head(source)).inputs[0]
    with torch.no_grad():
        return compile_view(graph, source, output=feature_node).module(x).flatten(1)


def choose_source(graph: ModuleGraph, task: Task, earlier: list[int], seed: int = 0) -> PriorChoice:
    if not earlier:
        raise ValueError("the task-driven prior needs at least one earlier task")
    generator = torch.Generator().manual_seed(seed)
    take = torch.randperm(len(task.train), generator=generator)[:MAX_SAMPLES]
    x_train, y_train = task.train.x[take], task.train.y[take]
    scores = {}
    for source in earlier:
        knn = KNeighborsClassifier(n_neighbors=min(NEIGHBOURS, len(take)))
        knn.fit(_features(graph, source, x_train).numpy(), y_train.numpy())
        scores[source] = float(knn.score(_features(graph, source, task.val.x).numpy(), task.val.y.numpy()))
    best = max(earlier, key=lambda j: (scores[j], j))  # ties go to the most recent task
    return PriorChoice(best, scores)
