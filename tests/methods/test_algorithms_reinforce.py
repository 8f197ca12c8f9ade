"""The REINFORCE policy (RCL's and CLEAS's, the papers' "controller") and its Optuna sampler."""

from __future__ import annotations

import optuna
import pytest
import torch

from growsearch.methods.algorithms.reinforce import Decision, PolicyConfig, ReinforcePolicy, ReinforceSampler
from growsearch.trial_record import retry_attrs


def _top_half(policy: ReinforcePolicy) -> float:
    return float(policy.distributions()[0][15:].sum())


def test_the_rcl_policy_shifts_probability_toward_the_higher_reward_actions():
    policy = ReinforcePolicy([(30, None), (30, None)], PolicyConfig(), seed=0)  # RCL's defaults
    generator = torch.Generator().manual_seed(1)
    before = _top_half(policy)
    for _ in range(150):
        actions = policy.sample(generator)
        policy.update(actions, 0.9 if actions[0] >= 15 else 0.5)  # units 15..29 on layer 0 pay more
    assert before == pytest.approx(0.5, abs=0.05)
    assert _top_half(policy) > 0.75
    assert 0.5 < float(policy.network.state_value().detach()) < 1.0  # the baseline tracks the reward


def test_samples_follow_each_step_s_distribution():
    policy = ReinforcePolicy([(2, 0)] * 3 + [(5, 1)], PolicyConfig(hidden_size=8, init_range=1.0), seed=2)
    generator = torch.Generator().manual_seed(0)
    draws = torch.tensor([policy.sample(generator) for _ in range(4000)])
    for step, p in enumerate(policy.distributions()):
        counts = torch.bincount(draws[:, step], minlength=p.numel())
        assert counts.numel() == p.numel()  # no action beyond the step's choices
        assert torch.allclose(counts / len(draws), p, atol=0.03)


def test_the_moving_average_baseline_learns_too():
    config = PolicyConfig(
        hidden_size=32, num_layers=1, optimizer="rmsprop", lr=0.01, baseline="moving-average"
    )
    policy = ReinforcePolicy([(2, 0)] * 4 + [(31, 1)], config, seed=0)  # CLEAS-like: 4 neuron bits, a count
    generator = torch.Generator().manual_seed(1)
    for _ in range(60):
        actions = policy.sample(generator)
        policy.update(actions, 0.5 + 0.1 * actions[0])  # reusing neuron 0 pays
    assert float(policy.distributions()[0][1]) > 0.8


def test_packed_decisions_round_trip_and_match_what_the_trial_suggests():
    bits = Decision("reuse_L0_0", 2, n_steps=5, kind=0)
    assert bits.unpack(bits.pack([1, 0, 1, 1, 0])) == [1, 0, 1, 1, 0]
    assert bits.pack([1, 0, 1, 1, 0]) == 0b01101
    count = Decision("add_units_L0", 30)
    trial = optuna.trial.FixedTrial({"reuse_L0_0": 13, "add_units_L0": 7})
    assert (bits.sample(trial), count.sample(trial)) == (13, 7)
    with pytest.raises(ValueError):
        Decision("bad", 3, n_steps=2)


def _study(sampler: ReinforceSampler, n_trials: int, storage: optuna.storages.BaseStorage) -> optuna.Study:
    study = optuna.create_study(study_name="s", storage=storage, sampler=sampler, direction="maximize")
    decisions = sampler.decisions
    study.optimize(lambda t: sum(d.sample(t) for d in decisions) / 100, n_trials=n_trials)
    return study


def test_a_fresh_sampler_replays_the_study_to_the_same_policy_and_samples():
    decisions = [Decision("reuse_L0_0", 2, n_steps=6, kind=0), Decision("add_units_L0", 10, kind=1)]

    def make() -> ReinforceSampler:
        return ReinforceSampler(decisions, lambda t: t.value, seed=3, config=PolicyConfig(hidden_size=16))

    running = make()
    study = _study(running, 6, optuna.storages.InMemoryStorage())
    assert running.updates == 5  # each trial's update is applied before the next one samples
    study.ask()
    pending = study.get_trials(deepcopy=False)[-1]
    space = running.infer_relative_search_space(study, pending)
    expected = running.sample_relative(study, pending, space)
    fresh = make()  # as after a resume: the study is replayed before sampling
    assert fresh.sample_relative(study, pending, space) == expected
    assert running.updates == fresh.updates == 6
    for name, value in running.policy.network.state_dict().items():
        assert torch.equal(value, fresh.policy.network.state_dict()[name]), name


def test_a_trial_killed_mid_run_is_not_counted_so_its_retry_does_not_shift_the_samples():
    decisions = [Decision("add_units_L0", 30)]
    config = PolicyConfig(hidden_size=16)

    def make() -> ReinforceSampler:
        return ReinforceSampler(decisions, lambda t: t.value, seed=5, config=config)

    plain = _study(make(), 3, optuna.storages.InMemoryStorage())
    reference = [t.params for t in plain.get_trials()] + [_next_params(plain, make())]

    storage = optuna.storages.InMemoryStorage()
    killed = _study(make(), 2, storage)
    victim = killed.ask()  # sampled, then its process dies: failed on resume and enqueued again
    decisions[0].sample(victim)
    killed.tell(victim.number, state=optuna.trial.TrialState.FAIL)
    frozen = killed.get_trials(deepcopy=False)[victim.number]
    killed.enqueue_trial(victim.params, user_attrs=retry_attrs(frozen))
    killed.sampler = make()
    killed.optimize(lambda t: decisions[0].sample(t) / 100, n_trials=1)
    complete = killed.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert [t.params for t in complete] + [_next_params(killed, make())] == reference


def _next_params(study: optuna.Study, sampler: ReinforceSampler) -> dict:
    study.sampler = sampler
    trial = study.ask()
    return {d.name: d.sample(trial) for d in sampler.decisions}
