"""A run over several seeds (`growsearch run ... --seeds 0,1,2`): one whole run folder per seed under a group
folder, started, resumed and summarised as one.

    runs/NAME/group.json   the seeds, the search space as loaded, the --set overrides, the run options
                           (the seed aside) and how a ray run joins Ray: all any member needs to start
    runs/NAME/seed-S/      the run of seed S (a run folder like any other: inspect, report, resume it alone)

`group.json` is written before any member starts, so a group stopped at any moment resumes whole: a member
that completed is kept, one that started is resumed, one that never started is started.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from growsearch.atomic_files import atomic_write_json, read_json
from growsearch.backends.ray_options import RayOptions
from growsearch.config.run_options import RunOptions, check_run_options
from growsearch.config.schema import from_mapping
from growsearch.config.space import SearchSpace, space_from_dict
from growsearch.errors import CheckpointError, ConfigError, RunFolderError

GROUP_FILE = "group.json"
GROUP_FORMAT = 1
MAX_SEEDS = 1_000
MAX_SEED = 2**63 - 1
_SEED_PART = re.compile(r"^(\d+)(?:(?:-|\.\.)(\d+))?$")


def parse_seeds(text: str, where: str = "--seeds", at_least: int = 2) -> tuple[int, ...]:
    """Seeds as a user writes them: `0,1,2`, a range `0-4` or `0..4` (both ends kept), or a mix `0,5-7`.
    Distinct, in the order given, at least `at_least` and at most MAX_SEEDS, each from 0 to 2**63 - 1."""
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        match = _SEED_PART.match(part)
        if not match:
            raise ConfigError(f"{where} {text!r}: expected seeds such as 0,1,2 or 0-4, got {part!r}")
        first, last = int(match[1]), int(match[2] or match[1])
        if last < first:
            raise ConfigError(f"{where} {text!r}: the range {part} runs backwards")
        if last > MAX_SEED or len(seeds) + last - first + 1 > MAX_SEEDS:
            raise ConfigError(f"{where} {text!r}: expected at most {MAX_SEEDS:,} seeds from 0 to 2**63 - 1")
        seeds.extend(range(first, last + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"{where} {text!r}: seed {repeated[0]} is given twice")
    if len(seeds) < at_least:
        raise ConfigError(f"{where} {text!r}: expected two or more seeds (one seed: --seed)")
    return tuple(seeds)


def member_path(group: Path, seed: int) -> Path:
    return Path(group) / f"seed-{seed}"


def is_group(path: Path) -> bool:
    return (Path(path) / GROUP_FILE).is_file()


@dataclass(frozen=True)
class RunGroup:
    """What group.json holds: everything a member run needs but its seed."""

    path: Path
    seeds: tuple[int, ...]
    space: dict[str, Any]  # the search space as loaded, before the overrides
    source: str  # where it was loaded from (named in a member's errors)
    overrides: tuple[str, ...]
    options: RunOptions  # seed 0: each member replaces it
    ray: RayOptions

    def member(self, seed: int) -> Path:
        return member_path(self.path, seed)

    def member_space(self) -> SearchSpace:
        return space_from_dict(self.space, self.source)

    def member_options(self, seed: int) -> RunOptions:
        return dataclasses.replace(self.options, seed=seed)

    def state(self, seed: int) -> str:
        """`complete` (every task committed and scored), `started` (a run folder to resume) or `new`."""
        path = self.member(seed)
        if not (path / "config.yaml").is_file():
            return "new"
        from growsearch.store.run_folder import run_complete

        try:
            metrics = read_json(path / "metrics.json")
            tasks = path / "tasks"
            committed = sum(1 for p in tasks.iterdir() if p.name.isdigit()) if tasks.is_dir() else 0
            return "complete" if run_complete(metrics, committed) else "started"
        except (CheckpointError, OSError, AttributeError):
            return "started"

    def to_json(self) -> dict[str, Any]:
        return {
            "format": GROUP_FORMAT,
            "seeds": list(self.seeds),
            "space": self.space,
            "source": self.source,
            "overrides": list(self.overrides),
            "run": {k: v for k, v in dataclasses.asdict(self.options).items() if k != "seed"},
            "ray": dataclasses.asdict(self.ray),
        }


def write_group(group: RunGroup) -> None:
    """Create the group folder and its group.json; refuses a folder that is already there."""
    if group.path.exists() or group.path.is_symlink():
        raise RunFolderError(
            f"{group.path} already exists; choose another --name, or `growsearch resume {group.path}`"
        )
    group.path.mkdir(parents=True)
    atomic_write_json(group.path / GROUP_FILE, group.to_json())


def read_group(path: Path) -> RunGroup:
    """The group at `path`, every field checked (a hand-edited or damaged group.json is one line)."""
    where = f"{Path(path) / GROUP_FILE}"
    data = read_json(Path(path) / GROUP_FILE)
    if not isinstance(data, dict) or data.get("format") != GROUP_FORMAT:
        raise CheckpointError(f"{where}: expected a growsearch group of format {GROUP_FORMAT}")
    expected = {"format", "seeds", "space", "source", "overrides", "run", "ray"}
    if set(data) != expected:
        raise CheckpointError(f"{where}: expected the fields {', '.join(sorted(expected))}")
    seeds = data["seeds"]
    if not isinstance(seeds, list) or any(type(s) is not int for s in seeds):
        raise CheckpointError(f"{where}: seeds: expected a list of integers")
    try:
        parse_seeds(",".join(str(s) for s in seeds), f"{where}: seeds")
        options = from_mapping(RunOptions, {**data["run"], "seed": 0}, f"{where}: run")
        check_run_options(options, lambda name: f"{where}: run.{name}")
        ray = from_mapping(RayOptions, data["ray"], f"{where}: ray")
    except ConfigError as error:
        raise CheckpointError(str(error)) from None
    overrides = data["overrides"]
    if not isinstance(overrides, list) or any(not isinstance(o, str) for o in overrides):
        raise CheckpointError(f"{where}: overrides: expected a list of strings")
    if not isinstance(data["space"], dict) or not isinstance(data["source"], str):
        raise CheckpointError(f"{where}: space and source: expected a mapping and a string")
    return RunGroup(Path(path), tuple(seeds), data["space"], data["source"], tuple(overrides), options, ray)


def check_members(group: RunGroup, seeds: Sequence[int]) -> None:
    """Refuse a seed the group does not hold (`resume GROUP --seeds ...`)."""
    unknown = [s for s in seeds if s not in group.seeds]
    if unknown:
        raise ConfigError(
            f"--seeds: seed {unknown[0]} is not in the group {group.path} "
            f"(its seeds: {', '.join(map(str, group.seeds))})"
        )


def run_members(group: RunGroup, seeds: Sequence[int], run_one: Callable[[int, str], Any]) -> list[Any]:
    """Each of `seeds` in turn, by its state: `run_one(seed, state)` starts or resumes it (a complete
    member is passed as `complete`: the caller reads it). Returns what each call returned."""
    check_members(group, seeds)
    return [run_one(seed, group.state(seed)) for seed in seeds]
