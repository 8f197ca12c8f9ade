"""Everything a method may use, in one place: the method contract, growth operators, the graph's read API,
the one trainer and its `Training`, seeded randomness, data and the exemplar memory.

Method modules (`growsearch/methods/*.py`, and the shared algorithms in `methods/algorithms/`) import only
this module and `methods/algorithms/`; `tests/test_package_layers.py` enforces it. So a change inside
`graph/`, `grow/` or `train/` reaches the methods through this one surface.

    from growsearch.methods.toolkit import Candidate, Decisions, Method, TaskContext, ops
"""

from __future__ import annotations

from growsearch.config.schema import from_mapping, require, require_size
from growsearch.config.space import SearchSpace
from growsearch.config.training import OptimizerSettings, TrainingConfig
from growsearch.data.memory import ExemplarMemory, class_balanced
from growsearch.data.task import Split, Task
from growsearch.errors import ConfigError, GraphError, TrainingError, UnknownNameError
from growsearch.graph.compile import MaskedParameter, TrainingProgram, compile_view, write_back
from growsearch.graph.module_graph import FREE, INPUT, ModuleGraph
from growsearch.graph.node_ids import head_node, layer_node, task_node
from growsearch.graph.specs import (
    LSTM,
    Activation,
    Adapter,
    Conv2d,
    Flatten,
    Head,
    LastStep,
    Linear,
    NodeSpec,
    ResBlock,
    Shape,
    dense_or_conv,
    layer_fields,
    node_kind,
)
from growsearch.grow import gates as unit_gates
from growsearch.grow import neurons, node_data, units
from growsearch.grow import operators as ops
from growsearch.grow.backbone import count_parameters, head_spec, layer_specs, reading, split_activation
from growsearch.grow.unit_removal import remove_units
from growsearch.inference.autoencoders import TaskAutoencoder, relatedness
from growsearch.methods.base import (
    Candidate,
    Decisions,
    Method,
    NoOptions,
    Rehearsal,
    Retrain,
    SearchPlan,
    TaskContext,
)
from growsearch.seeded_samplers import SeededRandomSampler
from growsearch.seeds import derived_seed, seed_torch
from growsearch.task_record import TaskRecord
from growsearch.train.batches import Batch, Minibatches
from growsearch.train.candidate import (
    TrainingResult,
    accuracy,
    evaluate,
    prefix_outputs,
    resolve_device,
    run_in_batches,
    train_candidate,
)
from growsearch.train.extension import (
    PLAIN,
    Penalty,
    Phase,
    StepOutcome,
    Training,
    TrainingRun,
)
from growsearch.train.module_macs import module_macs
from growsearch.train.optim import make_optimizer
from growsearch.train.stabilisers import IMPORTANCE, KINDS, Stabiliser, fisher_information
from growsearch.train.trainer import FitResult, count_macs, fit, input_gradients, spend_macs
from growsearch.trial_record import halving_stop, is_interrupted, learning_pack, pack_of, read_record

__all__ = [
    "FREE",
    "IMPORTANCE",
    "INPUT",
    "KINDS",
    "LSTM",
    "PLAIN",
    "Activation",
    "Adapter",
    "Batch",
    "Candidate",
    "ConfigError",
    "Conv2d",
    "Decisions",
    "ExemplarMemory",
    "FitResult",
    "Flatten",
    "GraphError",
    "Head",
    "LastStep",
    "Linear",
    "MaskedParameter",
    "Method",
    "Minibatches",
    "ModuleGraph",
    "NoOptions",
    "NodeSpec",
    "OptimizerSettings",
    "Penalty",
    "Phase",
    "Rehearsal",
    "ResBlock",
    "Retrain",
    "SearchPlan",
    "SearchSpace",
    "SeededRandomSampler",
    "Shape",
    "Split",
    "Stabiliser",
    "StepOutcome",
    "Task",
    "TaskAutoencoder",
    "TaskContext",
    "TaskRecord",
    "Training",
    "TrainingConfig",
    "TrainingError",
    "TrainingProgram",
    "TrainingResult",
    "TrainingRun",
    "UnknownNameError",
    "accuracy",
    "class_balanced",
    "compile_view",
    "count_macs",
    "count_parameters",
    "dense_or_conv",
    "derived_seed",
    "evaluate",
    "fisher_information",
    "fit",
    "from_mapping",
    "halving_stop",
    "head_node",
    "head_spec",
    "input_gradients",
    "is_interrupted",
    "layer_fields",
    "layer_node",
    "layer_specs",
    "learning_pack",
    "make_optimizer",
    "module_macs",
    "neurons",
    "node_data",
    "node_kind",
    "ops",
    "pack_of",
    "prefix_outputs",
    "read_record",
    "reading",
    "relatedness",
    "remove_units",
    "require",
    "require_size",
    "resolve_device",
    "run_in_batches",
    "seed_torch",
    "spend_macs",
    "split_activation",
    "task_node",
    "train_candidate",
    "unit_gates",
    "units",
    "write_back",
]
