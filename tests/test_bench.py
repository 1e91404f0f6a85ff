"""The load generator and suite against the real llama-server and a fault-injecting local server."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from rigbench import store
from rigbench.bench.client import RequestResult, Session, stream
from rigbench.bench.load import run, run_load
from rigbench.bench.metrics import summarize
from rigbench.engines.process import free_port
from tests.conftest import fakeserver


def test_statistics_follow_vllm_bench_definitions():
    # two requests: TTFT 0.1 s and 0.3 s; chunks every 0.05 s; 5 output tokens each
    a = RequestResult(start=0.0, ttft=0.1, e2e=0.3, chunk_times=[0.1, 0.15, 0.2, 0.25, 0.3], output_tokens=5,
                      prompt_tokens=100)
    b = RequestResult(start=0.0, ttft=0.3, e2e=0.7, chunk_times=[0.3, 0.4, 0.5, 0.6, 0.7], output_tokens=5,
                      prompt_tokens=100)
    bad = RequestResult(error="HTTP 500: boom")
    s = summarize("x", [a, b, bad], duration_s=1.0, concurrency=2, slo_ms={"ttft": 200})
    assert (s.completed, s.failed, s.errors) == (2, 1, {"HTTP 500": 1})
    assert s.ttft_ms.mean == pytest.approx(200) and s.ttft_ms.median == pytest.approx(200)
    # TPOT = (E2E - TTFT) / (output - 1): 50 ms and 100 ms
    assert s.tpot_ms.mean == pytest.approx(75)
    # ITL: four gaps of 50 ms and four of 100 ms; p90 by linear interpolation is 100
    assert s.itl_ms.median == pytest.approx(75) and s.itl_ms.p90 == pytest.approx(100)
    assert s.output_throughput == pytest.approx(10) and s.request_throughput == pytest.approx(2)
    assert s.goodput == pytest.approx(1)  # only the first met TTFT <= 200 ms
    assert a.prefill_tok_s == pytest.approx(1000)


@pytest.fixture()
def fake():
    with fakeserver() as (url, proc):
        yield url, proc


def _load(url, model, n=4, conc=2, **kw):
    payload = {"model": model, "prompt": "hi", "max_tokens": 8, "interval_ms": 5}
    return run(run_load(url + "/v1/completions", lambda i: payload, concurrency=conc, requests=n, **kw))


@pytest.mark.parametrize("model, reason", [
    ("http500", "HTTP 500"), ("http429", "HTTP 429"), ("malformed", "malformed SSE"),
    ("noend", "stream ended without [DONE]"),
])
def test_faults_are_errors_with_their_reason(fake, model, reason):
    lr = _load(fake[0], model)
    assert len(lr.results) == 4 and all(r.error and r.error.startswith(reason) for r in lr.results)


def test_stall_is_an_error_not_a_hang(fake):
    t0 = time.monotonic()
    lr = _load(fake[0], "stall", n=2, stall_timeout=1.0)
    assert time.monotonic() - t0 < 10
    assert all(r.error.startswith("stall") for r in lr.results)


def test_done_ends_a_stream_whose_body_never_ends(fake):
    # [DONE] arrives, the body is never closed: the request is over at [DONE] (after a short grace), not a stall
    t0 = time.monotonic()
    lr = _load(fake[0], "donehang", n=2, stall_timeout=30.0)
    assert time.monotonic() - t0 < 10
    assert all(r.ok and r.output_tokens == 8 and r.e2e < 1 for r in lr.results)


def test_requests_one_after_another_share_one_connection(fake):
    payload = {"model": "ok", "prompt": "hi", "max_tokens": 3, "interval_ms": 1, "ttft_ms": 1}

    async def three():
        async with Session() as s:
            seen = []
            for _ in range(3):
                r = await stream(s, fake[0] + "/v1/completions", payload)
                seen.append((r.ok, [id(c) for conns in s.idle.values() for c in conns]))
            return seen

    seen = run(three())
    assert all(ok for ok, _ in seen) and len(seen[0][1]) == 1 and all(ids == seen[0][1] for _, ids in seen)


def test_tokens_come_from_usage_not_chunks(fake):
    lr = _load(fake[0], "ok", n=3)
    assert all(r.ok and r.output_tokens == 8 and len(r.chunk_times) == 8 for r in lr.results)


def _raw(url: str, version: str, body: bytes, read_all: bool = True) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as c:
        c.sendall(f"POST /v1/completions HTTP/{version}\r\nHost: x\r\nConnection: close\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        out = b""
        while read_all and (data := c.recv(65536)):
            out += data
        return out


def test_fake_server_frames_its_stream_for_http_1_0_and_1_1(fake):
    # the server writes token chunks to the connection itself: HTTP/1.1 gets chunked framing, HTTP/1.0 a plain body
    body = json.dumps({"max_tokens": 3, "interval_ms": 2, "ttft_ms": 1}).encode()
    head, raw = _raw(fake[0], "1.1", body).split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head
    payload, rest = b"", raw
    while True:
        size, rest = rest.split(b"\r\n", 1)
        n = int(size, 16)
        payload, rest = payload + rest[:n], rest[n + 2:]
        if n == 0:
            break
    assert rest == b""
    head, plain = _raw(fake[0], "1.0", body).split(b"\r\n\r\n", 1)
    assert b"chunked" not in head
    for p in (payload, plain):
        events = [e.removeprefix(b"data: ") for e in p.split(b"\n\n") if e]
        assert [json.loads(e)["choices"][0]["text"] for e in events[:3]] == ["t0 ", "t1 ", "t2 "]
        assert events[3:] == [b'{"choices": [], "usage": {"prompt_tokens": 0, "completion_tokens": 3}}', b"[DONE]"]


def test_fake_server_keeps_each_stream_on_schedule_beside_others(fake):
    # 40 streams share the server's one timer, and one client hangs up mid-stream: every other stream gets its
    # tokens in order, `interval_ms` apart by the server's own stamps, and the server keeps serving
    _raw(fake[0], "1.1", json.dumps({"max_tokens": 500, "interval_ms": 5}).encode(), read_all=False)
    payload = {"model": "ok", "prompt": "hi", "max_tokens": 30, "interval_ms": 20, "ttft_ms": 10}
    lr = run(run_load(fake[0] + "/v1/completions", lambda i: payload, concurrency=40, requests=40,
                      probe_key="rigbench_t"))
    assert all(r.ok and len(r.probe) == 30 for r in lr.results)
    for r in lr.results:
        gaps = [b - a for a, b in zip(r.probe, r.probe[1:], strict=False)]
        assert 0.010 < sum(gaps) / len(gaps) < 0.030 and r.probe[0] - r.probe_arrival > 0.005


def test_server_death_mid_run_keeps_finished_requests(fake):
    url, proc = fake
    threading.Timer(1.5, proc.kill).start()
    payload = {"model": "ok", "prompt": "hi", "max_tokens": 20, "interval_ms": 10}
    lr = run(run_load(url + "/v1/completions", lambda i: payload, concurrency=2, requests=200, time_limit=60))
    done = [r for r in lr.results if r.ok]
    assert lr.server_down and lr.stopped == "server down"
    assert 2 <= len(done) < 200 and all(r.output_tokens == 20 for r in done)


def test_open_loop_is_bounded(fake):
    payload = {"model": "ok", "prompt": "hi", "max_tokens": 4, "interval_ms": 5}
    t0 = time.monotonic()
    lr = run(run_load(fake[0] + "/v1/completions", lambda i: payload, rate=20.0, requests=10, concurrency=0))
    assert len(lr.results) == 10 and all(r.ok for r in lr.results) and time.monotonic() - t0 < 10


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "rigbench", *args], capture_output=True, text=True,
                          timeout=kw.pop("timeout", 300), **kw)


def test_unreachable_server_fails_before_any_load(tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    p = _cli("bench", "--url", f"http://127.0.0.1:{free_port()}", "--db", db)
    assert p.returncode == 2 and "cannot reach" in p.stderr and "Traceback" not in p.stderr
    assert store.list_runs(store.connect(db)) == []


def test_run_is_marked_failed_when_the_server_dies(fake, tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    p = _cli("bench", "--url", fake[0], "--model", "die", "--scenarios", "decode", "--db", db, "--json")
    assert p.returncode == 1
    runs = store.list_runs(store.connect(db))
    assert runs[0]["status"] == "failed" and "stopped answering" in runs[0]["error"]


def test_ctrl_c_keeps_what_is_done(fake, tmp_path):
    db = f"sqlite:///{tmp_path}/s.db"
    proc = subprocess.Popen([sys.executable, "-m", "rigbench", "bench", "--url", fake[0], "--model", "ok",
                             "--scenarios", "concurrency", "--sweep", "1,1,1,1,1,1,1,1,1,1,1,1", "--db", db],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    eng = store.connect(db)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        runs = store.list_runs(eng)
        if runs and runs[0]["requests"] >= 2:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    runs = store.list_runs(eng)
    assert runs[0]["status"] == "interrupted" and runs[0]["requests"] >= 2
    assert proc.returncode == 130


def test_suite_against_llama_server(twin_model, tmp_path):
    """The suite against llama-server on the packaged model cut to 2 blocks (its speeds and own timings are real,
    its words are not read), checked against the server's own account of the same requests."""
    db = f"sqlite:///{tmp_path}/s.db"
    p = _cli("bench", "--url", twin_model.url, "--quick", "--scenarios", "short_ttft,decode,concurrency,agent_loop",
             "--sweep", "1,2", "--db", db, "--json", "--csv", str(tmp_path / "b.csv"))
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["server"]["engine"] == "llama.cpp" and d["exact_prompt_lengths"] is True
    sc = d["scenarios"]
    assert sc["decode"]["completed"] == 2 and sc["decode"]["tpot_ms_p50"] > 0
    # the server's own timings beside rigbench's: a second view of the same requests, within 10%
    f = sc["decode"]["facts"]
    assert f["server_decode_tok_s"] == pytest.approx(sc["decode"]["per_stream_tok_s"], rel=0.1)
    assert f["server_prefill_tok_s"] > 0
    assert sc["concurrency_2"]["completed"] == 2
    assert sc["concurrency"]["facts"]["levels"]["2"]["total_tok_s"] > 0
    assert "prefix_cache_effective" in sc["agent_loop"]["facts"]
    rows = store.run_requests(store.connect(db), d["run"])
    decode = [r for r in rows if r["scenario"] == "decode"]
    # exact prompt length from the server's tokenizer, output length fixed by ignore_eos, counted from usage
    assert all(r["prompt_tokens"] == 32 and r["output_tokens"] == 64 for r in decode)
    assert (tmp_path / "b.csv").read_text().startswith("scenario,")


