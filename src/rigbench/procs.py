"""Child processes that never outlive rigbench: a parent-death signal, process groups, and a watchdog.

Engines and sandbox commands run in their own process group (session), so one `killpg` reaches every
process they started. If rigbench itself is killed with SIGKILL no cleanup code runs, so each child also
gets PR_SET_PDEATHSIG (the kernel kills it when its parent dies) and, for a whole group, a watchdog
process that kills the group when rigbench's end of a pipe closes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A preexec_fn: the child gets `sig` when the thread that started it exits.

    Note the kernel ties the signal to the creating *thread*; callers start long-lived children from
    threads that live as long as the child should (the main thread, or a task's worker thread).
    A change of user id clears the signal, which is why sandboxes also pass setpriv --pdeathsig.
    """
    parent = os.getpid()

    def preexec() -> None:
        _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:   # the parent died before the prctl took effect
            os._exit(1)

    return preexec


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(leader: subprocess.Popen, grace: float) -> None:
    """SIGTERM to the leader's whole group, SIGKILL to what is left after `grace` seconds; the leader is
    reaped (a zombie would keep the group looking alive)."""
    kill_group(leader.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and (leader.poll() is None or group_alive(leader.pid)):
        time.sleep(0.05)
    kill_group(leader.pid, signal.SIGKILL)


# Runs as its own small process: blocks on stdin; when rigbench's end closes (rigbench exited, however it
# died) it stops the group: SIGTERM, then SIGKILL after the grace period.
_WATCHDOG = r"""
import os, signal, sys, time
pgid, grace = int(sys.argv[1]), float(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
sys.stdin.buffer.read()
def alive():
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
if alive():
    os.killpg(pgid, signal.SIGTERM)
    end = time.monotonic() + grace
    while alive() and time.monotonic() < end:
        time.sleep(0.1)
    if alive():
        os.killpg(pgid, signal.SIGKILL)
"""


class Watchdog:
    """Kills process group `pgid` if rigbench dies without stopping it (SIGKILL, a crash)."""

    def __init__(self, pgid: int, grace: float = 10.0):
        self.proc = subprocess.Popen([sys.executable, "-I", "-c", _WATCHDOG, str(pgid), str(grace)],
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)

    def disarm(self) -> None:
        """The group was stopped the normal way: the watchdog goes without touching anything."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        if self.proc.stdin:
            self.proc.stdin.close()


class Stopped(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: rigbench stops the way Ctrl-C stops it, whichever signal came."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def reason(self) -> str:
        return "Ctrl-C" if self.signum == signal.SIGINT else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return stop_exit_code(self.reason)


def stop_on_signals() -> None:
    """SIGINT, SIGTERM and SIGHUP raise Stopped in the main thread, once: cleanup that follows (stopping
    an engine, storing a run as interrupted) is not cut short by a second signal. SIGINT is set too because
    a shell starts background jobs with it ignored."""
    first = [True]

    def handler(signum, frame):
        if first[0]:
            first[0] = False
            raise Stopped(signum)

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


def stop_reason(e: BaseException) -> tuple[str, int]:
    """(what stopped us, exit code) for a KeyboardInterrupt, or click's Abort made from one."""
    s = e if isinstance(e, Stopped) else e.__cause__ if isinstance(e.__cause__, Stopped) else None
    return (s.reason, s.exit_code) if s else ("Ctrl-C", 130)


def stop_exit_code(reason: str) -> int:
    """The shell's convention, 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + (signal.Signals[reason] if reason in signal.Signals.__members__ else signal.SIGINT)
