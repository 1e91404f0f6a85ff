"""The Docker sandbox: the task's own image, no network, the task's limits, and a new container for the verifier.

The agent's container has no bind mount at all: nothing it writes is a host file. Its main process waits
on stdin from the `docker run -i` client that rigbench holds, so the container stops when rigbench closes
that pipe or dies. When the agent is done, the container is killed (SIGKILL to its init ends its whole pid
namespace at once, background processes included), committed to an image and removed; the verifier runs
in a new container of that image, with /tests (a copy of the task's tests) and /logs/verifier (empty)
bind-mounted from folders rigbench made for it. The reward is read from that folder by rigbench after the
verifier's container is gone, with no-follow opens. The agent's container cannot use --rm (it is committed
after it stops), so one left stopped by a rigbench that was killed is removed by the next sandbox.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

from rigbench.sandbox.base import (
    CommandResult,
    Limits,
    Sandbox,
    SandboxUnavailable,
    TaskUnsupported,
    result,
    run_capped,
)
from rigbench.sandbox.files import FileRead, copy_task_path, read_regular, remove_tree, tar_of

DRIVERS_WITH_SIZE = "overlay2 on xfs mounted with pquota, btrfs, zfs or devicemapper"


def docker_available() -> str | None:
    """None when a Docker daemon answers here, else why not."""
    try:
        r = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                           timeout=10)
    except FileNotFoundError:
        return "the docker client is not installed"
    except subprocess.TimeoutExpired:
        return "the Docker daemon did not answer in 10 s"
    return None if r.returncode == 0 and r.stdout.strip() else "no Docker daemon is running"


_storage_probe: dict[str, str | None] = {}


def storage_limit_unsupported(image: str) -> str | None:
    """None when the daemon can cap a container's disk (--storage-opt size), else why not (tried once per
    daemon, with any image it has). The size is large because btrfs counts the image's own bytes too."""
    host = os.environ.get("DOCKER_HOST", "")
    if host not in _storage_probe:
        name = f"rigbench-probe-{os.getpid()}"
        r = _docker("create", "--name", name, "--storage-opt", "size=100g", image, "true", timeout=120)
        _docker("rm", "-f", name, timeout=60)
        driver = _docker("info", "-f", "{{.Driver}}", timeout=10).stdout.decode().strip()
        _storage_probe[host] = None if r.returncode == 0 else (
            f"the Docker daemon's storage driver ({driver}) cannot limit a container's disk ({DRIVERS_WITH_SIZE} can)")
        if _storage_probe[host] is None and not _storage_limit_holds(image):
            _storage_probe[host] = (f"the Docker daemon's storage driver ({driver}) accepts --storage-opt size but "
                                    f"did not enforce it (a probe container wrote past its limit; on btrfs, check "
                                    f"`btrfs qgroup show` and rescan)")
    return _storage_probe[host]


def _storage_limit_holds(image: str) -> bool:
    """Write 128 MiB into a container limited to 64 MiB above its image (btrfs counts the image): accepting the
    flag is not enough, a driver can take it and not enforce it (seen: btrfs with inconsistent qgroups)."""
    size = int(_docker("image", "inspect", "-f", "{{.Size}}", image, timeout=30).stdout.decode().strip() or 0)
    limit = size + 64 * 2**20
    r = _docker("run", "--rm", "--network", "none", "--storage-opt", f"size={limit}", image, "sh", "-c",
                f"head -c {128 * 2**20} /dev/zero > /rigbench-storage-probe", timeout=120)
    return r.returncode != 0


def _no_network_reason() -> str | None:
    """None when the daemon has its default bridge network (a container's own network stack, NAT to the
    outside; never the host's), else why not."""
    r = _docker("network", "inspect", "bridge", timeout=30)
    return None if r.returncode == 0 else "the Docker daemon has no bridge network (started with --bridge=none?)"


