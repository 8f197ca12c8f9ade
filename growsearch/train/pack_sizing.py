"""How many trials of a task train together as one pack (`search.pack`), and how much padding a pack may
cost: what `train.packed` is asked to do, decided from the device and its free memory."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from growsearch.graph.specs import NodeSpec

AUTO_PACK = 16  # on a CPU, batched products stop getting cheaper per candidate beyond about this many
# measured on two cores (RCL packs of 5 on split-mnist5k): padding 1.5-2.4x still ran 1.1-2x faster than
# alone; MNTDP-D's candidates, padded about 3x, ran 0.7x
CPU_MAX_PADDING = 2.5


def pack_size(
    setting: int | str, limit: int | None, pruning: bool, device: torch.device, specs: Sequence[NodeSpec]
) -> int:
    """How many trials train together: `search.pack` (`setting`), or with "auto" as many as the method
    allows (`limit`: `SearchPlan.pack_limit`), at most AUTO_PACK, and as fit in a quarter of the free memory
    (so a resume on a machine with far less memory may pack differently); one with a pruner (`pruning`),
    which stops a trial on what earlier trials reached, not on what its pack mates reach at the same time.
    Not capped by the trials left: a packed search stays packed to its last trial, so the retry of a trial
    interrupted in a pack trains in that pack's layout."""
    if setting != "auto":
        return int(setting)
    if pruning:
        return 1
    fitting = free_memory(device) // 4 // max(candidate_bytes(specs), 1)
    return max(1, min(limit or AUTO_PACK, AUTO_PACK, fitting))


def max_padding(setting: int | str, device: torch.device) -> float | None:
    """With `pack: auto` on a CPU, a pack whose padding to one template would multiply its compute by more
    than CPU_MAX_PADDING trains one by one (MNTDP-D's candidates, from a whole new column to a new head, pad
    to about three times theirs: slower than alone, measured); on a GPU, where a small candidate leaves the
    device idle, padding is cheap. An explicit pack size always packs."""
    if setting != "auto" or device.type == "cuda":
        return None
    return CPU_MAX_PADDING


def free_memory(device: torch.device) -> int:
    """Bytes free on `device` (CUDA: the device's; else the machine's available memory, or half of all of
    it where the system does not say what is available, as macOS does not)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):
        return 4 << 30  # nothing to go by: assume a small machine


def candidate_bytes(specs: Sequence[NodeSpec]) -> int:
    """A generous guess of what one packed candidate holds: twice the base network's parameters (a grown
    candidate is rarely larger), each kept about eight times (weights, gradient, optimiser state, mask, the
    values held, padding), in float32."""
    with torch.device("meta"):
        parameters = sum(p.numel() for spec in specs for p in spec.build().parameters())
    return 2 * parameters * 8 * 4
