"""A task's environment/Dockerfile applied in the bubblewrap sandbox, without a container: WORKDIR, ENV,
COPY/ADD (unpacked inside, from the checked task folder) and RUN steps, on a root overlay (see
rigbench.sandbox.bwrap) so any WORKDIR and any path the Dockerfile names works.

RUN steps run as the sandbox user with no network. A step that installs packages is checked against the
host's package manager, read-only: `apt-get install git` is satisfied when the host has git installed
(`dpkg-query`), `pip install pytest==8.4.1` when the host's python3 has that version; `apt-get update` and
list clean-ups are no-ops. Anything else that installs or fetches software (curl, wget, uv, npm, a package
the host lacks) means the task needs Docker, and says so.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

from pydantic import BaseModel

from rigbench.sandbox import BwrapSandbox, TaskUnsupported
from rigbench.tasks.formats import Task

_FETCHES = ("curl ", "wget ", "uv pip", "uv tool", "uvx ", "npm install", "npm i ", "pipx ", "git clone ",
            "useradd", "adduser", "chown ", "apk ", "yum ", "dnf ", "conda ", "cargo install", "go install")
_AREAS = ("/app", "/tmp", "/logs/agent")
_APT = re.compile(r"^(?:DEBIAN_FRONTEND=\S+\s+)?(?:apt-get|apt)\s+(.*)$")
_PIP = re.compile(r"^(?:python3?\s+-m\s+)?pip3?\s+install\s+(.*)$")


class Requirements(BaseModel):
    """What a task's Dockerfile asks of a machine that runs it without a container."""

    workdir: str = "/app"
    writable: list[str] = []          # WORKDIR and COPY targets outside the sandbox's own folders
    apt: list[str] = []               # packages a RUN step installs
    pip: list[str] = []
    fetches: list[str] = []           # RUN steps that download or install software some other way


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


def _shell(arg: str) -> str:
    return " ".join(shlex.quote(x) for x in json.loads(arg)) if arg.startswith("[") else arg


