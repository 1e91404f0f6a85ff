"""Prompts of an exact token length, tokenized by the server itself (its /tokenize), so counts match."""

from __future__ import annotations

import random
import sysconfig
from functools import cache
from pathlib import Path

import httpx

from rigbench.errors import RigbenchError

# Prompts are real source code (this Python's own standard library), because an agent's prompts are code and
# logs, and a MoE model's prefill depends on how many distinct tokens a batch holds: a 45-word vocabulary repeated
# for 8,000 tokens sends every u-batch through far fewer experts than real text (seen on the test H200: a
# synthetic 35B-A3B under --cpu-moe prefilled 370 tok/s such word salad against 250 for llama-bench's random tokens).
_CORPUS_FILES = 64


@cache
def _corpus() -> tuple[str, ...]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in root.glob("*.py") if p.stat().st_size > 20_000)[:_CORPUS_FILES]
    texts = tuple(t for t in (p.read_text(errors="replace") for p in files) if t.strip())
    if not texts:
        raise RigbenchError(f"no Python sources under {root} to build prompts from; reinstall Python's stdlib")
    return texts


def source_text(chars: int, seed: int) -> str:
    """About `chars` characters of real code, from a place that depends on `seed`."""
    texts = _corpus()
    rng = random.Random(seed)
    i = rng.randrange(len(texts))
    pos = rng.randrange(max(1, len(texts[i]) // 2))
    out, need = [], chars
    while need > 0:
        piece = texts[i][pos:pos + need]
        out.append(piece)
        need -= len(piece)
        i, pos = (i + 1) % len(texts), 0
    return "".join(out)


class ServerUnreachable(RigbenchError):
    pass


class Tokenizer:
    """The server's tokenizer over HTTP: llama-server's /tokenize {content}, or vLLM's /tokenize {prompt}."""

    def __init__(self, base_url: str, model: str | None = None):
        self.base = base_url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.client = httpx.Client(timeout=60)
        self.available = True

    def encode(self, text: str) -> list[int] | None:
        if not self.available:
            return None
        for body in ({"content": text, "add_special": False}, {"model": self.model, "prompt": text,
                                                                "add_special_tokens": False}):
            try:
                r = self.client.post(self.base + "/tokenize", json=body)
            except httpx.HTTPError:
                continue
            if r.status_code == 200 and "tokens" in r.json():
                toks = r.json()["tokens"]
                return [t["id"] if isinstance(t, dict) else t for t in toks]
        self.available = False
        return None

    def decode(self, tokens: list[int]) -> str | None:
        for body in ({"tokens": tokens}, {"model": self.model, "tokens": tokens}):
            try:
                r = self.client.post(self.base + "/detokenize", json=body)
            except httpx.HTTPError:
                continue
            if r.status_code == 200:
                d = r.json()
                return d.get("content", d.get("prompt"))
        return None


def text_of_tokens(tok: Tokenizer, n: int, seed: int) -> tuple[str, bool]:
    """A prompt of exactly n tokens (True) or, without a tokenizer, of about n tokens (False)."""
    text = f"{seed} " + source_text(4 * n + 64, seed)
    ids = tok.encode(text)
    if ids is None:
        return text[: max(1, 3 * n)], False     # ~3-4 characters per token of code
    extra = 1
    while len(ids) < n:
        text += source_text(4 * n, seed + 7919 * extra)
        extra += 1
        ids = tok.encode(text) or ids
    for _ in range(4):  # a cut can re-merge at the boundary: retokenize and trim until exact
        cut = tok.decode(ids[:n])
        if cut is None:
            break
        again = tok.encode(cut)
        if again is not None and len(again) == n:
            return cut, True
        ids = again[:n] if again and len(again) > n else ids[: n - 1]
    return cut or text, False
