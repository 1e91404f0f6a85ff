"""What every sandbox shares: its limits, a command's result, output capped as it is read, and the phases."""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from pathlib import Path

from pydantic import BaseModel

from rigbench.errors import RigbenchError
from rigbench.procs import kill_group
from rigbench.sandbox.files import FileRead

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SandboxUnavailable(RigbenchError):
    pass


class TaskUnsupported(RigbenchError):
    """The task needs something this sandbox cannot give (a package install, a base image's tools, a limit)."""


class Limits(BaseModel):
    """What one task may use. storage_mb is every file it writes (bubblewrap: a tmpfs, so it is memory)."""

    memory_mb: int = 2048
    cpus: float = 1.0
    storage_mb: int = 4096
    storage_declared: bool = False      # the task asked for it (Docker refuses what it cannot enforce)
    max_procs: int = 256
    output_bytes: int = 1_000_000       # of one command's output kept; the rest is read and dropped


class CommandResult(BaseModel):
    exit_code: int
    output: str
    timed_out: bool = False
    seconds: float = 0.0
    dropped_bytes: int = 0


class Captured(BaseModel):
    returncode: int
    output: bytes
    dropped: int
    timed_out: bool
    seconds: float


def run_capped(argv: list[str], stdin: bytes | None, timeout: float, limit: int, env: dict[str, str],
               on_start=None, pass_fds: tuple[int, ...] = ()) -> Captured:
    """Run argv in its own process group; keep the first `limit` bytes of its output, drain the rest (a
    command printing gigabytes costs rigbench no memory), and kill the whole group on timeout."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                         pass_fds=pass_fds)
    if on_start:
        on_start(p)
    kept, dropped = bytearray(), [0]

    def read() -> None:
        while chunk := p.stdout.read1(1 << 16):
            room = limit - len(kept)
            kept.extend(chunk[:max(room, 0)])
            dropped[0] += max(len(chunk) - max(room, 0), 0)

    def write() -> None:
        try:
            p.stdin.write(stdin)
            p.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    threads = [threading.Thread(target=read, daemon=True)]
    if stdin is not None:
        threads.append(threading.Thread(target=write, daemon=True))
    for t in threads:
        t.start()
    timed_out = False
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        kill_group(p.pid)   # anything left in the background goes with the command
        p.wait()
    for t in threads:
        t.join(10)
    p.stdout.close()
    return Captured(returncode=-9 if timed_out else p.returncode, output=bytes(kept), dropped=dropped[0],
                    timed_out=timed_out, seconds=round(time.monotonic() - t0, 3))


def result(c: Captured) -> CommandResult:
    text = c.output.decode(errors="replace")
    if c.dropped:
        text += f"\n[output truncated: {c.dropped} more bytes dropped]"
    return CommandResult(exit_code=c.returncode, output=text, timed_out=c.timed_out, seconds=c.seconds,
                         dropped_bytes=c.dropped)


class Sandbox:
    """A task's isolated machine. Two phases: the agent's, then (after `start_verifier`) the verifier's, in
    which no process of the agent is left and /tests and /logs/verifier are fresh folders it never had."""

    kind = ""

    def __init__(self, limits: Limits, root: Path):
        self.limits, self.root = limits, Path(root)
        self.env: dict[str, str] = {}
        self.workdir = "/app"
        self.phase = "agent"
        self.network = {"agent": False, "verifier": False}   # per phase; the runner sets the task's policy
        self.notes: list[str] = []

    def run(self, command: str, timeout: float = 120.0, stdin: str | None = None, network: bool | None = None,
            env: dict[str, str] | None = None) -> CommandResult:
        raise NotImplementedError

    def reach_host(self, port: int) -> None:
        """Let commands inside reach the host's 127.0.0.1:`port` at that same address (the recording gateway an
        agent talks to). A sandbox sharing the host's network (bubblewrap with the network on) has it already."""

    def write_file(self, inside: str, text: str) -> None:
        """Written by a command inside (a link planted there cannot point it at the host), to a new file
        renamed over the path: a link already at the path is replaced, not followed."""
        q = shlex.quote(inside)
        r = self.run(f"d=\"$(dirname -- {q})\" && mkdir -p -- \"$d\" && t=\"$(mktemp -p \"$d\")\" && cat > \"$t\" "
                     f"&& chmod 644 \"$t\" && mv -fT -- \"$t\" {q}", stdin=text, timeout=60)
        if r.exit_code != 0:
            raise TaskUnsupported(f"cannot write {inside} in the sandbox: {r.output.strip()[-200:]}")

    def copy_in(self, src: Path, dest: str) -> None:
        """A file or folder of a task (checked: no link leaves it) copied to `dest`, links kept as links."""
        raise NotImplementedError

    def start_verifier(self, tests: list[tuple[Path, str]]) -> None:
        """End the agent's phase: stop every process it left, then fresh /tests (holding `tests`, pairs of a
        task path and where it goes) and an empty /logs/verifier."""
        raise NotImplementedError

    def verifier_files(self, names: tuple[str, ...]) -> dict[str, FileRead]:
        """Files the verifier wrote in /logs/verifier, read after its processes are gone, never through a
        link, a FIFO or a device."""
        raise NotImplementedError

    def kill(self) -> None:
        """Stop whatever runs inside now (an interrupted run); close() still has to follow."""

    def close(self) -> None:
        raise NotImplementedError
