"""llama-bench with the same placement and batch flags as a llama-server command: the engine's own benchmark,
a second view of a speed rigbench measured through the server.

llama-bench spells some flags differently: `--cpu-moe` is the override llama.cpp itself applies for it
(common/arg.cpp: every `ffn_(up|down|gate)_(ch|)exps` tensor to the CPU), `--fit` is `-fitt` with its
1 GiB margin (llama-bench fits to the prompt's context, not the server's -c).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pydantic import BaseModel

from rigbench.engines.options import LlamaCppOptions
from rigbench.errors import RigbenchError

CPU_MOE_OVERRIDE = r"\.ffn_(up|down|gate)_(ch|)exps=CPU"
FIT_MARGIN_MIB = 1024


class LlamaBenchError(RigbenchError):
    pass


class LlamaBenchResult(BaseModel):
    prompt_tokens: int
    gen_tokens: int
    depth: int
    tok_s: float
    tok_s_sd: float
    samples_ts: list[float] = []


def bench_args(o: LlamaCppOptions, prompt: int, gen: int = 0, depth: int = 0, repeats: int = 2) -> list[str]:
    """llama-bench arguments for one test of `o`'s placement: pp`prompt` (or tg`gen`) at `depth`."""
    if not o.model_path:
        raise LlamaBenchError("llama-bench needs the model file; the options have no -m")
    a = ["-m", o.model_path, "-p", str(prompt), "-n", str(gen), "-r", str(repeats), "-o", "json"]
    if depth:
        a += ["-d", str(depth)]
    a += ["-ngl", "999" if o.ngl in (None, -2) else str(o.ngl)]
    overrides = [f"{p}={b}" for p, b in o.overrides]
    if o.cpu_moe:
        overrides.append(CPU_MOE_OVERRIDE)
    if overrides:
        a += ["-ot", ";".join(overrides)]
    if o.n_cpu_moe:
        a += ["-ncmoe", str(o.n_cpu_moe)]
    if o.fit and not o.user_set_placement and o.ngl is None:
        a += ["-fitt", str((o.fit_target_mib or [FIT_MARGIN_MIB])[0]), "-fitc", str(o.fit_ctx)]
    a += ["-b", str(o.batch), "-ub", str(min(o.ubatch, o.batch)), "-ctk", o.cache_type_k, "-ctv", o.cache_type_v]
    if o.flash_attn != "auto":
        a += ["-fa", o.flash_attn]
    if o.load_mode != "auto":
        a += ["-lm", o.load_mode]
    if o.no_host:
        a += ["--no-host", "1"]
    if not o.op_offload:
        a += ["-nopo", "1"]
    if o.threads:
        a += ["-t", str(o.threads)]
    if not o.repack:
        a += ["--repack", "0"]
    return a


def parse(stdout: str) -> list[LlamaBenchResult]:
    """llama-bench's `-o json` output: one record per test."""
    try:
        rows = json.loads(stdout)
    except json.JSONDecodeError as e:
        raise LlamaBenchError(f"llama-bench printed no JSON ({e}); run it by hand to see why") from None
    return [LlamaBenchResult(prompt_tokens=r["n_prompt"], gen_tokens=r["n_gen"], depth=r.get("n_depth", 0),
                             tok_s=r["avg_ts"], tok_s_sd=r.get("stddev_ts", 0.0), samples_ts=r.get("samples_ts", []))
            for r in rows]


def run(binary: Path, o: LlamaCppOptions, prompt: int, gen: int = 0, depth: int = 0, repeats: int = 2,
        timeout: float = 600, env: dict | None = None) -> LlamaBenchResult:
    cmd = [str(binary), *bench_args(o, prompt, gen, depth, repeats)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if p.returncode != 0:
        tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
        raise LlamaBenchError(f"llama-bench exited with {p.returncode}: {' | '.join(tail)}")
    return parse(p.stdout)[0]


# llama-bench flag -> the llama-server spelling, for reading published llama-bench command lines
_TO_SERVER = {"-ncmoe": "--n-cpu-moe", "--n-cpu-moe": "--n-cpu-moe", "-ngl": "-ngl", "--n-gpu-layers": "-ngl",
              "-ub": "-ub", "--ubatch-size": "-ub", "-b": "-b", "--batch-size": "-b", "-ctk": "-ctk",
              "--cache-type-k": "-ctk", "-ctv": "-ctv", "--cache-type-v": "-ctv", "-t": "-t", "--threads": "-t",
              "-ot": "-ot", "--override-tensor": "-ot", "-lm": "--load-mode", "--load-mode": "--load-mode",
              "-ts": "-ts", "--tensor-split": "-ts", "-sm": "-sm", "--split-mode": "-sm", "-mg": "-mg"}
_BENCH_ONLY = {"-p", "--n-prompt", "-n", "--n-gen", "-r", "--repetitions", "-o", "--output", "-d", "--n-depth",
               "-pg", "-m", "--model", "--prio", "--delay", "-C", "--cpu-mask", "--poll", "-dev", "--device",
               "-embd", "--embeddings", "--cpu-strict", "-lzm", "--lazy-mode", "-fitc", "--fit-ctx"}


def server_args(bench: list[str]) -> list[str]:
    """llama-server flags for a published llama-bench command line's placement and batch flags (one value
    each; llama-bench's comma lists take their first value). Older spellings (`-mmp 0`, `-fa 1`) included."""
    out: list[str] = []
    i = 0
    while i < len(bench):
        flag = bench[i]
        val = bench[i + 1] if i + 1 < len(bench) else ""
        first = val.split(",")[0]
        i += 2
        if flag in _TO_SERVER:
            if flag in ("-ot", "--override-tensor"):
                out += ["-ot", ",".join(x for x in val.split(";") if x)]
            else:
                out += [_TO_SERVER[flag], first]
        elif flag in ("-fa", "--flash-attn"):
            out += ["-fa", {"1": "on", "0": "off"}.get(first, first)]
        elif flag in ("-mmp", "--mmap"):
            out += ["--load-mode", "mmap" if first == "1" else "none"]
        elif flag in ("-nkvo", "--no-kv-offload"):
            out += ["--no-kv-offload"] if first == "1" else []
        elif flag in ("-nopo", "--no-op-offload"):
            out += ["--no-op-offload"] if first == "1" else []
        elif flag == "--no-host":
            out += ["--no-host"] if first == "1" else []
        elif flag in ("-fitt", "--fit-target"):
            out += ["--fit-target", first]
        elif flag in ("--cpu-moe", "-cmoe", "-v", "--verbose", "--no-warmup", "--progress"):
            out += ["--cpu-moe"] if flag in ("--cpu-moe", "-cmoe") else []
            i -= 1
        elif flag not in _BENCH_ONLY:
            raise LlamaBenchError(f"llama-bench flag {flag} has no llama-server counterpart rigbench knows")
    return out