def _segments(cmd: str) -> list[str]:
    """A RUN line split at top-level `&&` and `;` (enough for Dockerfiles; quoted ones stay whole)."""
    out, cur, quote = [], "", ""
    i = 0
    while i < len(cmd):
        c = cmd[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "'\"":
            quote = c
        elif cmd.startswith("&&", i) or c == ";":
            out.append(cur.strip())
            cur, i = "", i + (2 if c == "&" else 1)
            continue
        cur += c
        i += 1
    out.append(cur.strip())
    return [s for s in out if s]


def _packages(args: str) -> list[str]:
    return [p for p in shlex.split(args) if not p.startswith("-")]


def _classify(segment: str) -> tuple[str, list[str]]:
    """('apt' | 'pip' | 'noop' | 'fetch' | 'run', packages) for one command of a RUN step."""
    if m := _APT.match(segment):
        verb, _, rest = m.group(1).partition(" ")
        if verb in ("update", "clean", "autoclean", "autoremove"):
            return "noop", []
        if verb == "install":
            return "apt", _packages(rest)
        return "fetch", []
    if m := _PIP.match(segment):
        return "pip", [p for p in _packages(m.group(1)) if not p.startswith(("/", "."))]
    if re.match(r"^rm\s+-rf\s+/var/lib/apt/lists", segment):
        return "noop", []
    if any(tok in segment + " " for tok in _FETCHES):
        return "fetch", []
    return "run", []


def requirements(task: Task) -> Requirements:
    """The Dockerfile read without running anything (for `rigbench tasks --check` and the sandbox's folders)."""
    req = Requirements()
    if task.dockerfile is None:
        return req
    wd = "/app"
    for op, arg in dockerfile_steps(task.dockerfile):
        if op == "WORKDIR":
            wd = arg if arg.startswith("/") else str(Path(wd) / arg)
            _declare(req, wd)
        elif op in ("COPY", "ADD"):
            parts = [p for p in shlex.split(arg) if not p.startswith("--")]
            if len(parts) >= 2:
                dst = parts[-1] if parts[-1].startswith("/") else str(Path(wd) / parts[-1])
                into = parts[-1].endswith("/") or parts[-1] in (".", "./") or len(parts) > 2
                _declare(req, dst if into else str(Path(dst).parent))
        elif op == "RUN":
            for seg in _segments(_shell(arg)):
                kind, pkgs = _classify(seg)
                if kind == "apt":
                    req.apt += [p for p in pkgs if p not in req.apt]
                elif kind == "pip":
                    req.pip += [p for p in pkgs if p not in req.pip]
                elif kind == "fetch":
                    req.fetches.append(seg[:80])
    req.workdir = wd
    return req


def _declare(req: Requirements, path: str) -> None:
    p = str(Path(path))
    if p != "/" and not any(p == a or p.startswith(a + "/") for a in _AREAS) and p not in req.writable:
        req.writable.append(p)


def missing_apt(packages: list[str]) -> list[str]:
    """Packages (name or name=version) dpkg says the host has not installed."""
    missing = []
    for p in packages:
        name, _, version = p.partition("=")
        r = subprocess.run(["dpkg-query", "-W", "-f", "${Status} ${Version}", name], capture_output=True, text=True)
        status, _, have = r.stdout.partition(" ok installed ")
        if r.returncode != 0 or not status.startswith("install") or version and have.strip() != version:
            missing.append(p)
    return missing


def missing_pip(packages: list[str]) -> list[str]:
    """Requirements (name or name==version) the host's python3 does not satisfy."""
    missing = []
    for p in packages:
        name, _, version = p.partition("==")
        name = re.split(r"[<>=!~\[;]", name)[0]
        r = subprocess.run(["/usr/bin/python3", "-I", "-c", "import importlib.metadata as m, sys; "
                            "print(m.version(sys.argv[1]))", name], capture_output=True, text=True)
        if r.returncode != 0 or version and r.stdout.strip() != version:
            missing.append(p)
    return missing


def unsupported_reason(req: Requirements) -> str | None:
    """Why the bubblewrap sandbox cannot build this task's environment here, or None."""
    if req.fetches:
        return f"`RUN {req.fetches[0]}` installs or fetches software"
    if apt := missing_apt(req.apt):
        return f"apt packages not on this host: {', '.join(apt)}"
    if pip := missing_pip(req.pip):
        return f"python packages not on this host: {', '.join(pip)}"
    return None


def apply_dockerfile(sb: BwrapSandbox, task: Task) -> list[str]:
    """WORKDIR, COPY/ADD, ENV and RUN steps; raise TaskUnsupported for what this machine cannot do."""
    notes: list[str] = []
    df = task.dockerfile
    if df is None:
        return notes
    for op, arg in dockerfile_steps(df):
        if op == "WORKDIR":
            wd = arg if arg.startswith("/") else str(Path(sb.workdir) / arg)
            sb.check_dir(wd)
            r = sb.run(f"mkdir -p -- {shlex.quote(wd)}", timeout=60)
            if r.exit_code != 0:
                raise TaskUnsupported(f"{task.name}: WORKDIR {wd} cannot be made here ({r.output.strip()[-200:]}); "
                                      f"run it with --sandbox docker")
            sb.workdir = wd
        elif op == "ENV":
            parts = shlex.split(arg)
            if len(parts) >= 2 and "=" not in parts[0]:
                sb.env[parts[0]] = " ".join(parts[1:])
            else:
                sb.env.update(p.split("=", 1) for p in parts if "=" in p)
        elif op in ("COPY", "ADD"):
            _copy(sb, task, arg)
        elif op == "RUN":
            notes += _run(sb, task, _shell(arg))
        elif op == "FROM":
            notes.append(f"base image {arg} replaced by the host's system (read-only, with an overlay)")
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


def _run(sb: BwrapSandbox, task: Task, cmd: str) -> list[str]:
    notes, rest = [], []
    for seg in _segments(cmd):
        kind, pkgs = _classify(seg)
        if kind == "fetch":
            raise TaskUnsupported(f"{task.name}: `RUN {seg[:60]}` installs or fetches software; "
                                  f"run it with --sandbox docker")
        if kind in ("apt", "pip"):
            missing = (missing_apt if kind == "apt" else missing_pip)(pkgs)
            if missing:
                raise TaskUnsupported(f"{task.name}: `RUN {seg[:60]}` needs {', '.join(missing)}, which this host "
                                      f"lacks; run it with --sandbox docker")
            notes.append(f"{kind} packages already on the host: {', '.join(pkgs)}")
        elif kind == "run":
            rest.append(seg)
    if rest:
        # a step with nothing done host-side runs as written; otherwise what is left keeps its order, and
        # a failing command stops the rest
        r = sb.run(cmd if len(rest) == len(_segments(cmd)) else " && ".join(rest), timeout=300, network=False)
        if r.exit_code != 0:
            raise TaskUnsupported(f"{task.name}: `RUN {cmd[:60]}` failed here (exit {r.exit_code}: "
                                  f"{r.output.strip()[-200:]}); run it with --sandbox docker")
    return notes
