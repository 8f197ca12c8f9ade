"""A real two-node Ray cluster on 127.0.0.1 for the tests: `ray start --head` plus a second
`ray start --address` node, each limited to one CPU, with token authentication as Ray 2.59+ enables it.

These machines allow traffic to loopback only, and Ray binds to the machine's network address unless it
runs in a network namespace that has nothing but loopback: run the suite under
`tools/loopback-only` (`tools/test` does). Elsewhere set GROWSEARCH_RAY_ANY_NETWORK=1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))


def require_loopback_only() -> None:
    interfaces = {name for _, name in socket.if_nameindex()}  # of this process's network namespace
    if interfaces - {"lo"} and not os.environ.get("GROWSEARCH_RAY_ANY_NETWORK"):
        raise RuntimeError(
            f"this process sees network interfaces {sorted(interfaces)}; Ray would bind to the machine's "
            "address, which this machine does not allow. Run the tests with tools/test, or under "
            "tools/loopback-only (or set GROWSEARCH_RAY_ANY_NETWORK=1 where Ray may use the network)"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RayCluster:
    address: str
    env: dict[str, str]

    def nodes(self) -> list[dict]:
        keys = ("NodeID", "Alive", "RayletSocketName", "Resources")
        script = (
            f"import json, ray; ray.init(address={self.address!r}, log_to_driver=False); "
            f"print(json.dumps([{{k: n[k] for k in {keys!r}}} for n in ray.nodes()]))"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], env=self.env, capture_output=True, text=True, check=True
        )
        import json

        return json.loads(out.stdout.strip().splitlines()[-1])

    def kill_worker_raylet(self) -> int:
        """SIGKILL the raylet of a node that is not the head; returns its pid."""
        alive = [n for n in self.nodes() if n["Alive"]]
        worker = next(n for n in alive if "node:__internal_head__" not in n["Resources"])
        flag = f"--raylet_socket_name={worker['RayletSocketName']}"
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if flag.encode() in cmdline:
                os.kill(int(pid), signal.SIGKILL)
                return int(pid)
        raise RuntimeError(f"no raylet process with {flag}")

    def stop(self) -> None:
        subprocess.run([RAY, "stop", "--force"], env=self.env, capture_output=True, timeout=120)


def start_cluster(workers: int = 1) -> RayCluster:
    require_loopback_only()
    # the nodes and every driver (this process included) share the token in ~/.ray/auth_token
    os.environ["RAY_AUTH_MODE"] = "token"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([RAY, "get-auth-token", "--generate"], env=env, capture_output=True, timeout=60)
    port = _free_port()
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    subprocess.run(
        [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    address = f"127.0.0.1:{port}"
    for _ in range(workers):
        subprocess.run(
            [RAY, "start", f"--address={address}", *common],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
    cluster = RayCluster(address, env)
    deadline = time.monotonic() + 60
    while sum(n["Alive"] for n in cluster.nodes()) < workers + 1:
        if time.monotonic() > deadline:
            cluster.stop()
            raise RuntimeError("the Ray nodes did not all join")
        time.sleep(1)
    return cluster
