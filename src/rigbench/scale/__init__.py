"""Past one machine: Ray runs the work (eval tasks, bench load generators, experiment engines), one shared
store (PostgreSQL through `rigbench.store`) keeps every result. rigbench adds no cluster layer of its own."""

from rigbench.scale.cluster import RayUnavailable, init, workers

__all__ = ["RayUnavailable", "init", "workers"]
