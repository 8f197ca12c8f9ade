"""CTrL's streams on the bundled MNIST (growsearch.data.ctrl) and its transfer metric, end to end."""

import json
import subprocess
import sys

import pytest
import torch

from growsearch.data import ctrl, get_benchmark_info, list_benchmarks, load_benchmark, mnist5k
from growsearch.errors import ConfigError, TrainingError
from growsearch.report.metrics_export import metrics_csv
from growsearch.runner import RunOptions, resume_run, start_run

from tiny_runs import tiny_options, tiny_space

CTRL = ("ctrl-minus", "ctrl-plus", "ctrl-in", "ctrl-out", "ctrl-pl", "ctrl-long")


@pytest.fixture(scope="module")
def base():
    return mnist5k.load("ctrl", None, False, 0.15)


@pytest.fixture(scope="module")
def streams():
    return {name: load_benchmark(name) for name in CTRL[:5]}


def rows(x: torch.Tensor) -> set[bytes]:
    """Each image as bytes (inputs are k / 255 exactly, so 8-bit values identify them)."""
    return {bytes(r) for r in (x.reshape(len(x), -1) * 255).round().to(torch.uint8).numpy()}


def labelled_rows(x: torch.Tensor, y: torch.Tensor) -> set[tuple[bytes, int]]:
    flat = (x.reshape(len(x), -1) * 255).round().to(torch.uint8).numpy()
    return {(bytes(r), int(label)) for r, label in zip(flat, y.tolist(), strict=True)}