def _ensure_image(image: str, task: str, timeout: float) -> str:
    """'already loaded' or 'pulled'; TaskUnsupported('image not found ...') when neither works."""
    if _docker("image", "inspect", image, timeout=60).returncode == 0:
        return "already loaded"
    try:
        p = _docker("pull", image, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise TaskUnsupported(f"{task}: image not found: pulling {image} ran past {timeout:.0f} s") from None
    if p.returncode != 0:
        why = p.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise TaskUnsupported(f"{task}: image not found: {image} is not loaded and `docker pull` failed "
                              f"({why[0][-200:]}); load it (docker load) or build it from the Dockerfile with --build")
    return "pulled"


LABEL = "rigbench.sandbox.pid"


def _remove_stale() -> None:
    """Agent containers a killed rigbench left stopped (their owner is gone)."""
    ps = _docker("ps", "-a", "--filter", f"label={LABEL}", "--filter", "status=exited", "--format",
                 f'{{{{.ID}}}} {{{{.Label "{LABEL}"}}}}', timeout=60).stdout.decode().split("\n")
    for line in ps:
        cid, _, pid = line.partition(" ")
        if cid and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _docker("rm", "-f", cid, timeout=60)


def _docker(*args: str, timeout: float = 120, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], input=stdin, capture_output=True, timeout=timeout)


