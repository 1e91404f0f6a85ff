"""One port of the host's loopback inside a container's own loopback, and nothing else.

An agent run in a Docker container must reach rigbench's recording gateway (on the host's 127.0.0.1) whatever
the task's network policy: a task without internet runs with `--network none`, and a daemon started with
`--bridge=none` has no bridge at all. So the container's network stays what the task says, and one listening
socket is made inside the container's network namespace: the calling thread enters the namespace
(setns(2), CLONE_NEWNET; root, as Docker is), binds 127.0.0.1:PORT there, and returns to the host's. The socket
keeps the namespace it was made in; the connections it accepts are relayed, from the host's namespace, to the
one host address given. The agent sees `http://127.0.0.1:PORT/...` as on the host; nothing else of the host's
network is reachable from the container.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()


class RelayError(OSError):
    pass


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise RelayError(err, f"setns: {os.strerror(err)} (entering a container's network needs root)")


def listen_in(pid: int, port: int, host: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket on `host:port` inside the network namespace of process `pid`."""
    with _lock:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
        try:
            _setns(target)
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((host, port))
                s.listen(64)
                s.setblocking(False)
            finally:
                _setns(home)      # must succeed: this thread goes on serving the host
        finally:
            os.close(home)
            os.close(target)
    return s


class Relay:
    """Connections accepted on a socket (made by `listen_in`) piped to `to` (host, port), from a thread of its own."""

    def __init__(self, sock: socket.socket, to: tuple[str, int]):
        self.sock, self.to = sock, to
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"relay-{to[1]}")
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()

    def start(self) -> Relay:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        with contextlib.suppress(OSError):
            self.sock.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def serve():
            self._server = await asyncio.start_server(self._pipe, sock=self.sock)
            self._ready.set()

        self.loop.run_until_complete(serve())
        self.loop.run_forever()
        if self._server:
            self._server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            r2, w2 = await asyncio.open_connection(*self.to)
        except OSError:
            writer.close()
            return

        async def copy(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(OSError, RuntimeError):
                    w.close()

        await asyncio.gather(copy(reader, w2), copy(r2, writer))
