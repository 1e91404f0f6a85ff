"""Task folders as their authors publish them: Terminal-Bench 2.0 / Harbor and Terminal-Bench 1.

Harbor / TB2: task.toml ([metadata] tags, [agent] timeout_sec, [verifier] timeout_sec and env,
[environment] docker_image, build_timeout_sec, allow_internet, cpus, memory / memory_mb, storage / storage_mb),
instruction.md, environment/Dockerfile, tests/test.sh (writes /logs/verifier/reward.txt or reward.json),
solution/solve.sh. Defaults are Harbor's (src/harbor/models/task/config.py, EnvironmentConfig and VerifierConfig:
build_timeout_sec 600, cpus 1, memory_mb 2048, allow_internet true, verifier timeout_sec 600), except storage: a
bubblewrap task's files live in memory (a tmpfs), so rigbench keeps 4 GiB unless the task declares more.
A folder with a link that leaves it (or a FIFO, device or socket) is refused: it is copied into sandboxes.
TB1: task.yaml (instruction, max_agent_timeout_sec, max_test_timeout_sec, tags), Dockerfile,
run-tests.sh (pytest under $TEST_DIR; passes when every test passes), solution.sh, tests/.
rigbench adds one optional key, [rigbench] mode = "single-turn": the instruction is sent once and the
answer is written to /app/response.md for the verifier (the setup C gauntlet prompts).
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel

from rigbench.errors import RigbenchError
from rigbench.sandbox import Limits, unsafe_entries


class TaskFormatError(RigbenchError):
    pass


class Task(BaseModel):
    name: str
    path: Path
    format: Literal["tb2", "tb1"]
    instruction: str
    tags: list[str] = []
    difficulty: str = ""
    agent_timeout_s: float = 600.0
    verifier_timeout_s: float = 600.0
    build_timeout_s: float = 600.0
    docker_image: str | None = None
    allow_internet: bool = True         # Harbor's default; the agent and the verifier share it there
    cpus: float = 1.0
    memory_mb: int = 2048
    storage_mb: int = 4096
    storage_declared: bool = False
    verifier_env: dict[str, str] = {}
    mode: Literal["agent", "single-turn"] = "agent"

    def limits(self) -> Limits:
        return Limits(memory_mb=self.memory_mb, cpus=self.cpus, storage_mb=self.storage_mb,
                      storage_declared=self.storage_declared)

    @property
    def dockerfile(self) -> Path | None:
        for p in (self.path / "environment" / "Dockerfile", self.path / "Dockerfile"):
            if p.is_file():
                return p
        return None

    @property
    def context_dir(self) -> Path:
        d = self.path / "environment"
        return d if self.format == "tb2" and d.is_dir() else self.path

    @property
    def tests_dir(self) -> Path:
        return self.path / "tests"

    @property
    def solution(self) -> Path | None:
        for p in (self.path / "solution" / "solve.sh", self.path / "solution.sh"):
            if p.is_file():
                return p
        return None


def _size_mb(env: dict, key: str, default: int) -> int:
    """Harbor's `memory_mb = 2048` or `memory = "2G"` (the same for storage)."""
    if f"{key}_mb" in env:
        return int(env[f"{key}_mb"])
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(env.get(key, f"{default}M")), re.I)
    if not m:
        raise TaskFormatError(f"[environment] {key} = {env[key]!r} is not a size; write it like \"2G\" or \"512M\"")
    scale = {"": 1 / 2**20, "K": 1 / 1024, "M": 1, "G": 1024, "T": 2**20}[m.group(2).upper()]
    return int(float(m.group(1)) * scale)


def check_folder(path: Path) -> None:
    """A task folder is copied into sandboxes and read by rigbench: a link out of it would bring a host file in."""
    problems = unsafe_entries(path)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TaskFormatError(f"task {path.name} is refused: {problems[0]}{more}; replace it with the file itself")


