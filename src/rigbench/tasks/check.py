"""What each task needs, and whether this machine can run it in bubblewrap and in Docker
(`rigbench tasks --check`). Nothing runs: the Dockerfile and test.sh are read, dpkg and the Docker daemon asked."""

from __future__ import annotations

import subprocess

from pydantic import BaseModel

from rigbench.tasks.environment import dockerfile_steps, requirements, unsupported_reason
from rigbench.tasks.formats import Task
from rigbench.tasks.verifier import fetches


class TaskCheck(BaseModel):
    task: str
    format: str
    workdir: str
    docker_image: str | None
    allow_internet: bool
    verifier_downloads: bool        # its test.sh installs its test runner (needs the network then)
    cpus: float
    memory_mb: int
    storage_mb: int
    needs: list[str]                # packages and downloads the Dockerfile's RUN steps ask for
    bwrap: str                      # "yes", "yes (...)" or "no: why"
    docker: str


def _image_loaded(image: str) -> bool:
    try:
        return subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=30).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


def check(task: Task, bwrap_why: str | None, docker_why: str | None) -> TaskCheck:
    """`bwrap_why` / `docker_why`: why that sandbox is unavailable here (None when it works)."""
    req = requirements(task)
    downloads = fetches(task)
    net_note = " if the verifier can reach the network" if downloads else ""
    if bwrap_why:
        bw = f"no: {bwrap_why}"
    elif why := unsupported_reason(req):
        bw = f"no: {why} (needs Docker)"
    else:
        bw = "yes" + (f" ({net_note.strip()})" if downloads else "")
    if docker_why:
        dk = f"no: {docker_why}"
    elif task.docker_image:
        dk = (f"yes (image {task.docker_image} loaded)" if _image_loaded(task.docker_image)
              else f"yes if {task.docker_image} can be pulled (not loaded)")
    elif task.dockerfile is None:
        dk = "no: neither a docker_image nor a Dockerfile"
    else:
        base = next(([t for t in a.split() if not t.startswith("--")] or [""])[0]
                    for op, a in dockerfile_steps(task.dockerfile) if op == "FROM")
        dk = ("yes" if _image_loaded(base) else f"yes if the base image {base} can be pulled (not loaded)") + net_note
    return TaskCheck(task=task.name, format=task.format, workdir=req.workdir, docker_image=task.docker_image,
                     allow_internet=task.allow_internet, verifier_downloads=downloads, cpus=task.cpus,
                     memory_mb=task.memory_mb, storage_mb=task.storage_mb,
                     needs=[f"apt:{p}" for p in req.apt] + [f"pip:{p}" for p in req.pip] + req.fetches,
                     bwrap=bw, docker=dk)
