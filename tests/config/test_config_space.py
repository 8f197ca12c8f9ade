import pytest

from growsearch.config.space import builtin_space_path, load_space
from growsearch.errors import ConfigError, UnknownNameError
from growsearch.methods import get_method, method_names


def write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


BASE = """
method: pnn
network:
  layers: [{linear: 10}]
"""


@pytest.mark.parametrize("method", method_names())
def test_every_method_ships_a_valid_space_with_paper_citation(method):
    space = load_space(method)
    assert space.method == method and space.paper
    assert load_space(builtin_space_path(method)).to_dict() == space.to_dict()
    assert method in method_names()


def test_a_resolved_space_round_trips(tmp_path):
    import yaml

    space = load_space("packnet")
    path = write(tmp_path, yaml.safe_dump(space.to_dict()))
    assert load_space(path).to_dict() == space.to_dict()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "training: {lr: fast}\n", r"space.yaml: training.lr: expected a number, got 'fast'"),
        (BASE + "training: {lr: -1}\n", r"space.yaml: training.lr: expected a number > 0, got -1"),
        (BASE + "training: {epochs: 2.5}\n", r"training.epochs: expected an integer, got 2.5"),
        (BASE + "training: {speed: 3}\n", r"training: unknown field 'speed'; expected some of: .*batch_size"),
        (BASE + "search: {pruner: sometimes}\n", r"search.pruner: expected one of 'none', 'median'"),
        (BASE + "search: {pack: 0}\n", r"search.pack: expected auto or an integer >= 1, got 0"),
        (BASE + "search: {pack: many}\n", r"search.pack: expected an integer or one of 'auto', got 'many'"),
        (BASE + "colour: red\n", r"unknown section 'colour'; expected some of: method, paper"),
        (
            "method: pnn\nnetwork:\n  layers: [{dense: 10}]\n",
            r"network.layers\[0\]: unknown layer kind 'dense'",
        ),
        ("method: pnn\nnetwork: {layers: []}\n", r"network.layers: expected a non-empty list"),
        ("method: [pnn\n", r"space.yaml: not valid YAML"),
        ("- just\n- a list\n", r"space.yaml: expected a mapping with sections"),
    ],
)
def test_bad_files_are_refused_naming_file_field_and_expectation(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_space(write(tmp_path, text))


def test_a_method_checks_its_own_options_naming_file_and_field(tmp_path):
    space = load_space(write(tmp_path, BASE + "options: {adapter_hidden: 0}\n"))  # loads: a plain mapping
    with pytest.raises(
        ConfigError,
        match=r"space.yaml: options.adapter_hidden: expected null or an integer from 1 to 1,000,000, got 0",
    ):
        get_method(space.method)(space)
    with pytest.raises(ConfigError, match=r"space.yaml: options: unknown field 'colour'; expected some of"):
        get_method("pnn")(load_space(write(tmp_path, BASE + "options: {colour: red}\n")))


def test_an_unknown_method_lists_the_known_ones(tmp_path):
    space = load_space(write(tmp_path, "method: pnnn\nnetwork: {layers: [{linear: 3}]}\n"))
    with pytest.raises(
        UnknownNameError, match="unknown method .pnnn.; expected one of: .*mntdp-d, .*packnet, .*pnn"
    ):
        get_method(space.method)
    with pytest.raises(UnknownNameError, match="unknown method .*'nothing'; expected one of: .*den, .*pnn"):
        load_space("nothing")


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no-such.yaml: no such search-space file"):
        load_space(tmp_path / "no-such.yaml")


def test_the_config_knows_every_activation_the_graph_builds():
    from growsearch.config.network import ACTIVATION_NAMES
    from growsearch.graph.specs import ACTIVATIONS

    assert set(ACTIVATION_NAMES) == set(ACTIVATIONS)
