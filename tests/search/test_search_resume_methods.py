"""Every method survives kill -9: a real `growsearch run` is killed just after a task commits, resumed,
and commits the same graph, decisions and accuracies as an uninterrupted run with the same seed, also
when trials train in packs. (MNTDP-D, whose candidates train as one pack by default, and RCL have their
own, finer-grained kill tests.)"""

from __future__ import annotations

import optuna
import pytest
import torch

from growsearch.runner import resume_run, start_run
from growsearch.store.run_folder import RunFolder

from tiny_runs import kill, start_cli_run, tiny_options, tiny_space, wait_for

TINY = {
    "pnn": {},
    "packnet": {},
    "auto-grow": {  # after its enqueued first trials, one the TPE sampler draws; halving after epoch 1 of 2
        "search": {"n_trials": 5},
        "options": {"moves": ["compact", "column", "reuse_below", "mask"]},
    },
    "mntdp-s": {"options": {"sampler_epochs": 1}},
    "pathnet": {
        "options": {
            "modules_per_layer": 3,
            "active_per_layer": 2,
            "population": 4,
            "generations": 3,
            "minibatches": 3,
        }
    },
    "cleas": {"search": {"n_trials": 2}, "training": {"epochs": 1}},
    "den": {"options": {"max_iterations": 6, "head_iterations": 2, "expand_units": 3}},
    "learn-to-grow": {"options": {"search_epochs": 1}},
    "hat": {},
    "der": {
        "network": {"layers": [{"linear": 32}, {"linear": 32}]},
        "options": {"memory_size": 40, "balance_epochs": 1, "sparsity": 0.05, "search": True},
        "search": {"n_trials": 2},
    },
    "dgmw": {
        "network": {"layers": [{"linear": 16}]},
        "options": {"gan_epochs": 3, "generator_widths": [8, 16], "discriminator_width": 16, "search": True},
        "search": {"n_trials": 2},
    },
    "expert-gate": {"options": {"search": True}, "search": {"n_trials": 3}},
    "rps-net": {
        "options": {"memory_size": 40, "fisher_samples": 30, "saturation_threshold": 0.3},
        "search": {"n_trials": 2},
        "training": {"lr": 0.01},
    },
    "xdg": {"training": {"epochs": 1}},
    "dan": {"options": {"search": True}, "search": {"n_trials": 2}},
    "clnp": {},
    "piggyback": {"training": {"lr": 0.01}},
    "cpg": {
        "training": {"lr": 0.01},
        "options": {
            "train_epochs": 2,
            "goal_epochs": 2,
            "sparsity_stages": [0.5, 0.8],
            "prune_epochs": 1,
            "prune_every": 1,
        },
    },
    "pae": {
        "training": {"lr": 0.01},
        "options": {"train_epochs": 2, "prune_epochs": 1, "prune_every": 1, "expand_below": 0.3},
    },
}


# searches whose trials train in packs (`search.pack`): a kill may land mid-pack or between its tells
PACKED = {
    "rcl": {"search": {"n_trials": 6, "pack": 3}, "training": {"epochs": 1}},
    "cleas": {"search": {"n_trials": 4, "pack": 4}, "training": {"epochs": 1}},
}
CASES = [(method, TINY[method]) for method in sorted(TINY)] + [
    pytest.param(method, sections, id=f"{method}-packed") for method, sections in PACKED.items()
]


@pytest.mark.parametrize(("method", "sections"), CASES)
def test_kill_minus_9_and_resume_commits_what_an_uninterrupted_run_commits(method, sections, tmp_path):
    space = tiny_space(method, **sections)
    run = tmp_path / "runs" / "killed"
    process = start_cli_run(space, run, "--max-per-task", "80")
    wait_for(lambda: (run / "tasks" / "1").is_dir(), process)  # kill in whatever follows task 1's commit
    kill(process)

    resumed = resume_run(run)
    reference = start_run(space, tiny_options(), tmp_path / "reference")

    assert resumed.metrics["decisions"] == reference.metrics["decisions"]
    assert resumed.metrics["accuracy"] == reference.metrics["accuracy"]
    final, _ = RunFolder.open(run).load_task(4)
    expected, _ = RunFolder.open(reference.path).load_task(4)
    assert list(final) == list(expected)
    for node_id, node in final.nodes():
        for name, value in node.weights.items():
            assert torch.equal(value, expected.node(node_id).weights[name]), (node_id, name)
        for name, value in node.state.items():  # what a method keeps with a node (DGMw's generator)
            assert torch.equal(value, expected.node(node_id).state[name]), (node_id, name)


# searches killed between two trials of a task (the second task: DAN's first has nothing to search), whose
# later trials a sampler draws at random
MID_SEARCH = {
    "rps-net": (TINY["rps-net"] | {"search": {"n_trials": 4}}, 0),  # random path selection
    "dan": ({"options": {"search": True}, "search": {"n_trials": 4}}, 1),  # TPE, in its random start-up
}


@pytest.mark.parametrize(
    ("method", "sections", "task"), [(m, *c) for m, c in MID_SEARCH.items()], ids=list(MID_SEARCH)
)
def test_a_search_killed_between_trials_resumes_drawing_what_it_would_have_drawn(
    method, sections, task, tmp_path
):
    space = tiny_space(method, **sections)
    run = tmp_path / "runs" / "killed"
    process = start_cli_run(space, run, "--max-per-task", "80")
    wait_for(lambda: (run / "trials" / str(task) / "1").is_dir(), process)  # two of the task's trials saved
    kill(process)
    resumed = resume_run(run)
    reference = start_run(space, tiny_options(), tmp_path / "reference")
    assert resumed.metrics["decisions"] == reference.metrics["decisions"]
    assert resumed.metrics["accuracy"] == reference.metrics["accuracy"]

    def searched(folder):  # every trial's decisions, in search order (a retry where its killed trial was)
        study = optuna.load_study(study_name=f"task-{task}", storage=RunFolder.open(folder).storage())
        return [t.params for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]

    assert searched(run) == searched(reference.path)
