"""DGMw: Dynamic Generative Memory with learned weight masks (Ostapenko, Puscas, Klein, Jaehnichen & Nabi,
CVPR 2019, "Learning to Remember: A Synaptic Plasticity Driven Framework for Continual Learning"), class-IL.

A conditional GAN is the memory (`_dgmw_generator`). Each task trains the generator G(z, y) on its samples
against a fresh discriminator with an auxiliary classifier (AC-GAN; the authors re-initialise D every task),
as WGAN-GP (Gulrajani et al. 2017), as the authors do: D, the critic, minimises D(G(z)) - D(x) plus
`gradient_penalty` times (||grad D(x_hat)||_2 - 1)^2 at random interpolates x_hat of real and generated
samples (1, the authors' MNIST lambda_wasserstein; Gulrajani et al.'s is 10) plus its class loss on the real
samples; G minimises -D(G(z)); one critic step before each G step (the authors' n_critic), both Adam with
the authors' lr 0.002 and betas (0.5, 0.999). G's hidden weights carry the task's mask sigmoid(s e) per
weight, s annealed as HAT's to a binary mask, with the paper's sparsity regulariser
lambda sum m (1 - m_<t) / sum (1 - m_<t) over the weights no earlier task uses (lambda scaled by the
generator's growth, as the authors'); weights an earlier task's mask uses are held exactly, so an old task's
samples never change. After the task, each hidden layer grows by as many units as hold the weights the task
newly reserved (dynamic expansion: the free weights stay at least what they were). The generator lives in
the graph as the `generator` node's state (in no task's view), so the run folder checksums it and a resume
restores it exactly.

The solver, the graph the search scores (`single_head`: one head over every class seen so far), is the
YAML's network, trained on the task's real samples plus, per old class, `replay` times as many generated
samples as the task has real ones per class (a second batch each step, its loss weighted by its share of
the samples). The search: each task's mask sparsity lambda (`options.search`), the paper's value first.

Departures, each for a reason: MLP generator and discriminator without batch norm (8x8 digits on a CPU);
the task's label enters G through a per-task label embedding added to the first hidden layer (the authors
write a one-hot into z and keep a per-task output layer and batch norm: here a per-task output layer and
biases); G also takes AC-GAN's class loss (`class_weight`; the authors' MNIST setting leaves it off); D's
class loss is part of its critic step, on the task's real batch (the authors' D, also their classifier,
takes separate class steps on real and replayed samples); the GAN's batch is the solver's (32; the authors'
64); s rises once over the task's GAN training (the authors' sawtooth within a rising envelope); the solver
is a network of its own trained on real and generated samples rather than D's auxiliary classifier, kept
from task to task (`reinit_solver: false`) or re-initialised as the authors' D (`true`); a trial is judged
on the new task's validation samples (the stream keeps none of the old classes).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from torch.nn import functional as F

from growsearch.methods._dgmw_generator import GeneratorMemory, TaskGenerator, train_gan
from growsearch.methods.toolkit import (
    INPUT,
    Activation,
    Batch,
    Candidate,
    Decisions,
    Method,
    Minibatches,
    ModuleGraph,
    OptimizerSettings,
    Retrain,
    SearchPlan,
    Split,
    TaskContext,
    Training,
    TrainingRun,
    compile_view,
    derived_seed,
    node_data,
    ops,
    prefix_outputs,
    require,
    resolve_device,
    spend_macs,
)

PREFIX, GENERATOR = "solver", "generator"


@dataclass(frozen=True)
class DGMwOptions:
    latent: int = 32  # z's size
    generator_widths: tuple[int, ...] = (64, 128)  # G's masked hidden layers before expansion
    discriminator_width: int = 128
    gan_epochs: int = 400  # the authors' 101 epochs see ~6,000 images a class; ~60 here
    gan_lr: float = 0.002  # the authors' lr_G = lr_D, Adam with beta1 0.5
    sparsity: float = 0.08  # lambda (the authors' lamb_G for MNIST)
    s_max: float = 400.0  # the masks' final sharpness
    class_weight: float = 1.0  # AC-GAN's class loss in G's objective (0: the authors' MNIST setting)
    gradient_penalty: float = 1.0  # WGAN-GP's lambda (the authors' MNIST lambda_wasserstein; Gulrajani's 10)
    replay: float = 1.0  # generated samples per old class, relative to the task's real samples per class
    reinit_solver: bool = False
    search: bool = False  # true: each task searches lambda in sparsity_range (the default first)
    sparsity_range: tuple[float, float] = (0.01, 1.0)

    def validate(self, where: str) -> None:
        require(self.latent >= 1, f"{where}.latent", "expected an integer >= 1")
        require(
            len(self.generator_widths) >= 1 and all(w >= 1 for w in self.generator_widths),
            f"{where}.generator_widths",
            "expected a list of integers >= 1",
        )
        require(self.discriminator_width >= 1, f"{where}.discriminator_width", "expected an integer >= 1")
        require(self.gan_epochs >= 1, f"{where}.gan_epochs", "expected an integer >= 1")
        require(self.gan_lr > 0, f"{where}.gan_lr", "expected a number > 0")
        require(self.sparsity >= 0, f"{where}.sparsity", "expected a number >= 0")
        require(self.s_max >= 1, f"{where}.s_max", "expected a number >= 1")
        require(self.class_weight >= 0, f"{where}.class_weight", "expected a number >= 0")
        require(self.gradient_penalty >= 0, f"{where}.gradient_penalty", "expected a number >= 0")
        require(self.replay >= 0, f"{where}.replay", "expected a number >= 0")
        low, high = self.sparsity_range
        require(0 < low <= high, f"{where}.sparsity_range", "expected [low, high] with 0 < low <= high")


def generator_memory(graph: ModuleGraph) -> GeneratorMemory:
    """The generator as the graph keeps it, in a mapping of its own (the node's tensors are never changed in
    place: `with_generator` writes a changed memory back)."""
    return GeneratorMemory(dict(graph.node(GENERATOR).state))


def with_generator(graph: ModuleGraph, memory: GeneratorMemory) -> ModuleGraph:
    """`graph` with `memory` as its generator."""
    return node_data.with_state(graph, {GENERATOR: memory.tensors})


class DGMw(Method):
    name = "dgmw"
    paper = (
        "Ostapenko, Puscas, Klein, Jaehnichen & Nabi 2019, Learning to Remember: A Synaptic Plasticity "
        "Driven Framework for Continual Learning"
    )
    scenarios = ("class-il",)
    Options = DGMwOptions
    backbones = ("mlp", "conv")
    backbone_note = "its solver is the network; its generator is an MLP: run it on dense or conv layers"
    single_head = True

    # ---- the search ------------------------------------------------------------------------------------
    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        plan = super().search_plan(ctx)
        if not self.options.search:
            return plan
        return dataclasses.replace(plan, initial=({"sparsity": self.options.sparsity},))

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if not self.options.search:
            return {}
        return {"sparsity": trial.suggest_float("sparsity", *self.options.sparsity_range, log=True)}

    # ---- the candidate ---------------------------------------------------------------------------------
    def build(self, decisions: Decisions, ctx: TaskContext) -> Candidate:
        """The solver's head over every class seen (the solver re-initialised or kept), and the generator
        trained on the task (the generator node's state, a fresh generator before the first task)."""
        t, options = ctx.task_id, self.options
        graph = ops.shared_stack(ctx.committed, PREFIX, ctx.specs, 0, owners=False)
        layers = ops.shared_layer_ids(PREFIX, len(ctx.specs))
        seen = int(ctx.task.train.y.max()) + 1
        # a copy (the committed graph is never changed); kept, the solver's head starts as the previous one
        kept = t > 0 and not options.reinit_solver
        graph = ops.add_class_head(graph, t, layers[-1], seen, t - 1 if kept else None)
        if t > 0 and options.reinit_solver:  # a fresh solver, drawn from the trial's stream
            graph = node_data.with_weights(
                graph, {n: graph.node(n).spec.build().state_dict() for n in layers}
            )
        if GENERATOR not in graph:
            graph.add(GENERATOR, Activation(None), [INPUT], 0, frozen=True)
            graph = with_generator(
                graph, GeneratorMemory.fresh(options.latent, options.generator_widths, ctx.seed)
            )
        memory = generator_memory(graph)
        sparsity = float(decisions.get("sparsity", options.sparsity))
        initial_units = sum(options.generator_widths)
        scaled = sparsity * sum(memory.widths()) / initial_units  # the authors' lamb_G * total / initial size
        x, y = ctx.task.train.x, ctx.task.train.y
        device = resolve_device(self.space.training.device)
        generator = TaskGenerator(
            memory, torch.unique(y), tuple(x.shape[1:]), int(torch.randint(2**31 - 1, ()))
        )
        training = train_gan(
            generator.to(device),
            x.to(device),
            y.to(device),
            OptimizerSettings("adam", options.gan_lr, betas=(0.5, 0.999)),
            epochs=options.gan_epochs,
            batch_size=self.space.training.batch_size,
            discriminator_width=options.discriminator_width,
            class_weight=options.class_weight,
            penalty_weight=options.gradient_penalty,
            sparsity=scaled,
            s_max=options.s_max,
            seed=int(torch.randint(2**31 - 1, ())),
        )
        free_before = memory.free_weights()
        newly = generator.store(t)
        graph = with_generator(graph, memory)
        mechanism = {
            "classes_seen": seen,
            "replayed": len(replay_set(graph, ctx, options.replay)),
            "gan_steps": training.steps,
            "gan_last_loss": training.last_loss,
            "free_weights_before": free_before,
            "newly_used_weights": newly,
        }
        return Candidate(graph, {"sparsity": sparsity}, mechanism, self.training(graph, ctx))

    def training(self, graph: ModuleGraph, ctx: TaskContext) -> Training:
        """Each step also trains on a batch of generated old-class samples (none for the first task: it
        trains plainly, though alone as every DGMw candidate, never packed with others)."""
        replay = replay_set(graph, ctx, self.options.replay)
        if len(replay) == 0:
            return Training()
        replayed = _Replay(replay, derived_seed(ctx.seed, "replay-batches"), graph, ctx.task_id)
        return Training(start=replayed.start, batch_penalty=replayed.loss)

    # ---- the commit ------------------------------------------------------------------------------------
    def commit(self, chosen: ModuleGraph, ctx: TaskContext, retrain: Retrain) -> ModuleGraph:
        """Freeze the task's head and expand the generator; the solver keeps training."""
        graph = ops.freeze(chosen, [chosen.head(ctx.task_id)])
        memory = generator_memory(graph)
        t = ctx.task_id
        newly = [int((memory.mask(t, i) & ~_used_before(memory, t, i)).sum()) for i in range(memory.n_layers)]
        memory.tensors[f"t{t}.free_after_task"] = torch.tensor(memory.free_weights())
        memory.tensors[f"t{t}.added_units"] = torch.tensor(
            memory.expand(newly, derived_seed(ctx.seed, "expand"))
        )
        return with_generator(graph, memory)

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """Per generator layer: the share of its weights the task's mask uses, the weights it is the first to
        use, the units added and the free weights after the task and after expansion; the solver's accuracy
        on generated samples of every class seen so far."""
        memory, t = generator_memory(committed), ctx.task_id
        masks = [memory.mask(t, i) for i in range(memory.n_layers)]
        check = replay_set(committed, ctx, 1.0, tasks=range(t + 1), seed="check")
        solver = compile_view(committed, t).module.eval()
        with torch.no_grad():
            correct = (solver(check.x).argmax(1) == check.y).double().mean()
        return {
            "mask_used": [float(m.double().mean()) for m in masks],
            "newly_used_weights": [int((m & ~_used_before(memory, t, i)).sum()) for i, m in enumerate(masks)],
            "units_added": memory.tensors[f"t{t}.added_units"].tolist(),
            "generator_widths": memory.widths(),
            "free_weights_after_task": memory.tensors[f"t{t}.free_after_task"].tolist(),
            "free_weights": memory.free_weights(),
            "generator_parameters": sum(
                v.numel() for k, v in memory.tensors.items() if v.is_floating_point()
            ),
            "accuracy_on_generated": float(correct),
        }


def _used_before(memory: GeneratorMemory, task: int, layer: int) -> torch.Tensor:
    """The weights of layer `layer` (at `task`'s widths) that some earlier task's mask uses."""
    mask = memory.mask(task, layer)
    used = torch.zeros_like(mask)
    for k in memory.tasks():
        if k < task:
            earlier = memory.mask(k, layer)
            used[: earlier.shape[0], : earlier.shape[1]] |= earlier
    return used


def replay_set(
    graph: ModuleGraph, ctx: TaskContext, replay: float, *, tasks: Any = None, seed: str = "replay"
) -> Split:
    """Generated samples of the old tasks' classes (or of `tasks`'), `replay` times the task's real samples
    per class each, from latent codes seeded by the task (every trial of a task replays the same)."""
    memory = generator_memory(graph) if GENERATOR in graph else None
    own = ctx.task.train.y
    per_class = math.ceil(replay * len(own) / max(1, len(torch.unique(own))))
    wanted = range(ctx.task_id) if tasks is None else tasks
    noise = torch.Generator().manual_seed(derived_seed(ctx.seed, seed))
    xs, ys = [], []
    for k in wanted if memory is not None and per_class > 0 else ():
        labels = memory.classes(k).repeat_interleave(per_class)
        xs.append(memory.generate(k, torch.randn(len(labels), memory.latent, generator=noise), labels))
        ys.append(labels)
    if not xs:
        return Split(ctx.task.train.x[:0], own[:0])
    return Split(torch.cat(xs), torch.cat(ys))


class _Replay:
    """The generated samples of the old classes, in batches of their share of each real batch: each step's
    loss adds their cross-entropy, weighted by their share of the step's samples."""

    def __init__(self, samples: Split, seed: int, graph: ModuleGraph, task: int):
        self.samples, self.seed = samples, seed
        self.batches: Minibatches | None = None
        self.suffix: torch.nn.Module | None = None
        self.view, self.graph = graph.view(task), graph
        self.suffix_macs = 0  # one replayed sample's pass through the trainable suffix

    def start(self, run: TrainingRun) -> None:
        device = run.batches.y.device
        share = len(self.samples) / len(run.batches)  # replayed samples per real one
        size = max(1, round(run.batches.batch_size * share))
        inputs = prefix_outputs(run.program, self.samples.x, device)
        self.batches = Minibatches(inputs, self.samples.y.to(device), size, self.seed)
        self.suffix = run.program.suffix
        total = self.graph.macs(self.view)
        self.suffix_macs = self.graph.macs([n for n in self.view if n in run.program.suffix_nodes])
        spend_macs((total - self.suffix_macs) * len(self.samples))  # the frozen prefix, once

    def loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        old = self.batches.next()
        spend_macs(3 * self.suffix_macs * len(old.y))  # forward and backward, as the real batch's
        return len(old.y) / len(batch.y) * F.cross_entropy(self.suffix(*old.inputs), old.y)
