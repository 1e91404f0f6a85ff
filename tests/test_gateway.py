"""The recording gateway (rigbench.route.gateway) in front of rigbench's fake OpenAI server: what an agent gets is
what the engine sent, and every request is a turn with the engine's own token counts and the right blame."""

from __future__ import annotations

import contextlib

import httpx
import orjson
import pytest

from rigbench.route.gateway import Gateway
from tests.conftest import fakeserver


@pytest.fixture(scope="module")
def fake():
    with fakeserver("--ttft-ms", "5", "--interval-ms", "1") as (url, _):
        yield url


@pytest.fixture(scope="module")
def gateway(fake):
    with Gateway(fake) as gw:
        yield gw


class Recorder:
    def __init__(self):
        self.events: list[tuple[str, dict, float]] = []

    def __call__(self, kind: str, data: dict, t: float) -> None:
        self.events.append((kind, data, t))


def _session(gw: Gateway):
    rec = Recorder()
    return gw.open(rec), rec


def _chat(url: str, model: str = "ok", stream: bool = True, **extra) -> httpx.Response:
    return httpx.post(url + "/v1/chat/completions", json={"model": model, "stream": stream, "max_tokens": 6,
                                                          "messages": [{"role": "user", "content": "a b c"}],
                                                          **extra}, timeout=30)


def test_a_streamed_reply_reaches_the_agent_unchanged_and_is_recorded(gateway, fake):
    s, rec = _session(gateway)
    direct = _chat(fake, stream_options={"include_usage": True}).content
    through = _chat(gateway.base(s), stream_options={"include_usage": True}).content
    gateway.close(s)
    # the same events (the fake server's stamps differ per request): same count, same token texts, same usage
    strip = [orjson.loads(line[6:]) for line in direct.split(b"\n\n") if line.startswith(b"data: {")]
    got = [orjson.loads(line[6:]) for line in through.split(b"\n\n") if line.startswith(b"data: {")]
    assert [c["choices"] for c in got] == [c["choices"] for c in strip] and got[-1]["usage"] == strip[-1]["usage"]
    [(kind, turn, t)] = rec.events
    assert kind == "turn" and turn["api"] == "chat" and turn["stream"] and turn["status"] == 200
    assert (turn["prompt_tokens"], turn["output_tokens"]) == (strip[-1]["usage"]["prompt_tokens"], 6)
    assert turn["finish_reason"] == "length" and "fault" not in turn and turn["usage_from"] == "usage"
    assert turn["response_bytes"] == len(through) and turn["request_bytes"] > 50
    assert 0 < turn["ttft_s"] <= turn["seconds"] and t == pytest.approx(turn["sent_t"] + turn["seconds"], abs=1e-3)


def test_the_usage_chunk_the_gateway_asks_for_is_kept_from_an_agent_that_did_not(gateway, fake):
    s, rec = _session(gateway)
    body = _chat(gateway.base(s)).content      # no stream_options: the engine is not llama-server, so asked for
    gateway.close(s)
    assert b'"usage"' not in body and body.endswith(b"data: [DONE]\n\n")
    [(_, turn, _)] = rec.events
    assert turn["stream_usage_added"] and turn["output_tokens"] == 6 and turn["prompt_tokens"] > 0


def test_keep_alive_comments_before_the_first_token_are_not_the_first_token(gateway):
    """llama-server answers a streamed request at once and sends `:` every 30 s while it computes a long prompt:
    the turn's TTFT is its first token's, and the agent gets the comments as sent."""
    s, rec = _session(gateway)
    r = _chat(gateway.base(s), max_tokens=4, ttft_ms=600, keepalive_ms=100)
    gateway.close(s)
    assert r.text.startswith(":\n\n:\n\n") and r.text.count("data:") >= 4
    [(_, turn, _)] = rec.events
    assert 0.55 <= turn["ttft_s"] < turn["seconds"] and turn["output_tokens"] == 4, turn


def test_gap_is_the_time_between_replies(gateway):
    import time

    s, rec = _session(gateway)
    _chat(gateway.base(s))
    time.sleep(0.3)     # the agent's own work between two requests
    _chat(gateway.base(s), stream=False)
    gateway.close(s)
    first, second = (e[1] for e in rec.events)
    # the gap holds the agent's own time: the pause, and the client's making of its next request
    assert 0.3 <= second["gap_s"] < 1.5 and second["sent_t"] > first["sent_t"] + first["seconds"]
    assert not second.get("stream") and second["output_tokens"] == 6
    assert s.totals() == (2, first["prompt_tokens"] + second["prompt_tokens"], 12)


