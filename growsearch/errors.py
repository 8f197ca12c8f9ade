"""Exceptions of growsearch.

Every error a user can cause is one of these, with a message that names what was wrong (file, field,
value) and what was expected. The CLI prints the message as one line and exits non-zero.
"""

from __future__ import annotations


class GrowsearchError(Exception):
    """Base class: a problem the user can fix from the message alone."""


class ConfigError(GrowsearchError):
    """A search-space YAML or a CLI option is malformed or names an unknown field or value."""


class UnknownNameError(ConfigError):
    """A method, benchmark, scenario, node kind or backend name that is not registered."""

    def __init__(self, kind: str, name: str, known: list[str] | tuple[str, ...]):
        self.kind, self.name, self.known = kind, name, tuple(known)
        super().__init__(f"unknown {kind} {name!r}; expected one of: {', '.join(sorted(known))}")


class DataError(GrowsearchError):
    """A data root is missing, has the wrong layout, or its files cannot be read."""


class ScenarioError(GrowsearchError):
    """A method is asked to run in a scenario it does not support."""


class GraphError(GrowsearchError):
    """A module graph is inconsistent: shape mismatch, missing node, cycle, bad merge."""


class CheckpointError(GrowsearchError):
    """A run-folder file is torn, edited or missing: its checksum or structure does not match."""


class TrainingError(GrowsearchError):
    """Training diverged (a NaN or infinite loss) or cannot proceed."""


class RunFolderError(GrowsearchError):
    """A run folder is missing, already exists, or does not hold a resumable run."""


class WriteError(GrowsearchError):
    """A file could not be written (a read-only folder, a full disk, no permission); what is already
    committed is intact, since every file is written whole or not at all."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers, Ray and `timeout` send) raised where Ctrl-C raises KeyboardInterrupt: a run
    stops the same way, its interrupted trial retried with its seed by `resume`."""
