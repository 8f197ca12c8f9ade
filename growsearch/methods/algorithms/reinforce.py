"""A REINFORCE-trained LSTM policy, served to Optuna as a sampler.

The policy of Reinforced Continual Learning (Xu & Zhu, NeurIPS 2018) and of CLEAS (Gao, Luo & Klabjan
2020, "Efficient Architecture Search for Continual Learning"), which both papers call the controller (so
do the YAML options `controller_hidden` and `controller_layers`): an LSTM that emits one softmax per
decision step, feeding each step's softmax back as the next step's input (the first input is a fixed
random vector); an optional one-hot "kind" (CLEAS's layer identification) is appended to the input. It is
trained with REINFORCE, `loss = -(R - b) * sum_t log pi(a_t)`, where the baseline b is a value network
on the initial input (RCL's critic, trained by MSE towards R) or a recency-weighted mean of the earlier
rewards (CLEAS).

`ReinforceSampler` is an `optuna.samplers.BaseSampler`: a trial's decisions are ordinary Optuna params
(define-by-run), sampled jointly by the policy through `sample_relative`. The policy keeps no state
Optuna does not already store: before each sample it applies, in trial-number order, the REINFORCE update
of every finished trial it has not seen (params = actions, the method's reward function = reward; the
trials of a pack, all sampled from one policy, in one update on the mean of their terms). A
fresh sampler, after a resume for instance, therefore replays the study and reaches the same weights as
an uninterrupted run. Sampling draws from a generator seeded by (seed, trial position), where the position
does not count trials a killed process left behind, so a resumed run samples what the uninterrupted run
would have sampled.

`PolicySearchMethod` is the method half RCL and CLEAS share: the search plan (a fresh policy per task,
the best reward committed), the reward, the task's record of rewards and of the policy's entropy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import optuna
import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from growsearch.methods.toolkit import (
    Decisions,
    Method,
    ModuleGraph,
    OptimizerSettings,
    SearchPlan,
    SeededRandomSampler,
    TaskContext,
    derived_seed,
    halving_stop,
    is_interrupted,
    learning_pack,
    make_optimizer,
    neurons,
    pack_of,
    seed_torch,
)

_THREADS = threading.RLock()
RewardFn = Callable[[FrozenTrial], "float | None"]  # None: the trial teaches the policy nothing


@dataclass(frozen=True)
class Decision:
    """One Optuna param. `n_steps` > 1 packs that many binary policy steps into the bits of one integer
    param (bit j is step j), which keeps per-neuron decisions to a few params a trial."""

    name: str
    n_choices: int
    n_steps: int = 1
    kind: int | None = None  # the one-hot appended to the policy's input (None: no kind input)

    def __post_init__(self) -> None:
        if self.n_choices < 2 or self.n_steps < 1 or (self.n_steps > 1 and self.n_choices != 2):
            raise ValueError(f"decision {self.name}: packed steps must be binary, got {self}")

    def distribution(self) -> BaseDistribution:
        if self.n_steps == 1:
            return CategoricalDistribution(list(range(self.n_choices)))
        return IntDistribution(0, 2**self.n_steps - 1)

    def sample(self, trial: optuna.Trial) -> int:
        if self.n_steps == 1:
            return int(trial.suggest_categorical(self.name, list(range(self.n_choices))))
        return int(trial.suggest_int(self.name, 0, 2**self.n_steps - 1))

    def pack(self, actions: Sequence[int]) -> int:
        return int(actions[0]) if self.n_steps == 1 else sum(int(a) << j for j, a in enumerate(actions))

    def unpack(self, value: Any) -> list[int]:
        return [int(value)] if self.n_steps == 1 else [(int(value) >> j) & 1 for j in range(self.n_steps)]


@dataclass(frozen=True)
class PolicyConfig:
    hidden_size: int = 100
    num_layers: int = 2
    optimizer: Literal["adam", "rmsprop"] = "adam"
    lr: float = 1e-3
    baseline: Literal["value", "moving-average"] = "value"
    value_lr: float = 5e-3  # Adam on the value network (baseline "value")
    init_range: float = 0.08  # every policy weight starts uniform in [-init_range, init_range]


class PolicyNetwork(nn.Module):
    """The LSTM policy over a fixed sequence of steps `(n_choices, kind)`, plus the value network."""

    def __init__(self, steps: Sequence[tuple[int, int | None]], config: PolicyConfig):
        super().__init__()
        self.steps = list(steps)
        self.max_choices = max(n for n, _ in self.steps)
        self.n_kinds = 1 + max((k for _, k in self.steps if k is not None), default=-1)
        width = self.max_choices + self.n_kinds
        sizes = [width] + [config.hidden_size] * config.num_layers
        self.cells = nn.ModuleList(nn.LSTMCell(i, config.hidden_size) for i in sizes[:-1])
        self.heads = nn.ModuleDict({str(n): nn.Linear(config.hidden_size, n) for n, _ in self.steps})
        self.value = nn.Linear(width, 1)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -config.init_range, config.init_range)
        self.register_buffer("start", torch.randn(self.max_choices))
        self.register_buffer("kinds", torch.eye(self.n_kinds))

    def _input(self, probs: torch.Tensor, kind: int | None) -> torch.Tensor:
        parts = [nn.functional.pad(probs, (0, self.max_choices - probs.numel()))]
        if self.n_kinds:
            parts.append(self.kinds[kind or 0])
        return torch.cat(parts).view(1, -1)

    def _step(self, x: torch.Tensor, state: list | None) -> tuple[torch.Tensor, list]:
        """One step of the stacked LSTM (cells are faster than `nn.LSTM` for one step at a time)."""
        new_state = []
        for layer, cell in enumerate(self.cells):
            h, c = cell(x, None if state is None else state[layer])
            new_state.append((h, c))
            x = h
        return x, new_state

    def step_logits(self) -> list[torch.Tensor]:
        """Each step's logits. A step's input is the previous step's softmax, not its action, so the
        distributions do not depend on the actions drawn: one pass serves every sample and scores every
        episode of a policy state."""
        logits_per_step = []
        x, state = self._input(self.start, self.steps[0][1]), None
        for i, (n, _) in enumerate(self.steps):
            out, state = self._step(x, state)
            logits = self.heads[str(n)](out.view(-1))
            logits_per_step.append(logits)
            if i + 1 < len(self.steps):
                x = self._input(torch.softmax(logits, 0), self.steps[i + 1][1])
        return logits_per_step

    def log_probs(self, episodes: Sequence[Sequence[int]]) -> torch.Tensor:
        """The summed log-probability of each episode's actions, one value per episode."""
        scores = torch.cat([torch.log_softmax(logits, 0) for logits in self.step_logits()])
        offsets = [0]
        for n, _ in self.steps[:-1]:
            offsets.append(offsets[-1] + n)
        index = torch.tensor(
            [[o + int(a) for o, a in zip(offsets, actions, strict=True)] for actions in episodes]
        )
        return scores[index].sum(1)

    def state_value(self) -> torch.Tensor:
        return self.value(self._input(self.start, self.steps[0][1]).view(-1)).squeeze()


