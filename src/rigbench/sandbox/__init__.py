"""Sandboxes for untrusted commands: bubblewrap (the default) and Docker. Used by `tasks` and `agent`; knows
neither (a sandbox gets limits, an image to build, and commands to run).

Threat model. Two parties are untrusted: the agent (any command it runs, any file it writes, processes
it leaves behind) and the task folder (someone else's Dockerfile, tests and links). The host (its files,
its disk, its processes) and the verdict are what is protected.

Contained:
- Host files. No host-side file operation touches anything the sandbox or a task controls through a
  link: task folders with a link that leaves them (or a FIFO, device, socket) are refused when loaded;
  task files enter the sandbox as a tar unpacked by a command inside (bubblewrap) or by `docker cp`;
  rigbench writes files by a command inside; the verifier's reward is read with no-follow opens that
  accept only a regular file below a size limit. Sandboxed processes see the host's /usr, /etc, /opt
  read-only (bubblewrap) or only their image (Docker), never /root, /home or the host's /tmp.
- The verdict. The verifier runs after every process of the agent is gone (bubblewrap: each command's
  pid namespace ends with it; Docker: the agent's container is committed and removed, the verifier gets a
  new one), with /tests, /logs/verifier and (bubblewrap) HOME fresh folders the agent never had mounted.
  The reward is what the verifier wrote in that run; a missing, unreadable or malformed one is an error.
- Resources (per task, from task.toml [environment]): storage (bubblewrap: the task's files live on one
  tmpfs of that size in a private mount namespace, the verifier's folders on a second one, so a full disk
  stops there and the host's disk is not touched; / and /dev are read-only and /dev/shm is small. Docker:
  --storage-opt size where the daemon's driver supports it, else a task that declares storage is
  refused), memory (bubblewrap: address space per process; Docker: the container's cgroup), CPUs
  (bubblewrap: CPU seconds per process; Docker: --cpus), processes (RLIMIT_NPROC / --pids-limit), wall
  time per command and per phase, and the output kept per command (the rest is read and dropped).
- Lifetime. Every sandbox process dies with rigbench: parent-death signals on the commands, the task's
  mount namespace held only by rigbench's file descriptor, Docker containers tied to a client's stdin
  (an agent's container a killed rigbench left stopped is removed by the next Docker sandbox).
- Network: per phase, as the runner sets it (Harbor's policy: the task's allow_internet, default true, for
  the agent's commands and the verifier; --agent-network / --verifier-network override it). Off is a new
  network namespace (bubblewrap) or `--network none` (Docker); on is the host's network namespace under
  bubblewrap and the daemon's bridge network under Docker. --agent-cmd always has it (it must reach the
  model endpoint). Rigbench's own setup commands (Dockerfile RUN steps under bubblewrap) never do.

Not contained:
- A command with the network on under bubblewrap (--agent-cmd always; the agent and the verifier when the
  policy says so) shares the host's network namespace: it can reach any service listening on the host,
  abstract Unix sockets included.
- The bubblewrap root overlay lets the agent make new folders at / (not replace the mount points, which are
  root's in a sticky folder); the verifier sees them, as it would in a container.
- Under Docker the agent is root in the task's image: it can change the programs the verifier then runs
  (bash, python, pytest), so a Docker verdict trusts the image's own files. Under bubblewrap those come
  from the host's read-only /usr.
- What the verifier itself runs from the agent's folders (it tests the agent's code, after all).
- bubblewrap's process limit is per user (nobody) across the host, and its memory limit per process;
  CPU share and total memory need cgroups (Docker).
- Kernel exploits, and the Docker daemon's own security.

How it is tested: tests/test_sandbox_attacks.py runs each attack class for real, with bubblewrap always
(CI installs it) and with Docker where a daemon runs, and asserts a host sentinel's hash and mtime, the
host's free disk, leftover processes, and that the verdict is the verifier's.
"""

from rigbench.sandbox.base import CommandResult, Limits, Sandbox, SandboxUnavailable, TaskUnsupported
from rigbench.sandbox.bwrap import BwrapSandbox, bwrap_available
from rigbench.sandbox.docker import DockerSandbox, docker_available
from rigbench.sandbox.files import FileRead, unsafe_entries

__all__ = ["BwrapSandbox", "CommandResult", "DockerSandbox", "FileRead", "Limits", "Sandbox", "SandboxUnavailable",
           "TaskUnsupported", "bwrap_available", "docker_available", "unsafe_entries"]
