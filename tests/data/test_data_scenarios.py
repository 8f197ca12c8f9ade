import pytest

from growsearch.data import SCENARIOS, get_scenario
from growsearch.errors import ConfigError, UnknownNameError


def test_four_scenarios_with_their_flags():
    assert set(SCENARIOS) == {"task-il", "domain-il", "class-il", "task-agnostic"}
    assert get_scenario("task-il").labels == "per-task"
    assert get_scenario("task-il").task_id_at_inference
    assert get_scenario("class-il").labels == "disjoint"
    assert not get_scenario("class-il").task_id_at_inference
    assert get_scenario("domain-il").labels == "shared"
    agnostic = get_scenario("task-agnostic")
    assert agnostic.labels == "shared" and not agnostic.task_id_at_training


def test_unknown_scenario():
    with pytest.raises(UnknownNameError, match="unknown scenario 'class-incremental'") as info:
        get_scenario("class-incremental")
    assert isinstance(info.value, ConfigError)
    assert "task-il" in str(info.value)


def test_scenario_is_frozen():
    with pytest.raises(AttributeError):
        get_scenario("task-il").labels = "shared"  # type: ignore[misc]