class ReinforcePolicy:
    """The policy network and its REINFORCE updates; deterministic given the seed and the update sequence."""

    def __init__(self, steps: Sequence[tuple[int, int | None]], config: PolicyConfig, seed: int):
        with torch.random.fork_rng():
            seed_torch(seed)
            self.network = PolicyNetwork(steps, config)
        self.config = config
        policy_parameters = [p for n, p in self.network.named_parameters() if not n.startswith("value.")]
        if config.optimizer == "adam":
            settings = OptimizerSettings("adam", config.lr)
        else:  # TensorFlow's RMSProp defaults, as in the CLEAS code
            settings = OptimizerSettings("rmsprop", config.lr, alpha=0.9, eps=1e-10)
        self.optimizer = make_optimizer(policy_parameters, settings)
        self.value_optimizer = make_optimizer(
            self.network.value.parameters(), OptimizerSettings("adam", config.value_lr)
        )
        self.rewards: list[float] = []
        self._distributions: list[torch.Tensor] | None = None
        self._cdf: tuple[torch.Tensor, torch.Tensor] | None = None  # of `_distributions`

    def sample(self, generator: torch.Generator) -> list[int]:
        """One action per step, each drawn from its step's distribution by inverse CDF: one uniform draw a
        step, all steps at once (CLEAS's policy has a step per old neuron: drawing them one by one took
        a tenth of its search)."""
        cdf, last = self._cumulative()
        u = torch.rand(len(last), generator=generator, dtype=cdf.dtype)
        return torch.minimum((cdf < u.unsqueeze(1)).sum(1), last).tolist()

    def baseline(self, rewards: Sequence[float]) -> float:
        """The baseline of episodes with these rewards, from what came before them: the value network's
        estimate (then trained towards the rewards), or the recency-weighted mean of earlier rewards."""
        if self.config.baseline == "value":
            value = self.network.state_value()
            loss = ((value - torch.tensor(rewards)) ** 2).mean()
            self.value_optimizer.zero_grad()
            loss.backward()
            self.value_optimizer.step()
            return float(value.detach())
        previous = torch.tensor(self.rewards)
        if previous.numel() == 0:
            return 0.0
        weights = torch.exp(torch.linspace(-1.0, 0.0, previous.numel()))
        return float((weights * previous).sum() / weights.sum())

    def update(self, actions: Sequence[int], reward: float) -> None:
        """One REINFORCE step on one episode (the papers' update after every architecture)."""
        self.update_batch([(actions, reward)])

    def update_batch(self, episodes: Sequence[tuple[Sequence[int], float]]) -> None:
        """One REINFORCE step on episodes sampled from the same policy (a pack): the mean over them of
        -(R - b) * log pi(actions), with the baseline b from before them."""
        with one_thread():
            rewards = [float(r) for _, r in episodes]
            advantages = torch.tensor(rewards) - self.baseline(rewards)
            self.rewards.extend(rewards)
            log_probs = self.network.log_probs([actions for actions, _ in episodes])
            self.optimizer.zero_grad()
            (-(advantages * log_probs).mean()).backward()
            self.optimizer.step()
        self._distributions = None

    def distributions(self) -> list[torch.Tensor]:
        """The policy's distribution at every step, computed once per policy state."""
        if self._distributions is None:
            with torch.no_grad(), one_thread():
                self._distributions = [torch.softmax(logits, 0) for logits in self.network.step_logits()]
            self._cdf = None
        return self._distributions

    def _cumulative(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every step's cumulative distribution (steps x most choices, in float64, padded with 2: above any
        draw) and each step's last action."""
        distributions = self.distributions()
        if self._cdf is None:
            width = max(p.numel() for p in distributions)
            cdf = torch.full((len(distributions), width), 2.0, dtype=torch.float64)
            for i, p in enumerate(distributions):
                cdf[i, : p.numel()] = torch.cumsum(p.double(), 0)
            last = torch.tensor([p.numel() - 1 for p in distributions])
            self._cdf = (cdf, last)
        return self._cdf


