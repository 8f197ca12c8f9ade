"""Persistence: the run folder (configuration, Optuna storage, trial checkpoints, committed tasks)."""
