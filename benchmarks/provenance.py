"""What a results file says of where it came from: the command that made it (relative to the repository, the
output path left out: the file is that path) and the machine in words, never its host name or paths.

A benchmark imports it as `from provenance import command, machine` (run as `python benchmarks/NAME.py`, its
folder is first on the path)."""

from __future__ import annotations

import os
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(argv: list[str] | None = None) -> str:
    """`python benchmarks/NAME.py ARGS` for this run, without `--out PATH`."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    name = script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT) else script.name
    args, skip = [], False
    for a in argv[1:]:
        if skip:
            skip = False
            continue
        if a == "--out":
            skip = True
            continue
        if a.startswith("--out="):
            continue
        args.append(a)
    return " ".join(["python", name, *(shlex.quote(a) for a in args)])


def machine() -> str:
    """The machine in words: architecture and CPU cores (no host name)."""
    return f"{platform.machine()}, {os.cpu_count()} CPU cores"
