"""Input the YAML reader and the schema used to accept silently or fail on with a traceback: each refused with
one line naming the file, the line or field, and what was expected."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from growsearch.config import run_options, space
from growsearch.config.overrides import apply_overrides
from growsearch.config.run_options import RunOptions, check_run_options
from growsearch.config.schema import from_mapping
from growsearch.config.space import load_space, space_from_dict
from growsearch.config.yaml_input import MAX_DEPTH, read_yaml
from growsearch.errors import ConfigError

BASE = "method: pnn\nnetwork:\n  layers: [{linear: 10}]\n"


def _load(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return load_space(path)


LAUGHS = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            BASE + "training: {lr: 0.1}\ntraining: {lr: 0.5}\n",
            "line 5: key 'training' is given twice (first on line 4)",
        ),
        (
            BASE + "training:\n  lr: 0.1\n  epochs: 2\n  lr: 0.5\n",
            "line 7: key 'lr' is given twice (first on line 5)",
        ),
        (BASE + "options: {1: a, b: c}\n", "line 4: key '1' is read as int; expected a name"),
        (BASE + "training: {yes: 2}\n", "line 4: key 'yes' is read as bool"),
        (
            BASE + "options: {x: " + "[" * 5000 + "]" * 5000 + "}\n",
            f"nested more than {MAX_DEPTH} levels deep",
        ),
        (BASE + "options:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(2000)), "levels deep"),
        (
            BASE + "options: {x: " + "9" * 5000 + "}\n",
            "line 4: the integer 99999999999999999999... is too long",
        ),
        (LAUGHS, "aliases expand it to more than 100,000 values"),
        ("a: &a [*a]\n", "an alias refers to a value that contains it"),
        (BASE + "training: {lr: .inf}\n", "training.lr: expected a finite number, got inf"),
        (BASE + "training: {lr: .nan}\n", "training.lr: expected a finite number, got nan"),
        (BASE + "training: {lr: 1.0e999}\n", "training.lr: expected a finite number"),
        (BASE + "inference: {temperature: .inf}\n", "inference.temperature: expected a finite number"),
        (BASE + "backend: {gpus_per_trial: .inf}\n", "backend.gpus_per_trial: expected a finite number"),
        (BASE + "metrics: {epsilon: .inf}\n", "metrics.epsilon: expected a finite number"),
        (
            BASE + "search: {n_trials: 100000000000000000000000000}\n",
            "search.n_trials: expected at most 100,000",
        ),
        (
            BASE + "search: {sampler: nosuch}\n",
            "search.sampler: unknown sampler 'nosuch'; expected one of tpe",
        ),
        (BASE + "training: {epochs: 100000000000}\n", "training.epochs: expected at most 100,000"),
        (BASE + "benchmark: {name: ''}\n", "benchmark.name: expected a benchmark name"),
        (
            "method: pnn\nnetwork:\n  layers: [{linear: 100000000000000000000}]\n",
            "width: expected at most 1,000,000",
        ),
        (
            "method: pnn\nnetwork:\n  layers: [{conv: {channels: 4, kernel: 99999999}}]\n",
            "kernel: expected at most",
        ),
        ("method: pnn\nnetwork: {layers: [{linear: {1: 2}}]}\n", "key '1' is read as int"),
    ],
)
def test_bad_yaml_is_one_line_naming_file_and_line_or_field(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    line = str(caught.value)
    assert line.startswith(str(tmp_path / "space.yaml")) and message in line and "\n" not in line, line
    assert len(line) < 400, line


def test_every_float_of_the_schema_refuses_infinity_and_nan():
    """Not only the fields the red team tried: every float field of every section."""
    sections = {
        "training": space.TrainingConfig,
        "search": space.SearchConfig,
        "backend": space.BackendConfig,
        "metrics": space.MetricsConfig,
        "inference": space.InferenceConfig,
    }
    data = load_space("pnn").to_dict()
    for section, cls in sections.items():
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if float not in (hints[field.name], *typing.get_args(hints[field.name])):
                continue
            for bad in (float("inf"), float("-inf"), float("nan")):
                broken = {**data, section: {**data[section], field.name: bad}}
                with pytest.raises(ConfigError, match=rf"{section}\.{field.name}: expected a finite number"):
                    space_from_dict(broken, "x.yaml")


def test_mixed_keys_from_a_library_caller_are_refused_not_sorted():
    data = load_space("pnn").to_dict()
    with pytest.raises(ConfigError, match="training: key 3 is not a field name"):
        space_from_dict({**data, "training": {3: 1, "lr": 0.1}}, "x")
    with pytest.raises(ConfigError, match="key 1 is not a field name"):
        space_from_dict({**data, 1: 2}, "x")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("search.n_trials=100000000000000000000000000", "expected at most 100,000"),
        ("training.lr=inf", "training.lr: expected a finite number"),
        ("training.lr=.inf", "training.lr: expected a finite number"),
        ("metrics.epsilon=1e999", "metrics.epsilon: expected a finite number"),
        ("options.laterals={1: 2, a: 3}", "key '1' is read as int"),
        ("training.epochs=" + "9" * 5000, "is too long"),
        ("options.x={lr: 1, lr: 2}", "key 'lr' is given twice"),
    ],
)
def test_bad_overrides_are_one_short_line(override, message):
    with pytest.raises(ConfigError) as caught:
        apply_overrides(load_space("pnn"), [override])
    assert message in str(caught.value) and len(str(caught.value)) < 400, str(caught.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("seed", 2**64, "run.seed: expected an integer from 0 to 2**63 - 1"),
        ("seed", -1, "run.seed: expected an integer from 0 to 2**63 - 1"),
        ("benchmark", "", "run.benchmark: expected a name"),
        ("n_tasks", 0, "run.n_tasks: expected an integer from 1 to"),
        ("max_per_task", 10**40, "run.max_per_task: expected an integer from 1 to"),
        ("backend", "nosuch", "unknown backend 'nosuch'"),
        ("loggers", ["nosuch"], "unknown logger 'nosuch'"),
    ],
)
def test_run_options_in_a_config_are_checked(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("*", r"\*")):
        from_mapping(RunOptions, {field: value}, "config.yaml: run")


def test_command_line_names_are_named_as_typed():
    with pytest.raises(ConfigError, match="--seed: expected"):
        check_run_options(RunOptions(seed=2**70), lambda field: f"--{field}")


def test_the_light_name_lists_match_what_builds_the_objects():
    """The config layer lists backend, logger and sampler names as strings (so they are checked before
    torch is imported); the modules that build them hold the same names."""
    from growsearch.backends import BACKENDS
    from growsearch.search.loggers import LOGGERS
    from growsearch.search.samplers import SAMPLERS

    assert tuple(BACKENDS) == run_options.BACKEND_NAMES
    assert tuple(LOGGERS) == run_options.LOGGER_NAMES
    assert tuple(SAMPLERS) == space.SAMPLER_NAMES


def test_a_plain_yaml_reads_as_safe_load_reads_it():
    import yaml

    text = "a: 1\nb: [1, 2.5, x]\nc: {d: null, e: true}\nf: &f {g: 1}\nh: *f\ni:\n  <<: *f\n  j: 2\n"
    assert read_yaml(text, "x") == yaml.safe_load(text)
