"""What growsearch records on an Optuna trial, as user attributes: the one module that names them.

A finished trial carries a `TrialRecord` (one attribute per field, so optuna-dashboard shows each by name);
a trial that stopped early (pruned, or failed on its own: a NaN loss) carries the compute it spent and, when
it failed, the error. A trial a killed process left behind carries neither, which is how a resume (and the
REINFORCE policy replaying a study) tells an interruption from a failure. Enqueued trials carry the
decisions planned for them, a retry the number of the trial it replaces, and a trial trained in a pack the
number of the pack's first trial.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from optuna.trial import FrozenTrial, TrialState

from growsearch.journal_writes import together

ERROR = "error"  # why a trial failed on its own
SPENT_MACS = "spent_macs"  # multiply-adds spent by a trial, whatever its end
RECORD = "record"  # a completed trial's TrialRecord, as a mapping of its fields
RETRY_OF = "retry_of"  # a retried trial: the number of the one it replaces (and whose seed it keeps)
PLANNED = "planned_decisions"  # an enqueued trial: the decisions it was enqueued with
WORKER = "worker"  # where a Ray trial ran: node id and process id
PACK = "pack"  # a trial trained in a pack: the number of the pack's first trial
PACK_SIZE = "pack_size"  # on a pack's first trial, its first record: how many trials the pack asked
PACK_LAYOUT = "pack_layout"  # on a pack's first trial: the template it trained in (before any is told)
SPLIT = "split"  # a pack layout's key, where it trained as smaller packs: each of its trials' template
SPLIT_PART = "split_part"  # and which of the smaller packs each trial trained in (None: alone)
COMMITTED = "committed"  # on a study: the number of the trial growsearch committed
RUNG = "halving_rung_"  # + a rung's epochs: a trial's point there (successive halving), [accuracy, *costs]
HALVING_STOPPED = "halving_stopped_after"  # the epochs a trial trained before successive halving stopped it


class AttributeSink(Protocol):
    def set_user_attr(self, key: str, value: Any) -> None: ...


@dataclass(frozen=True)
class TrialRecord:
    """What a completed trial built and spent."""

    decisions: dict[str, Any]  # what the candidate decided (recorded per task when it is committed)
    mechanism: dict[str, Any]  # what the method did while building it
    added_parameters: int  # parameters the candidate adds to the committed graph
    view_parameters: int  # parameters of the task's view
    forward_macs: int  # multiply-adds of one forward pass of one sample through the task's view
    search_macs: int  # multiply-adds spent building the candidate (inner searches, selective retraining)
    train_macs: int  # multiply-adds of the pipeline's training of it
    train_seconds: float
    # per epoch: training loss, validation accuracy (and training accuracy where the trainer tracked it)
    curve: list[dict[str, Any]] = field(default_factory=list)
    # the share of a fixed-capacity network the task takes from later tasks (gated and pruning methods)
    capacity_used: float | None = None

    def to_attrs(self) -> dict[str, Any]:
        """The record as one attribute (one journal write, not one per field), and the compute it spent."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {RECORD: record, SPENT_MACS: self.search_macs + self.train_macs}

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> TrialRecord | None:
        """The record among a trial's attributes (one per field in a run folder written before 2026-12-06),
        or None where the trial kept none."""
        fields = attrs.get(RECORD, attrs)
        names = [f.name for f in dataclasses.fields(cls)]
        if any(name not in fields for name in names if name not in ("curve", "capacity_used")):
            return None
        return cls(**{name: fields[name] for name in names if name in fields})


def write_attrs(trial: AttributeSink, attrs: Mapping[str, Any]) -> None:
    """Every attribute on the trial, in one append of a run's journal."""
    with together():
        for key, value in attrs.items():
            trial.set_user_attr(key, value)


def read_record(trial: FrozenTrial) -> TrialRecord | None:
    return TrialRecord.from_attrs(trial.user_attrs)


def failure_attrs(message: str, spent_macs: int) -> dict[str, Any]:
    """A trial that failed on its own (a NaN loss, an impossible architecture)."""
    return {ERROR: message, SPENT_MACS: int(spent_macs)}


