"""Algorithms shared by several methods live here (the REINFORCE policy of RCL and CLEAS, MNTDP's
task-driven prior for MNTDP-D and MNTDP-S, ...); a method's own helpers sit beside it as
`methods/_NAME_*.py` (PathNet's tournament GA: `methods/_pathnet_tournament.py`)."""
