"""rigbench route: policies (pure), byte-for-byte streaming, fallback, Anthropic translation, accounting, and with
the embedded model the planner-driven swap and an eval run whose trace holds the routing decisions."""

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from rigbench import store

pytest.importorskip("starlette", reason="rigbench route needs the route extra: pip install -e '.[route]'")
pytest.importorskip("uvicorn", reason="rigbench route needs the route extra: pip install -e '.[route]'")
from rigbench.bench import fakeserver
from rigbench.engines.process import free_port
from rigbench.route import anthropic
from rigbench.route.config import RouteConfig, RouteConfigError, Upstream, load
from rigbench.route.policy import Policy, conversation_key
from rigbench.route.server import serve_translating, start_background
from tests.conftest import fakeserver as fake_server

TOOLS = [{"type": "function", "function": {"name": "bash", "parameters": {"type": "object"}}}]


def cfg(**kw) -> RouteConfig:
    base = {"default": "fast", "db": "none",
            "upstreams": {"fast": Upstream(url="http://127.0.0.1:1"), "strong": Upstream(url="http://127.0.0.1:2")}}
    return RouteConfig(**{**base, **kw})


def convo(*turns: dict, task: str = "fix it") -> dict:
    return {"messages": [{"role": "system", "content": "you are an agent"}, {"role": "user", "content": task},
                         *turns], "tools": TOOLS}


def call(i: int) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": "bash", "arguments": "{}"}}]}


def result(i: int, code: int) -> dict:
    return {"role": "tool", "tool_call_id": f"c{i}", "content": f"output\n[exit code {code}]"}


# ---- policy ----------------------------------------------------------------------------------------

def test_rules_on_prompt_tokens_tools_model_and_keywords_say_why():
    p = Policy(cfg(rules=[{"to": "strong", "when": {"prompt_tokens_over": 1000}, "name": "long"},
                          {"to": "strong", "when": {"tools_over": 3}},
                          {"to": "strong", "when": {"model": ["claude-opus*"]}},
                          {"to": "strong", "when": {"keywords": ["Refactor"]}}]))
    short = {"messages": [{"role": "user", "content": "hi"}]}
    d = p.decide(short)
    assert (d.upstream, d.reason) == ("fast", "default")
    d = p.decide({"messages": [{"role": "user", "content": "x" * 8000}]})
    assert d.upstream == "strong" and d.reason.startswith("rule long: ~2000 prompt tokens > 1000")
    d = p.decide({**short, "tools": TOOLS * 4})
    assert d.upstream == "strong" and "4 tools > 3" in d.reason
    d = p.decide({**short, "model": "claude-opus-4"})
    assert d.upstream == "strong" and "matches 'claude-opus*'" in d.reason
    d = p.decide({"messages": [{"role": "user", "content": "please refactor the parser"}]})
    assert d.upstream == "strong" and "keyword 'Refactor'" in d.reason
    assert p.decide({**short, "model": "strong"}).reason == "model 'strong' asked for"
    assert "fast; default; ~0 prompt tokens; 0 tools" in p.decide(short).header()


def test_escalation_after_failed_tools_in_a_row_is_sticky_per_conversation():
    p = Policy(cfg(escalation={"to": "strong", "after_failed_tools": 2}))
    assert p.decide(convo(call(1), result(1, 1))).upstream == "fast"
    assert p.decide(convo(call(1), result(1, 1), call(2), result(2, 0), call(3), result(3, 2))).upstream == "fast"
    d = p.decide(convo(call(1), result(1, 1), call(2), result(2, 127)))
    assert (d.upstream, d.escalated) == ("strong", True) and "2 failed tool calls in a row" in d.reason
    # a later turn of the same conversation (same system + first user message) stays on the strong one
    later = p.decide(convo(call(1), result(1, 1), call(2), result(2, 127), call(3), result(3, 0)))
    assert later.upstream == "strong" and "earlier in this conversation" in later.reason
    other = {"messages": [{"role": "system", "content": "you are an agent"},
                          {"role": "user", "content": "another task"}], "tools": TOOLS}
    assert p.decide(other).upstream == "fast"


