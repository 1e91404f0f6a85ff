"""Where a candidate's engine may run: Ray resources from `hardware`. Each node advertises its GPUs by model
and its VRAM (`node_resources`, given to `ray start --resources`); a plan asks for the GPUs it puts bytes on,
of the model it was planned for, and the VRAM it uses (`placement`), so Ray starts the engine only on a
node whose GPUs fit the plan. The experiment runner passes `Placement.ray_options()` to its Ray actor."""

from __future__ import annotations

import math
import re

from pydantic import BaseModel

from rigbench.errors import DoesNotFitError
from rigbench.hardware import GIB, Rig
from rigbench.plan.memory import Plan

PREFIX = "rigbench_gpu_"
VRAM = "rigbench_vram_gib"


def gpu_resource(name: str) -> str:
    """The Ray resource counting one GPU model: `NVIDIA H200` -> `rigbench_gpu_nvidia_h200`."""
    return PREFIX + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def node_resources(rig: Rig) -> dict[str, float]:
    """Custom resources of a node with this rig: one unit per GPU of each model, and its VRAM in whole GiB."""
    res: dict[str, float] = {}
    for g in rig.gpus:
        key = gpu_resource(g.name)
        res[key] = res.get(key, 0) + 1
    if rig.gpus:
        res[VRAM] = float(sum(g.vram_bytes for g in rig.gpus) // GIB)
    return res


class Placement(BaseModel):
    num_gpus: int = 0
    memory_bytes: int = 0                 # host RAM the engine holds (CPU-placed weights, buffers)
    resources: dict[str, float] = {}

    def ray_options(self) -> dict:
        """Keyword arguments of `ray.remote(...)` / `.options(...)` for the engine's actor."""
        opts: dict = {"num_gpus": self.num_gpus, "resources": dict(self.resources)}
        if self.memory_bytes:
            opts["memory"] = self.memory_bytes
        return opts


def placement(plan: Plan, rig: Rig) -> Placement:
    """The Ray resources of a plan made for `rig`: the GPUs holding its bytes (of the rig's models, so a node
    with other, smaller cards does not match), the VRAM they use and the host RAM."""
    if not plan.fits:
        raise DoesNotFitError(f"{plan.summary()}; a plan that does not fit cannot be placed")
    gpu_devices = [d for d in plan.devices if d.kind == "gpu"]
    used = [(rig.gpus[i], d) for i, d in enumerate(gpu_devices) if i < len(rig.gpus) and d.vram_bytes > 0]
    res: dict[str, float] = {}
    for g, _ in used:
        res[gpu_resource(g.name)] = res.get(gpu_resource(g.name), 0) + 1
    if used:
        res[VRAM] = float(math.ceil(sum(d.vram_bytes for _, d in used) / GIB))
    ram = sum(d.ram_bytes for d in plan.devices if d.kind == "cpu")
    return Placement(num_gpus=len(used), memory_bytes=ram, resources=res)