class DockerSandbox(Sandbox):
    kind = "docker"

    def __init__(self, limits: Limits, root: Path, dockerfile: Path | None, context: Path, name: str,
                 image: str | None = None, build: bool = False, build_timeout: float = 900,
                 network: dict[str, bool] | None = None):
        """`image` (task.toml's docker_image) is used when given, pulled if the daemon lacks it; the Dockerfile
        is built only without one, or with `build` (Harbor's --force-build). `network`: per phase."""
        if why := docker_available():
            raise SandboxUnavailable(why)
        super().__init__(limits, root)
        self.root.chmod(0o700)
        self.name = f"rigbench-{name}-{os.getpid()}-{int(time.time() * 1000) % 10**8}".lower()
        self._clients: dict[str, subprocess.Popen] = {}
        self._relays: list = []          # sandbox.netns relays into the agent's container
        self._committed: str | None = None
        self.network = dict(network or self.network)
        if any(self.network.values()) and (why := _no_network_reason()):
            self.notes.append(f"no network for the task: {why}")
            self.network = {k: False for k in self.network}
        if image and not build:
            self.image = image
            self.notes.append(f"image {image} ({_ensure_image(image, name, build_timeout)})")
        elif dockerfile is None:
            raise TaskUnsupported(f"{name} has neither a docker_image nor a Dockerfile")
        else:
            self.image = f"rigbench-task-{name}".lower()
            try:
                b = _docker("build", "-q", "-t", self.image, "-f", str(dockerfile), str(context), timeout=build_timeout)
            except subprocess.TimeoutExpired:
                raise TaskUnsupported(f"{name}: docker build ran past its {build_timeout:.0f} s "
                                      f"(build_timeout_sec)") from None
            if b.returncode != 0:
                raise TaskUnsupported(f"{name}: docker build failed: "
                                      f"{b.stderr.decode(errors='replace').strip()[-300:]}")
            self.notes.append(f"image built from {dockerfile}")
        self.workdir = _docker("image", "inspect", "-f", "{{.Config.WorkingDir}}", self.image).stdout.decode().strip() \
            or "/"
        self._storage: list[str] = []   # --storage-opt for the agent's container, when the daemon can
        if why := storage_limit_unsupported(self.image):
            if limits.storage_declared:
                raise TaskUnsupported(f"{name} declares {limits.storage_mb} MiB of storage and {why}; "
                                      f"run it with --sandbox bwrap")
            self.notes.append(f"disk not limited: {why}")
        else:
            self._storage = ["--storage-opt", f"size={limits.storage_mb}m"]
        _remove_stale()
        self._start(self.name, self.image, [], remove=False, storage=self._storage, network=self.network["agent"])

    def _start(self, name: str, image: str, mounts: list[str], remove: bool, storage: list[str],
               network: bool) -> None:
        lim = self.limits
        argv = ["docker", "run", "-i", *(["--rm"] if remove else []), "--name", name,
                "--label", f"{LABEL}={os.getpid()}", "--network", "bridge" if network else "none", f"--cpus={lim.cpus}",
                f"--memory={lim.memory_mb}m", f"--memory-swap={lim.memory_mb}m", f"--pids-limit={lim.max_procs}",
                "--ulimit", "core=0", "--cap-drop", "MKNOD", "--security-opt", "no-new-privileges",
                *storage, *mounts, "--entrypoint", "sh", image, "-c", "read _"]
        # the container lives as long as this client's stdin: closed by close(), or by the kernel when
        # rigbench dies, however it dies
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             start_new_session=True)
        self._clients[name] = p
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise SandboxUnavailable(f"docker run failed: {p.stderr.read().decode(errors='replace')[-300:]}")
            if _docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() == b"true":
                return
            time.sleep(0.1)
        raise SandboxUnavailable(f"container {name} did not start in 120 s")

    def _stop(self, name: str) -> None:
        p = self._clients.pop(name, None)
        _docker("rm", "-f", name, timeout=120)
        if p is not None:
            if p.stdin:
                p.stdin.close()
            p.wait(30)
            if p.stderr:
                p.stderr.close()

    def reach_host(self, port: int) -> None:
        """One port of the host's loopback on the container's own (sandbox.netns): the container's network stays
        the task's (none without internet), and the agent reaches the gateway at the address it was given."""
        from rigbench.sandbox.netns import Relay, RelayError, listen_in

        pid = int(_docker("inspect", "-f", "{{.State.Pid}}", self.name).stdout or 0)
        if not pid:
            raise SandboxUnavailable(f"container {self.name} is not running")
        try:
            self._relays.append(Relay(listen_in(pid, port), ("127.0.0.1", port)).start())
        except (RelayError, OSError) as e:
            raise SandboxUnavailable(f"the agent in {self.name} cannot be given the gateway on port {port}: {e}") \
                from None

    @property
    def container(self) -> str:
        return self.name + "-verifier" if self.phase == "verifier" else self.name

    def run(self, command: str, timeout: float = 120.0, stdin: str | bytes | None = None, network: bool | None = None,
            env: dict[str, str] | None = None) -> CommandResult:
        """`network` is the container's, set when it started (the phase's policy); a command cannot change it."""
        argv = ["docker", "exec", "-i", "-w", self.workdir]
        for k, v in {**self.env, **(env or {})}.items():
            argv += ["-e", f"{k}={v}"]
        argv += [self.container, "bash", "-c", command]
        data = stdin.encode() if isinstance(stdin, str) else stdin
        c = run_capped(argv, data, timeout, self.limits.output_bytes, dict(os.environ))
        if c.timed_out:
            # every process but the container's init goes; the files stay for the verifier
            _docker("exec", self.container, "kill", "-9", "-1", timeout=30)
        return result(c)

    def copy_in(self, src: Path, dest: str) -> None:
        if src.is_dir() and not src.is_symlink():
            target, data = dest, tar_of(src, ".")
        else:
            target, data = str(Path(dest).parent), tar_of(src, Path(dest).name)
        self.run(f"mkdir -p -- {shlex.quote(target)}", timeout=60)
        r = _docker("cp", "-", f"{self.container}:{target}", stdin=data, timeout=300)
        if r.returncode != 0:
            raise TaskUnsupported(f"copying {src.name} to {dest} failed: {r.stderr.decode(errors='replace')[-200:]}")

    def start_verifier(self, tests: list[tuple[Path, str]]) -> None:
        # every process the agent left dies at once with the container's init, before anything is saved
        _docker("kill", self.name, timeout=60)
        _docker("wait", self.name, timeout=60)
        self._committed = f"{self.name}-verify"
        c = _docker("commit", self.name, self._committed, timeout=900)
        if c.returncode != 0:
            raise SandboxUnavailable(f"docker commit failed: {c.stderr.decode(errors='replace')[-300:]}")
        self._stop(self.name)
        vt, vl = self.root / "verifier" / "tests", self.root / "verifier" / "logs"
        vt.mkdir(parents=True)
        vl.mkdir(parents=True)
        for src, dest in tests:
            rel = Path(dest).relative_to("/tests")
            copy_task_path(src, vt / rel)
        self.phase = "verifier"
        storage = []
        if self._storage:
            # btrfs counts the image's bytes in the size, and this image holds what the agent wrote
            size = int(_docker("image", "inspect", "-f", "{{.Size}}", self._committed).stdout or 0)
            storage = ["--storage-opt", f"size={self.limits.storage_mb + size // 2**20}m"]
        self._start(self.container, self._committed, ["-v", f"{vt}:/tests", "-v", f"{vl}:/logs/verifier"],
                    remove=True, storage=storage, network=self.network["verifier"])

    def verifier_files(self, names: tuple[str, ...], limit: int = 65536) -> dict[str, FileRead]:
        self._stop(self.container)   # the verifier's processes are gone before its files are read
        return read_regular(self.root / "verifier" / "logs", names, limit)

    def kill(self) -> None:
        for relay in self._relays:
            relay.stop()
        self._relays.clear()
        for name in list(self._clients):
            self._stop(name)

    def close(self) -> None:
        self.kill()
        if self._committed:
            _docker("rmi", "-f", self._committed, timeout=300)
        remove_tree(self.root)
