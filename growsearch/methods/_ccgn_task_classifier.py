"""CCGN's task classifier for class-IL (Abati et al., CVPR 2020, sec. 3.3): which task a test sample belongs
to, from the features every task's gated path computes for it.

Each task's gated path runs on the sample (its gates hard, as at test); their last layers' outputs (a conv
output average-pooled over its positions) side by side are the classifier's input, a linear layer its
output, one logit per task seen. After each task it is trained again, from scratch, on the episodic
memory's exemplars of the earlier tasks and the task's own samples, as many of each task as the rarest has.
A sample's task and class are then picked together, `argmax_t [log p(t | x) + max_y log p(y | x, t)]`
(the paper's `log p(y | x) = log p(y | x, t) + log p(t | x)`). The classifier's weights are kept in the task
head's `state`, so the run folder holds them under its checksums.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from growsearch.methods.toolkit import (
    Minibatches,
    ModuleGraph,
    OptimizerSettings,
    Split,
    class_balanced,
    compile_view,
    fit,
    module_macs,
    run_in_batches,
    seed_torch,
    spend_macs,
)

STATE_PREFIX = "task_classifier."
BATCH = 32


def path_features(graph: ModuleGraph, last_nodes: Sequence[str], x: torch.Tensor) -> torch.Tensor:
    """Each task's gated path's last output for `x` (pooled over positions), side by side; task j's path
    ends at `last_nodes[j]`."""
    parts = []
    for task, node_id in enumerate(last_nodes):
        spend_macs(graph.macs(graph.upstream(node_id)) * len(x))  # each task's path, once per sample
        module = compile_view(graph, task, output=node_id).module.eval()
        out = run_in_batches(module, [x])[0]
        parts.append(out.flatten(2).mean(2) if out.dim() > 2 else out)
    return torch.cat(parts, dim=1)


def train_task_classifier(
    graph: ModuleGraph,
    last_nodes: Sequence[str],
    samples: Split,
    *,
    hidden: int,
    epochs: int,
    lr: float,
    seed: int,
) -> tuple[dict[str, torch.Tensor], float]:
    """The classifier over tasks 0..len(last_nodes)-1 trained on `samples` (labels: their task), balanced;
    its weights and its accuracy on what it trained on."""
    balanced = class_balanced(samples, seed)
    features = path_features(graph, last_nodes, balanced.x)
    with torch.random.fork_rng():
        seed_torch(seed)
        classifier = _classifier(features.shape[1], hidden, len(last_nodes))
    batches = Minibatches([features], balanced.y, BATCH, seed)
    settings = OptimizerSettings("adam", lr)
    fit(
        classifier,
        batches,
        list(classifier.parameters()),
        settings,
        epochs=epochs,
        macs_per_sample=module_macs(classifier),
    )
    with torch.no_grad():
        accuracy = float((classifier(features).argmax(1) == balanced.y).double().mean())
    weights = {STATE_PREFIX + k: v.detach().clone() for k, v in classifier.state_dict().items()}
    return weights, accuracy


def _classifier(features: int, hidden: int, tasks: int) -> nn.Sequential:
    """One hidden layer of `hidden` ReLU units (0: a linear layer), one logit per task."""
    if hidden == 0:
        return nn.Sequential(nn.Linear(features, tasks))
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, tasks))


def infer_tasks(
    graph: ModuleGraph, state: dict[str, torch.Tensor], last_nodes: Sequence[str], x: torch.Tensor
) -> torch.Tensor:
    """Each sample's task: the one maximising log p(t | x) + max_y log p(y | x, t)."""
    weights = {k.removeprefix(STATE_PREFIX): v for k, v in state.items() if k.startswith(STATE_PREFIX)}
    last = max(int(k.split(".")[0]) for k in weights)
    hidden = weights["0.weight"].shape[0] if last > 0 else 0
    classifier = _classifier(weights["0.weight"].shape[1], hidden, len(last_nodes))
    classifier.load_state_dict(weights)
    with torch.no_grad():
        log_task = F.log_softmax(classifier(path_features(graph, last_nodes, x)), dim=1)
        best_class = [
            F.log_softmax(run_in_batches(compile_view(graph, task).module.eval(), [x])[0], dim=1)
            .max(1)
            .values
            for task in range(len(last_nodes))
        ]
    return (log_task + torch.stack(best_class, dim=1)).argmax(1)