def stopped_attrs(spent_macs: int) -> dict[str, Any]:
    """A trial a pruner stopped early."""
    return {SPENT_MACS: int(spent_macs)}


def rung_point(trial: FrozenTrial, rung: int) -> tuple[float, ...] | None:
    """Trial's point at a successive-halving rung ([accuracy, *costs]), or None where it was not judged."""
    point = trial.user_attrs.get(f"{RUNG}{rung}")
    return None if point is None else tuple(float(v) for v in point)


def halving_stop(trial: FrozenTrial) -> tuple[int, tuple[float, ...]] | None:
    """Where successive halving stopped a trial: the epochs it trained and its point there (None: it did
    not stop it)."""
    rung = trial.user_attrs.get(HALVING_STOPPED)
    point = None if rung is None else rung_point(trial, int(rung))
    return None if point is None else (int(rung), point)


def failure(trial: FrozenTrial) -> str | None:
    return trial.user_attrs.get(ERROR)


def spent_macs(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get(SPENT_MACS, 0))


def is_interrupted(trial: FrozenTrial) -> bool:
    """A trial a killed process left behind (failed by the pipeline on resume, then retried)."""
    return trial.state == TrialState.FAIL and ERROR not in trial.user_attrs


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """Finished trials count; so does a trial that failed on its own, not one that was killed."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and ERROR in trial.user_attrs
    )


def retry_attrs(original: FrozenTrial) -> dict[str, Any]:
    """Attributes of the retry of an interrupted trial: it replaces the first trial of its line."""
    return {RETRY_OF: retry_of(original) if retry_of(original) is not None else original.number}


def retry_of(trial: FrozenTrial) -> int | None:
    value = trial.user_attrs.get(RETRY_OF)
    return None if value is None else int(value)


def search_position(trial: FrozenTrial, trials: Sequence[FrozenTrial]) -> int:
    """The trial's position in an uninterrupted search (`trials`: the study's): a retried trial takes the
    position of the one that was killed, and a fresh trial after retries does not count them."""
    original = retry_of(trial)
    if original is not None:
        return original
    return trial.number - sum(1 for t in trials if t.number < trial.number and retry_of(t) is not None)


def plan_attrs(decisions: Mapping[str, Any]) -> dict[str, Any]:
    return {PLANNED: dict(decisions)}


def planned_decisions(trial: FrozenTrial) -> dict[str, Any] | None:
    """The decisions a trial was enqueued with, or sampled (None: neither yet)."""
    if trial.params:
        return dict(trial.params)
    planned = trial.user_attrs.get(PLANNED)
    return None if planned is None else dict(planned)


def worker_attrs(node_id: str, pid: int) -> dict[str, Any]:
    return {WORKER: {"node_id": node_id, "pid": pid}}


def worker_node(trial: FrozenTrial) -> str | None:
    return (trial.user_attrs.get(WORKER) or {}).get("node_id")


def study_committed_attrs(number: int) -> dict[str, Any]:
    return {COMMITTED: number}


def pack_attrs(first: int, size: int, number: int) -> dict[str, Any]:
    """Trial `number`, asked as one of a pack of `size` whose first trial is number `first`. The first
    trial's first record holds the pack's size, so a process killed between the members' records leaves
    what `pack_in` needs to place the rest."""
    mark = {PACK: int(first)}
    return {PACK_SIZE: int(size), **mark} if number == first else mark


def pack_of(trial: FrozenTrial) -> int | None:
    """The pack a trial was trained in (its first trial's number), or None for a trial trained alone."""
    value = trial.user_attrs.get(PACK)
    return None if value is None else int(value)


def pack_in(trial: FrozenTrial, trials: Sequence[FrozenTrial]) -> int | None:
    """`pack_of`, also for a member whose own mark a killed or interrupted process did not write: the pack
    whose first trial recorded a size that reaches it."""
    own = pack_of(trial)
    if own is not None:
        return own
    return next(
        (
            first.number
            for first in trials
            if first.number <= trial.number < first.number + int(first.user_attrs.get(PACK_SIZE, 0))
        ),
        None,
    )


PackLayout = list[dict[str, Any]] | dict[str, Any]  # one template, or `split_layout`'s


def pack_layout_attrs(layout: PackLayout) -> dict[str, Any]:
    return {PACK_LAYOUT: layout}


def split_layout(
    layouts: Sequence[list[dict[str, Any]] | None], parts: Sequence[int | None]
) -> dict[str, Any]:
    """The layout of a pack that trained as smaller packs: per trial, by its place in the pack, the template
    it trained in and which smaller pack it trained in (None for both: it trained alone). Two smaller packs
    may share a template; their trials retrain apart all the same."""
    return {SPLIT: list(layouts), SPLIT_PART: list(parts)}


def next_pack(trials: Sequence[FrozenTrial], limit: int) -> tuple[int, list[dict[str, Any]] | None]:
    """How many trials the next pack asks for, and the layout it trains in. The waiting retries of one
    interrupted pack go together, in the layout that pack recorded, so they train exactly as they would
    have (the pipeline enqueued them in trial order, and Optuna asks waiting trials first); of a pack that
    trained as smaller packs, those of one smaller pack go together, and one that trained alone retrains
    alone. Other waiting trials and fresh ones fill packs of up to `limit`, never mixed with such retries."""
    waiting = sorted((t for t in trials if t.state == TrialState.WAITING), key=lambda t: t.number)
    places = [_retry_place(t, trials) for t in waiting]
    if places and places[0] is not None:
        pack, _, layout = places[0]
        if pack is None:  # it trained alone
            return 1, None
        return next((i for i, p in enumerate(places) if p != places[0]), len(places)), layout
    lead = next((i for i, p in enumerate(places) if p is not None), None)
    return (limit if lead is None else min(limit, lead)), None


def _retry_place(
    retry: FrozenTrial, trials: Sequence[FrozenTrial]
) -> tuple[int | None, int | None, Any] | None:
    """For a waiting retry of a trial interrupted in a pack: (the pack, the smaller pack it trained in where
    the pack split, the layout it retrains in), or (None, None, None) where that trial trained alone in a
    pack that trained as smaller packs. None for any other trial."""
    replaced = _replaced(retry, trials)
    pack = pack_in(replaced, trials) if replaced is not None else None
    if replaced is None or pack is None:
        return None
    recorded = (t.user_attrs.get(PACK_LAYOUT) for t in trials if pack_in(t, trials) == pack)
    layout = next((layout for layout in recorded if layout is not None), None)
    if isinstance(layout, dict):  # split: this trial's own template, by its place in the pack
        place = replaced.number - pack
        own = layout[SPLIT][place] if 0 <= place < len(layout[SPLIT]) else None
        # runs written before the parts were recorded: a smaller pack is told apart by its template alone
        parts = layout.get(SPLIT_PART) or [None] * len(layout[SPLIT])
        return (pack, parts[place], own) if own is not None else (None, None, None)
    return pack, None, layout


def _replaced(retry: FrozenTrial, trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """For a retry: the trial it replaces (the newest earlier one of its line); None for no retry."""
    line = retry_of(retry)
    if line is None:
        return None
    replaced = [
        t
        for t in trials
        if t.number < retry.number and t.state != TrialState.WAITING and line in (t.number, retry_of(t))
    ]
    return max(replaced, key=lambda t: t.number) if replaced else None


def replaced_pack(retry: FrozenTrial, trials: Sequence[FrozenTrial]) -> int | None:
    """For a retry: the pack the trial it replaces (the newest earlier one of its line) was interrupted in;
    None when that one trained alone, or `retry` is no retry."""
    replaced = _replaced(retry, trials)
    return pack_in(replaced, trials) if replaced is not None else None


def learning_pack(trial: FrozenTrial, trials: Sequence[FrozenTrial]) -> int | None:
    """The pack whose update a trial's result joins, for a sampler that learns once per pack: a retry's is
    the pack its interrupted trial was in, so a resumed pack teaches what it would have taught whole."""
    replaced = replaced_pack(trial, trials)
    return replaced if replaced is not None else pack_of(trial)