def load_task(path: Path) -> Task:
    path = Path(path)
    if (path / "task.toml").is_file() or (path / "task.yaml").is_file():
        check_folder(path)
    if (path / "task.toml").is_file():
        try:
            cfg = tomllib.loads((path / "task.toml").read_text())
        except tomllib.TOMLDecodeError as e:
            raise TaskFormatError(f"{path / 'task.toml'} is not valid TOML ({e}); fix the file") from None
        ins = path / "instruction.md"
        if not ins.is_file():
            raise TaskFormatError(f"task {path.name} has task.toml but no instruction.md")
        meta, env = cfg.get("metadata", {}), cfg.get("environment", {})
        return Task(name=path.name, path=path, format="tb2", instruction=ins.read_text(),
                    tags=list(meta.get("tags", [])) + [t for t in [meta.get("category")] if t],
                    difficulty=meta.get("difficulty", ""),
                    agent_timeout_s=float(cfg.get("agent", {}).get("timeout_sec", 600)),
                    verifier_timeout_s=float(cfg.get("verifier", {}).get("timeout_sec", 600)),
                    build_timeout_s=float(env.get("build_timeout_sec", 600)),
                    docker_image=env.get("docker_image") or None,
                    allow_internet=bool(env.get("allow_internet", True)),
                    verifier_env={k: str(v) for k, v in cfg.get("verifier", {}).get("env", {}).items()},
                    cpus=float(env.get("cpus", 1)), memory_mb=_size_mb(env, "memory", 2048),
                    storage_mb=_size_mb(env, "storage", 4096),
                    storage_declared="storage" in env or "storage_mb" in env,
                    mode=cfg.get("rigbench", {}).get("mode", "agent"))
    if (path / "task.yaml").is_file():
        cfg = yaml.safe_load((path / "task.yaml").read_text()) or {}
        ins = cfg.get("instruction") or next((d.get("instruction") for d in cfg.get("descriptions", [])
                                              if d.get("key") == "base"), None)
        if not ins:
            raise TaskFormatError(f"{path / 'task.yaml'} has no instruction")
        return Task(name=path.name, path=path, format="tb1", instruction=ins, tags=list(cfg.get("tags", [])),
                    difficulty=cfg.get("difficulty", ""),
                    agent_timeout_s=float(cfg.get("max_agent_timeout_sec", 600)),
                    verifier_timeout_s=float(cfg.get("max_test_timeout_sec", 120)))
    raise TaskFormatError(f"{path} is not a task folder (no task.toml or task.yaml)")


def load_dataset(folder: Path, names: list[str] | None = None, tags: list[str] | None = None) -> list[Task]:
    """Every task folder under `folder` (or `folder` itself), filtered by name (glob) or tag."""
    import fnmatch

    folder = Path(folder)
    if not folder.is_dir():
        raise TaskFormatError(f"no task folder at {folder}; give --tasks DIR (a task or a folder of tasks)")
    if (folder / "task.toml").is_file() or (folder / "task.yaml").is_file():
        tasks = [load_task(folder)]
    else:
        tasks = [load_task(p) for p in sorted(folder.iterdir())
                 if (p / "task.toml").is_file() or (p / "task.yaml").is_file()]
    if names:
        tasks = [t for t in tasks if any(fnmatch.fnmatch(t.name, n) for n in names)]
    if tags:
        tasks = [t for t in tasks if set(tags) & set(t.tags)]
    if not tasks:
        raise TaskFormatError(f"no tasks in {folder} match the filter")
    return tasks


def starter_suite() -> Path:
    """The starter tasks shipped in the repository (tasks/starter)."""
    here = Path(__file__).resolve()
    for up in here.parents:
        if (up / "tasks" / "starter").is_dir():
            return up / "tasks" / "starter"
    raise TaskFormatError("the starter suite (tasks/starter) is not next to this install; give --tasks DIR")
