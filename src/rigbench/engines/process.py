"""A server process: start with its log captured, wait for health, detect a crash, stop with no orphans.

The engine runs in its own process group; stop() sends SIGTERM to the whole group and SIGKILL after a
grace period. If rigbench dies without calling stop() (SIGKILL, a crash), the engine gets SIGKILL from
the kernel (a parent-death signal) and a watchdog process stops the rest of its group (vLLM's workers).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
from pydantic import BaseModel

from rigbench.errors import RigbenchError
from rigbench.procs import Watchdog, die_with_parent, kill_group, stop_group


class EngineError(RigbenchError):
    pass


class BinaryNotFound(EngineError):
    pass


class PortInUse(EngineError):
    pass


class ServerCrashed(EngineError):
    def __init__(self, message: str, returncode: int | None, log_tail: str):
        super().__init__(message)
        self.returncode = returncode
        self.log_tail = log_tail


class ServerTimeout(EngineError):
    pass


class LaunchSpec(BaseModel):
    engine: str
    argv: list[str]
    env: dict[str, str] = {}
    host: str = "127.0.0.1"
    port: int
    health_paths: list[str] = ["/health", "/v1/models"]
    model_name: str | None = None
    notes: list[str] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def shell(self) -> str:
        import shlex
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + " ".join(shlex.quote(a) for a in self.argv)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port(host: str, port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise PortInUse(f"port {port} on {host} is in use; pick another with --port (0 = any free port)") from None


# log lines that explain why an engine died, most specific first
_EXPLAIN = re.compile(
    r"(out of memory|CUDA error|cudaMalloc failed|failed to allocate|error loading model|failed to load model|"
    r"unknown model architecture|invalid magic|Segmentation fault|Aborted|Traceback|Error:|error:|exception|"
    r"ValueError|RuntimeError|not enough|failed)", re.I)


def explain(log_text: str) -> str:
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip()]
    hits = [ln for ln in lines if _EXPLAIN.search(ln)]
    return (hits[0] if hits else (lines[-1] if lines else "no output"))[:300]


class Server:
    """One engine process. Use as a context manager, or call start() / wait_healthy() / stop()."""

    def __init__(self, spec: LaunchSpec, log_path: Path):
        self.spec = spec
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.watchdog: Watchdog | None = None
        self._log = None

    @property
    def url(self) -> str:
        return self.spec.url

    def start(self) -> Server:
        check_port(self.spec.host, self.spec.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        # no-follow: a link left where the log goes does not send the engine's output elsewhere
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        self._log = os.fdopen(fd, "wb")
        try:
            self.proc = subprocess.Popen(self.spec.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env={**os.environ, **self.spec.env},
                                         start_new_session=True,  # its own process group: stop() kills all of it
                                         preexec_fn=die_with_parent())
        except FileNotFoundError:
            self._log.close()
            raise BinaryNotFound(f"{self.spec.argv[0]} not found; install the engine or pass its path") from None
        self.watchdog = Watchdog(self.proc.pid)
        return self

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            code = self.proc.returncode
            text = self.log_text()
            why = explain(text)
            sig = f" (signal {signal.Signals(-code).name})" if code and code < 0 else ""
            self._close_log()
            raise ServerCrashed(f"{self.spec.engine} exited with code {code}{sig}: {why} (log: {self.log_path})",
                                code, "\n".join(text.splitlines()[-40:]))

    def wait_healthy(self, timeout: float = 300.0, interval: float = 0.25) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                self.check_alive()
                for path in self.spec.health_paths:
                    try:
                        if client.get(self.url + path).status_code == 200:
                            return
                    except httpx.HTTPError:
                        pass
                if time.monotonic() > deadline:
                    tail = explain(self.log_text())
                    self.stop()
                    raise ServerTimeout(f"{self.spec.engine} did not become healthy in {timeout:.0f} s and was "
                                        f"stopped; last log line: {tail} (log: {self.log_path})")
                time.sleep(interval)

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM to the engine's whole process group, SIGKILL after `grace` seconds; nothing is left."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            stop_group(self.proc, grace)
        kill_group(self.proc.pid)   # children that outlived the leader (same process group)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.watchdog:
            self.watchdog.disarm()
            self.watchdog = None
        self._close_log()
        return self.proc.returncode

    def _close_log(self) -> None:
        if self._log and not self._log.closed:
            self._log.close()

    def metrics(self) -> str | None:
        try:
            r = httpx.get(self.url + "/metrics", timeout=5)
            return r.text if r.status_code == 200 else None
        except httpx.HTTPError:
            return None

    def start_healthy(self, timeout: float = 300.0) -> Server:
        """start(), then wait_healthy(); stopped again when it never gets there."""
        self.start()
        try:
            self.wait_healthy(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> Server:
        return self.start_healthy()

    def __exit__(self, *exc) -> None:
        self.stop()