def test_escalation_on_a_reply_with_no_tool_call_and_on_the_clients_request():
    p = Policy(cfg(escalation={"to": "strong", "after_failed_tools": None}))
    no_call = convo({"role": "assistant", "content": "I think it is fixed."},
                    {"role": "user", "content": "Call a tool."})
    d = p.decide(no_call)
    assert d.upstream == "strong" and d.reason == "escalated: the last reply called no tool"
    assert p.decide(convo(call(1), result(1, 0), task="another task")).upstream == "fast"
    fresh = {"messages": [{"role": "user", "content": "new"}]}
    assert p.decide(fresh, client_escalates=True).reason == "escalated: the client sent x-rigbench-escalate"
    assert p.decide({"messages": [{"role": "user", "content": "new"}]}).upstream == "strong"   # sticky
    assert conversation_key(fresh["messages"]) != conversation_key(no_call["messages"])


def test_a_config_naming_an_unknown_upstream_is_a_one_line_error(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text(yaml.safe_dump({"upstreams": {"fast": {"url": "http://x"}}, "default": "fast",
                                 "fallback": {"fast": "strong"}}))
    with pytest.raises(RouteConfigError, match="fallback of fast names upstream 'strong'"):
        load(f)
    f.write_text(yaml.safe_dump({"upstreams": {"fast": {}}, "default": "fast"}))
    with pytest.raises(RouteConfigError, match="either `url` or `plan`"):
        load(f)


# ---- through the real server -----------------------------------------------------------------------

@pytest.fixture()
def fake():
    with fake_server() as (url, proc):
        yield url


def _events(raw: bytes) -> list[bytes]:
    return [e for e in raw.split(b"\n\n") if e]


def test_streaming_chunks_arrive_unchanged(fake, tmp_path):
    body = {"model": "ok", "max_tokens": 40, "ttft_ms": 5, "interval_ms": 1, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    with start_background(cfg(upstreams={"fast": Upstream(url=fake + "/v1")}, default="fast")) as r:
        with httpx.stream("POST", r.url + "/v1/chat/completions", json=body) as resp:
            assert resp.headers["content-type"] == "text/event-stream"
            assert resp.headers["x-rigbench-route"].startswith("fast; default")
            pieces = list(resp.iter_raw())
    raw = b"".join(pieces)
    events = _events(raw)
    assert len(events) == 40 + 2            # tokens, usage, [DONE]
    # each token chunk is exactly the bytes the fake server wrote: rebuilt from its own stamps, byte for byte
    for i, ev in enumerate(events[:40]):
        d = orjson.loads(ev[6:])
        assert ev + b"\n\n" == fakeserver._chunk(i, d["rigbench_t"], d.get("rigbench_arrival"), i == 39)
    assert events[-1] == b"data: [DONE]"
    assert len(pieces) > 5                  # streamed as it came, not buffered into one body


def test_a_client_that_leaves_mid_stream_ends_the_upstream_request(fake):
    body = {"model": "ok", "max_tokens": 2000, "ttft_ms": 1, "interval_ms": 5, "stream": True,
            "messages": [{"role": "user", "content": "hi"}]}
    with start_background(cfg(upstreams={"fast": Upstream(url=fake)}, default="fast")) as r:
        with httpx.stream("POST", r.url + "/v1/chat/completions", json=body) as resp:
            chunks = resp.iter_raw()
            next(chunks), next(chunks)
        time.sleep(0.5)
        t = r.router.acct.summary()["fast"]
        assert r.router.upstreams.up["fast"].active == 0
    assert t["requests"] == 1 and t["errors"] == 1 and t["seconds"] < 2   # not the 10 s the stream would take


def test_fallback_on_upstream_errors_and_unreachable_upstreams(fake, tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    c = cfg(db=db, upstreams={"broken": Upstream(url=fake, model="http500"), "down": Upstream(url="http://127.0.0.1:9"),
                              "ok": Upstream(url=fake, model="ok")},
            default="broken", fallback={"broken": "down", "down": "ok"})
    body = {"max_tokens": 3, "ttft_ms": 1, "interval_ms": 1, "stream": True,
            "messages": [{"role": "user", "content": "a"}]}
    with start_background(c) as r:
        resp = httpx.post(r.url + "/v1/chat/completions", json=body)
        run_id = r.router.acct.run_id
    assert resp.status_code == 200 and resp.headers["x-rigbench-upstream"] == "ok"
    assert resp.headers["x-rigbench-route"].startswith("ok; fallback from down; broken; default")
    dbe = store.connect(db)
    rows = store.run_requests(dbe, run_id)
    assert [(x["scenario"], bool(x["error"])) for x in rows] == [("broken", True), ("down", True), ("ok", False)]
    assert "HTTP 500" in rows[0]["error"] and "Connect" in rows[1]["error"]
    sums = {s["scenario"]: s["summary"] for s in store.run_summaries(dbe, run_id)}
    assert sums["upstream:ok"]["fallbacks"] == 1 and sums["upstream:ok"]["output_tokens"] == 3
    assert store.get_run(dbe, run_id)["status"] == "done"


def test_last_upstream_error_is_passed_to_the_client(fake):
    c = cfg(upstreams={"fast": Upstream(url=fake, model="http429")}, default="fast")
    with start_background(c) as r:
        resp = httpx.post(r.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}]})
        assert resp.status_code == 429 and "injected 429" in resp.text
        down = cfg(upstreams={"fast": Upstream(url="http://127.0.0.1:9")}, default="fast")
    with start_background(down) as r:
        resp = httpx.post(r.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "a"}]})
        assert resp.status_code == 502 and "no upstream answered" in resp.json()["error"]["message"]


