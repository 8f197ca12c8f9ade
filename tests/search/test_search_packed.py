"""Searches that train their trials in packs (`search.pack`): the study is asked for a pack of trials, their
candidates train together, each is told its own result; a pack interrupted between its tells resumes
bit for bit; the REINFORCE policy learns once per pack; MNTDP-D's deterministic search commits what it
commits one trial at a time."""

from __future__ import annotations

import os

import optuna
import pytest
import torch
from optuna.trial import TrialState

from growsearch.graph.module_graph import ModuleGraph
from growsearch.methods.algorithms.reinforce import ReinforceSampler
from growsearch.methods.base import TaskContext
from growsearch.runner import build_method, load_stream, resume_run, start_run
from growsearch.search.trial_job import TrialJob
from growsearch.store.run_folder import RunFolder, TrialSaver
from growsearch.train import packed as packed_module
from growsearch.train.candidate import train_candidate
from growsearch.train.pack_sizing import free_memory
from growsearch.trial_record import (
    PACK_LAYOUT,
    SPLIT,
    SPLIT_PART,
    next_pack,
    pack_attrs,
    pack_layout_attrs,
    pack_of,
    retry_attrs,
    split_layout,
)

from tiny_runs import assert_same_commits, tiny_options, tiny_space

RCL_PACKED = {"search": {"n_trials": 6, "pack": 3}, "training": {"epochs": 1}}


def _study(path, task):
    return optuna.load_study(study_name=f"task-{task}", storage=RunFolder.open(path).storage("journal"))


def interrupt_keeping(monkeypatch, task, number):
    """Ctrl-C while trial `number` of `task` is being kept in the run folder, before it is told."""
    keep = TrialSaver.__call__

    def interrupted(saver, at_task, at_number, graph):
        if (at_task, at_number) == (task, number):
            raise KeyboardInterrupt
        return keep(saver, at_task, at_number, graph)

    monkeypatch.setattr(TrialSaver, "__call__", interrupted)


@pytest.fixture(scope="module")
def rcl_packed(tmp_path_factory):
    return start_run(tiny_space("rcl", **RCL_PACKED), tiny_options(), tmp_path_factory.mktemp("rcl") / "run")


def test_trials_are_asked_in_packs_that_share_one_layout(rcl_packed):
    for study in (_study(rcl_packed.path, t) for t in range(1, 5)):
        trials = sorted(study.get_trials(), key=lambda t: t.number)
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
        assert [pack_of(t) for t in trials] == [0, 0, 0, 3, 3, 3]
        layouts = [t.user_attrs.get("pack_layout") for t in trials]  # on each pack's first trial
        assert layouts[0] and layouts[3] and layouts[1:3] == layouts[4:6] == [None, None]
    assert len(rcl_packed.records[2].mechanism["rewards"]) == 6


def test_the_replayed_policy_makes_one_update_per_pack(rcl_packed):
    stream = load_stream(tiny_options())
    method = build_method(tiny_space("rcl", **RCL_PACKED), stream)
    study = _study(rcl_packed.path, 1)
    ctx = TaskContext(1, stream.tasks[1], None, method.specs_for(stream.input_shape), (), seed=0, n_tasks=5)
    sampler = method.search_plan(ctx).sampler
    assert isinstance(sampler, ReinforceSampler)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    sampler.catch_up(trials, 3)
    assert sampler.updates == 1  # the first pack, all three of its architectures together
    sampler.catch_up(trials, 6)
    assert sampler.updates == 2


@pytest.mark.parametrize(("fidelity", "packs"), [("full", 10), ("halving", 5)])
def test_the_policy_learns_ten_times_a_task_or_five_times_with_halving(fidelity, packs):
    """With halving a pack costs about its longest survivor's epochs whatever its size: packs of a fifth."""
    stream = load_stream(tiny_options())
    space = tiny_space("rcl", search={"n_trials": 50, "fidelity": fidelity})
    method = build_method(space, stream)
    ctx = TaskContext(1, stream.tasks[1], None, method.specs_for(stream.input_shape), (), seed=0, n_tasks=5)
    plan = method.search_plan(ctx)
    assert plan.budget == 50 and plan.pack_limit == 50 // packs


def test_a_pack_interrupted_between_its_tells_resumes_bit_for_bit(rcl_packed, tmp_path, monkeypatch):
    interrupt_keeping(monkeypatch, task=2, number=5)  # the second pack: 3 and 4 told, 5 not yet
    space = tiny_space("rcl", **RCL_PACKED)
    with pytest.raises(KeyboardInterrupt):
        start_run(space, tiny_options(), tmp_path / "run")
    study = _study(tmp_path / "run", 2)
    states = [t.state for t in sorted(study.get_trials(), key=lambda t: t.number)]
    assert states == [TrialState.COMPLETE] * 5 + [TrialState.FAIL]  # trial 5 was interrupted
    size, layout = next_pack(study.get_trials(), 3)
    assert (size, layout) == (3, None)  # nothing waits until the resume enqueues the retry

    resumed = resume_run(tmp_path / "run")
    retried = _study(tmp_path / "run", 2).get_trials()
    assert [t.number for t in retried if t.user_attrs.get("retry_of") == 5] == [6]
    assert retried[6].user_attrs["pack_layout"] == retried[3].user_attrs["pack_layout"]  # trained alone in it
    assert_same_commits(resumed, rcl_packed, 4)


