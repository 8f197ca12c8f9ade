"""ExpertGate (Aljundi et al. 2017): an expert per task, started from the most related earlier expert (LwF
when related enough), old experts never change, and the task autoencoders (the paper's gate) send held-out
samples to their experts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from growsearch.data.task import Split, Task
from growsearch.graph.compile import compile_view
from growsearch.graph.module_graph import ModuleGraph
from growsearch.inference.autoencoders import train_autoencoder
from growsearch.methods.base import TaskContext
from growsearch.methods.expert_gate import ExpertGate
from growsearch.runner import start_run
from growsearch.store.run_folder import RunFolder
from growsearch.task_record import TaskRecord
from growsearch.train.candidate import train_candidate

from tiny_runs import tiny_options, tiny_space


@pytest.fixture(scope="module")
def expert_gate_run(tmp_path_factory):
    return start_run(tiny_space("expert-gate"), tiny_options(), tmp_path_factory.mktemp("eg") / "run")


def test_each_expert_starts_from_the_most_related_and_old_experts_never_change(
    expert_gate_run, digits_stream
):
    records = expert_gate_run.records
    assert records[0].mechanism["transfer"] == "scratch"
    for record in records[1:]:
        done = record.mechanism
        related = done["relatedness"]
        assert sorted(related) == [f"task-{k}" for k in range(record.task)]
        assert done["source"] == max(related, key=related.get)
        assert done["transfer"] == ("lwf" if related[done["source"]] >= 0.85 else "fine-tune")
    run = RunFolder.open(expert_gate_run.path)
    final, _ = run.load_task(4)
    for task in range(4):
        at_commit, _ = run.load_task(task)
        x = digits_stream.tasks[task].test.x
        assert torch.equal(compile_view(final, task).module(x), compile_view(at_commit, task).module(x))
        assert set(final.view(task)) == set(at_commit.view(task))  # an expert reads nothing of later ones


def test_the_autoencoders_pick_the_expert_at_test_time(expert_gate_run):
    final = expert_gate_run.records[-1]
    assert final.task_inference == "expert-gate"  # the YAML asks for it, though task-IL gives the task
    routed = final.task_inference_row
    assert min(routed) > 0.4 and sum(routed) / 5 > 0.6  # well above chance (0.2)
    for scored, given, share in zip(final.accuracy_row, final.task_il_accuracy_row, routed, strict=True):
        assert scored <= min(given, share) + 1e-9  # right only when sent to its own expert and right there


def _task(task_id: int, x: torch.Tensor, y: torch.Tensor) -> Task:
    split = Split(x, y)
    return Task(task_id, (0, 1), split, split, split, n_outputs=2)


@pytest.fixture(scope="module")
def related_case(digits_stream):
    """Two earlier experts: task 0 on digits 0 and 1, task 1 on the same kind of images inverted; the new
    task holds other images of digits 0 and 1, labels swapped. Task 0 is the closely related one."""
    space = tiny_space("expert-gate")
    method = ExpertGate(space)
    zero_one = digits_stream.tasks[0]
    inverted = digits_stream.tasks[1]
    tasks = [
        _task(0, zero_one.train.x, zero_one.train.y),
        _task(1, 1 - inverted.train.x, inverted.train.y),
        _task(2, zero_one.test.x, 1 - zero_one.test.y),
    ]
    autoencoders = tuple(train_autoencoder(t.train.x, space.inference, seed=t.task_id) for t in tasks)
    specs = method.specs_for(digits_stream.input_shape)
    committed = ModuleGraph(digits_stream.input_shape)
    for t in (0, 1):
        ctx = TaskContext(t, tasks[t], committed, specs, (), seed=t, autoencoders=autoencoders[: t + 1])
        torch.manual_seed(t)
        training = dataclasses.replace(space.training, epochs=10, lr=0.1)  # confident old experts
        trained = train_candidate(
            method.build({}, ctx).graph, t, tasks[t].train, tasks[t].val, training, seed=t
        )
        committed = method.commit(trained.graph, ctx, None)
    history = tuple(_record(t) for t in (0, 1))
    ctx = TaskContext(2, tasks[2], committed, specs, history, seed=2, autoencoders=autoencoders)
    return space, committed, ctx


def _record(task: int) -> TaskRecord:
    return TaskRecord(
        task=task, chosen_trial=0, decisions={}, accuracy_row=[], parameters=0, train_macs=0, pass_macs=0
    )


def test_relatedness_picks_the_closest_expert_and_lwf_for_a_related_task(related_case):
    space, committed, ctx = related_case
    method = ExpertGate(space)
    related = method.relatedness(ctx)
    assert related["task-0"] > 0.85 > related["task-1"]
    torch.manual_seed(0)
    candidate = method.build({}, ctx)
    assert candidate.decisions == {"source": "task-0", "transfer": "lwf"}
    graph = candidate.graph
    for layer, node_id in graph.layer_nodes(2).items():  # the related expert's weights, to start
        source = committed.node(committed.layer_nodes(0)[layer])
        for name, value in graph.node(node_id).weights.items():
            assert torch.equal(value, source.weights[name])
    assert graph.node(graph.head(2)).weights["weight"].shape == (2, 16)  # a fresh head for its classes
    assert candidate.training is not None
    assert method.build({"source": "task-1", "transfer": "fine-tune"}, ctx).training is None


def test_lwf_keeps_the_old_experts_answers_on_the_new_task(related_case, digits_stream):
    """LwF trains a copy of the source expert's head on the new expert's last hidden layer to keep giving
    the old expert's answers on the new task's inputs (digits 2 and 3 here, unlike the source's 0 and 1).
    With the distillation weighed in, it mostly does; with weight 0 the features drift away from them."""
    space, committed, ctx = related_case
    new = digits_stream.tasks[1]
    ctx = dataclasses.replace(ctx, task=_task(2, new.train.x, new.train.y))
    config = dataclasses.replace(space.training, epochs=10, lr=0.05)
    x = new.train.x
    old_answers = compile_view(committed, 0).module(x).argmax(1)
    agreement = {}
    for weight in (0.0, 1.0):  # none, and LwF's lambda_o
        method = ExpertGate(dataclasses.replace(space, options={"lwf_weight": weight}))
        torch.manual_seed(0)
        candidate = method.build({"source": "task-0", "transfer": "lwf"}, ctx)
        trained = train_candidate(
            candidate.graph, 2, ctx.task.train, ctx.task.val, config, seed=0, training=candidate.training
        )
        features = compile_view(trained.graph, 2, output=trained.graph.layer_nodes(2)[1]).module(x)
        head = torch.nn.Linear(16, 2)
        head.weight.data, head.bias.data = (p.detach() for p in candidate.training.parameters)
        agreement[weight] = float((head(features).argmax(1) == old_answers).double().mean())
        assert trained.val_accuracy > 0.9  # the new task is learnt either way
        # CE counts the distillation: the old expert's pass and the head copy's, on every training sample
        seen = len(ctx.task.train) * config.epochs
        own = 3 * candidate.graph.macs(candidate.graph.view(2))
        teacher = committed.macs(committed.view(0)) + 3 * committed.macs([committed.head(0)])
        assert trained.train_macs == (own + teacher) * seen
    assert agreement[1.0] > 0.8 and agreement[1.0] > agreement[0.0] + 0.15, agreement  # 0.89, 0.62
