"""The bubblewrap sandbox: one bwrap per command, all of a task's files on one size-limited tmpfs.

The task's files live on a tmpfs of the task's storage size, mounted in a private mount namespace that
no process of the host sees. rigbench keeps that namespace alive by holding a file descriptor to it (so it
disappears, with every byte written, when rigbench exits however it dies) and enters it for each command
(`nsenter --mount=/proc/self/fd/N`). Each command then drops to the unprivileged user `nobody`, gets its
rlimits, and starts bwrap with new user, pid, ipc and uts namespaces (and network, unless asked):

    ROOT (tmpfs, size = storage)     inside the agent's commands      inside the verifier's
      app/                           /app                             /app
      tmp/                           /tmp                             /tmp
      logs-agent/                    /logs/agent                      /logs/agent (read-only)
      solution/                      /solution (oracle only)          -
      verifier/ (its own tmpfs)
        tests, logs, home            -                                /tests, /logs/verifier, /root
      shm/ (its own small tmpfs)     /dev/shm                         /dev/shm

Everything else is the host's /usr, /etc, /opt read-only, a private /proc, a minimal /dev with a small
/dev/shm, and a read-only root. The verifier's folders are never mounted while the agent runs, and a
command's processes all die with its pid namespace when it returns, so the verifier starts alone.

With a root overlay (`writable=[...]`, what a task's Dockerfile needs: any WORKDIR, any COPY target), the
root is a folder on the same tmpfs instead, and /usr, /etc, /opt are overlays of the host's folders (kernel
overlayfs mounted by rigbench in the private namespace; bubblewrap 0.8 has no --overlay) with their upper
layer on the tmpfs as well:

    ROOT/rootfs (mode 1777, root)    /            (root-owned mount points; new folders anyone may make)
    ROOT/layers/usr, etc, opt        what was written below /usr, /etc, /opt (the host's stay untouched)
    ROOT/system/usr, etc, opt        the overlays, bound at /usr, /etc, /opt

The host's files stay owned by root and read-only to `nobody`; only the folders the task declares (created
in the upper layer, owned by nobody, before any command runs) are writable below them. So the verifier
still runs the host's own bash and python, and every byte written is on the task's tmpfs.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from rigbench.procs import kill_group
from rigbench.sandbox import readfiles
from rigbench.sandbox.base import (
    PATH,
    CommandResult,
    Limits,
    Sandbox,
    SandboxUnavailable,
    TaskUnsupported,
    result,
    run_capped,
)
from rigbench.sandbox.files import FileRead, remove_tree, tar_of

NOBODY = 65534
SYSTEM_DIRS = ("/usr", "/etc", "/opt")
SHM_MB = 64
ROOT_LINKS = ("bin", "sbin", "lib", "lib64", "lib32")   # links into /usr on a merged-/usr system
TOOLS = ("bwrap", "setpriv", "prlimit", "unshare", "nsenter")
# (inside, area under ROOT, writable) per phase
AGENT_MOUNTS = [("/app", "app", True), ("/tmp", "tmp", True), ("/logs/agent", "logs-agent", True)]
VERIFIER_MOUNTS = [("/app", "app", True), ("/tmp", "tmp", True), ("/logs/agent", "logs-agent", False),
                   ("/tests", "verifier/tests", True), ("/logs/verifier", "verifier/logs", True),
                   ("/root", "verifier/home", True)]
AREAS = ("app", "tmp", "logs-agent", "solution", "verifier/tests", "verifier/logs", "verifier/home")

# Run as root inside the new mount namespace: the tmpfs and its areas, owned by nobody below a root-owned
# top (so no command can rename an area or plant a link beside one). The verifier's folders are a second
# tmpfs of the same size (an agent that fills its disk cannot keep the tests from being copied in), and
# /dev/shm a small third one (bwrap's own /dev is an unlimited tmpfs, so it is made read-only).
_SETUP = f"""set -e
mount -t tmpfs -o "size=$2,mode=0755,nosuid,nodev" rigbench-sandbox "$1"
cd "$1"
mkdir verifier shm
mount -t tmpfs -o "size=$2,mode=0755,nosuid,nodev" rigbench-verifier verifier
mount -t tmpfs -o "size=$3,mode=1777,nosuid,nodev" rigbench-shm shm
mkdir -p {" ".join(AREAS)}
chown {NOBODY}:{NOBODY} {" ".join(AREAS)}
chmod 1777 tmp
if [ "$4" = 1 ]; then
  root="$1"; shift 4
  mkdir -m 1777 rootfs
  mkdir -p rootfs/app rootfs/tmp rootfs/logs/agent rootfs/logs/verifier rootfs/tests rootfs/solution rootfs/root \
    rootfs/proc rootfs/dev rootfs/run/rigbench-home
  for d in {" ".join(d.strip("/") for d in SYSTEM_DIRS)}; do
    [ -d "/$d" ] && mkdir -p "rootfs/$d" "layers/$d" "overlay-work/$d" "system/$d"
  done
  for l in {" ".join(ROOT_LINKS)}; do
    if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "rootfs/$l"; elif [ -d "/$l" ]; then mkdir "rootfs/$l"; fi
  done
  for p in "$@"; do
    case "$p" in
      {"|".join(f"{d}|{d}/*" for d in SYSTEM_DIRS)}) top="layers" ;;
      *) top="rootfs" ;;
    esac
    sub=""
    for part in $(echo "$p" | tr / " "); do
      sub="$sub/$part"
      if [ ! -e "$top$sub" ]; then
        mkdir "$top$sub"
        if [ -d "$sub" ] && [ "$top" = layers ]; then
          chown --reference="$sub" "$top$sub"; chmod --reference="$sub" "$top$sub"
        fi
      fi
    done
    chown {NOBODY}:{NOBODY} "$top$p"
  done
  for d in {" ".join(d.strip("/") for d in SYSTEM_DIRS)}; do
    [ -d "/$d" ] && mount -t overlay -o "lowerdir=/$d,upperdir=$root/layers/$d,workdir=$root/overlay-work/$d" \
      "rigbench-$d" "system/$d"
  done
