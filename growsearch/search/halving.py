"""Successive halving over epochs (`search.fidelity: halving`): stop a losing trial early, on every objective.

A trial is judged after each rung's epochs, `min_epochs * eta**k` below the training's epochs (1 and 3 of
5 at min_epochs 1, eta 3). It goes on when it ranks in the top 1/eta (at least the top one) of the trials
judged at that rung so far, itself included, as Optuna's `SuccessiveHalvingPruner` does asynchronously
(Li et al. 2020, ASHA), and stops otherwise: the study records it PRUNED with the rung it reached and the
compute it spent, and it counts toward the budget. Every objective ranks: a trial's point at a rung is its
validation accuracy there (maximised) and the costs known once it is built (added parameters, forward
multiply-adds; minimised), ranked by non-dominated sorting, so a small candidate that is not yet the most
accurate still goes on (Schmucker et al. 2021's MO-ASHA promotes by the same sorting). A trial goes on when
fewer than the quota of points lie in fronts ahead of its own. A single objective ranks by accuracy alone.

Trials judge one another in the order they reach a rung: in this process, each trial of a pack after its
earlier mates. Each trial's points are kept with its report (`attrs`), so a resumed search, and a Ray
worker (handed `snapshot()` when its trial starts), judge against what the study holds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from growsearch.train.epoch_stats import EpochStats
from growsearch.trial_record import HALVING_STOPPED, RUNG, rung_point

Point = tuple[float, ...]  # (accuracy, *costs)


def rung_epochs(min_epochs: int, eta: int, epochs: int) -> tuple[int, ...]:
    """The epoch counts after which a trial is judged: min_epochs * eta**k, below `epochs`."""
    rungs, at = [], min_epochs
    while at < epochs:
        rungs.append(at)
        at *= eta
    return tuple(rungs)


def halving_for(
    min_epochs: int, eta: int, epochs: int, trials: Iterable[FrozenTrial]
) -> SuccessiveHalving | None:
    """The task's halving, seeded with what the study's finished trials reached; None where no rung lies
    below the epochs a trial trains (min_epochs >= epochs: every trial trains them all)."""
    rungs = rung_epochs(min_epochs, eta, epochs)
    return SuccessiveHalving(rungs, eta).reseeded(trials) if rungs else None


@dataclass
class SuccessiveHalving:
    rungs: tuple[int, ...]
    eta: int
    reached: dict[int, list[Point]] = field(default_factory=dict)  # rung -> points of the trials judged there
    points: dict[int, dict[int, Point]] = field(default_factory=dict)  # trial -> rung -> its point
    stopped: dict[int, int] = field(default_factory=dict)  # trial -> the epochs it trained, when stopped

    def __post_init__(self) -> None:
        for rung in self.rungs:
            self.reached.setdefault(rung, [])

    def reseeded(self, trials: Iterable[FrozenTrial]) -> SuccessiveHalving:
        """These rungs, holding what the study's finished trials reached (in trial order)."""
        fresh = SuccessiveHalving(self.rungs, self.eta)
        for trial in trials:
            if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
                for rung in self.rungs:
                    point = rung_point(trial, rung)
                    if point is not None:
                        fresh.reached[rung].append(point)
        return fresh

    def judge_epoch(self, number: int, stats: EpochStats) -> str | None:
        """`judge` after an epoch of trial `number`: its validation accuracy and the costs `TrialJob` told."""
        accuracy = stats.val_accuracy if stats.val_accuracy is not None else math.nan
        return self.judge(number, stats.epoch + 1, (accuracy, *stats.costs))

    def judge(self, number: int, epochs_done: int, point: Point) -> str | None:
        """After trial `number`'s `epochs_done`-th epoch: None when it goes on (no rung, or it ranks in the
        quota), else why it stops. A judged point is recorded for the trials after it."""
        if epochs_done not in self.reached:
            return None
        accuracy = point[0] if math.isfinite(point[0]) else -math.inf
        point = (accuracy, *point[1:])
        here = self.reached[epochs_done]
        here.append(point)
        self.points.setdefault(number, {})[epochs_done] = point
        quota = max(1, len(here) // self.eta)
        ahead = _points_ahead(point, here)
        if ahead < quota:
            return None
        self.stopped[number] = epochs_done
        return (
            f"stopped by successive halving after epoch {epochs_done}: accuracy {accuracy:.4f}, "
            f"{ahead} of the {len(here)} trials judged there rank ahead of it (the top {quota} go on)"
        )

    def attrs(self, number: int) -> dict[str, Any]:
        """What the study keeps of trial `number`'s rungs (with its report)."""
        reached = self.points.get(number, {})
        attrs: dict[str, Any] = {f"{RUNG}{rung}": list(point) for rung, point in reached.items()}
        if number in self.stopped:
            attrs[HALVING_STOPPED] = self.stopped[number]
        return attrs

    def snapshot(self) -> dict[str, Any]:
        """JSON for a Ray worker: the rungs and every point judged so far."""
        return {
            "rungs": list(self.rungs),
            "eta": self.eta,
            "reached": {str(r): p for r, p in self.reached.items()},
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> SuccessiveHalving:
        reached = {int(r): [tuple(p) for p in points] for r, points in data["reached"].items()}
        return cls(tuple(data["rungs"]), int(data["eta"]), reached)


def _points_ahead(point: Point, points: Sequence[Point]) -> int:
    """How many of `points` lie in non-dominated fronts ahead of `point`'s (accuracy up, costs down)."""
    if len(point) == 1:  # one objective: the fronts are the accuracies, best first
        return sum(1 for other in points if other[0] > point[0])
    fronts = _fronts(points)
    mine = fronts[points.index(point)]
    return sum(1 for f in fronts if f < mine)


def _fronts(points: Sequence[Point]) -> list[int]:
    """Each point's non-dominated front: 0 for the points nothing dominates, 1 for the next, ..."""
    remaining, front, fronts = set(range(len(points))), 0, [0] * len(points)
    while remaining:
        current = {i for i in remaining if not any(_dominates(points[j], points[i]) for j in remaining)}
        for i in current:
            fronts[i] = front
        remaining -= current
        front += 1
    return fronts


def _dominates(a: Point, b: Point) -> bool:
    """a is at least as good as b everywhere and better somewhere (accuracy up, costs down)."""
    signed_a, signed_b = (a[0], *(-c for c in a[1:])), (b[0], *(-c for c in b[1:]))
    return all(x >= y for x, y in zip(signed_a, signed_b, strict=True)) and signed_a != signed_b