def test_mntdp_d_commits_what_it_commits_one_candidate_at_a_time(tmp_path):
    packed = start_run(tiny_space("mntdp-d", search={"pack": 3}), tiny_options(), tmp_path / "packed")
    alone = start_run(tiny_space("mntdp-d", search={"pack": 1}), tiny_options(), tmp_path / "alone")
    for task in range(1, 5):
        trials = _study(packed.path, task).get_trials()
        assert len({pack_of(t) for t in trials}) == 1 and trials[0].user_attrs["pack_layout"]  # one pack
    assert packed.metrics["decisions"] == alone.metrics["decisions"]  # its search is deterministic
    for a, b in zip(packed.metrics["accuracy"], alone.metrics["accuracy"], strict=True):
        assert a == pytest.approx(b, abs=0.02)


def test_auto_packing_on_a_cpu_trains_alone_what_padding_would_slow_down(tmp_path):
    """MNTDP-D's candidates (a whole new column down to a new head) would pad to about three times their
    compute: with `pack: auto` on a CPU they train one by one."""
    run = start_run(tiny_space("mntdp-d", training={"epochs": 1}), tiny_options(), tmp_path / "auto")
    trials = _study(run.path, 1).get_trials()
    assert len(trials) == 3 and len({pack_of(t) for t in trials}) == 1  # asked as one pack ...
    assert all("pack_layout" not in t.user_attrs for t in trials)  # ... and trained alone


def test_free_memory_falls_back_where_the_system_does_not_say_what_is_available(monkeypatch):
    real = os.sysconf

    def without_available(name):
        if name == "SC_AVPHYS_PAGES":
            raise ValueError("unrecognized configuration name")  # what macOS says
        return real(name)

    monkeypatch.setattr(os, "sysconf", without_available)
    assert free_memory(torch.device("cpu")) == real("SC_PHYS_PAGES") * real("SC_PAGE_SIZE") // 2

    def nothing(name):
        raise ValueError(name)

    monkeypatch.setattr(os, "sysconf", nothing)
    assert free_memory(torch.device("cpu")) == 4 << 30


def _rcl_job(stream):
    """A task-1 RCL trial job on a trained task 0."""
    space = tiny_space("rcl", training={"epochs": 2})
    method = build_method(space, stream)
    specs = method.specs_for(stream.input_shape)
    ctx0 = TaskContext(0, stream.tasks[0], ModuleGraph(stream.input_shape), specs, (), seed=0, n_tasks=5)
    torch.manual_seed(0)
    base = method.build({}, ctx0).graph
    committed = train_candidate(base, 0, stream.tasks[0].train, stream.tasks[0].val, space.training, seed=1)
    for _, node in committed.graph.nodes():
        node.frozen = True
    ctx = TaskContext(1, stream.tasks[1], committed.graph, specs, ({},), seed=0, n_tasks=5)
    return TrialJob(method, ctx, run_seed=0)


def test_a_pack_padded_past_the_limit_trains_as_the_packs_of_its_halves(digits_stream, monkeypatch):
    """Four candidates, two narrow and two wide: as one pack their padding passes the limit, so each half
    trains as a pack of its own (in trial order), each candidate ending where it ends alone, and the pack
    records each trial's template."""
    job = _rcl_job(digits_stream)
    decisions = [{"add_units_L0": u, "add_units_L1": u} for u in (1, 2, 28, 29)]
    sizes = []
    real = packed_module.train_packed

    def counted(members, *args, **kwargs):
        sizes.append(len(members))
        return real(members, *args, **kwargs)

    monkeypatch.setattr("growsearch.search.trial_job.train_packed", counted)
    pack = job.run_pack(decisions, [0, 1, 2, 3], [0, 1, 2, 3], [None] * 4, None, max_padding=1.5)
    assert sizes == [4, 2, 2]  # refused whole (nothing trained), then its halves
    layouts = pack.layout[SPLIT]
    assert layouts[0] == layouts[1] != layouts[2] == layouts[3] and None not in layouts
    for number, (chosen, result) in enumerate(zip(decisions, pack.results, strict=True)):
        alone = job.run(chosen, number, number)
        assert result.accuracy == alone.accuracy
        for node_id, node in alone.graph.nodes():
            for name, value in node.weights.items():
                trained = result.graph.node(node_id).weights[name]
                torch.testing.assert_close(trained, value, atol=2e-5, rtol=1e-4)
    sizes.clear()
    whole = job.run_pack(decisions, [0, 1, 2, 3], [0, 1, 2, 3], [None] * 4, None, max_padding=None)
    assert sizes == [4] and isinstance(whole.layout, list)
    sizes.clear()
    job.run_pack(decisions[:3], [0, 1, 2], [0, 1, 2], [None] * 3, None, max_padding=1.0)
    assert sizes == [3]  # too few to split: refused, each trains alone


