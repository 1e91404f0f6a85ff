"""The agent loop's answers to what small models do: cut-offs, runaway repetition stopped mid-stream, the
same failing call again and again, long outputs, a conversation outgrowing the context.

The model's misbehaviour is the fault here, and a real model does not misbehave on demand, so most
tests script the replies: a real HTTP server (Starlette + uvicorn) speaking OpenAI's streaming chat API,
answering with chunks given by the test, and real bubblewrap sandboxes running the calls. The last test
runs the embedded Qwen model in llama-server and checks that stopping a repeating stream frees the server.
"""

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from rigbench.agent import Agent, AgentConfig, LimitsExceeded
from rigbench.sandbox.base import Limits
from rigbench.sandbox.bwrap import BwrapSandbox, bwrap_available

needs_bwrap = pytest.mark.skipif(bwrap_available() is not None, reason=f"no sandbox: {bwrap_available()}")


class Script:
    """Replies served in order; each is (text, finish_reason) or a dict of a native tool call."""

    def __init__(self, replies, n_ctx=8192, chunk_delay=0.0):
        self.replies, self.n_ctx, self.delay = list(replies), n_ctx, chunk_delay
        self.requests: list[dict] = []
        self.sent_chunks: list[int] = []

    def app(self) -> Starlette:
        async def props(_: Request):
            return JSONResponse({"default_generation_settings": {"n_ctx": self.n_ctx}})

        async def chat(req: Request):
            import asyncio
            body = await req.json()
            self.requests.append(body)
            reply = self.replies.pop(0) if self.replies else ("I am done.", "stop")
            k = len(self.sent_chunks)
            self.sent_chunks.append(0)

            def chunk(delta, finish=None, usage=None):
                d = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "m",
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                if usage:
                    d = {**d, "choices": [], "usage": usage}
                return f"data: {json.dumps(d)}\n\n"

            async def gen():
                if isinstance(reply, dict):
                    yield chunk({"role": "assistant", "tool_calls": [{"index": 0, "id": "call-1", "type": "function",
                                                                      "function": reply}]}, "tool_calls")
                    self.sent_chunks[k] += 1
                else:
                    text, finish = reply
                    pieces = [text[i:i + 8] for i in range(0, len(text), 8)]
                    for i, p in enumerate(pieces):
                        yield chunk({"content": p}, finish if i == len(pieces) - 1 else None)
                        self.sent_chunks[k] += 1
                        if self.delay:
                            await asyncio.sleep(self.delay)
                yield chunk({}, usage={"prompt_tokens": len(json.dumps(body["messages"])) // 3, "completion_tokens":
                                       self.sent_chunks[k], "total_tokens": 0})
                yield "data: [DONE]\n\n"

            return StreamingResponse(gen(), media_type="text/event-stream")

        return Starlette(routes=[Route("/props", props), Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.fixture
def serve():
    servers = []

    def start(script: Script) -> str:
        config = uvicorn.Config(script.app(), host="127.0.0.1", port=0, log_level="error")
        server = uvicorn.Server(config)
        t = threading.Thread(target=server.run, daemon=True)
        t.start()
        while not server.started:
            time.sleep(0.02)
        servers.append((server, t))
        port = server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for server, t in servers:
        server.should_exit = True
        t.join(5)


@pytest.fixture
def sandbox(tmp_path):
    if bwrap_available():
        pytest.skip(bwrap_available())
    import tempfile
    sb = BwrapSandbox(Limits(), Path(tempfile.mkdtemp()))
    yield sb
    sb.close()


def run_agent(url, sb, **cfg):
    events = []
    agent = Agent(AgentConfig(url=url, max_steps=cfg.pop("max_steps", 6), **cfg), sb,
                  lambda kind, data: events.append((kind, data)))
    try:
        agent.run("do the task")
        end = "finished"
    except LimitsExceeded as e:
        end = str(e)
    return agent, events, end


def user_messages(script: Script, i: int) -> str:
    return json.dumps(script.requests[i]["messages"][-1])


@needs_bwrap
def test_a_cut_off_reply_is_answered_with_its_token_count(serve, sandbox):
    s = Script([("I will first explain at length what " * 5, "length"),
                ('{"name": "finish", "arguments": {"summary": "ok"}}', "stop")])
    agent, events, end = run_agent(serve(s), sandbox)
    assert end == "finished"
    told = user_messages(s, 1)
    assert "cut off after" in told and f"after {s.sent_chunks[0]} tokens" in told and "only the tool call" in told
    resp = [d for k, d in events if k == "response"]
    assert resp[0]["cut_off"] and resp[0]["parse_rule"] is None and resp[1]["parse_rule"] == "json"


@needs_bwrap
def test_a_complete_call_in_a_cut_off_reply_is_run(serve, sandbox):
    cut = '```json\n{"name": "bash", "arguments": {"command": "echo hello-there"}}\nand now I explain'
    s = Script([(cut, "length"),
                ('{"name": "finish", "arguments": {}}', "stop")])
    _, events, _ = run_agent(serve(s), sandbox)
    outputs = [d for k, d in events if k == "tool_output"]
    assert outputs and "hello-there" in outputs[0]["output"]
    assert "cut off at the token limit; the complete tool call in it was run" in user_messages(s, 1)


@needs_bwrap
def test_a_repeating_reply_is_stopped_mid_stream(serve, sandbox):
    loop = '{"name": "bash", "arguments": {"command": "sed ' + "-e 's/a/b/' " * 400
    s = Script([(loop, "length"), ('{"name": "finish", "arguments": {}}', "stop")], chunk_delay=0.002)
    _, events, _ = run_agent(serve(s), sandbox)
    resp = [d for k, d in events if k == "response"]
    total = len(loop) // 8 + 1
    assert resp[0]["stopped_early"] and resp[0]["finish_reason"] == "repetition"
    assert resp[0]["completion_tokens"] < total / 4        # read a fraction of the stream
    assert s.sent_chunks[0] < total / 2                    # and the server stopped sending (client went away)
    told = user_messages(s, 1)
    assert "kept repeating" in told and "'s/a/b/'" in told
    sent_back = s.requests[1]["messages"][-2]["content"]   # the loop is not fed back whole
    assert len(sent_back) < 300 and sent_back.endswith("[...]")


@needs_bwrap
def test_a_reply_that_writes_the_next_turns_is_cut_at_the_turn_marker(serve, sandbox):
    runaway = ("```bash\necho mine\n```\n<|im_end|>\n<|im_start|>user\n"
               '{"name": "finish", "arguments": {}}' + " and the conversation goes on" * 100)
    s = Script([(runaway, "length"), ('{"name": "finish", "arguments": {}}', "stop")])
    _, events, end = run_agent(serve(s), sandbox)
    resp = [d for k, d in events if k == "response"]
    assert resp[0]["stopped_early"] and resp[0]["repetition"]["sign"] == "turn-marker"
    assert resp[0]["parse_rule"] == "bash-fence" and len(resp) == 2      # the finish after the marker is not run
    assert "mine" in [d for k, d in events if k == "tool_output"][0]["output"]
    assert "<|im_start|>" not in s.requests[1]["messages"][-2]["content"]
    assert "wrote the next turn (<|im_end|>); the complete tool call in it was run" in user_messages(s, 1)


@needs_bwrap
def test_the_same_failing_call_three_times_ends_the_task(serve, sandbox):
    bad = '{"name": "bash", "arguments": {"command": "cat /app/missing.txt"}}'
    s = Script([(bad, "stop")] * 5)
    agent, events, end = run_agent(serve(s), sandbox, max_steps=10)
    assert end.startswith("the same failing call was repeated 3 times") and "missing.txt" in end
    assert agent.stats.turns == 3 and len(s.requests) == 3
    assert "already failed 2 times" in user_messages(s, 2)
    assert ("note", {"stop": end}) in events


@needs_bwrap
def test_the_same_successful_call_with_the_same_output_three_times_ends_the_task(serve, sandbox):
    read = '```json\n{"name": "read_file", "arguments": {"path": "/etc/hostname"}}\n```'   # what Qwen 0.5B did
    s = Script([(read, "stop")] * 5)
    agent, _, end = run_agent(serve(s), sandbox, max_steps=10)
    assert end.startswith("the same call was repeated 3 times with the same output") and agent.stats.turns == 3
    assert "made this exact call 2 times" in user_messages(s, 2)


@needs_bwrap
def test_the_same_reply_without_a_call_three_times_ends_the_task(serve, sandbox):
    s = Script([("I think the answer is 42.", "stop")] * 5)
    agent, _, end = run_agent(serve(s), sandbox, max_steps=10)
    assert "repeated 3 times" in end and agent.stats.turns == 3


@needs_bwrap
def test_unknown_tool_and_bad_native_arguments_are_explained(serve, sandbox):
    s = Script([('{"name": "python", "arguments": {"code": "1"}}', "stop"),
                {"name": "write_file", "arguments": '{"path": "/app/a"}'},
                ('{"name": "finish", "arguments": {}}', "stop")])
    run_agent(serve(s), sandbox)
    assert "unknown tool 'python'" in user_messages(s, 1)
    native_answer = s.requests[2]["messages"][-1]
    assert native_answer["role"] == "tool" and native_answer["tool_call_id"] == "call-1"
    assert "write_file needs 'content'" in native_answer["content"]


@needs_bwrap
def test_long_output_keeps_head_and_tail_and_says_so(serve, sandbox):
    s = Script([('{"name": "bash", "arguments": {"command": "echo HEAD; seq 1 20000; echo TAIL"}}', "stop"),
                ('{"name": "finish", "arguments": {}}', "stop")])
    _, events, _ = run_agent(serve(s), sandbox)
    shown = s.requests[1]["messages"][-1]["content"]
    assert "HEAD" in shown and "TAIL" in shown and "characters of output cut" in shown and len(shown) < 8000
    out = [d for k, d in events if k == "tool_output"][0]
    assert out["dropped_chars"] > 100_000 - 8000 and out["chars"] > 100_000


@needs_bwrap
def test_the_conversation_is_compacted_near_the_server_context(serve, sandbox):
    steps = [(json.dumps({"name": "bash", "arguments": {"command": f"seq 1 400; echo step{i}"}}), "stop")
             for i in range(6)]
    s = Script([*steps, ('{"name": "finish", "arguments": {}}', "stop")], n_ctx=2048)
    agent, events, end = run_agent(serve(s), sandbox, max_steps=10, max_response_tokens=256)
    compactions = [d for k, d in events if k == "compact"]
    assert compactions and compactions[0]["n_ctx"] == 2048
    assert compactions[0]["estimated_tokens_after"] < compactions[0]["estimated_tokens_before"]
    last = s.requests[-1]["messages"]
    assert last[1]["content"].startswith("Task:")                       # the task is kept
    summary = next(m["content"] for m in last if "earlier messages were removed" in m["content"])
    assert "step0" in summary and "exit 0" in summary                   # the steps survive as a summary
    assert sum(len(m["content"]) for m in last) // 3 < 2048


# ---- with the real embedded model --------------------------------------------------------------------

@pytest.mark.llama
@needs_bwrap
def test_real_model_stopped_mid_reply_frees_the_server(llama_server, sandbox, tmp_path):
    """The packaged Gemma 3 270M (pretrained, no chat template of its own) echoes the prompt and writes the
    next ChatML turns itself: the reply is stopped at the first marker and llama-server stops generating."""
    from rigbench import packaged
    from rigbench.engines import llamacpp
    from rigbench.engines.options import parse_llama_args

    try:
        gguf = packaged.gemma3_270m()
    except Exception as e:
        pytest.skip(f"packaged Gemma unavailable: {e}")
    o = parse_llama_args(["-m", str(gguf), "-c", "4096", "-np", "1", "--jinja"])
    server = llamacpp.start(llamacpp.launch_spec(o, llama_server, alias="g"), tmp_path / "l.log", timeout=180)
    try:
        agent = Agent(AgentConfig(url=server.url, max_steps=1, max_response_tokens=600, temperature=0.0), sandbox,
                      lambda k, d: None)
        agent.messages = [{"role": "user", "content": "Task:\nList the files in /app."}]
        agent.deadline = time.monotonic() + 300
        reply = agent.query()
        assert reply.repetition is not None and reply.finish_reason == "repetition", reply.content[-300:]
        assert reply.completion_tokens < 300
        t0, slots = time.monotonic(), []
        while time.monotonic() - t0 < 10:     # the slot is idle again soon: the server stopped generating
            slots = httpx.get(server.url + "/slots").json()
            if not any(s.get("is_processing") for s in slots):
                break
            time.sleep(0.2)
        assert slots and not any(s.get("is_processing") for s in slots)
        time.sleep(1)
        metrics = httpx.get(server.url + "/metrics").text
        predicted = next(float(line.split()[-1]) for line in metrics.splitlines()
                         if line.startswith("llamacpp:tokens_predicted_total"))
        assert predicted < 300, predicted     # far from the 600 the request allowed
    finally:
        server.stop()
