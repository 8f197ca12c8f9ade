"""Training: the one loop (`trainer.fit`) and its hooks, the one optimiser factory, candidate training."""
