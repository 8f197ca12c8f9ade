"""growsearch: continual learning with dynamic neural architectures, where every growth decision is a search.

Library entry points: `ModuleGraph` (the grown network as data), `grow` (growth operators),
`GrowthController` (one search per task), `load_space` (a method's search-space YAML), and
`start_run` / `resume_run` (what the `growsearch` command does).
"""

from growsearch.config.space import load_space
from growsearch.graph.module_graph import ModuleGraph
from growsearch.runner import RunOptions, resume_run, start_run
from growsearch.search.controller import GrowthController

__version__ = "0.1.0"

__all__ = ["GrowthController", "ModuleGraph", "RunOptions", "load_space", "resume_run", "start_run"]
