"""A task's environment/Dockerfile applied in the bubblewrap sandbox, without a container: WORKDIR, ENV,
COPY/ADD (unpacked inside, from the checked task folder) and RUN steps whose tools the host has."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from rigbench.sandbox import BwrapSandbox, TaskUnsupported
from rigbench.tasks.formats import Task

_NEEDS_CONTAINER = ("apt-get", "apt ", "apk ", "yum ", "dnf ", "pip install", "pip3 install", "curl ", "wget ",
                    "uv pip", "npm install", "useradd", "chown ")


def dockerfile_steps(path: Path) -> list[tuple[str, str]]:
    """(instruction, argument) pairs, continuation lines joined, comments dropped."""
    steps, buf = [], ""
    for raw in path.read_text().splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        line, buf = buf + line, ""
        op, _, arg = line.strip().partition(" ")
        steps.append((op.upper(), arg.strip()))
    return steps


def apply_dockerfile(sb: BwrapSandbox, task: Task) -> list[str]:
    """WORKDIR, COPY/ADD, ENV and RUN steps whose tools the host has; raise TaskUnsupported otherwise."""
    notes: list[str] = []
    df = task.dockerfile
    if df is None:
        return notes
    for op, arg in dockerfile_steps(df):
        if op == "WORKDIR":
            sb.workdir = arg if arg.startswith("/") else str(Path(sb.workdir) / arg)
            sb.check_dir(sb.workdir)
            sb.run(f"mkdir -p -- {shlex.quote(sb.workdir)}", timeout=60)
        elif op == "ENV":
            parts = shlex.split(arg)
            if len(parts) >= 2 and "=" not in parts[0]:
                sb.env[parts[0]] = " ".join(parts[1:])
            else:
                sb.env.update(p.split("=", 1) for p in parts if "=" in p)
        elif op in ("COPY", "ADD"):
            _copy(sb, task, arg)
        elif op == "RUN":
            _run(sb, task, arg)
        elif op == "FROM":
            notes.append(f"base image {arg} replaced by the host's read-only system")
    return notes


def _copy(sb: BwrapSandbox, task: Task, arg: str) -> None:
    *srcs, dst = [p for p in shlex.split(arg) if not p.startswith("--")]
    dst_in = dst if dst.startswith("/") else str(Path(sb.workdir) / dst)
    into_dir = (dst.endswith("/") or len(srcs) > 1
                or sb.run(f"test -d {shlex.quote(dst_in)}", timeout=30).exit_code == 0)
    for s in srcs:
        src = task.context_dir / s
        if not (src.is_file() or src.is_dir()) or src.is_symlink() and not src.resolve().is_relative_to(
                task.context_dir.resolve()):
            raise TaskUnsupported(f"{task.name}: COPY source {s} is not in the task's environment")
        if src.is_dir():
            sb.copy_in(src, dst_in)
        else:
            sb.copy_in(src, str(Path(dst_in) / src.name) if into_dir else dst_in)


def _run(sb: BwrapSandbox, task: Task, cmd: str) -> None:
    if cmd.startswith("["):
        cmd = " ".join(shlex.quote(x) for x in json.loads(cmd))
    if any(tok in cmd + " " for tok in _NEEDS_CONTAINER):
        raise TaskUnsupported(f"{task.name}: `RUN {cmd[:60]}` installs or fetches software; "
                              f"run it with --sandbox docker")
    r = sb.run(cmd, timeout=300)
    if r.exit_code != 0:
        raise TaskUnsupported(f"{task.name}: `RUN {cmd[:60]}` failed here (exit {r.exit_code}: "
                              f"{r.output.strip()[-200:]}); run it with --sandbox docker")
