"""The speed suite: short-prompt TTFT, single-stream decode, TTFT of a 3,500-token prompt, long-context
decode, a concurrency sweep, a KV-capacity probe and the prefix-cache effect of an agent loop."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections.abc import Callable

import httpx
from pydantic import BaseModel

from rigbench.bench.client import RequestResult
from rigbench.bench.load import LoadResult, run, run_load
from rigbench.bench.metrics import Summary, summarize
from rigbench.bench.prompts import ServerUnreachable, Tokenizer, text_of_tokens
from rigbench.bench.scenarios import SCENARIOS


class BenchConfig(BaseModel):
    url: str
    model: str | None = None
    scenarios: list[str] = [x for x in SCENARIOS if x != "turn"]
    short_prompt: int = 64
    short_output: int = 16
    decode_output: int = 256
    long_prompt: int = 3500
    long_context: int = 16384
    sweep: list[int] = [1, 2, 4, 8, 16]
    sweep_prompt: int = 128
    sweep_output: int = 128
    requests_per_level: int = 2
    repeats: int = 3
    kv_prompt: int = 2048
    kv_max_streams: int = 32
    agent_turns: int = 6
    agent_turn_tokens: int = 400
    turn_prompt: int = 8000      # `turn`: one agent turn, P new prompt tokens then G generated (not in the default run)
    turn_output: int = 256
    time_limit: float = 600.0
    request_timeout: float = 600.0
    stall_timeout: float = 120.0
    slo_ms: dict[str, float] = {}


class ServerInfo(BaseModel):
    base: str
    model: str
    engine: str = "unknown"
    version: str | None = None
    context: int | None = None
    slots: int | None = None
    flags: str | None = None


def probe(url: str, model: str | None = None) -> ServerInfo:
    """What is serving at `url`; raises ServerUnreachable before any load when nothing answers."""
    base = url.rstrip("/").removesuffix("/v1")
    try:
        r = httpx.get(base + "/v1/models", timeout=10)
    except httpx.HTTPError as e:
        raise ServerUnreachable(f"cannot reach {base} ({type(e).__name__}); start one with `rigbench serve` "
                                f"or check --url") from None
    if r.status_code != 200:
        raise ServerUnreachable(f"{base}/v1/models answered HTTP {r.status_code}; is it an OpenAI-compatible server?")
    data = r.json().get("data") or []
    info = ServerInfo(base=base, model=model or (data[0]["id"] if data else "default"))
    if data and data[0].get("owned_by") == "vllm":
        info.engine, info.context = "vllm", data[0].get("max_model_len")
        try:
            info.version = httpx.get(base + "/version", timeout=5).json().get("version")
        except (httpx.HTTPError, ValueError):
            pass
    try:
        p = httpx.get(base + "/props", timeout=5)
        if p.status_code == 200:
            props = p.json()
            info.engine = "llama.cpp"
            info.version = props.get("build_info")
            info.slots = props.get("total_slots")
            info.context = (props.get("default_generation_settings") or {}).get("n_ctx") or info.context
    except (httpx.HTTPError, ValueError):
        pass
    return info


class ScenarioResult(BaseModel):
    summary: Summary
    facts: dict = {}


def metrics_snapshot(base: str) -> dict[str, float]:
    try:
        r = httpx.get(base + "/metrics", timeout=5)
    except httpx.HTTPError:
        return {}
    out = {}
    for line in r.text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+([-+0-9.eE]+|NaN)$", line)
        if m and m.group(2) != "NaN":
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def server_view(results: list[RequestResult]) -> dict:
    """The server's own account of the same requests (llama-server's `timings`), medians beside rigbench's:
    a second view of every speed the suite reports."""
    t = [r.server_timings for r in results if r.ok and r.server_timings]
    pre = [x["prompt_per_second"] for x in t if x.get("prompt_per_second")]
    dec = [x["predicted_per_second"] for x in t if x.get("predicted_per_second")]
    out = {}
    if pre:
        out["server_prefill_tok_s"] = round(statistics.median(pre), 1)
    if dec:
        out["server_decode_tok_s"] = round(statistics.median(dec), 2)
    return out


class Suite:
    def __init__(self, cfg: BenchConfig, on_result: Callable[[RequestResult], None] | None = None,
                 on_summary: Callable[[str, ScenarioResult], None] | None = None,
                 progress: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.info = probe(cfg.url, cfg.model)
        self.tok = Tokenizer(self.info.base, self.info.model)
        self.on_result = on_result
        self.on_summary = on_summary
        self.say = progress or (lambda _msg: None)
        self.exact = True
        self._prompts: dict[tuple[int, int], str] = {}
        self._reported: set[str] = set()

    # -- helpers ------------------------------------------------------------------------------
    def prompt(self, n: int, seed: int) -> str:
        key = (n, seed)
        if key not in self._prompts:
            text, exact = text_of_tokens(self.tok, n, seed)
            self.exact &= exact
            self._prompts[key] = text
        return self._prompts[key]

    def completion(self, n_prompt: int, n_out: int, seed: int) -> dict:
        return {"model": self.info.model, "prompt": self.prompt(n_prompt, seed), "max_tokens": n_out,
                "min_tokens": n_out, "ignore_eos": True, "temperature": 0.0, "cache_prompt": False}

    def load(self, scenario: str, payload: Callable[[int], dict], **kw) -> LoadResult:
        return run(run_load(self.info.base + kw.pop("path", "/v1/completions"), payload, scenario=scenario,
                                    timeout=self.cfg.request_timeout, stall_timeout=self.cfg.stall_timeout,
                                    time_limit=self.cfg.time_limit, on_result=self.on_result, **kw))

    def finish(self, name: str, lr: LoadResult, concurrency: int | None = None, **facts) -> ScenarioResult:
        if lr.server_down:
            facts["stopped"] = "server down"
        elif lr.stopped:
            facts["stopped"] = lr.stopped
        facts.update(server_view(lr.results))
        res = ScenarioResult(summary=summarize(name, lr.results, lr.duration_s, concurrency, self.cfg.slo_ms),
                             facts=facts)
        self.report(name, res)
        if lr.server_down:
            raise ServerGone(f"the server at {self.info.base} stopped answering during {name}", res)
        return res

    # -- scenarios ------------------------------------------------------------------------------
    def report(self, name: str, res: ScenarioResult) -> None:
        if self.on_summary and name not in self._reported:
            self._reported.add(name)
            self.on_summary(name, res)

    def run(self) -> dict[str, ScenarioResult]:
        out: dict[str, ScenarioResult] = {}
        for name in self.cfg.scenarios:
            self.say(name)
            out[name] = getattr(self, "s_" + name)()
            self.report(name, out[name])  # scenarios made of several phases report their whole result here
        return out

    def s_short_ttft(self) -> ScenarioResult:
        c = self.cfg
        lr = self.load("short_ttft", lambda i: self.completion(c.short_prompt, c.short_output, 100 + i),
                       requests=c.repeats, warmup=1)
        return self.finish("short_ttft", lr, 1)

    def s_decode(self) -> ScenarioResult:
        c = self.cfg
        lr = self.load("decode", lambda i: self.completion(c.short_prompt, c.decode_output, 200 + i),
                       requests=c.repeats)
        return self.finish("decode", lr, 1)

    def s_ttft_3500(self) -> ScenarioResult:
        c = self.cfg
        lr = self.load("ttft_3500", lambda i: self.completion(c.long_prompt, c.short_output, 300 + i),
                       requests=c.repeats)
        return self.finish("ttft_3500", lr, 1, prompt_tokens=c.long_prompt)

    def s_long_decode(self) -> ScenarioResult:
        c = self.cfg
        ctx = c.long_context
        if self.info.context:  # llama-server: the slot's context; vLLM: max_model_len
            ctx = min(ctx, self.info.context - c.decode_output - 64)
        lr = self.load("long_decode", lambda i: self.completion(ctx, c.decode_output // 2, 400 + i), requests=1)
        return self.finish("long_decode", lr, 1, context_tokens=ctx)

    def s_concurrency(self) -> ScenarioResult:
        c = self.cfg
        levels = {}
        last = None
        for n in c.sweep:
            lr = self.load(f"concurrency_{n}", lambda i, n=n: self.completion(c.sweep_prompt, c.sweep_output,
                                                                               1000 * n + i),
                           concurrency=n, requests=n * c.requests_per_level)
            last = self.finish(f"concurrency_{n}", lr, n)
            s = last.summary
            levels[n] = {"total_tok_s": round(s.output_throughput, 2),
                         "per_stream_tok_s": round(s.per_stream_output_tok_s or 0, 2),
                         "ttft_ms_p50": s.ttft_ms.median, "failed": s.failed}
        assert last is not None
        return ScenarioResult(summary=last.summary, facts={"levels": levels})

    def s_kv_capacity(self) -> ScenarioResult:
        """Concurrent long contexts, doubling, until the server queues (deferred / waiting) or preempts."""
        c = self.cfg
        n, served, facts = 1, 0, {}
        summary = None
        while n <= c.kv_max_streams:
            before = metrics_snapshot(self.info.base)
            lr, queued = run(self._kv_round(n))
            after = metrics_snapshot(self.info.base)
            preempt = after.get("vllm:num_preemptions_total", 0) - before.get("vllm:num_preemptions_total", 0)
            summary = summarize(f"kv_{n}", lr.results, lr.duration_s, n)
            if summary.failed or queued > 0 or preempt > 0:
                facts = {"queued_at": n, "preemptions": preempt, "failed": summary.failed}
                break
            served = n
            n *= 2
        facts.update({"max_concurrent_contexts": served, "context_tokens": c.kv_prompt,
                      "limit_reached": bool(facts) or n > c.kv_max_streams})
        return ScenarioResult(summary=summary or summarize("kv_capacity", [], 0.0), facts=facts)

    def s_turn(self) -> ScenarioResult:
        """One agent turn with nothing cached: prefill P new tokens, then decode G; turn time is E2E."""
        c = self.cfg
        lr = self.load("turn", lambda i: self.completion(c.turn_prompt, c.turn_output, 9000 + i), requests=c.repeats)
        e2e = [r.e2e for r in lr.results if r.ok and r.e2e]
        return self.finish("turn", lr, 1, prompt_tokens=c.turn_prompt, output_tokens=c.turn_output,
                           turn_s=round(sum(e2e) / len(e2e), 3) if e2e else None)

    async def _kv_round(self, n: int) -> tuple[LoadResult, float]:
        """n concurrent long prompts while watching the server's queue; returns the load and the peak queue."""
        c = self.cfg
        peak = 0.0
        stop = asyncio.Event()

        async def watch() -> None:
            nonlocal peak
            while not stop.is_set():
                m = await asyncio.to_thread(metrics_snapshot, self.info.base)
                peak = max(peak, m.get("llamacpp:requests_deferred", 0) + m.get("vllm:num_requests_waiting", 0))
                await asyncio.sleep(0.2)

        w = asyncio.create_task(watch())
        try:
            lr = await run_load(self.info.base + "/v1/completions",
                                lambda i: self.completion(c.kv_prompt, 16, 5000 + 100 * n + i), scenario=f"kv_{n}",
                                concurrency=n, requests=n, timeout=c.request_timeout, stall_timeout=c.stall_timeout,
                                time_limit=c.time_limit, on_result=self.on_result)
        finally:
            stop.set()
            await w
        return lr, peak

    def s_agent_loop(self) -> ScenarioResult:
        """A growing conversation resent each turn: does the prefix cache save the re-read?"""
        c = self.cfg
        messages = [{"role": "system", "content": self.prompt(1500, 7000)}]
        turns = []
        results = []
        t0 = time.monotonic()
        for k in range(c.agent_turns):
            messages.append({"role": "user", "content": self.prompt(c.agent_turn_tokens, 7100 + k)})
            payload = {"model": self.info.model, "messages": list(messages), "max_tokens": 32, "min_tokens": 32,
                       "ignore_eos": True, "temperature": 0.0, "cache_prompt": True}
            lr = self.load("agent_loop", lambda i, p=payload: p, requests=1, path="/v1/chat/completions")
            r = lr.results[0] if lr.results else RequestResult(error="no result")
            r.index = k
            results.append(r)
            if not r.ok:
                break
            messages.append({"role": "assistant", "content": "ok " * 30})
            turns.append({"turn": k, "prompt_tokens": r.prompt_tokens, "cached_tokens": r.cached_tokens,
                          "ttft_ms": round((r.ttft or 0) * 1000, 1)})
        later = [t for t in turns[1:] if t["prompt_tokens"]]
        hit = [((t["cached_tokens"] or 0) / t["prompt_tokens"]) for t in later]
        mean_hit = sum(hit) / len(hit) if hit else 0.0
        facts = {"turns": turns, "mean_cached_fraction": round(mean_hit, 3),
                 "prefix_cache_effective": mean_hit > 0.5}
        if later and mean_hit <= 0.5:
            facts["warning"] = ("the server re-processed most of the prompt on later turns: an agent loop pays "
                                "the whole context every turn (known for hybrid models in some llama-server versions)")
        return ScenarioResult(summary=summarize("agent_loop", results, time.monotonic() - t0, 1), facts=facts)


class ServerGone(RuntimeError):
    def __init__(self, message: str, partial: ScenarioResult):
        super().__init__(message)
        self.partial = partial
