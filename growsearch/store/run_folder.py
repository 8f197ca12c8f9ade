"""The run folder: everything a run writes, laid out so that a killed run can be resumed.

    runs/NAME/
      config.yaml                  fully resolved: the search space, the run options, versions, seed
      study.journal | study.db     the Optuna storage: one study `task-T` per task
      trials/T/N/                  trained candidate N of task T (graph + weights + checksums), kept
                                   until task T commits
      tasks/T/                     committed state after task T: graph.json, weights.safetensors,
                                   record.json (accuracy row, parameters, ops, decisions), checksums.json
      metrics.json                 accuracy matrix and the survey's metrics, rebuilt from tasks/*/record.json

Every file is written atomically; a committed task folder appears by one rename, so it is whole or absent.
Opening a run folder imports neither torch nor Optuna: a command that only reads it (`growsearch inspect`,
`compare`) reads the committed graphs without torch (`read_task`), and never opens the Optuna storage.
"""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from growsearch.atomic_files import atomic_write_text, read_json, sha256_of
from growsearch.config.yaml_input import read_yaml
from growsearch.errors import CheckpointError, ConfigError, RunFolderError
from growsearch.graph.checkpoint import dtype_name, read_graph, verify_checksums
from growsearch.graph.module_graph import ModuleGraph
from growsearch.methods import registry  # noqa: F401 - finds the node kinds methods define beside them
from growsearch.store.lock import RunLock
from growsearch.task_record import TaskRecord

if TYPE_CHECKING:
    import optuna
    import torch
    from optuna.storages.journal import BaseJournalBackend

CONFIG_FILE, METRICS_FILE, RECORD_FILE = "config.yaml", "metrics.json", "record.json"
# a committed task's task-inference autoencoder (the task inferred, or ExpertGate's relatedness); the file
# keeps the name the first runs gave it (ExpertGate calls the autoencoders its gate)
AUTOENCODER_FILE = "gate.safetensors"
MEMORY_FILE = "memory.safetensors"  # the exemplar memory after a task (rehearsal methods)
CONFIG_CHECKSUM = ".config.sha256"
JOURNAL_FILE = "study.journal"
HEARTBEAT_SECONDS = 30


@dataclass(frozen=True)
class TrialSaver:
    """Keeps trained candidates in a run folder's trials/T/N/: a picklable callable, so a Ray worker uses
    the very saver the driver was given."""

    path: Path

    def __call__(self, task: int, number: int, graph: ModuleGraph) -> Path:
        return RunFolder(self.path).save_trial(task, number, graph)


# before the `backend:` section existed, what a Ray trial reserves sat in `search:`
_BACKEND_KEYS = (
    "cpus_per_trial",
    "gpus_per_trial",
    "memory_per_trial_mb",
    "max_concurrent_trials",
    "max_failures",
    "reuse_workers",
)


# before the `ray:` section existed, how a run joins Ray sat in `run:`
_RAY_KEYS = ("address", "shared_fs", "local_cpus")


def _upgraded(config: dict[str, Any]) -> dict[str, Any]:
    """A config.yaml written by an earlier growsearch, in today's layout (what a Ray trial reserves under
    the space's `backend:`, how the run joins Ray under `ray:`)."""
    run = config.get("run")
    if isinstance(run, dict) and "ray" not in config and any(k in run for k in _RAY_KEYS):
        run = dict(run)
        config = {**config, "run": run, "ray": {k: run.pop(k) for k in _RAY_KEYS if k in run}}
    space = config.get("space")
    if isinstance(space, dict) and isinstance(space.get("search"), dict) and "backend" not in space:
        search = dict(space["search"])
        space = {
            **space,
            "search": search,
            "backend": {k: search.pop(k) for k in _BACKEND_KEYS if k in search},
        }
        config = {**config, "space": space}
    return config