def test_a_messages_reply_that_is_not_json_is_an_error_status_not_a_200(fake):
    """A non-streaming Messages request whose upstream answers 200 with a non-JSON body (a proxy's HTML page) gets
    an Anthropic error with status 502, not HTTP 200 with an error inside."""
    c = cfg(upstreams={"fast": Upstream(url=fake, model="text200")}, default="fast")
    with start_background(c) as r:
        resp = httpx.post(r.url + "/v1/messages", json={"model": "m", "max_tokens": 8,
                                                       "messages": [{"role": "user", "content": "a"}]})
    assert resp.status_code == 502, resp.text
    body = resp.json()
    assert body["type"] == "error" and "no JSON" in body["error"]["message"]
    assert resp.headers["x-rigbench-upstream"] == "fast" and resp.headers["content-type"] == "application/json"


def test_an_unknown_path_or_method_is_a_one_line_json_error(fake):
    c = cfg(upstreams={"fast": Upstream(url=fake, model="ok")}, default="fast")
    with start_background(c) as r:
        nope = httpx.post(r.url + "/v1/nope", json={})
        wrong = httpx.get(r.url + "/v1/chat/completions")
        bad = httpx.post(r.url + "/v1/chat/completions", content=b"not json")
        ok = httpx.get(r.url + "/v1/models")
    assert nope.status_code == 404 and "/v1/chat/completions" in nope.json()["error"]["message"]
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST" and "takes POST" in wrong.text
    assert bad.status_code == 400 and "not a JSON object" in bad.json()["error"]["message"]
    assert ok.status_code == 200 and [m["id"] for m in ok.json()["data"]] == ["fast"]


