"""How node ids are built: from the task that adds a node and the node's part in it, and never parsed back.

An id is a string because graph.json keys its nodes by it and the weight file prefixes tensors with it; it
says at a glance which task added a node (`t3/L1`, `t3/head`). What a node is (its layer, its owner, the
node whose weights it shares, its kind) is read from the node's data, never from its id.
"""

from __future__ import annotations


def task_node(task: int, part: str) -> str:
    """The node `part` (`features`, `blend`, `lateral1`, ...) that task `task` adds."""
    return f"t{task}/{part}"


def layer_node(task: int, layer: int, suffix: str = "") -> str:
    """Task `task`'s node at layer `layer` (`suffix`: a part of it, `.pre`, `.reuse`, `.adapter`, ...)."""
    return task_node(task, f"L{layer}{suffix}")


def head_node(task: int) -> str:
    """Task `task`'s classifier."""
    return task_node(task, "head")
