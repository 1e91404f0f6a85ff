"""Models on the Hugging Face Hub or any HTTP server, planned from their headers alone.

`hf://ORG/REPO[@REVISION][/FILE]`, `ORG/REPO:QUANT` (as `llama-server -hf` takes it) and plain `https://` URLs of a
`.gguf` or a `config.json`. What the planner needs is in each file's header: a GGUF's key-values and tensor table,
a safetensors file's JSON header (names, dtypes, shapes, offsets). Those are read with HTTP range requests, never
the tensor data, and written into a local mirror where each weight file holds its real header and is extended to
its real size as a sparse file (zeros that take no disk). The readers that plan local files then read the mirror
unchanged, so a remote plan is the local plan of the same files.

The mirror is the header cache: one folder per repo and commit, reused offline. The Hub's API (file list, sizes,
the commit a revision points at, auth) goes through `huggingface_hub`, which honours `HF_ENDPOINT` and `HF_TOKEN`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx

from rigbench.errors import ModelFileError, RigbenchError

DEFAULT_ENDPOINT = "https://huggingface.co"
SMALL_FILES = ("config.json", "model.safetensors.index.json", "quantization_config.json", "quant_config.json")
FIRST_READ = 256 * 1024          # a GGUF header without a tokenizer fits; a 250k-token vocabulary takes a few reads
MIN_READ = 64 * 1024
SPLIT = re.compile(r"(.*)-(\d{5})-of-(\d{5})\.gguf$")
QUANT_IN_NAME = re.compile(r"(?i)(?:^|[-_.])((?:UD-)?(?:I?Q\d[\w]*?|BF16|F16|F32|MXFP4(?:_MOE)?))"
                           r"(?:-\d{5}-of-\d{5})?\.gguf$")


class RemoteError(RigbenchError):
    """A remote model that cannot be read: offline, no access, not found, or a server without range support."""


class OfflineError(RemoteError):
    """The server cannot be reached (or HF_HUB_OFFLINE is set) and the header cache does not hold the model."""


class ChooseQuantError(RigbenchError):
    """A repo with several GGUF quants and none named: the message lists them with their sizes."""


@dataclass
class GgufQuant:
    quant: str
    files: list[str]
    bytes: int


@dataclass
class Reader:
    """Range reads of one remote file; counts what came over the wire."""

    client: httpx.Client
    url: str
    size: int = 0
    bytes_read: int = 0

    def read(self, start: int, length: int) -> bytes:
        if self.size and start >= self.size:
            return b""
        end = start + length - 1
        if self.size:
            end = min(end, self.size - 1)
        try:
            r = self.client.get(self.url, headers={"Range": f"bytes={start}-{end}"})
        except httpx.HTTPError as e:
            raise OfflineError(f"cannot reach {_origin(self.url)} ({type(e).__name__}); connect, or plan a local "
                               f"file or catalog name") from None
        _raise_for_status(r, self.url)
        if r.status_code != 206:
            raise RemoteError(f"{_origin(self.url)} ignores HTTP range requests (answered {r.status_code} to a "
                              f"range); download the file and plan the local copy")
        m = re.match(r"bytes \d+-\d+/(\d+)", r.headers.get("content-range", ""))
        if m:
            self.size = int(m.group(1))
        self.bytes_read += len(r.content)
        return r.content


@dataclass
class Session:
    """One planning's HTTP state: the client (with the token's header), and bytes read per file."""

    headers: dict = field(default_factory=dict)
    readers: list[Reader] = field(default_factory=list)

    def __post_init__(self):
        self.client = httpx.Client(headers=self.headers, follow_redirects=True, timeout=30)

    def reader(self, url: str) -> Reader:
        r = Reader(self.client, url)
        self.readers.append(r)
        return r

    def small(self, url: str) -> bytes | None:
        """A small file (config.json, an index) whole; None when the server has no such file."""
        try:
            r = self.client.get(url)
        except httpx.HTTPError as e:
            raise OfflineError(f"cannot reach {_origin(url)} ({type(e).__name__}); connect, or plan a local file "
                               f"or catalog name") from None
        if r.status_code == 404:
            return None
        _raise_for_status(r, url)
        self.readers.append(Reader(self.client, url, len(r.content), len(r.content)))
        return r.content

    @property
    def bytes_read(self) -> int:
        return sum(r.bytes_read for r in self.readers)


def _origin(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}"


def _raise_for_status(r: httpx.Response, url: str) -> None:
    if r.status_code in (401, 403):
        raise RemoteError(f"{url} needs access ({r.status_code}): set HF_TOKEN to a token that may read it "
                          f"(and accept the model's licence on its page)")
    if r.status_code == 404:
        raise RemoteError(f"{url} not found (404): check the repo id, file name and revision")
    if r.status_code >= 400:
        raise RemoteError(f"{url} answered {r.status_code}; try again later or plan a local copy")


# ---- headers ---------------------------------------------------------------------------------------

class _NeedMore(Exception):
    """`buf` ended inside the header; `more` is a guess of the bytes still to come (the rest of the array or
    tensor table being read, at the mean size of the entries read so far)."""

    def __init__(self, more: int):
        super().__init__(more)
        self.more = more


TENSOR_INFO_GUESS = 80       # bytes per tensor-table entry before one is seen: a name of ~40 characters, 2-3 dims


def gguf_header_length(buf: bytes) -> int:
    """Bytes from the start of a GGUF up to its tensor data (header, key-values, tensor infos, alignment);
    raises _NeedMore when `buf` ends first. Layout: gguf.md in ggml (v2/v3: 64-bit counts)."""
    pos = 0
    n_tensors = 0
    in_table = False

    def take(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(buf):
            raise _NeedMore(pos + n - len(buf) + (0 if in_table else n_tensors * TENSOR_INFO_GUESS))
        b = buf[pos:pos + n]
        pos += n
        return b

    def u32() -> int:
        return struct.unpack("<I", take(4))[0]

    def u64() -> int:
        return struct.unpack("<Q", take(8))[0]

    def string() -> bytes:
        return take(u64())

    fixed = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}   # gguf_type -> bytes

    def entries(n: int, read_one, first_guess: int) -> None:
        """Read `n` variable-size entries; on running out, guess the rest from the mean entry so far."""
        start = pos
        for k in range(n):
            at = pos
            try:
                read_one()
            except _NeedMore as e:
                mean = (at - start) / k if k else first_guess
                rest = max(e.more, int((n - k) * mean * 1.02)) + (0 if in_table else n_tensors * TENSOR_INFO_GUESS)
                raise _NeedMore(at + rest - len(buf)) from None

    def value(t: int):
        if t in fixed:
            return take(fixed[t])
        if t == 8:
            return string()
        if t == 9:
            it, n = u32(), u64()
            if it in fixed:
                take(fixed[it] * n)
            else:
                entries(n, lambda: value(it), 16)
            return None
        raise ModelFileError(f"GGUF value type {t} unknown; is the file a GGUF?")

    if take(4) != b"GGUF":
        raise ModelFileError("not a GGUF file (bad magic); point at a .gguf")
    version = u32()
    if version < 2:
        raise ModelFileError(f"GGUF version {version} is too old to read; use a file converted by a current llama.cpp")
    n_tensors, n_kv = u64(), u64()
    alignment = 32
    for _ in range(n_kv):
        key = string()
        t = u32()
        v = value(t)
        if key == b"general.alignment" and v is not None:
            alignment = struct.unpack("<I", v)[0]
    in_table = True

    def tensor_info() -> None:
        string()
        dims = u32()
        take(8 * dims + 4 + 8)

    entries(n_tensors, tensor_info, TENSOR_INFO_GUESS)
    return -(-pos // alignment) * alignment


def gguf_header(reader: Reader, first: int = FIRST_READ) -> bytes:
    """The header of a remote GGUF: a first read, then what the parser guesses is still missing (a few reads
    for a 250k-token vocabulary, a few KiB past the header's end)."""
    buf = reader.read(0, first)
    while True:
        try:
            n = gguf_header_length(buf)
            return buf[:n]
        except _NeedMore as e:
            if reader.size and len(buf) >= reader.size:
                raise ModelFileError(f"{reader.url} ends inside its GGUF header; the file is truncated") from None
            buf += reader.read(len(buf), max(e.more, MIN_READ))


def safetensors_header(reader: Reader) -> bytes:
    """The 8-byte length and the JSON header of a safetensors file (its format: a u64 then the JSON)."""
    first = reader.read(0, 64 * 1024)
    if len(first) < 8:
        raise ModelFileError(f"{reader.url} is not a safetensors file (shorter than 8 bytes)")
    n = struct.unpack("<Q", first[:8])[0]
    if n > 100 * 1024 * 1024:
        raise ModelFileError(f"{reader.url} is not a safetensors file (header length {n})")
    if len(first) < 8 + n:
        first += reader.read(len(first), 8 + n - len(first))
    return first[:8 + n]


def _write_sparse(path: Path, header: bytes, size: int) -> None:
    """The file's real header, then zeros up to its real size, which a sparse file keeps off the disk."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with tmp.open("wb") as f:
        f.write(header)
        f.truncate(max(size, len(header)))
    tmp.replace(path)


# ---- where things are ------------------------------------------------------------------------------

@dataclass
class HubRef:
    repo: str
    revision: str | None = None
    file: str | None = None
    quant: str | None = None

    def __str__(self) -> str:
        rev = f"@{self.revision}" if self.revision else ""
        tail = f"/{self.file}" if self.file else (f":{self.quant}" if self.quant else "")
        return f"hf://{self.repo}{rev}{tail}"


def is_remote(ref: str) -> bool:
    return ref.startswith(("hf://", "http://", "https://"))


def looks_like_repo(ref: str) -> bool:
    """`ORG/REPO` or `ORG/REPO:QUANT` as `vllm serve` and `llama-server -hf` take them (not a local path)."""
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?", ref)) and not Path(ref).exists()


def parse_hub(ref: str) -> HubRef:
    body = ref.removeprefix("hf://").strip("/")
    parts = body.split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise RemoteError(f"{ref!r} is not a Hub reference; write hf://ORG/REPO[@REVISION][/FILE] or ORG/REPO:QUANT")
    org, name, rest = parts[0], parts[1], "/".join(parts[2:]) or None
    quant = None
    if ":" in name and not rest:
        name, quant = name.split(":", 1)
    revision = None
    if "@" in name:
        name, revision = name.split("@", 1)
    return HubRef(f"{org}/{name}", revision, rest, quant)


def cache_root() -> Path:
    base = os.environ.get("RIGBENCH_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / ("" if os.environ.get("RIGBENCH_CACHE") else "rigbench") / "remote"


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or "").lower() in ("1", "true", "yes", "on")


def _token_headers() -> dict:
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(library_name="rigbench")


# ---- the Hub -----------------------------------------------------------------------------------------

def repo_files(repo: str, revision: str | None) -> tuple[str, dict[str, int]]:
    """(commit sha, {path: size}) of a Hub repo at a revision, from the Hub's API."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    ep = endpoint()
    where = f"hf://{repo}" + (f"@{revision}" if revision else "")
    try:
        info = HfApi(endpoint=ep).model_info(repo, revision=revision, files_metadata=True)
    except GatedRepoError:
        raise RemoteError(f"{where} is gated: accept its licence on {ep}/{repo} and set HF_TOKEN") from None
    except RevisionNotFoundError:
        raise RemoteError(f"{where}: no revision {revision!r} on {ep}; name a branch, tag or commit") from None
    except RepositoryNotFoundError as e:
        status = getattr(getattr(e, "response", None), "status_code", 404)
        if status == 401:
            raise RemoteError(f"{where} needs a token (401 from {ep}): set HF_TOKEN, or check the repo id") from None
        raise RemoteError(f"{where} not found on {ep} (404): check the repo id (or the path, for a local "
                          f"folder), or set HF_TOKEN if it is private") from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", "?")
        if status in (401, 403):
            raise RemoteError(f"{where} needs a token ({status} from {ep}): set HF_TOKEN to one that may read it, "
                              f"or check the repo id") from None
        raise RemoteError(f"{where}: {ep} answered {status}; try again later or plan a local copy") from None
    except Exception as e:
        if any(c.__name__ in ("TransportError", "ConnectionError", "TimeoutException") for c in type(e).__mro__):
            raise OfflineError(f"cannot reach {ep} for {where} (offline?): connect, set HF_ENDPOINT to a mirror, "
                               f"or plan a local folder or catalog name (--model NAME)") from None
        raise
    sizes = {s.rfilename: int(s.size or 0) for s in (info.siblings or [])}
    return info.sha or revision or "main", sizes


def gguf_quants(sizes: dict[str, int]) -> list[GgufQuant]:
    """The GGUF quants of a repo's file list, split parts summed, vision projectors left out."""
    out: dict[str, GgufQuant] = {}
    for path, size in sorted(sizes.items()):
        name = path.rsplit("/", 1)[-1]
        if not name.endswith(".gguf") or name.lower().startswith("mmproj"):
            continue
        m = QUANT_IN_NAME.search(name)
        q = m.group(1).upper() if m else name.removesuffix(".gguf")
        g = out.setdefault(q, GgufQuant(q, [], 0))
        g.files.append(path)
        g.bytes += size
    return sorted(out.values(), key=lambda g: g.bytes)


def _pick_gguf(ref: HubRef, sizes: dict[str, int]) -> list[str]:
    quants = gguf_quants(sizes)
    if ref.quant:
        hit = [g for g in quants if g.quant == ref.quant.upper()] or \
              [g for g in quants if ref.quant.lower() in " ".join(g.files).lower()]
        if not hit:
            raise RemoteError(f"{ref} has no GGUF quant {ref.quant}; it has {', '.join(g.quant for g in quants)}")
        return hit[0].files
    if len(quants) == 1:
        return quants[0].files
    lines = "\n".join(f"  {g.quant:14s} {g.bytes / 2**30:8.2f} GiB  {g.bytes:>14,d} bytes  "
                      f"{g.files[0]}{f' (+{len(g.files) - 1} parts)' if len(g.files) > 1 else ''}" for g in quants)
    raise ChooseQuantError(f"{ref} holds {len(quants)} GGUF quants; name one as hf://{ref.repo}:QUANT:\n{lines}")


def _mirror_dir(key: str) -> Path:
    return cache_root() / key


def _split_parts(name: str, sizes: dict[str, int]) -> list[str]:
    m = SPLIT.match(name)
    if not m:
        return [name]
    n = int(m.group(3))
    return [f"{m.group(1)}-{i:05d}-of-{n:05d}.gguf" for i in range(1, n + 1)]


def _selection(ref: HubRef) -> str:
    return ref.file or (f":{ref.quant.upper()}" if ref.quant else "")


def _snapshot(repo: str, sha: str) -> Path:
    # the folder carries the repo's name: a config-only model is named after its folder, as a local one is
    return _mirror_dir(f"hub/{repo.replace('/', '--')}/{sha}/{repo.rsplit('/', 1)[-1]}")


def _cached_target(ref: HubRef, sha: str) -> Path | None:
    marks = _snapshot(ref.repo, sha) / ".rigbench-targets.json"
    targets = json.loads(marks.read_text()) if marks.is_file() else {}
    if _selection(ref) not in targets:
        return None
    t = targets[_selection(ref)]
    return _snapshot(ref.repo, sha) / t if t else _snapshot(ref.repo, sha)


def mirror_hub(ref: HubRef, session: Session | None = None) -> Path:
    """A local mirror of what planning `ref` needs; returns the path to load (a .gguf or a folder).
    A revision resolves to its commit once online; offline, the last commit it resolved to is used."""
    refs = _mirror_dir(f"hub/{ref.repo.replace('/', '--')}/refs") / (ref.revision or "main").replace("/", "--")
    is_sha = bool(ref.revision and re.fullmatch(r"[0-9a-f]{40}", ref.revision))
    known = ref.revision if is_sha else (refs.read_text().strip() if refs.is_file() else None)
    if known and (is_sha or _offline()):
        cached = _cached_target(ref, known)
        if cached is not None:
            return cached
    if _offline():
        raise OfflineError(f"{ref} is not in the header cache and HF_HUB_OFFLINE is set: plan it once online, "
                           f"or plan a local folder or catalog name (--model NAME)")
    try:
        sha, sizes = repo_files(ref.repo, ref.revision)
    except RemoteError as e:
        cached = _cached_target(ref, known) if known and isinstance(e, OfflineError) else None
        if cached is not None:
            return cached
        raise
    refs.parent.mkdir(parents=True, exist_ok=True)
    refs.write_text(sha)
    cached = _cached_target(ref, sha)
    if cached is not None:
        return cached
    root = _snapshot(ref.repo, sha)
    session = session or Session(headers=_token_headers())
    target = _fetch_files(ref, sizes, f"{endpoint()}/{ref.repo}/resolve/{sha}/", root, session)
    marks = root / ".rigbench-targets.json"
    targets = json.loads(marks.read_text()) if marks.is_file() else {}
    targets[_selection(ref)] = target
    marks.write_text(json.dumps(targets, indent=1))
    return root / target if target else root


def _fetch_files(ref: HubRef, sizes: dict[str, int], base: str, root: Path, session: Session) -> str:
    """Mirror the files `ref` needs under `root`; returns the path (relative) to load, '' for the folder."""
    if ref.file and ref.file.endswith(".gguf") or ref.quant or (
            not ref.file and "config.json" not in sizes and any(p.endswith(".gguf") for p in sizes)):
        files = _split_parts(ref.file, sizes) if ref.file else _pick_gguf(ref, sizes)
        for f in files:
            if f not in sizes:
                raise RemoteError(f"{ref}: no file {f} in the repo; check the name (split GGUFs need every part)")
            _mirror_gguf(session.reader(base + quote(f)), root / f, f == files[0])
        return files[0]
    sub = ref.file.rstrip("/") + "/" if ref.file and not ref.file.endswith(".json") else \
        (ref.file.rsplit("/", 1)[0] + "/" if ref.file and "/" in ref.file else "")
    if sub + "config.json" not in sizes:
        raise RemoteError(f"{ref} has neither a config.json nor a .gguf; point at a model repo")
    for name in SMALL_FILES:
        if sub + name in sizes:
            data = session.small(base + quote(sub + name))
            if data is not None:
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_bytes(data)
    shards = [p for p in sizes if p.startswith(sub) and p.endswith(".safetensors") and "/" not in p[len(sub):]]
    for p in sorted(shards):
        r = session.reader(base + quote(p))
        header = safetensors_header(r)
        _write_sparse(root / p[len(sub):], header, r.size or sizes[p])
    return ""


def _mirror_gguf(reader: Reader, path: Path, first_part: bool = True) -> None:
    # a split's later parts hold tensor infos only: their headers are a few KiB
    header = gguf_header(reader, FIRST_READ if first_part else MIN_READ)
    _write_sparse(path, header, reader.size)


def mirror_url(url: str, session: Session | None = None) -> Path:
    """A local mirror of a plain URL: a .gguf (with its split parts) or a config.json (with its index and
    shards beside it)."""
    if _offline():
        raise OfflineError(f"{url}: HF_HUB_OFFLINE is set; plan a local file, or unset it")
    name = urlsplit(url).path.rsplit("/", 1)[-1]
    base = url[: len(url) - len(name)]
    root = _mirror_dir(f"url/{hashlib.sha256(base.encode()).hexdigest()[:16]}")
    if (root / name).is_file() or (name == "config.json" and (root / name).is_file()):
        return root / name if name.endswith(".gguf") else root
    session = session or Session()
    if name.endswith(".gguf"):
        parts = _split_parts(name, {})
        for part in parts:
            _mirror_gguf(session.reader(base + part), root / part, part == parts[0])
        return root / name
    if name != "config.json":
        raise RemoteError(f"{url}: rigbench reads a remote .gguf or config.json; point at one of them")
    for small in SMALL_FILES:
        data = session.small(base + small)
        if data is None:
            if small == "config.json":
                raise RemoteError(f"{url} not found (404): check the address")
            continue
        root.mkdir(parents=True, exist_ok=True)
        (root / small).write_bytes(data)
        if small == "model.safetensors.index.json":
            for shard in sorted(set(json.loads(data).get("weight_map", {}).values())):
                r = session.reader(base + quote(shard))
                _write_sparse(root / shard, safetensors_header(r), r.size)
    if not (root / "model.safetensors.index.json").exists():
        r = session.reader(base + "model.safetensors")
        _write_sparse(root / "model.safetensors", safetensors_header(r), r.size)
    return root


def mirror(ref: str, session: Session | None = None) -> Path:
    """The local mirror path to plan for a remote reference (hf://, ORG/REPO[:QUANT], http(s)://)."""
    if ref.startswith(("http://", "https://")):
        return mirror_url(ref, session)
    return mirror_hub(parse_hub(ref), session)


def repo_id(ref: str) -> str | None:
    """ORG/REPO of a Hub reference (hf://, ORG/REPO[:QUANT]); None for a plain URL."""
    return None if ref.startswith(("http://", "https://")) else parse_hub(ref).repo


def list_quants(ref: str) -> list[GgufQuant]:
    h = parse_hub(ref)
    return gguf_quants(repo_files(h.repo, h.revision)[1])
