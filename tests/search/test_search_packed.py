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

from growsearch.methods.algorithms.reinforce import ReinforceSampler
from growsearch.methods.base import TaskContext
from growsearch.runner import build_method, load_stream, resume_run, start_run
from growsearch.search.pipeline import SilentReporter
from growsearch.store.run_folder import RunFolder
from growsearch.train.pack_sizing import free_memory
from growsearch.trial_record import next_pack, pack_of

from tiny_runs import assert_same_commits, tiny_options, tiny_space

RCL_PACKED = {"search": {"n_trials": 6, "pack": 3}, "training": {"epochs": 1}}


def _study(path, task):
    return optuna.load_study(study_name=f"task-{task}", storage=RunFolder.open(path).storage("journal"))


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


def test_a_pack_interrupted_between_its_tells_resumes_bit_for_bit(rcl_packed, tmp_path):
    class StopAfterOneTell(SilentReporter):
        def trial_finished(self, task, trial):
            if task == 2 and trial.number == 4:  # the second pack: one trial told, two not yet
                raise KeyboardInterrupt

    space = tiny_space("rcl", **RCL_PACKED)
    with pytest.raises(KeyboardInterrupt):
        start_run(space, tiny_options(), tmp_path / "run", reporter=StopAfterOneTell())
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
