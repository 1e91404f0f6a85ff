"""Host-side file operations on things a task or a sandbox controls: nothing here follows a link."""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
from pathlib import Path

from pydantic import BaseModel

from rigbench.sandbox import readfiles


class FileRead(BaseModel):
    text: str | None = None
    error: str | None = None


def unsafe_entries(root: Path) -> list[str]:
    """What in a task folder could make a copy of it reach the host: links that resolve outside it (however
    they are chained), and FIFOs, devices and sockets. Empty when the folder is safe to copy."""
    root = Path(root)
    base = root.resolve()
    problems = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            mode = p.lstat().st_mode
            if stat.S_ISLNK(mode):
                target = p.resolve()
                if not target.is_relative_to(base):
                    problems.append(f"{p} is a link to {os.readlink(p)}, outside the task folder")
            elif not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                problems.append(f"{p} is a {readfiles._kind(mode)}")
    return problems


def copy_task_path(src: Path, dst: Path) -> None:
    """Copy a checked task file or folder to a fresh host folder, links kept as links."""
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)


def read_regular(folder: Path, names: tuple[str, ...], limit: int) -> dict[str, FileRead]:
    return {k: FileRead(**v) for k, v in readfiles.read_regular(str(folder), names, limit).items()}


def tar_of(src: Path, name: str) -> bytes:
    """A checked task file or folder as a tar stream (links stored as links) for a copy made inside the
    sandbox; a folder's entries go under `name`."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(src, arcname=name, recursive=True)
    return buf.getvalue()


def remove_tree(path: Path) -> None:
    # rmtree works on file descriptors here (shutil.rmtree.avoids_symlink_attacks): a link planted in the
    # tree is unlinked, never followed
    shutil.rmtree(path, ignore_errors=True)
