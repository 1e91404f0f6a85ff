"""Engine options as typed records, parsed from (and printed back to) the command lines people write.

`parse_command("llama-server -m x.gguf -c 32768 --cpu-moe")` gives a LlamaCppOptions; a `vllm serve ...`
line gives VllmOptions. Flags the planner does not model are kept verbatim in `passthrough`; a flag the
engine does not have is an error that names the nearest real one.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from rigbench import catalog
from rigbench.errors import EngineOptionError


class LlamaCppOptions(BaseModel):
    engine: Literal["llama.cpp"] = "llama.cpp"
    binary: str = "llama-server"
    model_path: str | None = None
    ctx: int | None = None                    # -c; None or 0 = the model's training context (then --fit)
    parallel: int = -1                        # -np; -1 = auto: 4 slots, unified KV (server.cpp)
    kv_unified: bool | None = None
    ngl: int | None = None                    # -ngl; None = auto (fit), -2 or "all" = every layer
    cpu_moe: bool = False
    n_cpu_moe: int = 0
    overrides: list[tuple[str, str]] = []     # -ot PATTERN=BUFTYPE, in order
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: Literal["auto", "on", "off"] = "auto"
    batch: int = 2048
    ubatch: int = 512
    kv_offload: bool = True
    fit: bool = True
    fit_target_mib: list[int] | None = None
    fit_ctx: int = 4096
    tensor_split: list[float] | None = None
    split_mode: Literal["layer", "row", "none", "tensor"] = "layer"
    main_gpu: int = 0
    swa_full: bool = False
    mmproj: str | None = None
    spec_type: str | None = None
    repack: bool = True
    load_mode: str = "auto"                   # -lm: auto (= mmap: pageable host memory) | none (pinned) | ...
    no_host: bool = False                     # --no-host: CPU weights in plain (pageable) buffers
    op_offload: bool = True                   # --no-op-offload: the CPU computes its own layers' batches
    threads: int | None = None                # -t
    host: str = "127.0.0.1"
    port: int = 8080
    passthrough: list[str] = []

    @property
    def user_set_placement(self) -> bool:
        return self.cpu_moe or self.n_cpu_moe > 0 or bool(self.overrides)

    @property
    def host_pinned(self) -> bool:
        """CPU-held weights in pinned memory: llama.cpp puts them in the GPU backend's host buffer unless they
        are memory-mapped (src/llama-model-loader.cpp: "avoid using a host buffer when using mmap") or
        --no-host is set."""
        return self.load_mode in ("none", "mlock", "dio") and not self.no_host


class VllmOptions(BaseModel):
    engine: Literal["vllm"] = "vllm"
    model_path: str | None = None
    env: dict[str, str] = {}
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    data_parallel: int = 1
    expert_parallel: bool = False
    gpu_memory_utilization: float = 0.9
    kv_cache_memory_bytes: int | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    kv_cache_dtype: str = "auto"
    quantization: str | None = None
    dtype: str = "auto"
    block_size: int | None = None
    mamba_cache_mode: str | None = None
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    speculative_config: dict | None = None
    cpu_offload_gb: float = 0.0
    enforce_eager: bool = False
    language_model_only: bool = False
    host: str = "127.0.0.1"
    port: int = 8000
    served_model_name: str | None = None
    passthrough: list[str] = []

    @property
    def num_speculative_tokens(self) -> int:
        return int((self.speculative_config or {}).get("num_speculative_tokens", 0))


EngineOptions = LlamaCppOptions | VllmOptions

# ---- llama.cpp -------------------------------------------------------------------------------

# canonical name -> every spelling llama-server accepts (common/arg.cpp)
_LLAMA_ALIASES = {
    "model": ["-m", "--model"], "ctx": ["-c", "--ctx-size"], "parallel": ["-np", "--parallel"],
    "kv_unified": ["-kvu", "--kv-unified"], "no_kv_unified": ["-no-kvu", "--no-kv-unified"],
    "ngl": ["-ngl", "--gpu-layers", "--n-gpu-layers"], "cpu_moe": ["-cmoe", "--cpu-moe"],
    "n_cpu_moe": ["-ncmoe", "--n-cpu-moe"], "ot": ["-ot", "--override-tensor"],
    "ctk": ["-ctk", "--cache-type-k"], "ctv": ["-ctv", "--cache-type-v"], "fa": ["-fa", "--flash-attn"],
    "batch": ["-b", "--batch-size"], "ubatch": ["-ub", "--ubatch-size"],
    "no_kv_offload": ["-nkvo", "--no-kv-offload"], "kv_offload": ["-kvo", "--kv-offload"],
    "fit": ["-fit", "--fit"], "fit_target": ["-fitt", "--fit-target"], "fit_ctx": ["-fitc", "--fit-ctx"],
    "tensor_split": ["-ts", "--tensor-split"], "split_mode": ["-sm", "--split-mode"],
    "main_gpu": ["-mg", "--main-gpu"], "swa_full": ["--swa-full"], "mmproj": ["-mm", "--mmproj"],
    "spec_type": ["--spec-type"], "no_repack": ["-nr", "--no-repack"], "repack": ["--repack"],
    "load_mode": ["-lm", "--load-mode"], "no_host": ["--no-host"], "no_op_offload": ["--no-op-offload"],
    "op_offload": ["--op-offload"], "threads": ["-t", "--threads"],
    "host": ["--host"], "port": ["--port"],
}
# flags of older llama.cpp builds that people still paste, as the load mode that replaced them
_LLAMA_LEGACY = {"--no-mmap": "none", "--mmap": "mmap", "--mlock": "mlock"}
_LLAMA_CANON = {spelling: canon for canon, spellings in _LLAMA_ALIASES.items() for spelling in spellings}


def _bool_arg(v: str) -> bool:
    return v.lower() in ("on", "1", "true", "yes", "enabled")


def _int(flag: str, v: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise EngineOptionError(f"{flag} takes a whole number, not {v!r}") from None


def parse_llama_args(args: list[str], binary: str = "llama-server") -> LlamaCppOptions:
    known = catalog.llama_server_flags()
    o = LlamaCppOptions(binary=binary)
    i = 0
    while i < len(args):
        tok = args[i]
        flag, eq, inline = tok.partition("=") if tok.startswith("--") else (tok, "", "")
        if not flag.startswith("-"):
            raise EngineOptionError(f"unexpected argument {tok!r} in the {binary} command; flags start with -")
        if flag in _LLAMA_LEGACY and flag not in known:
            o.load_mode = _LLAMA_LEGACY[flag]
            i += 1
            continue
        if flag not in known:
            close = difflib.get_close_matches(flag, list(known), n=2, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise EngineOptionError(f"{binary} has no flag {flag}{hint}; remove it or check `{binary} --help`")
        n = known[flag]
        if eq:
            values = [inline]
        else:
            values = args[i + 1:i + 1 + n]
            if len(values) < n:
                raise EngineOptionError(f"{flag} needs a value")
        i += 1 + (0 if eq else n)
        canon = _LLAMA_CANON.get(flag)
        v = values[0] if values else ""
        if canon is None:
            o.passthrough += [flag, *values]
        elif canon == "model":
            o.model_path = v
        elif canon == "ctx":
            o.ctx = _int(flag, v) or None
        elif canon == "parallel":
            o.parallel = _int(flag, v)
        elif canon == "kv_unified":
            o.kv_unified = True
        elif canon == "no_kv_unified":
            o.kv_unified = False
        elif canon == "ngl":
            o.ngl = {"auto": None, "all": -2}.get(v, None) if not v.lstrip("-").isdigit() else int(v)
            if o.ngl == -1:
                o.ngl = None
        elif canon == "cpu_moe":
            o.cpu_moe = True
        elif canon == "n_cpu_moe":
            o.n_cpu_moe = _int(flag, v)
        elif canon == "ot":
            for item in v.split(","):
                pat, _, buf = item.rpartition("=")
                if not pat:
                    raise EngineOptionError(f"-ot takes PATTERN=BUFFER_TYPE (e.g. 'exps=CPU'), not {item!r}")
                o.overrides.append((pat, buf))
        elif canon == "ctk":
            o.cache_type_k = v.lower()
        elif canon == "ctv":
            o.cache_type_v = v.lower()
        elif canon == "fa":
            o.flash_attn = {"on": "on", "1": "on", "true": "on", "off": "off", "0": "off", "false": "off"}.get(
                v.lower(), "auto")
        elif canon == "batch":
            o.batch = _int(flag, v)
        elif canon == "ubatch":
            o.ubatch = _int(flag, v)
        elif canon == "no_kv_offload":
            o.kv_offload = False
        elif canon == "kv_offload":
            o.kv_offload = True
        elif canon == "fit":
            o.fit = _bool_arg(v)
        elif canon == "fit_target":
            o.fit_target_mib = [_int(flag, x) for x in v.split(",")]
        elif canon == "fit_ctx":
            o.fit_ctx = _int(flag, v)
        elif canon == "tensor_split":
            o.tensor_split = [float(x) for x in re.split("[,/]", v) if x]
        elif canon == "split_mode":
            o.split_mode = v  # type: ignore[assignment]
        elif canon == "main_gpu":
            o.main_gpu = _int(flag, v)
        elif canon == "swa_full":
            o.swa_full = True
        elif canon == "mmproj":
            o.mmproj = v
        elif canon == "spec_type":
            o.spec_type = v
        elif canon == "no_repack":
            o.repack = False
        elif canon == "repack":
            o.repack = True
        elif canon == "load_mode":
            o.load_mode = v
        elif canon == "no_host":
            o.no_host = True
        elif canon == "no_op_offload":
            o.op_offload = False
        elif canon == "op_offload":
            o.op_offload = True
        elif canon == "threads":
            o.threads = _int(flag, v)
        elif canon == "host":
            o.host = v
        elif canon == "port":
            o.port = _int(flag, v)
    if o.n_cpu_moe < 0:
        raise EngineOptionError("--n-cpu-moe must be >= 0")
    if o.ubatch > o.batch:
        o.ubatch = o.batch  # llama.cpp clamps n_ubatch to n_batch
    return o


def _llama_model_flags(path: str) -> list[str]:
    """How llama-server is told where the model is: a remote one by the flags that download it (-hf ORG/REPO:QUANT,
    -hfr/-hff for a named file, -mu for a URL), a local one by -m."""
    if path.startswith("hf://"):
        parts = path.removeprefix("hf://").split("/", 2)
        repo, _, quant = "/".join(parts[:2]).partition(":")
        repo = repo.split("@")[0] + (f":{quant}" if quant else "")      # llama-server takes no revision
        return ["-hfr", repo, "-hff", parts[2]] if len(parts) == 3 else ["-hf", repo]
    if path.startswith(("http://", "https://")):
        return ["-mu", path]
    return ["-m", path]


def llama_args(o: LlamaCppOptions) -> list[str]:
    """The llama-server command line for `o` (model path included when set)."""
    a: list[str] = [o.binary]
    if o.model_path:
        a += _llama_model_flags(o.model_path)
    if o.ctx:
        a += ["-c", str(o.ctx)]
    if o.parallel != -1:
        a += ["-np", str(o.parallel)]
    if o.kv_unified is True:
        a += ["-kvu"]
    elif o.kv_unified is False:
        a += ["--no-kv-unified"]
    if o.ngl is not None:
        a += ["-ngl", "all" if o.ngl == -2 else str(o.ngl)]
    if o.cpu_moe:
        a += ["--cpu-moe"]
    if o.n_cpu_moe:
        a += ["--n-cpu-moe", str(o.n_cpu_moe)]
    if o.overrides:
        a += ["-ot", ",".join(f"{p}={b}" for p, b in o.overrides)]
    if o.cache_type_k != "f16":
        a += ["-ctk", o.cache_type_k]
    if o.cache_type_v != "f16":
        a += ["-ctv", o.cache_type_v]
    if o.flash_attn != "auto":
        a += ["-fa", o.flash_attn]
    if o.batch != 2048:
        a += ["-b", str(o.batch)]
    if o.ubatch != 512:
        a += ["-ub", str(o.ubatch)]
    if not o.kv_offload:
        a += ["--no-kv-offload"]
    if not o.fit:
        a += ["--fit", "off"]
    if o.fit_target_mib:
        a += ["--fit-target", ",".join(map(str, o.fit_target_mib))]
    if o.tensor_split:
        a += ["-ts", ",".join(f"{x:g}" for x in o.tensor_split)]
    if o.split_mode != "layer":
        a += ["-sm", o.split_mode]
    if o.swa_full:
        a += ["--swa-full"]
    if o.mmproj:
        a += ["--mmproj", o.mmproj]
    if o.spec_type:
        a += ["--spec-type", o.spec_type]
    if not o.repack:
        a += ["--no-repack"]
    if o.load_mode != "auto":
        a += ["--load-mode", o.load_mode]
    if o.no_host:
        a += ["--no-host"]
    if not o.op_offload:
        a += ["--no-op-offload"]
    if o.threads:
        a += ["-t", str(o.threads)]
    if o.host != "127.0.0.1":
        a += ["--host", o.host]
    if o.port != 8080:
        a += ["--port", str(o.port)]
    return a + o.passthrough


# ---- vLLM ------------------------------------------------------------------------------------

_VLLM_ALIASES = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size",
                 "-dp": "--data-parallel-size", "-q": "--quantization"}


def _json_arg(flag: str, v: str) -> dict:
    try:
        d = json.loads(v)
    except json.JSONDecodeError:
        raise EngineOptionError(f"{flag} takes JSON, got {v!r}; quote it as '{{\"key\": value}}'") from None
    if not isinstance(d, dict):
        raise EngineOptionError(f"{flag} takes a JSON object")
    return d


def parse_vllm_args(args: list[str], env: dict[str, str] | None = None) -> VllmOptions:
    known: dict[str, int] = catalog.engines()["vllm"]["flags"]
    o = VllmOptions(env=env or {})
    i = 0
    if args and not args[0].startswith("-"):
        o.model_path = args[0]
        i = 1
    while i < len(args):
        tok = args[i]
        flag, eq, inline = tok.partition("=") if tok.startswith("--") else (tok, "", "")
        if not flag.startswith("-"):
            raise EngineOptionError(f"unexpected argument {tok!r} in the vllm command")
        if flag not in known:
            close = difflib.get_close_matches(flag, list(known), n=2, cutoff=0.6)
            hint = f" (did you mean {' or '.join(close)}?)" if close else ""
            raise EngineOptionError(f"vllm serve has no flag {flag}{hint}; remove it or check `vllm serve --help`")
        n = known[flag]
        values = [inline] if eq else args[i + 1:i + 1 + n]
        if len(values) < n:
            raise EngineOptionError(f"{flag} needs a value")
        i += 1 + (0 if eq else n)
        flag = _VLLM_ALIASES.get(flag, flag)
        v = values[0] if values else ""
        match flag:
            case "--model":
                o.model_path = v
            case "--tensor-parallel-size":
                o.tensor_parallel = _int(flag, v)
            case "--pipeline-parallel-size":
                o.pipeline_parallel = _int(flag, v)
            case "--data-parallel-size":
                o.data_parallel = _int(flag, v)
            case "--enable-expert-parallel":
                o.expert_parallel = True
            case "--gpu-memory-utilization":
                o.gpu_memory_utilization = float(v)
            case "--kv-cache-memory-bytes":
                o.kv_cache_memory_bytes = _int(flag, v)
            case "--max-model-len":
                o.max_model_len = _parse_len(v)
            case "--max-num-seqs":
                o.max_num_seqs = _int(flag, v)
            case "--max-num-batched-tokens":
                o.max_num_batched_tokens = _parse_len(v)
            case "--kv-cache-dtype":
                o.kv_cache_dtype = v
            case "--quantization":
                o.quantization = v
            case "--dtype":
                o.dtype = v
            case "--block-size":
                o.block_size = _int(flag, v)
            case "--mamba-cache-mode":
                o.mamba_cache_mode = v
            case "--enable-prefix-caching":
                o.enable_prefix_caching = True
            case "--no-enable-prefix-caching":
                o.enable_prefix_caching = False
            case "--enable-chunked-prefill":
                o.enable_chunked_prefill = True
            case "--no-enable-chunked-prefill":
                o.enable_chunked_prefill = False
            case "--speculative-config":
                o.speculative_config = _json_arg(flag, v)
            case "--cpu-offload-gb":
                o.cpu_offload_gb = float(v)
            case "--enforce-eager":
                o.enforce_eager = True
            case "--language-model-only":
                o.language_model_only = True
            case "--host":
                o.host = v
            case "--port":
                o.port = _int(flag, v)
            case "--served-model-name":
                o.served_model_name = v
            case _:
                o.passthrough += [tok] if eq else [flag, *values]
    if not 0 < o.gpu_memory_utilization <= 1:
        raise EngineOptionError("--gpu-memory-utilization is a fraction in (0, 1], e.g. 0.9")
    return o


def _parse_len(v: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmM]?)", v.strip())
    if not m:
        raise EngineOptionError(f"not a token count: {v!r}")
    scale = {"": 1, "k": 1000, "K": 1024, "m": 1_000_000, "M": 1024 * 1024}[m.group(2)]
    return int(float(m.group(1)) * scale)


def vllm_args(o: VllmOptions) -> list[str]:
    """`vllm serve` command line for `o`, flags in the order people write them (FACTS.md setup C)."""
    a = ["vllm", "serve", o.model_path or "MODEL"]
    if o.port != 8000:
        a += ["--port", str(o.port)]
    if o.host != "127.0.0.1":
        a += ["--host", o.host]
    if o.served_model_name:
        a += ["--served-model-name", o.served_model_name]
    if o.tensor_parallel != 1:
        a += ["--tensor-parallel-size", str(o.tensor_parallel)]
    if o.pipeline_parallel != 1:
        a += ["--pipeline-parallel-size", str(o.pipeline_parallel)]
    if o.data_parallel != 1:
        a += ["--data-parallel-size", str(o.data_parallel)]
    if o.expert_parallel:
        a += ["--enable-expert-parallel"]
    pre = [x for x in o.passthrough if x == "--disable-custom-all-reduce"]
    a += pre
    if o.quantization:
        a += ["--quantization", o.quantization]
    if o.dtype != "auto":
        a += ["--dtype", o.dtype]
    if o.max_model_len:
        a += ["--max-model-len", str(o.max_model_len)]
    if o.gpu_memory_utilization != 0.9:
        a += ["--gpu-memory-utilization", f"{o.gpu_memory_utilization:g}"]
    if o.kv_cache_memory_bytes:
        a += ["--kv-cache-memory-bytes", str(o.kv_cache_memory_bytes)]
    if o.kv_cache_dtype != "auto":
        a += ["--kv-cache-dtype", o.kv_cache_dtype]
    if o.max_num_seqs:
        a += ["--max-num-seqs", str(o.max_num_seqs)]
    if o.max_num_batched_tokens:
        a += ["--max-num-batched-tokens", str(o.max_num_batched_tokens)]
    if o.block_size:
        a += ["--block-size", str(o.block_size)]
    if o.enable_prefix_caching is True:
        a += ["--enable-prefix-caching"]
    elif o.enable_prefix_caching is False:
        a += ["--no-enable-prefix-caching"]
    if o.enable_chunked_prefill is True:
        a += ["--enable-chunked-prefill"]
    elif o.enable_chunked_prefill is False:
        a += ["--no-enable-chunked-prefill"]
    if o.mamba_cache_mode:
        a += ["--mamba-cache-mode", o.mamba_cache_mode]
    if o.cpu_offload_gb:
        a += ["--cpu-offload-gb", f"{o.cpu_offload_gb:g}"]
    if o.enforce_eager:
        a += ["--enforce-eager"]
    if o.language_model_only:
        a += ["--language-model-only"]
    rest = [x for x in o.passthrough if x != "--disable-custom-all-reduce"]
    spec = ["--speculative-config", json.dumps(o.speculative_config, separators=(",", ":"))] \
        if o.speculative_config else []
    tail = [x for x in rest if x == "--trust-remote-code"]
    rest = [x for x in rest if x != "--trust-remote-code"]
    return a + rest + spec + tail


# ---- whole command lines -----------------------------------------------------------------------

def split_command(command: str | list[str]) -> list[str]:
    if isinstance(command, list):
        return [t for t in command if t != "\\\n"]
    return shlex.split(command.replace("\\\n", " "))


def parse_command(command: str | list[str]) -> EngineOptions:
    """Engine options from a pasted `llama-server ...` / `vllm serve ...` command line."""
    argv = split_command(command)
    env: dict[str, str] = {}
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):
        k, _, v = argv.pop(0).partition("=")
        env[k] = v
    if argv and argv[0] == "env":
        argv.pop(0)
    if not argv:
        raise EngineOptionError("empty engine command; paste e.g. `llama-server -m model.gguf -c 32768`")
    prog = Path(argv[0]).name
    if prog.startswith("llama-") or prog in ("llama", "server"):
        return parse_llama_args(argv[1:], binary=prog)
    if prog == "vllm":
        if len(argv) < 2 or argv[1] != "serve":
            raise EngineOptionError("only `vllm serve MODEL ...` is planned; paste the serve command")
        return parse_vllm_args(argv[2:], env)
    if prog.startswith("python") and "-m" in argv and "vllm.entrypoints.openai.api_server" in argv:
        rest = argv[argv.index("vllm.entrypoints.openai.api_server") + 1:]
        return parse_vllm_args(rest, env)
    raise EngineOptionError(
        f"{prog!r} is not an engine rigbench plans; paste a `llama-server ...` or `vllm serve ...` command")