@pytest.mark.parametrize("mode, fault", [
    ("http500", "the engine answered HTTP 500: injected 500"),
    ("empty", "the engine's stream was empty"),
    ("noend", "the engine's stream ended before the reply finished"),
    ("malformed", "the engine's stream ended before the reply finished"),
])
def test_a_broken_reply_is_the_harness_fault(gateway, mode, fault):
    s, rec = _session(gateway)
    _chat(gateway.base(s), model=mode)
    gateway.close(s)
    [(_, turn, _)] = rec.events
    assert turn["fault"] == fault
    assert s.blame(agent_reads_json=False) == fault


def test_a_json_body_to_a_streamed_request_is_blamed_unless_the_agent_reads_it(gateway):
    s, rec = _session(gateway)
    r = _chat(gateway.base(s), model="json")
    gateway.close(s)
    assert r.headers["content-type"].startswith("application/json") and r.json()["usage"]["completion_tokens"] == 6
    [(_, turn, _)] = rec.events
    assert turn["anomaly"] == "the engine answered a streamed request with one JSON body" and "fault" not in turn
    assert turn["output_tokens"] == 6
    assert s.blame(agent_reads_json=True) is None
    assert s.blame(agent_reads_json=False).startswith("the engine answered a streamed request with one JSON body")


def test_a_recovered_fault_is_not_blamed(gateway):
    s, _ = _session(gateway)
    _chat(gateway.base(s), model="http500")
    _chat(gateway.base(s))
    gateway.close(s)
    assert s.blame(agent_reads_json=False) is None


def test_context_overflow_says_by_how_much():
    from rigbench.route.record import error_reason

    llama = (b'{"error":{"code":400,"message":"request (11398 tokens) exceeds the available context size '
             b'(8192 tokens), try increasing it","type":"exceed_context_size_error"}}')
    assert error_reason(400, llama) == "request of 11,398 tokens exceeds the server's 8,192-token context"
    vllm = (b'{"object":"error","message":"This model\'s maximum context length is 32768 tokens. However, you '
            b'requested 40000 tokens in the messages.","type":"BadRequestError","code":400}')
    assert error_reason(400, vllm) == "request of 40,000 tokens exceeds the server's 32,768-token context"


def test_an_unknown_or_closed_session_is_refused(gateway):
    s, _ = _session(gateway)
    gateway.close(s)
    r = _chat(gateway.base(s))
    assert r.status_code == 404 and "has ended" in r.json()["error"]["message"]


def test_messages_are_translated_for_an_engine_without_them_and_recorded(gateway):
    s, rec = _session(gateway)
    r = httpx.post(gateway.base(s) + "/v1/messages", json={
        "model": "ok", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    c = httpx.post(gateway.base(s) + "/v1/messages/count_tokens?beta=true", json={
        "model": "ok", "messages": [{"role": "user", "content": "hi there"}]}, timeout=30)
    gateway.close(s)
    kinds = [line.split(":", 1)[1].strip() for line in r.text.splitlines() if line.startswith("event:")]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert c.status_code == 200 and c.json()["input_tokens"] > 0
    turn, count = (e[1] for e in rec.events)
    assert turn["api"] == "messages" and turn["output_tokens"] == 5 and "fault" not in turn
    assert count["api"] == "count_tokens"
    assert s.totals()[0] == 1     # counting tokens is not a model turn


def test_a_request_still_unanswered_when_the_task_ends_is_recorded_as_cut_off(gateway):
    """The agent is stopped (time limit) while its request is in flight: the turn is on record when the session
    closes, without token counts, and a late reply does not add a second record."""
    import threading

    s, rec = _session(gateway)
    def stalled():
        with contextlib.suppress(httpx.HTTPError):
            _chat(gateway.base(s), model="stall")

    t = threading.Thread(target=stalled, daemon=True)
    t.start()
    import time
    for _ in range(200):
        if s.pending:
            break
        time.sleep(0.01)
    gateway.close(s, wait=0.2)
    [(kind, turn, _)] = rec.events
    assert turn["client_left"] and "prompt_tokens" not in turn and turn["seconds"] > 0
    assert s.blame(agent_reads_json=False) is None      # a timeout, not the harness's fault
    t.join(30)
    assert len(rec.events) == 1