fi
echo ready
read _
"""


def _clean_path(p: str) -> str:
    """An absolute, normalised path with no `..` and only printable characters (it goes to a shell)."""
    q = os.path.normpath(p)
    if not q.startswith("/") or ".." in Path(q).parts or not q.isprintable() or q == "/":
        raise TaskUnsupported(f"{p!r} cannot be a folder of the sandbox (an absolute path without '..')")
    return q


@functools.cache
def bwrap_available() -> str | None:
    """None when bubblewrap can run a sandbox here (tried once), else why not."""
    missing = [t for t in TOOLS if not shutil.which(t)]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install bubblewrap util-linux)"
    if os.geteuid() != 0:
        return "the bubblewrap sandbox needs root: it mounts each task's tmpfs and runs commands as nobody"
    try:
        sb = BwrapSandbox(Limits(storage_mb=16), Path(tempfile.mkdtemp(prefix="rigbench-probe-")), check=False)
    except SandboxUnavailable as e:
        return str(e)
    try:
        r = sb.run("echo ok", timeout=30)
    finally:
        sb.close()
    if r.output.strip() != "ok":
        return f"bubblewrap cannot start a sandbox here ({r.output.strip()[-200:]}); are user namespaces enabled?"
    return None


class BwrapSandbox(Sandbox):
    kind = "bwrap"

    def __init__(self, limits: Limits, root: Path, check: bool = True, writable: list[str] | None = None):
        """`writable`: a root overlay where these folders (absolute paths) are the sandbox user's; None keeps
        the read-only root with /app, /tmp and /logs/agent as the only writable folders."""
        if check and (why := bwrap_available()):
            raise SandboxUnavailable(why)
        super().__init__(limits, root)
        self.overlay = writable is not None
        self._declared = [_clean_path(p) for p in writable or []]
        closed = [str(p) for p in self.root.resolve().parents if not p.stat().st_mode & 0o001]
        if closed:
            raise SandboxUnavailable(f"the sandbox user cannot pass through {closed[0]} to reach {root}; "
                                     f"choose a work folder under /tmp")
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._solution = False
        self._ns_fd = self._new_namespace()

    def _new_namespace(self) -> int:
        """A private mount namespace holding the task's tmpfs; returns an fd that keeps it alive."""
        p = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _SETUP, "sh",
                              str(self.root), f"{self.limits.storage_mb}m", f"{min(SHM_MB, self.limits.storage_mb)}m",
                              "1" if self.overlay else "0", *self._declared],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             start_new_session=True)
        try:
            line = p.stdout.readline()
            if line.strip() != b"ready":
                p.wait(10)
                raise SandboxUnavailable(f"cannot mount the task's tmpfs: {p.stderr.read().decode()[-200:]}")
            return os.open(f"/proc/{p.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            p.stdin.close()   # the namespace lives on through the fd; the process that made it goes
            p.wait(10)
            p.stdout.close()
            p.stderr.close()

    # ---- commands ---------------------------------------------------------------------------------

    def _mounts(self) -> list[tuple[str, str, bool]]:
        if self.phase == "verifier":
            return [(self.verifier_home if m == "/root" else m, a, w) for m, a, w in VERIFIER_MOUNTS]
        return AGENT_MOUNTS + ([("/solution", "solution", True)] if self._solution else [])

    @property
    def verifier_home(self) -> str:
        """A fresh HOME the agent never had: /root, unless the task works there (its files must stay visible)."""
        wd = Path(self.workdir)
        return "/run/rigbench-home" if wd == Path("/root") or Path("/root") in wd.parents else "/root"

    def _writable(self, inside: str) -> bool:
        if self.overlay:
            return True     # the file system's owners and modes decide, as in a container
        p = Path(inside)
        return any(w and (p == Path(m) or Path(m) in p.parents) for m, _, w in self._mounts())

    def _argv(self, command: str, network: bool, timeout: float, env: dict[str, str]) -> list[str]:
        lim = self.limits
        cpu_s = max(1, int(timeout * lim.cpus) + 1)   # CPU seconds per process: the task's CPUs, no more
        a = ["nsenter", f"--mount=/proc/self/fd/{self._ns_fd}", "--",
             # the command dies with rigbench (setpriv sets it after the change of user, which would clear it)
             "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--pdeathsig", "SIGKILL",
             "prlimit", f"--nproc={lim.max_procs}", f"--as={lim.memory_mb * 2**20 * 2}", "--core=0",
             f"--cpu={cpu_s}",
             "bwrap", "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "sandbox",
             "--die-with-parent", "--new-session", "--clearenv", "--proc", "/proc",
             "--dev", "/dev", "--dir", "/dev/shm", "--bind", str(self.root / "shm"), "/dev/shm",
             "--remount-ro", "/dev"]
        if not network:
            a.append("--unshare-net")
        if self.overlay:
            a[a.index("--proc"):a.index("--proc")] = ["--bind", str(self.root / "rootfs"), "/"]
        for d in SYSTEM_DIRS:
            if os.path.isdir(d):
                a += ["--bind", str(self.root / "system" / d.strip("/")), d] if self.overlay else ["--ro-bind", d, d]
        for link in ROOT_LINKS:
            p = Path("/" + link)
            if p.is_symlink():
                if not self.overlay:     # the root overlay has its links already
                    a += ["--symlink", os.readlink(p), str(p)]
            elif p.is_dir():
                a += ["--ro-bind", str(p), str(p)]
        for inside, area, writable in self._mounts():
            a += ["--bind" if writable else "--ro-bind", str(self.root / area), inside]
        if not self.overlay:
            a += ["--remount-ro", "/"]   # nothing outside the task's tmpfs is writable (bwrap's own root is unlimited)
        home = self.verifier_home if self.phase == "verifier" else "/app"
        for k, v in {"PATH": PATH, "HOME": home, "TERM": "dumb", "LANG": "C.UTF-8", **env}.items():
            a += ["--setenv", k, v]
        a += ["--chdir", self.workdir if self._writable(self.workdir) else "/", "--", "bash", "-c", command]
        return a

    def run(self, command: str, timeout: float = 120.0, stdin: str | bytes | None = None, network: bool | None = None,
            env: dict[str, str] | None = None) -> CommandResult:
        """Run one shell command inside; when it returns (or times out) every process it started is gone.
        `network`: None follows the phase's policy (`self.network`)."""
        net = self.network[self.phase] if network is None else network
        argv = self._argv(command, net, timeout, {**self.env, **(env or {})})
        data = stdin.encode() if isinstance(stdin, str) else stdin
        # bwrap itself (pid 1 inside) gets no host environment either: /proc/1/environ is readable there
        c = run_capped(argv, data, timeout, self.limits.output_bytes, {"PATH": PATH},
                       on_start=self._track, pass_fds=(self._ns_fd,))
        with self._lock:
            self._procs = {p for p in self._procs if p.poll() is None}
        return result(c)

    def _track(self, p: subprocess.Popen) -> None:
        with self._lock:
            self._procs.add(p)

    def check_dir(self, inside: str) -> None:
        if not self._writable(inside):
            writable = ", ".join(m for m, _, w in self._mounts() if w)
            raise TaskUnsupported(f"{inside} is outside the sandbox's writable folders ({writable})")

    def write_file(self, inside: str, text: str) -> None:
        self.check_dir(inside)
        super().write_file(inside, text)

    def copy_in(self, src: Path, dest: str) -> None:
        """Unpacked by a command inside from a tar of the (checked) task path: links stay links, and nothing
        on the host is written."""
        if dest == "/solution" or dest.startswith("/solution/"):
            self._solution = True
        self.check_dir(dest)
        if src.is_dir() and not src.is_symlink():
            target, data = dest, tar_of(src, ".")
        else:
            target, data = str(Path(dest).parent), tar_of(src, Path(dest).name)
        q = shlex.quote(target)
        r = self.run(f"mkdir -p -- {q} && tar -x --no-same-owner --no-same-permissions -C {q} -f -", stdin=data,
                     timeout=300)
        if r.exit_code != 0:
            raise TaskUnsupported(f"copying {src.name} to {dest} failed: {r.output.strip()[-200:]}")

    # ---- the verifier's phase -----------------------------------------------------------------------

    def start_verifier(self, tests: list[tuple[Path, str]]) -> None:
        # the agent's commands each ended with their pid namespace; an interrupted one is killed here
        self.kill()
        self.phase = "verifier"
        for src, dest in tests:
            self.copy_in(src, dest)

    def verifier_files(self, names: tuple[str, ...], limit: int = 65536) -> dict[str, FileRead]:
        """Read in the task's namespace by rigbench itself, with no-follow opens (see readfiles)."""
        argv = ["nsenter", f"--mount=/proc/self/fd/{self._ns_fd}", "--", sys.executable, "-I", "-c",
                Path(readfiles.__file__).read_text(), str(self.root / "verifier" / "logs"), str(limit), *names]
        c = run_capped(argv, None, 60, 4 * limit * len(names) + 4096, {"PATH": PATH}, pass_fds=(self._ns_fd,))
        try:
            return {k: FileRead(**v) for k, v in json.loads(c.output).items()}
        except ValueError:
            return {n: FileRead(error=f"could not be read ({c.output.decode(errors='replace')[-200:]})")
                    for n in names}

    # ---- the end ------------------------------------------------------------------------------------

    def kill(self) -> None:
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            kill_group(p.pid)

    def close(self) -> None:
        self.kill()
        if self._ns_fd >= 0:
            os.close(self._ns_fd)   # the last reference: the namespace and its tmpfs are freed
            self._ns_fd = -1
        remove_tree(self.root)
