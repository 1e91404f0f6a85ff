"""Prompts of an exact token length, tokenized by the server itself (its /tokenize), so counts match."""

from __future__ import annotations

import random

import httpx

from rigbench.errors import RigbenchError

_WORDS = ("the model reads code and writes tests while the agent runs commands in a sandbox then checks "
          "results against the verifier before it edits files refactors functions and explains each change "
          "with short notes about performance memory latency tokens caches kernels layers experts").split()


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
    rng = random.Random(seed)
    words = [rng.choice(_WORDS) for _ in range(int(n * 1.1) + 8)]
    text = f"{seed} " + " ".join(words)
    ids = tok.encode(text)
    if ids is None:
        return " ".join(words[: max(1, int(n * 0.75))]), False
    while len(ids) < n:
        text += " " + " ".join(rng.choice(_WORDS) for _ in range(n))
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