@pytest.mark.llama
def test_a_reply_that_streams_no_text_still_has_its_first_token_timed(live_model, qwen_gguf):
    """llama-server holds back a token that ends inside a UTF-8 character; a one-token reply of such a token (the
    lone byte 0xE4, forced by a logit bias) streams no text at all, only its final event. Its time to first token is
    that event's, as vllm bench serve takes it, not a missing first token."""
    import asyncio

    from rigbench import ggufread

    byte_e4 = ggufread.read(qwen_gguf).fields["tokenizer.ggml.tokens"].index("\u00e4")   # GPT-2 byte map: 0xE4

    async def one(bias: list) -> RequestResult:
        async with Session() as s:
            return await stream(s, live_model.url + "/v1/completions",
                                {"model": "qwen", "prompt": "def add(a, b):", "max_tokens": 1, "temperature": 0,
                                 "logit_bias": bias})

    held = asyncio.run(one([[byte_e4, 100]]))
    assert held.ok and held.output_tokens == 1
    assert held.chunk_times == []                       # no text came: the case itself
    assert held.ttft is not None and 0 < held.ttft <= held.e2e
    plain = asyncio.run(one([]))                        # a token that is whole text: timed at its text, as before
    assert plain.ok and len(plain.chunk_times) == 1 and plain.ttft == plain.chunk_times[0] - plain.start


@pytest.mark.llama
def test_prompts_are_code_of_an_exact_length_with_a_real_token_spread(live_model):
    """A MoE model's prefill depends on how many distinct tokens a u-batch holds: prompts must spread like code."""
    from rigbench.bench.prompts import Tokenizer, text_of_tokens

    tok = Tokenizer(live_model.url)
    a, exact_a = text_of_tokens(tok, 2000, 1)
    b, exact_b = text_of_tokens(tok, 2000, 2)
    ids = tok.encode(a)
    assert exact_a and exact_b and len(ids) == 2000 and a[:200] != b[:200]
    # 512 tokens of Python source hold a few hundred distinct tokens; the old 45-word salad held under 60
    assert min(len(set(ids[i:i + 512])) for i in range(0, 1536, 512)) > 150
