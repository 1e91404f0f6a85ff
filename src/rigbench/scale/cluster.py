"""Joining a Ray cluster: `--ray auto` finds the one started on this machine with `ray start` (or starts a
local one), `--ray ADDRESS` joins that head (host:6379, or ray://host:10001 through Ray Client)."""

from __future__ import annotations

import os

from rigbench.errors import RigbenchError


class RayUnavailable(RigbenchError):
    """Ray is not installed, or the cluster at the address does not answer."""


def init(address: str = "auto", num_cpus: int | None = None) -> None:
    """Connect this process to Ray once. `num_cpus` only matters when a new local instance is started."""
    try:
        import ray
    except ModuleNotFoundError:
        raise RayUnavailable("--ray needs Ray: pip install 'rigbench[scale]'") from None
    if ray.is_initialized():
        return
    if address != "auto":
        _answers(address)
    # workers import rigbench the way this process does (a source checkout on PYTHONPATH included)
    env = {"env_vars": {"PYTHONPATH": os.environ["PYTHONPATH"]}} if os.environ.get("PYTHONPATH") else None
    try:
        if address == "auto":
            ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING", log_to_driver=False,
                     runtime_env=env)
        else:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False, runtime_env=env)
    except ConnectionError as e:
        raise RayUnavailable(f"no Ray cluster at {address} ({e}); start one with `ray start --head`") from None


def _answers(address: str) -> None:
    """Ray retries an unreachable head for minutes; a head that refuses the connection is an error now."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayUnavailable(f"--ray {address}: give auto, HOST:PORT (the head's GCS, 6379) or ray://HOST:10001")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise RayUnavailable(f"no Ray cluster answers at {address} ({e.strerror or e}); "
                             f"start one there with `ray start --head`") from None


def workers() -> int:
    """CPU slots of the cluster: how many tasks run at once (one task per slot)."""
    import ray

    return int(ray.cluster_resources().get("CPU", 0))