@contextmanager
def one_thread() -> Iterator[None]:
    """The policy's tiny LSTM runs several times faster on one thread (and then does not depend on
    the machine's thread count); training keeps its own setting. The lock keeps concurrent samplers from
    restoring each other's setting."""
    with _THREADS:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


class ReinforceSampler(optuna.samplers.BaseSampler):
    """Samples `decisions` jointly from the policy; learns from finished trials through `reward`."""

    def __init__(self, decisions: Sequence[Decision], reward: RewardFn, *, seed: int, config: PolicyConfig):
        self.decisions = tuple(decisions)
        self.reward, self.seed = reward, seed
        steps = [(d.n_choices, d.kind) for d in self.decisions for _ in range(d.n_steps)]
        # the seed's label is the papers' name for the policy (a new label would draw another policy)
        self.policy = ReinforcePolicy(steps, config, derived_seed(seed, "controller"))
        self.applied_until = 0  # trial numbers below this have been replayed (or skipped)
        self.updates = 0
        self._fallback = SeededRandomSampler(seed=seed)

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {d.name: d.distribution() for d in self.decisions}

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
        self.catch_up(trials, trial.number)
        position = sum(1 for t in trials if t.number < trial.number and not is_interrupted(t))
        generator = torch.Generator().manual_seed(derived_seed(self.seed, "sample", position))
        actions = iter(self.policy.sample(generator))
        params = {d.name: d.pack([next(actions) for _ in range(d.n_steps)]) for d in self.decisions}
        return {name: value for name, value in params.items() if name in search_space}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def catch_up(self, trials: Sequence[FrozenTrial], before: int) -> None:
        """Apply, in number order, the updates of the finished trials below `before`, stopping at the first
        one still running (so updates arrive in the same order however trials interleave). Trials trained
        alone update the policy one by one; the trials of a pack, all sampled from one policy, update
        it once, together (with the retries of its interrupted trials: see `learning_pack`)."""
        group: list[FrozenTrial] = []
        group_pack: int | None = None
        for trial in trials:
            if trial.number < self.applied_until:
                continue
            pack = learning_pack(trial, trials) if pack_of(trial) is not None else None
            if trial.number >= before or trial.state in (TrialState.RUNNING, TrialState.WAITING):
                if group and (group_pack is None or trial.number >= before or pack != group_pack):
                    self._apply(group)  # complete: the trial that stops the replay is not of its pack
                return
            if group and (pack is None or pack != group_pack):
                self._apply(group)
                group = []
            group.append(trial)
            group_pack = pack
        if group:
            self._apply(group)

    def _apply(self, group: Sequence[FrozenTrial]) -> None:
        episodes = []
        for trial in group:
            reward = None if is_interrupted(trial) else self.reward(trial)
            if reward is not None and all(d.name in trial.params for d in self.decisions):
                episodes.append((self.actions(trial.params), reward))
        if episodes:
            self.policy.update_batch(episodes)
            self.updates += 1
        self.applied_until = group[-1].number + 1

    def policy_entropy(self, trials: Sequence[FrozenTrial]) -> tuple[float, float]:
        """The policy's mean entropy per decision step after learning from every finished trial of
        `trials`, and that of a uniform policy over the same steps (nats)."""
        self.catch_up(sorted(trials, key=lambda t: t.number), 1 + max((t.number for t in trials), default=0))
        distributions = self.policy.distributions()
        entropy = [float(-(p * p.clamp(min=1e-12).log()).sum()) for p in distributions]
        uniform = [float(torch.log(torch.tensor(float(p.numel())))) for p in distributions]
        return sum(entropy) / len(entropy), sum(uniform) / len(uniform)

    def actions(self, params: dict[str, Any]) -> list[int]:
        return [a for d in self.decisions for a in d.unpack(params[d.name])]


