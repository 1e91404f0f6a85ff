"""How the tokens of one u-batch spread over a MoE layer's experts.

Prefill cost of a MoE layer depends on the spread, not only on the FLOPs: llama.cpp copies only the experts
a u-batch uses when they live in host memory (ggml-backend.cpp, ggml_backend_sched_compute_splits: "copying
only the experts that are used"), and its grouped matmul (MUL_MAT_ID) loads each used expert's weights once
per tile of tokens, so a few tokens on many experts cost more than many tokens on a few.

The spread is described by one number, the router skew s: expert e's router logits have a scale
exp(s * z_e) with z_e standard normal, so popular experts win the top-k more often. s = 0 is a router that
spreads tokens evenly (random weights); trained routers are skewed (catalog speed.yaml `routing`, with the
published statistics it is set from). `rigbench synth` writes its router rows with exactly these scales,
so a synthetic twin routes like this model of it (benchmarks/routing_spread.py checks that with
llama.cpp's own per-expert counts).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from pydantic import BaseModel

from rigbench import catalog

SEED = 20261123      # the experts' popularity draw, shared by synth and the model below


class Spread(BaseModel):
    experts: int
    top_k: int
    tokens: int
    skew: float
    distinct: float          # experts one layer touches in the u-batch (expected)
    tile: int
    tile_loads: float        # sum over used experts of ceil(tokens on it / tile)
    top10_share: float       # share of the routed tokens taken by the most popular 10% of experts

    @property
    def used_fraction(self) -> float:
        return self.distinct / self.experts

    @property
    def tokens_per_used_expert(self) -> float:
        return self.tokens * self.top_k / max(1.0, self.distinct)


def default_skew() -> float:
    return float(catalog.speed()["routing"]["skew"])


def expert_scales(experts: int, skew: float, layer: int = 0) -> np.ndarray:
    """Per-expert router logit scales exp(s * z_e), a different order of popularity in every layer."""
    z = np.random.default_rng(SEED).standard_normal(experts)
    z = np.random.default_rng(SEED + 1 + layer).permutation(z)
    return np.exp(skew * z)


@lru_cache(maxsize=512)
def spread(experts: int, top_k: int, tokens: int, skew: float | None = None, tile: int = 128) -> Spread:
    """Expected spread of `tokens` tokens with top-k routing over `experts` experts under router skew s;
    `tile` is the grouped matmul's tile width in tokens (llama.cpp MMQ: 128, see catalog speed.yaml).

    Router inputs of different tokens are taken as independent and isotropic (true of a synthetic model;
    for a trained one the skew is an effective value fitted to published statistics), so each logit is
    scale_e * N(0, 1). Monte Carlo over a fixed seed: deterministic.
    """
    s = default_skew() if skew is None else float(skew)
    tokens = max(1, int(tokens))
    scales = expert_scales(experts, s)
    rng = np.random.default_rng(SEED + 7)
    draws = max(1, min(16, 32768 // tokens))
    distinct, tiles, top10 = [], [], []
    for _ in range(draws):
        logits = rng.standard_normal((tokens, experts)) * scales
        top = np.argpartition(-logits, top_k - 1, axis=1)[:, :top_k]
        counts = np.bincount(top.ravel(), minlength=experts)
        distinct.append(np.count_nonzero(counts))
        tiles.append(np.ceil(counts / tile).sum())
        top10.append(np.sort(counts)[::-1][: max(1, experts // 10)].sum() / counts.sum())
    return Spread(experts=experts, top_k=top_k, tokens=tokens, skew=s, distinct=float(np.mean(distinct)), tile=tile,
                  tile_loads=float(np.mean(tiles)), top10_share=float(np.mean(top10)))