# the dtypes of the tensors kept with a task: the autoencoder's weights and statistics are float32; the
# exemplar memory's samples float32, its capacity, tasks and strategy integers or booleans
_KEPT_DTYPES = {
    AUTOENCODER_FILE: lambda key, dtype: dtype == "float32",
    MEMORY_FILE: lambda key, dtype: (
        dtype == "float32" if key.endswith(".x") else not dtype.startswith(("float", "bfloat"))
    ),
}
_WARNED: set[Path] = set()  # damaged journals read as they stand, already warned of


def run_complete(metrics: Any, committed: int) -> bool:
    """Whether a run whose folder holds `committed` task folders is complete: its metrics.json (`metrics`)
    scores every one of them and the stream has no more. A run stopped between its last commit and the
    rewrite of its metrics is not: resuming it rewrites them."""
    if not isinstance(metrics, dict) or not committed:
        return False
    return metrics.get("n_tasks") == committed and metrics.get("tasks_committed") == committed


def _task_name(name: str) -> bool:
    """A committed task's folder name: its number in ASCII digits (not '.0.partial', not '²')."""
    return name.isascii() and name.isdigit()


class RunFolder:
    def __init__(self, path: Path):
        self.path = Path(path)

    # ---- creation and configuration -----------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, config: dict[str, Any]) -> RunFolder:
        path = Path(path)
        if path.is_symlink() and not path.exists():
            raise RunFolderError(
                f"{path} is a symbolic link to {os.readlink(path)}, which does not exist; expected a folder "
                "(or no file) there"
            )
        if (path / CONFIG_FILE).exists():
            RunLock(path).acquire().release()  # a run still being written is named by its holder
            raise RunFolderError(
                f"{path} already holds a run; resume it with `growsearch resume {path}` "
                "or pick another --name"
            )
        path.mkdir(parents=True, exist_ok=True)
        folder = cls(path)
        folder.lock()
        if (path / CONFIG_FILE).exists():  # another process created it while this one was starting
            folder.unlock()
            raise RunFolderError(f"{path} already holds a run; resume it with `growsearch resume {path}`")
        folder.write_config(config)
        return folder

    def lock(self) -> None:
        """Hold the folder's one-writer lock for as long as this process runs it."""
        if getattr(self, "_lock", None) is None:
            self._lock = RunLock(self.path).acquire()

    def unlock(self) -> None:
        if getattr(self, "_lock", None) is not None:
            self._lock.release()
            self._lock = None

    def write_config(self, config: dict[str, Any]) -> None:
        """config.yaml, and its checksum: a resume refuses a config edited since unless told --force."""
        atomic_write_text(self.path / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))
        atomic_write_text(self.path / CONFIG_CHECKSUM, sha256_of(self.path / CONFIG_FILE) + "\n")

    def config_edited(self) -> bool:
        """Whether config.yaml differs from what the run wrote (a run from before checksums: no)."""
        stamp = self.path / CONFIG_CHECKSUM
        if not stamp.is_file():
            return False
        return stamp.read_text().strip() != sha256_of(self.path / CONFIG_FILE)

    @classmethod
    def open(cls, path: Path) -> RunFolder:
        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise RunFolderError(f"{path} is not a run folder: {path / CONFIG_FILE} is missing")
        return cls(path)

    def config(self) -> dict[str, Any]:
        path = self.path / CONFIG_FILE
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CheckpointError(f"{path} is not text (not UTF-8): it is corrupted") from None
        try:
            data = read_yaml(text, str(path))
        except ConfigError as error:
            raise CheckpointError(str(error)) from None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), dict) for k in ("space", "run")):
            raise CheckpointError(f"{path}: expected the sections space and run, each a mapping")
        return _upgraded(data)

    def _storage_kind(self) -> str:
        search = self.config()["space"].get("search")
        kind = search.get("storage", "journal") if isinstance(search, dict) else "journal"
        if kind not in ("journal", "sqlite"):
            raise CheckpointError(
                f"{self.path / CONFIG_FILE}: space.search.storage: expected journal or sqlite, got {kind!r}"
            )
        return kind

    # ---- Optuna storage -----------------------------------------------------------------------------
    def storage(self, kind: str | None = None) -> optuna.storages.BaseStorage:
        """The run's Optuna storage (`kind` None: the one its config names): a journal file (the default:
        appends, no database round trips), or SQLite with heartbeats."""
        import optuna
        from optuna.storages import JournalStorage, RDBStorage

        kind = kind or self._storage_kind()
        if kind == "journal":
            return JournalStorage(self._journal_backend())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                f"sqlite:///{self.path / 'study.db'}",
                heartbeat_interval=HEARTBEAT_SECONDS,
                grace_period=2 * HEARTBEAT_SECONDS,
            )

    def _journal_backend(self) -> BaseJournalBackend:
        """The journal, repaired first where that is safe: with the folder's lock (held by this process, or
        free), since a writer's record in flight must not be mistaken for a torn one. A folder that cannot
        be written (archived read-only) or that another process writes is read as it stands, up to its
        first damaged record."""
        from optuna.storages.journal import JournalFileBackend

        from growsearch.journal_writes import HeldWrites

        journal = self.path / JOURNAL_FILE
        if getattr(self, "_lock", None) is not None:
            self._repair_journal_alone()
            return HeldWrites(JournalFileBackend(str(journal)))
        if not os.access(self.path, os.W_OK):
            return self._journal_as_it_stands("the run folder is read-only")
        try:
            probe = RunLock(self.path).acquire()
        except RunFolderError:
            return self._journal_as_it_stands("another process writes the run")
        except OSError as error:
            return self._journal_as_it_stands(f"the run folder cannot be locked: {error.strerror}")
        try:
            self._repair_journal_alone()
        finally:
            probe.release()
        return HeldWrites(JournalFileBackend(str(journal)))

    def _repair_journal_alone(self) -> None:
        """With no other writer possible (only the run's driver writes the journal): a lock file left
        behind is stale, a torn or damaged tail is moved aside."""
        from growsearch.store.journal import remove_stale_lock, repair_journal

        remove_stale_lock(self.path / JOURNAL_FILE)
        repair_journal(self.path / JOURNAL_FILE)

    def _journal_as_it_stands(self, why: str) -> BaseJournalBackend:
        """The journal read without writing to it: whole (or with a writer's record in flight), as it is;
        damaged, its trusted records, with a warning."""
        from optuna.storages.journal import JournalFileBackend

        from growsearch.store.journal import TrustedPrefix, log, scan_journal

        journal = self.path / JOURNAL_FILE
        if not journal.is_file():
            return TrustedPrefix(journal, [])
        scan = scan_journal(journal)
        if scan.reason is None:
            return JournalFileBackend(str(journal))
        if journal not in _WARNED:
            _WARNED.add(journal)
            log.warning(
                "%s is damaged at byte %d (record %d: %s); read up to there, not repaired (%s)",
                journal,
                scan.trusted,
                len(scan.logs) + 1,
                scan.reason,
                why,
            )
        return TrustedPrefix(journal, scan.logs)

    # ---- trials -------------------------------------------------------------------------------------
    def trial_dir(self, task: int, number: int) -> Path:
        return self.path / "trials" / str(task) / str(number)

    def trial_saver(self) -> TrialSaver:
        return TrialSaver(self.path.resolve())

    def save_trial(self, task: int, number: int, graph: ModuleGraph) -> Path:
        from growsearch.graph.serialize import save_graph

        return save_graph(graph, self.trial_dir(task, number))

    def load_trial(self, task: int, number: int) -> ModuleGraph:
        folder = self.trial_dir(task, number)
        if not folder.is_dir():
            raise CheckpointError(f"{folder} is missing: the chosen trial's trained weights were not kept")
        from growsearch.graph.serialize import load_graph

        return load_graph(folder)

    # ---- committed tasks ----------------------------------------------------------------------------
    def task_dir(self, task: int) -> Path:
        return self.path / "tasks" / str(task)

    def committed_tasks(self) -> list[int]:
        """The tasks committed so far; they must be 0..k-1 with nothing missing."""
        root = self.path / "tasks"
        found = sorted(int(p.name) for p in root.iterdir() if _task_name(p.name)) if root.is_dir() else []
        if found != list(range(len(found))):
            raise CheckpointError(
                f"{root} holds tasks {found}; expected 0..{len(found) - 1} with none missing"
            )
        return found

    def commit_task(
        self,
        task: int,
        graph: ModuleGraph,
        record: TaskRecord,
        tensors: dict[str, dict[str, torch.Tensor]] | None = None,
    ) -> None:
        """Write the task's checkpoint beside its final place, then move it there in one rename. `tensors`:
        safetensors files kept with it under its checksums (file name -> tensors: AUTOENCODER_FILE,
        MEMORY_FILE)."""
        from growsearch.graph.serialize import save_graph

        final = self.task_dir(task)
        staging = final.parent / f".{task}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        save_graph(graph, staging, extra_json={RECORD_FILE: record.to_json()}, extra_tensors=tensors)
        staging.rename(final)
        shutil.rmtree(self.path / "trials" / str(task), ignore_errors=True)
        if (self.path / "trials").is_dir() and not any((self.path / "trials").iterdir()):
            (self.path / "trials").rmdir()

    def load_task(self, task: int) -> tuple[ModuleGraph, TaskRecord]:
        from growsearch.graph.serialize import load_graph

        folder = self.task_dir(task)
        verify_checksums(folder, extra=(RECORD_FILE,))
        return load_graph(folder, verify=False), self._record(task)

    def read_task(self, task: int) -> tuple[ModuleGraph, TaskRecord]:
        """What `load_task` gives, checked alike, read without torch: the graph's tensors are numpy arrays
        (a graph to describe, never to train)."""
        folder = self.task_dir(task)
        verify_checksums(folder, extra=(RECORD_FILE,))
        return read_graph(folder, verify=False), self._record(task)

    def load_task_tensors(self, task: int, name: str) -> dict[str, torch.Tensor] | None:
        """A safetensors file kept with a committed task (its gate, its exemplar memory), checked against
        its checksum and for finite values; None when the task has none."""
        folder = self.task_dir(task)
        if not (folder / name).is_file():
            return None
        verify_checksums(folder, extra=(RECORD_FILE, name))
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(folder / name))
        except (OSError, SafetensorError) as error:
            raise CheckpointError(f"cannot read {folder / name}: {error}") from None
        broken = sorted(
            key
            for key, value in tensors.items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())
        )
        if broken:
            raise CheckpointError(f"{folder / name}: {broken[0]} holds NaN or infinite values")
        for key, value in sorted(tensors.items()):  # a checksum recomputed after a cast proves nothing
            expected = _KEPT_DTYPES.get(name, lambda k, dtype: True)
            if not expected(key, dtype_name(value)):
                raise CheckpointError(
                    f"{folder / name}: {key} is {dtype_name(value)}; expected what "
                    "growsearch writes there (float32 numbers, integer counts and labels)"
                )
        return tensors

    def records(self) -> list[TaskRecord]:
        out = []
        for task in self.committed_tasks():
            verify_checksums(self.task_dir(task), extra=(RECORD_FILE,))
            out.append(self._record(task))
        return out

    def _record(self, task: int) -> TaskRecord:
        """A committed task's record, its fields checked (checksums prove the bytes, not the meaning)."""
        path = self.task_dir(task) / RECORD_FILE
        data = read_json(path, constants=True)  # a NaN is named by its field
        try:
            return TaskRecord.from_json(data, task)
        except ValueError as error:
            raise CheckpointError(f"{path}: {error}") from None