def test_runs_shows_per_upstream_accounting(fake, tmp_path, run_cli):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    c = cfg(db=db, upstreams={"fast": Upstream(url=fake), "strong": Upstream(url=fake)}, default="fast",
            escalation={"to": "strong"})
    body = {"model": "ok", "max_tokens": 5, "ttft_ms": 1, "interval_ms": 1, "stream": True,
            "messages": [{"role": "user", "content": "a"}]}
    with start_background(c) as r:
        for _ in range(3):
            httpx.post(r.url + "/v1/chat/completions", json=body)
        httpx.post(r.url + "/v1/chat/completions", json=body, headers={"x-rigbench-escalate": "1"})
    rows = json.loads(run_cli("runs", "--db", db, "--json").stdout)
    line = rows[-1]["upstreams"]
    assert rows[-1]["kind"] == "route" and rows[-1]["requests"] == 4
    assert line.startswith("fast 3 req") and "strong 1 req" in line and "(1 esc)" in line


# ---- Anthropic Messages --------------------------------------------------------------------------

def test_messages_request_translates_to_openai_chat():
    body = {"model": "claude-x", "max_tokens": 100, "system": [{"type": "text", "text": "be brief"}],
            "stop_sequences": ["END"], "tool_choice": {"type": "any"}, "stream": True,
            "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "use ls"},
                                                  {"type": "tool_use", "id": "t1", "name": "Bash",
                                                   "input": {"command": "ls"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "is_error": True,
                                              "content": [{"type": "text", "text": "ls: denied"}]},
                                             {"type": "text", "text": "try again"}]}]}
    oa = anthropic.to_openai(body)
    assert oa["messages"][0] == {"role": "system", "content": "be brief"}
    assert oa["messages"][2]["tool_calls"][0]["function"] == {"name": "Bash", "arguments": '{"command": "ls"}'}
    assert oa["messages"][2]["reasoning_content"] == "use ls"
    assert oa["messages"][3] == {"role": "tool", "tool_call_id": "t1",
                                 "content": "<tool_use_error>ls: denied</tool_use_error>"}
    assert oa["messages"][4] == {"role": "user", "content": "try again"}
    assert oa["tool_choice"] == "required" and oa["stop"] == ["END"] and oa["stream_options"]["include_usage"]
    assert oa["tools"][0]["function"]["parameters"] == {"type": "object"}