def _trial(number, state, attrs):
    trial = optuna.trial.create_trial(
        state=state, user_attrs=attrs, value=0.5 if state == TrialState.COMPLETE else None
    )
    trial.number = number
    return trial


def test_the_retries_of_a_pack_that_trained_as_smaller_packs_retrain_each_in_its_own():
    """Trials 0-4 asked as one pack: 0-1 trained in template A, 2 alone, 3-4 in template B; a kill left
    1, 2, 3 and 4 unfinished. Their retries go as the smaller packs went: 5 in A, 6 alone, 7-8 in B."""
    a, b = [{"id": "a"}], [{"id": "b"}]
    first = {**pack_attrs(0, 5, 0), **pack_layout_attrs(split_layout([a, a, None, b, b], [0, 0, None, 1, 1]))}
    trials = [_trial(0, TrialState.COMPLETE, first)]
    trials += [_trial(n, TrialState.FAIL, pack_attrs(0, 5, n)) for n in (1, 2, 3, 4)]
    trials += [_trial(4 + n, TrialState.WAITING, retry_attrs(trials[n])) for n in (1, 2, 3, 4)]
    assert next_pack(trials, 5) == (1, a)
    trials[5] = _trial(5, TrialState.COMPLETE, {**retry_attrs(trials[1]), **pack_attrs(5, 1, 5)})
    assert next_pack(trials, 5) == (1, None)  # it trained alone: it retrains alone
    trials[6] = _trial(6, TrialState.COMPLETE, retry_attrs(trials[2]))
    assert next_pack(trials, 5) == (2, b)
    assert trials[0].user_attrs[PACK_LAYOUT][SPLIT][2] is None


def test_the_retries_of_two_smaller_packs_with_one_template_retrain_apart():
    """Trials 0-3 trained as the packs 0-1 and 2-3, both in template A; a kill left 1, 2 and 3 unfinished.
    The retry of 1 retrains alone in A, as its smaller pack's rest; those of 2 and 3 together. A layout
    written before the parts were recorded groups by template alone, as it did."""
    a = [{"id": "a"}]
    for parts, first_size in (([0, 0, 1, 1], 1), (None, 3)):
        layout = split_layout([a, a, a, a], parts or [None] * 4)
        if parts is None:
            del layout[SPLIT_PART]
        first = {**pack_attrs(0, 4, 0), **pack_layout_attrs(layout)}
        trials = [_trial(0, TrialState.COMPLETE, first)]
        trials += [_trial(n, TrialState.FAIL, pack_attrs(0, 4, n)) for n in (1, 2, 3)]
        trials += [_trial(3 + n, TrialState.WAITING, retry_attrs(trials[n])) for n in (1, 2, 3)]
        assert next_pack(trials, 4) == (first_size, a)
        if parts is not None:
            trials[4] = _trial(4, TrialState.COMPLETE, {**retry_attrs(trials[1]), **pack_attrs(4, 1, 4)})
            assert next_pack(trials, 4) == (2, a)


def test_a_pack_that_trained_as_smaller_packs_resumes_bit_for_bit(tmp_path, monkeypatch):
    """Packs of four that padding refuses (simulated: four never fit, two always do) train as the packs of
    their halves; interrupted after one tell, the rest retrain in their halves' layouts, and the resumed
    run commits bit for bit what the uninterrupted one commits."""
    real = packed_module.train_packed

    def four_too_padded(members, *args, layout=None, max_padding=None, **kwargs):
        if len(members) >= 4 and layout is None:
            raise packed_module.NotPackable("padded too much (simulated)", padding=9.0)
        return real(members, *args, layout=layout, max_padding=None, **kwargs)

    monkeypatch.setattr("growsearch.search.trial_job.train_packed", four_too_padded)
    space = tiny_space("rcl", search={"n_trials": 8, "pack": 4}, training={"epochs": 1})
    reference = start_run(space, tiny_options(), tmp_path / "reference")
    layout = _study(reference.path, 2).get_trials()[4].user_attrs["pack_layout"][SPLIT]
    assert layout[0] == layout[1] != layout[2] == layout[3] and None not in layout

    interrupt_keeping(monkeypatch, task=2, number=5)  # the second pack: 5 (its first half), 6 and 7 untold
    with pytest.raises(KeyboardInterrupt):
        start_run(space, tiny_options(), tmp_path / "run")
    resumed = resume_run(tmp_path / "run")
    trials = _study(tmp_path / "run", 2).get_trials()
    retries = {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}
    assert sorted(retries) == [5, 6, 7]
    assert retries[5].user_attrs["pack_layout"] == layout[1]  # alone, in its half's template
    assert retries[6].user_attrs["pack_layout"] == layout[2] and pack_of(retries[7]) == pack_of(retries[6])
    assert_same_commits(resumed, reference, 4)