ADD = "add_units_L{}"  # the units (filters) a trial adds to layer i


class PolicySearchMethod(Method):
    """What RCL and CLEAS share: the base network for the first task, then `search.n_trials` architectures
    per task sampled by a REINFORCE policy (`search.sampler: reinforce`, the default; any Optuna sampler
    name searches the same space instead), reward = accuracy - penalty x units added.

    The trial value stays validation accuracy (comparable across methods, usable by pruners); as in the
    papers, the committed network is the best-reward one (the search plan's `score`). A failed child (NaN
    loss, an empty layer) counts as accuracy 0 for the policy."""

    default_trials: ClassVar[int]

    def policy_config(self) -> PolicyConfig:
        raise NotImplementedError

    def search_decisions(self, ctx: TaskContext) -> list[Decision]:
        raise NotImplementedError

    def search_plan(self, ctx: TaskContext) -> SearchPlan:
        """One trial (the base network) for the first task, nothing to sample; then the task's
        architectures, ranked by reward, a tenth of them at a time with `search.pack: auto` (the policy
        still learns between packs ten times a task: every architecture of a pack is sampled from the same
        policy); a fifth with successive halving, where a pack costs about the epochs of its longest
        survivor whatever its size (five updates a task)."""
        if ctx.task_id == 0:
            budget = 1
            sampler: optuna.samplers.BaseSampler | None = SeededRandomSampler(seed=ctx.seed)
        else:
            budget = self.space.search.n_trials or self.default_trials
            sampler = None
            if (self.space.search.sampler or "reinforce") == "reinforce":
                decisions = self.search_decisions(ctx)
                sampler = ReinforceSampler(decisions, self.reward, seed=ctx.seed, config=self.policy_config())
        packs = 5 if self.space.search.fidelity == "halving" else 10
        return SearchPlan(budget, sampler=sampler, pack_limit=max(1, budget // packs), score=self.score)

    def decide(self, trial: optuna.Trial, ctx: TaskContext) -> Decisions:
        if ctx.task_id == 0:
            return {}
        return {d.name: d.sample(trial) for d in self.search_decisions(ctx)}

    def added_units(self, decisions: Decisions, ctx: TaskContext) -> list[int]:
        return [int(decisions[ADD.format(i)]) for i in range(len(ctx.specs))]

    def penalty_record(self, added: list[int]) -> dict[str, float | int]:
        return {"units_added": sum(added), "complexity_penalty": self.options.penalty * sum(added)}

    def reward(self, trial: FrozenTrial) -> float | None:
        """Validation accuracy minus the penalty on the units added (accuracy 0 when the child failed; a child
        successive halving stopped: its accuracy where it stopped, a departure from RCL's and CLEAS's papers,
        which train every child fully)."""
        units = _units(trial)
        if trial.state == TrialState.COMPLETE and trial.values:
            return trial.values[0] - self.options.penalty * units  # values[0]: accuracy, in any search
        if trial.state == TrialState.FAIL:
            return -self.options.penalty * units
        stop = halving_stop(trial)  # successive halving stopped it: its accuracy there (not the papers')
        if trial.state == TrialState.PRUNED and stop is not None:
            return stop[1][0] - self.options.penalty * units
        return None  # pruned by a pruner: no accuracy of its own

    def score(self, trial: FrozenTrial) -> float:
        """How the commit ranks completed trials: by reward."""
        score = self.reward(trial)
        return trial.values[0] if score is None else score

    def record(self, committed: ModuleGraph, ctx: TaskContext, study: optuna.Study) -> dict[str, Any]:
        """The reward of every sampled architecture and, with the REINFORCE policy, its entropy at the end
        of the task's search against a uniform policy's."""
        if ctx.task_id == 0:
            return {}
        trials = study.get_trials(deepcopy=False)
        rewards = [
            {"trial": t.number, "units_added": _units(t), "reward": self.reward(t)}
            for t in trials
            if self.reward(t) is not None
        ]
        record: dict[str, Any] = {"rewards": rewards}
        if isinstance(study.sampler, ReinforceSampler):
            entropy, uniform = study.sampler.policy_entropy(trials)
            record.update(policy_entropy=entropy, uniform_entropy=uniform)
        return record

    def base_network(self, ctx: TaskContext) -> ModuleGraph:
        added = [neurons.width(spec) for spec in ctx.specs]
        return neurons.grow_units(ctx.committed, ctx.task_id, ctx.specs, added, ctx.n_outputs)


def _units(trial: FrozenTrial) -> int:
    """Units (filters) a trial's architecture adds, over every layer."""
    return sum(v for name, v in trial.params.items() if name.startswith(ADD.format("")))
