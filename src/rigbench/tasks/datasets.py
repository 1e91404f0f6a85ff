"""Published task sets by name (`terminal-bench@2.0`): fetched with git when the network is there, cached,
and pinned to the commit they were run at.

Terminal-Bench 2.0's 89 tasks are published in Harbor's layout in the git repository
https://github.com/laude-institute/terminal-bench-2 (what `harbor run --dataset terminal-bench@2.0` runs;
evalscope's page https://evalscope.readthedocs.io/en/v1.6.0/benchmarks/terminal_bench_v2.html names the
dataset `terminal-bench-2.git`). rigbench clones it once into its cache (RIGBENCH_CACHE, default
~/.cache/rigbench, as for the packaged model) and reads the task folders from there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel

from rigbench.errors import RigbenchError

DATASETS = {
    "terminal-bench@2.0": "https://github.com/laude-institute/terminal-bench-2.git",
}


class DatasetUnavailable(RigbenchError):
    pass


class Dataset(BaseModel):
    name: str
    url: str
    commit: str
    path: Path

    def record(self) -> dict:
        """What a run stores: enough to fetch the same tasks again."""
        return {"name": self.name, "url": self.url, "commit": self.commit}


def cache_dir() -> Path:
    return Path(os.environ.get("RIGBENCH_CACHE") or Path.home() / ".cache" / "rigbench") / "datasets"


def _git(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})


def fetch(name: str, url: str | None = None, commit: str | None = None, timeout: float = 600) -> Dataset:
    """The dataset's folder, cloned on first use; `commit` checks out that one (a stored run's pin)."""
    if url is None:
        if name not in DATASETS:
            raise DatasetUnavailable(f"unknown dataset {name!r}; known: {', '.join(DATASETS)} (or give --tasks DIR)")
        url = DATASETS[name]
    dest = cache_dir() / name
    if not (dest / ".git").is_dir():
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            r = _git("clone", "--quiet", url, str(tmp), timeout=timeout)
        except subprocess.TimeoutExpired:
            r = subprocess.CompletedProcess([], 1, "", f"no answer in {timeout:.0f} s")
        if r.returncode != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            last = (r.stderr.strip().splitlines() or ["git clone failed"])[-1]
            raise DatasetUnavailable(f"cannot fetch {name} from {url} ({last}); with no network, clone it elsewhere "
                                     f"and give --tasks DIR")
        tmp.rename(dest)
    if commit:
        have = _git("rev-parse", "HEAD", cwd=dest).stdout.strip()
        if have != commit:
            if _git("cat-file", "-e", commit + "^{commit}", cwd=dest).returncode != 0:
                _git("fetch", "--quiet", "origin", cwd=dest, timeout=timeout)
            r = _git("checkout", "--quiet", "--detach", commit, cwd=dest)
            if r.returncode != 0:
                raise DatasetUnavailable(f"{name} has no commit {commit} ({r.stderr.strip()[-200:]})")
    head = _git("rev-parse", "HEAD", cwd=dest).stdout.strip()
    return Dataset(name=name, url=url, commit=head, path=_tasks_root(dest))


def _tasks_root(repo: Path) -> Path:
    """The folder holding the task folders: the repository itself or its tasks/."""
    return repo / "tasks" if (repo / "tasks").is_dir() and not (repo / "task.toml").is_file() else repo