def test_openai_reply_and_stream_translate_to_messages():
    reply = {"id": "x", "choices": [{"finish_reason": "tool_calls", "message": {
        "content": "ok", "reasoning_content": "hmm",
        "tool_calls": [{"id": "c1", "function": {"name": "Bash", "arguments": '{"command": "ls"}'}}]}}],
             "usage": {"prompt_tokens": 10, "completion_tokens": 4}}
    m = anthropic.from_openai(reply, "claude-x")
    assert [b["type"] for b in m["content"]] == ["thinking", "text", "tool_use"]
    assert m["content"][2]["input"] == {"command": "ls"} and m["stop_reason"] == "tool_use"
    assert m["usage"]["input_tokens"] == 10 and m["usage"]["output_tokens"] == 4
    tr = anthropic.StreamTranslator("claude-x")
    chunks = [{"id": "s", "choices": [{"delta": {"reasoning_content": "think"}}]},
              {"choices": [{"delta": {"content": "hi"}}]},
              {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "Bash",
                                                                                         "arguments": '{"comm'}}]}}]},
              {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'and": "ls"}'}}]}}]},
              {"choices": [{"delta": {}, "finish_reason": "tool_calls"}]},
              {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 5}}]
    out = b"".join(b"".join(tr.feed(c)) for c in chunks) + b"".join(tr.finish())
    evs = [(e.split(b"\n")[0][7:].decode(), json.loads(e.split(b"\n")[1][6:])) for e in _events(out)]
    names = [n for n, _ in evs]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    starts = [d["content_block"]["type"] for n, d in evs if n == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"]
    args = "".join(d["delta"]["partial_json"] for n, d in evs if n == "content_block_delta"
                   and d["delta"]["type"] == "input_json_delta")
    assert json.loads(args) == {"command": "ls"}
    assert evs[-2][1]["delta"]["stop_reason"] == "tool_use" and evs[-2][1]["usage"]["output_tokens"] == 5
    assert names.count("content_block_stop") == 3


def test_translating_endpoint_streams_messages_from_an_openai_upstream(fake):
    with serve_translating(fake + "/v1") as ep:
        body = {"model": "ok", "max_tokens": 6, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        with httpx.stream("POST", ep.url + "/v1/messages", json=body) as resp:
            raw = b"".join(resp.iter_raw())
        plain = httpx.post(ep.url + "/v1/messages", json={**body, "stream": False}).json()
        count = httpx.post(ep.url + "/v1/messages/count_tokens", json=body).json()
    text = "".join(json.loads(e.split(b"\n")[1][6:])["delta"].get("text", "") for e in _events(raw)
                   if e.startswith(b"event: content_block_delta"))
    assert text == "t0 t1 t2 t3 t4 t5 "
    assert raw.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    # the fake server streams even when asked not to: a JSON reply from an SSE body is an error, said so
    assert plain["type"] in ("message", "error")
    assert count["input_tokens"] >= 0


# ---- with the embedded model on llama-server (run under the CPU lock) ---------------------------------

FAST = ["-c", "2048", "-np", "1", "--jinja", "--temp", "0.2"]
STRONG = ["-c", "4096", "-np", "1", "--jinja", "--temp", "0.7"]


def _small_rig(tmp_path: Path, gguf: Path) -> Path:
    """A rig whose RAM holds one of the two planned servers but not both, sized from the planner's own plans."""
    from rigbench import hardware
    from rigbench import model as model_mod
    from rigbench.engines.options import parse_llama_args
    from rigbench.plan import memory

    spec, rig = model_mod.load(str(gguf)), hardware.detect()
    need = max(memory.plan(spec, rig, parse_llama_args(["-m", str(gguf), *a])).devices[-1].total
               for a in (FAST, STRONG))
    reserve = 2 * 1024 ** 3   # engines.yaml host_reserve_bytes
    f = tmp_path / "tiny.yaml"
    f.write_text(yaml.safe_dump({"name": "tiny", "gpus": [], "ram_gb": (reserve + 1.5 * need) / 1024 ** 3}))
    return f


@pytest.mark.llama
def test_planned_upstreams_that_do_not_fit_together_are_swapped(tmp_path, fast_twin, llama_server):
    """The router starts, stops and restarts real llama-servers as it swaps the two planned upstreams that do not
    fit together. They serve the packaged model cut to 2 blocks: what is checked is the swapping and the shape of
    the replies, not their words."""
    from rigbench.route.upstreams import Upstreams

    rig = _small_rig(tmp_path, fast_twin)
    ups = {"fast": {"plan": {"model": str(fast_twin), "args": FAST}},
           "strong": {"plan": {"model": str(fast_twin), "args": STRONG}}}
    embedded = {n: {"plan": {"model": "embedded", "args": a}} for n, a in (("fast", FAST), ("strong", STRONG))}
    for u in (ups, embedded):     # on this machine's RAM both fit: no swapping
        assert Upstreams(RouteConfig(default="fast", db="none", rig="detect", upstreams=u)).fit_note() == []
    db = f"sqlite:///{tmp_path / 'r.db'}"
    c = RouteConfig(default="fast", db=db, rig=str(rig), upstreams=ups)
    notes = Upstreams(c).fit_note()
    assert len(notes) == 1 and "fast and strong do not fit side by side" in notes[0] and "CPU (system RAM)" in notes[0]
    body = {"max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": "Say hi."}]}
    with start_background(c, log_dir=tmp_path) as r:
        a = httpx.post(r.url + "/v1/chat/completions", json=body, timeout=300)
        fast_proc = r.router.upstreams.up["fast"].server.proc
        b = httpx.post(r.url + "/v1/chat/completions", json={**body, "model": "strong"}, timeout=300)
        assert fast_proc.poll() is not None                       # the fast server was stopped for the strong one
        assert r.router.upstreams.running() == ["strong"]
        again = httpx.post(r.url + "/v1/chat/completions", json=body, timeout=300)
        # the Anthropic Messages API on the same upstream, translated, with a forced tool call
        msg = httpx.post(r.url + "/v1/messages", timeout=300, json={
            "model": "fast", "max_tokens": 16, "tool_choice": {"type": "any"},
            "tools": [{"name": "bash", "description": "run a shell command",
                       "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                                        "required": ["command"]}}],
            "messages": [{"role": "user", "content": "List the files in the current folder."}]})
        with httpx.stream("POST", r.url + "/v1/messages", timeout=300, json={**json.loads(msg.request.content),
                                                                            "stream": True}) as resp:
            streamed = b"".join(resp.iter_raw())
        run_id = r.router.acct.run_id
    assert a.status_code == b.status_code == again.status_code == 200
    assert a.headers["x-rigbench-swap"].startswith("started fast")
    assert b.headers["x-rigbench-swap"].startswith("swapped: stopped fast, started strong")
    assert again.headers["x-rigbench-swap"].startswith("swapped: stopped strong, started fast")
    assert "x-rigbench-swap" not in msg.headers and msg.status_code == 200, msg.text
    # the cut model writes noise, and even the whole 0.5B one does not reliably call a tool with tool_choice
    # required (it writes the call as JSON text): this checks a well-formed translation; tool_use blocks are
    # checked by the unit tests
    m = msg.json()
    assert m["type"] == "message" and m["content"] and m["usage"]["output_tokens"] > 0
    for b in m["content"]:
        assert (b["type"] == "text" and b["text"]) or (b["type"] == "tool_use" and isinstance(b["input"], dict))
    evs = [json.loads(e.split(b"\n")[1][6:]) for e in _events(streamed)]
    assert evs[0]["type"] == "message_start" and evs[-1]["type"] == "message_stop"
    assert evs[-2]["type"] == "message_delta" and evs[-2]["usage"]["output_tokens"] > 0
    starts = [e for e in evs if e["type"] == "content_block_start"]
    assert starts and len(starts) == sum(e["type"] == "content_block_stop" for e in evs)
    sums = {s["scenario"]: s["summary"] for s in store.run_summaries(store.connect(db), run_id)}
    assert sums["upstream:fast"]["swaps"] == 1 and sums["upstream:strong"]["swaps"] == 1
    assert sums["upstream:fast"]["requests"] == 4 and sums["upstream:fast"]["output_tokens"] > 0


@pytest.mark.llama
def test_eval_through_the_router_stores_its_routing_decisions(tmp_path, fast_twin, llama_server, run_cli):
    """A real eval whose agent talks to the router, which starts its llama-server upstreams from their plans. They
    serve the packaged model cut to 2 blocks (its replies are noise): the routing decisions are what is checked."""
    db = f"sqlite:///{tmp_path / 'e.db'}"
    port = free_port()
    c = tmp_path / "route.yaml"
    c.write_text(yaml.safe_dump({
        "port": port, "db": db, "default": "fast",
        "upstreams": {"fast": {"plan": {"model": str(fast_twin), "args": FAST}},
                      "strong": {"plan": {"model": str(fast_twin), "args": STRONG}}},
        "escalation": {"to": "strong", "after_failed_tools": 1, "on_no_tool_call": True}}))
    proc = subprocess.Popen([sys.executable, "-m", "rigbench", "route", str(c)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        # task-level escalation through the same router: the rerun asks for the `strong` alias
        res = run_cli("eval", "--task", "fix-failing-test", "--url", url, "--time-limit", "90", "--max-steps", "2",
                      "--max-response-tokens", "64", "--escalate-to", url, "--escalate-model", "strong",
                      "--db", db, "--json", timeout=600)
    finally:
        proc.terminate()
        _, log = proc.communicate(timeout=60)
    d = json.loads(res.stdout)
    events = store.task_events(store.connect(db), d["run"])
    if d["tasks"][0]["escalated_from"]:   # the model failed: attempt 2 ran on the strong upstream
        second = [e["data"] for e in events if e["kind"] == "response" and e["attempt"] == 2]
        # asked for by name, or already escalated in this conversation (the same task prompt): strong either way
        assert second and all(r["upstream"] == "strong" for r in second)
        assert d["escalation"]["tasks"] == 1 and d["escalation"]["extra_s"] > 0
    responses = [e["data"] for e in events if e["kind"] == "response" and e["attempt"] == 1]
    assert responses and all("route" in r and r["upstream"] in ("fast", "strong") for r in responses)
    ups = [r["upstream"] for r in responses]
    assert ups[0] == "fast" and responses[0]["route"].startswith("fast; default")
    if "strong" in ups:   # escalation is sticky: once strong, the rest of the task stays there
        k = ups.index("strong")
        assert set(ups[k:]) == {"strong"} and responses[k]["route"].startswith("strong; escalated: ")
    assert "route: /v1/chat/completions -> fast" in log
    rows = json.loads(run_cli("runs", "--db", db, "--json").stdout)
    route_run = next(r for r in rows if r["kind"] == "route")
    every = [e for e in events if e["kind"] == "response"]
    assert route_run["requests"] == len(every) and route_run["status"] == "done"
    assert f"fast {ups.count('fast')} req" in route_run["upstreams"]


def test_eval_escalate_to_reruns_what_failed_and_stores_the_cost(tmp_path, run_cli):
    from rigbench.sandbox import bwrap_available

    if why := bwrap_available():
        pytest.skip(why)
    db = f"sqlite:///{tmp_path / 'e.db'}"
    d = json.loads(run_cli("eval", "--agent", "noop", "--task", "fix-failing-test", "--task", "csv-to-json",
                           "--escalate-to", "http://127.0.0.1:9", "--escalate-model", "strong", "--db", db,
                           "--json").stdout)
    assert d["escalation"]["tasks"] == 2 and d["escalation"]["rescued"] == 0
    assert d["escalation"]["first_attempts_s"] > 0 and d["escalation"]["extra_s"] > 0
    assert all(t["escalated_from"] == "failure" and t["first_wall_s"] > 0 for t in d["tasks"])
    rows = store.task_rows(store.connect(db), d["run"], final_only=False)
    assert sorted((r["task"], r["attempt"]) for r in rows) == [("csv-to-json", 1), ("csv-to-json", 2),
                                                               ("fix-failing-test", 1), ("fix-failing-test", 2)]
    assert all(r["detail"].startswith("escalated to http://127.0.0.1:9 after failure") for r in rows
               if r["attempt"] == 2)
    runs = json.loads(run_cli("runs", "--db", db, "--json").stdout)
    assert runs[-1]["upstreams"].startswith("escalated 2 tasks to strong: 0 solved, +")


def test_the_gateway_translates_messages_for_an_engine_without_them(fake):
    """Claude Code speaks Anthropic Messages: the fake upstream has no /v1/messages, so the recording gateway an
    eval hands the agent translates to the engine's OpenAI chat API, and records the turn."""
    from rigbench.route.gateway import Gateway, speaks_messages

    assert not speaks_messages(fake)
    events = []
    with Gateway(fake) as gw:
        s = gw.open(lambda kind, data, t: events.append((kind, data)))
        # Claude Code streams: the fake upstream's OpenAI chunks come back as Anthropic events
        r = httpx.post(gw.base(s) + "/v1/messages", json={"model": "m", "max_tokens": 8, "stream": True,
                                                          "messages": [{"role": "user", "content": "hi"}]},
                       timeout=30)
        gw.close(s)
    assert r.status_code == 200, r.text
    kinds = [line.split(":", 1)[1].strip() for line in r.text.splitlines() if line.startswith("event:")]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop" and "content_block_delta" in kinds
    [(kind, turn)] = events
    assert kind == "turn" and turn["api"] == "messages" and turn["output_tokens"] > 0 and not turn.get("fault")
