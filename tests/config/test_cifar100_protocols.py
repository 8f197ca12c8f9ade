"""The split CIFAR-100 protocol YAMLs (search_spaces/cifar100/): each loads, names a CIFAR-100 benchmark, and
its network is a backbone its method grows, built for CIFAR's inputs within the space's parameter bound. No
data is read and nothing is trained."""

from pathlib import Path

import pytest

from growsearch.config.space import load_space
from growsearch.data.benchmarks import get_benchmark_info
from growsearch.data.streams import allowed_split_tasks
from growsearch.grow.backbone import backbone_kind, count_parameters
from growsearch.methods import get_method

FOLDER = Path(__file__).resolve().parents[2] / "search_spaces" / "cifar100"
PROTOCOLS = sorted(FOLDER.glob("*.yaml"))
CIFAR_INPUT = (3, 32, 32)


def test_the_folder_holds_the_protocols():
    assert {p.stem for p in PROTOCOLS} >= {"der", "rps-net", "cpg", "hat", "xdg"}


@pytest.mark.parametrize("path", PROTOCOLS, ids=lambda p: p.stem)
def test_a_protocol_loads_on_a_cifar100_benchmark(path):
    space = load_space(path)
    assert space.paper
    info = get_benchmark_info(space.benchmark.name)
    assert info.name.startswith("split-cifar100") and info.description.startswith("CIFAR-100")
    assert space.benchmark.scenario in info.scenarios
    if space.benchmark.n_tasks is not None and info.name == "split-cifar100":
        assert space.benchmark.n_tasks in allowed_split_tasks(100)


@pytest.mark.parametrize("path", PROTOCOLS, ids=lambda p: p.stem)
def test_a_protocol_network_is_a_backbone_its_method_grows(path):
    space = load_space(path)
    method_cls = get_method(space.method)
    assert backbone_kind(space.layers) in method_cls.backbones
    assert space.benchmark.scenario in method_cls.scenarios
    method = method_cls(space)  # the method checks its options
    size = count_parameters(method.specs_for(CIFAR_INPUT))  # on the meta device: nothing allocated
    assert 0 < size <= space.max_parameters


@pytest.mark.parametrize("path", PROTOCOLS, ids=lambda p: p.stem)
def test_each_departure_is_one_comment_line(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    departures = [line for line in lines if "departure" in line.lower()]
    assert departures, f"{path.name} states no departure"
    for line in departures:
        assert line.startswith("# departure: ") and len(line) > len("# departure: ") + 10, line


def test_a_protocol_loads_by_its_folder_name():
    assert load_space("cifar100/der").to_dict() == load_space(FOLDER / "der.yaml").to_dict()
