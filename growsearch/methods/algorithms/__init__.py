"""Search algorithms that serve one method each and that Optuna lacks: PathNet's binary tournament GA,
the REINFORCE controller of RCL and CLEAS (an Optuna sampler), DARTS's super-network for Learn to Grow, and
MNTDP's task-driven prior."""
