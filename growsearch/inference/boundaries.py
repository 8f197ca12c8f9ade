"""Task boundaries where the stream gives none (task-agnostic): ExpertGate's autoencoders as novelty
detectors (Aljundi et al. 2017 use the same errors to tell a new task from known ones).

The learner sees one stream of labelled samples (every task's training and validation samples, in order)
and no task ids. It cuts the stream into tasks itself: an autoencoder is trained on the first `warmup`
samples of the current task, and the errors it makes on the next `chunk` (held out, the same task) set a
threshold, their 90th percentile. Then, chunk by chunk, a sample is novel when its error exceeds the
threshold; a chunk mostly novel (a share above `novelty`) means a new task began (the autoencoder is fit
again each time the task's samples seen so far have doubled, on all of them but the last chunk, which sets
the threshold anew): the boundary is placed where the novel samples begin, the change point over that
chunk and the one before (the split that leaves the most familiar samples before it and novel ones after;
the novel chunk's start where none does). The new task's autoencoder is trained
from there, and so on. Each task found becomes a task of the stream the method learns: its samples split
into training and validation (the benchmark's share, seeded), tested on the test samples of the
benchmark's tasks its samples came from (a third of them or more). Detection is seeded, so a resumed run
finds the same tasks.

Measured on the embedded data (90th-percentile threshold, chunks of 50): a new task's first chunk is
72-100% novel on split-digits and permuted-digits, a familiar chunk 14-26%; on split-mnist5k's raw pixels
the autoencoders reconstruct other digits about as well as their own (0-52% novel), so tasks there are
cut in the wrong places (10 found for 5); a found task holds at least a warm-up and a chunk; on a
label-permuted stream the inputs never change, so no input-novelty detector can see its boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from growsearch.config.space import InferenceConfig
from growsearch.data.scenarios import get_scenario
from growsearch.data.task import Split, Task, TaskStream
from growsearch.inference.autoencoders import train_autoencoder
from growsearch.seeds import derived_seed

THRESHOLD_QUANTILE = 0.9
SOURCE_SHARE = 1 / 3  # a benchmark task is one a found task tests on when it gave this share of its samples


@dataclass(frozen=True)
class FoundTasks:
    """Where the detector cut the stream, and which benchmark tasks each found task's samples came from."""

    starts: tuple[int, ...]  # the first sample of each found task
    sources: tuple[dict[int, int], ...]  # per found task: benchmark task -> its samples there

    def describe(self) -> str:
        parts = [
            "+".join(f"{task}" for task in sorted(s, key=lambda k: -s[k]) if s[task] > 0)
            for s in self.sources
        ]
        return f"{len(self.starts)} task(s) found, holding the benchmark's tasks {', '.join(parts)}"


def detect_boundaries(x: torch.Tensor, config: InferenceConfig, seed: int) -> list[int]:
    """The first sample of each task in the sample stream `x` (the first is 0)."""
    starts, start, chunk = [0], 0, config.boundary_chunk
    while start + config.boundary_warmup + chunk <= len(x):
        found = _next_boundary(x, start, config, derived_seed(seed, "boundary", len(starts)))
        if found is None:
            break
        starts.append(found)
        start = found
    return starts


def _next_boundary(x: torch.Tensor, start: int, config: InferenceConfig, seed: int) -> int | None:
    """Where the task that begins at `start` ends (None: it runs to the end of the stream). Its
    autoencoder is fit again whenever the familiar samples have doubled, on all of them but the last chunk
    (whose errors set the threshold), so a task of many classes is learnt as it goes."""
    chunk, fitted = config.boundary_chunk, start + config.boundary_warmup
    shortest = config.boundary_warmup + chunk  # a task found must hold this much: a warm-up and a chunk
    position = fitted + chunk
    while True:
        autoencoder = train_autoencoder(x[start:fitted], config, seed)
        threshold = torch.quantile(autoencoder.errors(x[fitted : fitted + chunk]), THRESHOLD_QUANTILE)
        refit_at = start + 2 * (fitted - start) + chunk
        while position + chunk <= len(x) and position < refit_at:  # whole chunks only
            novel = autoencoder.errors(x[position : position + chunk]) > threshold
            if float(novel.double().mean()) > config.novelty:
                window = max(fitted + chunk, position - chunk)
                found = window + _change_point(autoencoder.errors(x[window : position + chunk]) > threshold)
                if found == position + chunk:  # no split fits better than none: the novel chunk's start
                    found = position
                # a new task too short to learn from ends the stream: its samples stay with this one
                return found if len(x) - found >= shortest else None
            position += chunk
        if position + chunk > len(x):
            return None
        fitted = position - chunk


def _change_point(novel: torch.Tensor) -> int:
    """The split of a run of novel / familiar flags with the most familiar flags before it and novel ones
    after it."""
    familiar_before = torch.cat([torch.zeros(1), torch.cumsum((~novel).double(), 0)])
    novel_after = torch.cat(
        [torch.flip(torch.cumsum(torch.flip(novel.double(), [0]), 0), [0]), torch.zeros(1)]
    )
    return int(torch.argmax(familiar_before + novel_after))


def task_free_stream(stream: TaskStream, config: InferenceConfig, seed: int) -> tuple[TaskStream, FoundTasks]:
    """`stream` with its boundaries hidden and found again (see the module's docstring)."""
    x = torch.cat([torch.cat([t.train.x, t.val.x]) for t in stream.tasks])
    y = torch.cat([torch.cat([t.train.y, t.val.y]) for t in stream.tasks])
    origin = torch.cat(
        [torch.full((len(t.train) + len(t.val),), i, dtype=torch.long) for i, t in enumerate(stream.tasks)]
    )
    starts = detect_boundaries(x, config, seed)
    first = stream.tasks[0]
    val_share = len(first.val) / max(len(first.train) + len(first.val), 1)
    tasks, sources = [], []
    for i, (a, b) in enumerate(zip(starts, [*starts[1:], len(x)], strict=True)):
        order = a + torch.randperm(
            b - a, generator=torch.Generator().manual_seed(derived_seed(seed, "split", i))
        )
        n_val = round(val_share * (b - a))
        val, train = order[:n_val].sort().values, order[n_val:].sort().values
        counts = torch.bincount(origin[a:b], minlength=len(stream.tasks))
        tested = [j for j in range(len(stream.tasks)) if counts[j] >= SOURCE_SHARE * (b - a)]
        tested = tested or [int(counts.argmax())]
        test = Split(
            torch.cat([stream.tasks[j].test.x for j in tested]),
            torch.cat([stream.tasks[j].test.y for j in tested]),
        )
        classes = tuple(sorted({c for j in tested for c in stream.tasks[j].classes}))
        tasks.append(
            Task(i, classes, Split(x[train], y[train]), Split(x[val], y[val]), test, first.n_outputs)
        )
        sources.append({j: int(counts[j]) for j in range(len(stream.tasks)) if counts[j] > 0})
    found = FoundTasks(tuple(starts), tuple(sources))
    # what the method learns is task-IL: the tasks it found, with the ids it gave them
    scenario = get_scenario("task-il")
    found_stream = TaskStream(
        stream.benchmark, scenario, stream.input_shape, tuple(tasks), normalization=stream.normalization
    )
    return found_stream, found