def permuted(x: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    return x.reshape(len(x), -1)[:, perm].reshape(x.shape)


def assert_t1(task, base) -> None:
    """A task of t1's distribution: plain MNIST images from the base's training split, their own labels."""
    truth = labelled_rows(base.train.x.float() / 255, base.train.y)
    assert labelled_rows(task.train.x, task.train.y) <= truth
    assert torch.equal(task.test.x, base.test.x.float() / 255) and torch.equal(task.test.y, base.test.y)


def test_every_fixed_stream_shares_its_unrelated_tasks(streams, base):
    for name, stream in streams.items():
        assert stream.input_shape == (1, 28, 28) and stream.scenario.name == "task-il"
        assert len(stream) == ctrl.LENGTHS[name] == get_benchmark_info(name).default_tasks
        middle = stream.tasks[1:5] if name != "ctrl-pl" else stream.tasks[:4]
        for k, task in enumerate(middle, start=1):  # u_k: its own pixel and label permutation
            pixels, labels = ctrl.unrelated(0, k)
            assert task.n_outputs == 10 and len(task.train) == 1000 and len(task.test) == 750
            assert torch.equal(task.test.x, permuted(base.test.x.float() / 255, pixels))
            assert torch.equal(task.test.y, torch.tensor(labels)[base.test.y])
            assert torch.equal(task.train.x, streams["ctrl-minus"].tasks[k].train.x)  # the same u_k


def test_ctrl_minus_ends_with_t1_on_a_tenth_of_the_samples(streams, base):
    first, last = streams["ctrl-minus"].tasks[0], streams["ctrl-minus"].tasks[-1]
    assert (len(first.train), len(last.train)) == (3000, 300)
    assert torch.bincount(last.train.y).tolist() == [30] * 10
    assert_t1(first, base)
    assert_t1(last, base)
    assert not rows(first.train.x) & rows(last.train.x)  # disjoint samples


def test_ctrl_plus_starts_with_the_tenth(streams, base):
    first, last = streams["ctrl-plus"].tasks[0], streams["ctrl-plus"].tasks[-1]
    assert (len(first.train), len(last.train)) == (300, 3000)
    assert_t1(first, base)
    assert_t1(last, base)
    assert not rows(first.train.x) & rows(last.train.x)


def test_ctrl_in_ends_with_t1_labels_on_turned_inputs(streams, base):
    first, last = streams["ctrl-in"].tasks[0], streams["ctrl-in"].tasks[-1]
    assert_t1(first, base)
    turned = torch.rot90(first.test.x, 1, dims=(-2, -1))
    assert torch.equal(last.test.x, turned) and torch.equal(last.test.y, first.test.y)
    back = torch.rot90(last.train.x, -1, dims=(-2, -1))
    assert labelled_rows(back, last.train.y) <= labelled_rows(base.train.x.float() / 255, base.train.y)
    assert not rows(back) & rows(first.train.x)  # disjoint samples
    moved = (last.train.x.mean(0) - first.train.x.mean(0)).abs().sum()
    assert moved > 0.5 * first.train.x.mean(0).sum()  # where the ink is (the low-level statistics) moved


def test_ctrl_out_ends_with_t1_images_under_shuffled_labels(streams):
    first, last = streams["ctrl-out"].tasks[0], streams["ctrl-out"].tasks[-1]
    shuffle = torch.tensor(ctrl.derangement(0))
    assert not torch.equal(shuffle, torch.arange(10))
    for a, b in ((first.train, last.train), (first.test, last.test)):
        assert torch.equal(a.x, b.x)  # the same images
        assert torch.equal(b.y, shuffle[a.y]) and (b.y != a.y).all()


def test_ctrl_pl_tasks_are_unrelated(streams, base):
    stream = streams["ctrl-pl"]
    perms = [ctrl.unrelated(0, k)[0] for k in range(1, 6)]
    assert all(not torch.equal(p, torch.arange(28 * 28)) for p in perms)
    assert len({tuple(p.tolist()) for p in perms}) == 5
    assert len({ctrl.unrelated(0, k)[1] for k in range(1, 6)}) == 5
    for task, perm in zip(stream.tasks, perms, strict=True):
        assert torch.equal(task.test.x, permuted(base.test.x.float() / 255, perm))


def test_ctrl_long_is_a_hundred_small_seeded_tasks(base):
    stream = load_benchmark("ctrl-long")
    assert len(stream) == 100 and all(t.n_outputs == 5 and len(t.classes) == 5 for t in stream.tasks)
    sizes = {len(t.train) for t in stream.tasks}
    assert sizes == {5 * n for n in ctrl.LONG_TRAIN}
    assert all(len(t.val) == 50 and len(t.test) == 100 for t in stream.tasks)
    assert all(set(t.train.y.tolist()) == set(range(5)) for t in stream.tasks)
    assert len({t.classes for t in stream.tasks}) > 20
    plans = ctrl.plan_stream("ctrl-long", base, 100, 0)
    assert {p.what for p in plans} == set(ctrl.LONG_TRANSFORMS)

    again, other = load_benchmark("ctrl-long"), load_benchmark("ctrl-long", seed=1)
    first7 = load_benchmark("ctrl-long", n_tasks=7)
    assert len(first7) == 7
    for i, task in enumerate(stream.tasks):
        assert torch.equal(task.train.x, again.tasks[i].train.x) and torch.equal(
            task.test.y, again.tasks[i].test.y
        )
    for a, b in zip(first7.tasks, stream.tasks, strict=False):
        assert a.classes == b.classes and torch.equal(a.train.x, b.train.x)
    differ = [
        t.classes != o.classes or t.train.x.shape != o.train.x.shape or not torch.equal(t.train.x, o.train.x)
        for t, o in zip(stream.tasks, other.tasks, strict=True)
    ]
    assert all(differ[:10]) and sum(differ) > 90


def test_seeds_and_caps(streams):
    other = load_benchmark("ctrl-minus", seed=1)
    assert not torch.equal(other.tasks[0].train.x, streams["ctrl-minus"].tasks[0].train.x)
    assert not torch.equal(other.tasks[1].test.x, streams["ctrl-minus"].tasks[1].test.x)
    capped = load_benchmark("ctrl-out", max_per_task=40)
    assert [len(t.train) for t in capped.tasks] == [40] * 6
    assert torch.equal(capped.tasks[0].train.x, capped.tasks[-1].train.x)  # still t1's very images


@pytest.mark.parametrize(
    ("name", "n_tasks", "message"),
    [
        ("ctrl-minus", 5, r"n_tasks=5 is not allowed for 'ctrl-minus'.*allowed n_tasks: 6$"),
        ("ctrl-pl", 6, r"allowed n_tasks: 5$"),
        ("ctrl-long", 101, r"expected an integer in 1..100"),
        ("ctrl-long", 0, r"expected an integer in 1..100"),
    ],
)
def test_stream_lengths_are_checked(name, n_tasks, message):
    with pytest.raises(ConfigError, match=message):
        load_benchmark(name, n_tasks=n_tasks)


def test_ctrl_is_task_il():
    with pytest.raises(ConfigError, match="'ctrl-in' does not support scenario 'class-il'; allowed: task-il"):
        load_benchmark("ctrl-in", scenario="class-il")


def test_registered_and_listed_without_torch():
    infos = {info.name: info for info in list_benchmarks()}
    for name in CTRL:
        info = infos[name]
        assert info.scenarios == ("task-il",) and not info.needs_data_root and info.measures_transfer
        assert info.description.startswith("CTrL ") and len(info.description) <= 80
    assert not infos["split-digits"].measures_transfer
    script = (
        "import sys\n"
        "from growsearch.data.benchmarks import list_benchmarks\n"
        "names = [i.name for i in list_benchmarks()]\n"
        "print(names[-6:], sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"{list(CTRL)} []"


def test_transfer_is_the_last_task_against_an_independent_model(tmp_path):
    space = tiny_space("pnn")
    options = RunOptions(benchmark="ctrl-minus", max_per_task=60, seed=0)
    result = start_run(space, options, tmp_path / "run")
    kept = json.loads((tmp_path / "run" / "independent.json").read_text())
    assert kept["task"] == 5 and 0 <= kept["accuracy"] <= 1
    metrics = result.metrics
    assert metrics["independent_accuracy"] == kept["accuracy"]
    assert metrics["metrics"]["transfer"] == pytest.approx(metrics["accuracy"][5][5] - kept["accuracy"])
    assert "transfer,,," in metrics_csv(metrics) and "independent_accuracy,,5," in metrics_csv(metrics)

    (tmp_path / "run" / "independent.json").write_text('{"task": 5, "accur')  # torn: recomputed
    resumed = resume_run(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "independent.json").read_text()) == kept  # deterministic
    assert resumed.metrics["metrics"]["transfer"] == metrics["metrics"]["transfer"]


def test_no_transfer_where_the_benchmark_does_not_measure_it(tmp_path):
    result = start_run(tiny_space("pnn"), tiny_options(), tmp_path / "run")
    assert result.metrics["metrics"]["transfer"] is None and result.metrics["independent_accuracy"] is None
    assert not (tmp_path / "run" / "independent.json").exists()


def test_a_diverging_independent_model_is_a_clear_error(tmp_path):
    space = tiny_space("pnn", training={"lr": 1e30, "momentum": 0.0})
    options = RunOptions(benchmark="ctrl-out", max_per_task=40, seed=0)
    with pytest.raises(
        TrainingError, match=r"the independent model on task 5 \(CTrL's transfer reference\): "
    ):
        start_run(space, options, tmp_path / "run")
