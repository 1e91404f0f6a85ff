"""The agent's reply parser, one test per form small models write, and the repetition detector."""

import json
from pathlib import Path

import pytest

from rigbench.agent.loops import Watcher, periodic_tail, repeated_lines, repetition
from rigbench.agent.parse import intends_call, parse_reply

CORPUS = Path(__file__).parent / "data" / "agent_replies.jsonl"


def calls(content, reasoning="", truncated=False):
    p = parse_reply(content, reasoning, truncated)
    return p.rule, [(c.name, c.arguments) for c in p.calls], p.errors


def test_bare_json_object_as_the_whole_message():   # the reply that made issue 18
    assert calls('{"name": "bash", "arguments": {"command": "cat /app/people.csv"}}') == \
        ("json", [("bash", {"command": "cat /app/people.csv"})], [])


def test_several_bare_json_objects_are_all_taken_in_order():
    text = ('First look:\n{"name": "bash", "arguments": {"command": "ls"}}\nthen\n'
            '{"name": "read_file", "arguments": {"path": "/app/a.py"}}')
    assert calls(text)[1] == [("bash", {"command": "ls"}), ("read_file", {"path": "/app/a.py"})]


def test_unclosed_fence_with_a_complete_call():
    assert calls('```json\n{"name": "bash", "arguments": {"command": "python3 t.py"}}\n', truncated=True)[1] == \
        [("bash", {"command": "python3 t.py"})]


def test_call_cut_before_its_last_braces_is_repaired_but_a_cut_string_is_not():
    assert calls('{"name": "bash", "arguments": {"command": "ls -la"}', truncated=True)[1] == \
        [("bash", {"command": "ls -la"})]
    cut = '```json\n{"name": "bash", "arguments": {"command": "sed -e s/a/b/ -e s/a'
    rule, got, errors = calls(cut, truncated=True)
    assert got == [] and "not valid JSON" in errors[0] and '"command": "ls -la"' in errors[0]


def test_arguments_as_a_json_string():
    assert calls('{"name": "write_file", "arguments": "{\\"path\\": \\"/app/x\\", \\"content\\": \\"hi\\"}"}')[1] == \
        [("write_file", {"path": "/app/x", "content": "hi"})]


def test_raw_newlines_inside_json_strings_are_accepted():
    text = '{"name": "write_file", "arguments": {"path": "/app/a.py", "content": "x = 1\nprint(x)\n"}}'
    assert calls(text)[1] == [("write_file", {"path": "/app/a.py", "content": "x = 1\nprint(x)\n"})]


def test_hermes_tool_call_closed_and_unclosed():
    closed = '<tool_call>\n{"name": "bash", "arguments": {"command": "pytest -q"}}\n</tool_call>'
    assert calls(closed) == ("hermes", [("bash", {"command": "pytest -q"})], [])
    assert calls(closed.removesuffix("</tool_call>"))[1] == [("bash", {"command": "pytest -q"})]


def test_qwen3_coder_xml_closed_unclosed_and_cut():
    xml = ("<tool_call>\n<function=str_replace>\n<parameter=path>\n/app/s.py\n</parameter>\n"
           "<parameter=old>\nreturn v[n // 2]\n</parameter>\n<parameter=new>\nreturn sorted(v)[n // 2]\n"
           "</parameter>\n</function>\n</tool_call>")
    want = [("str_replace", {"path": "/app/s.py", "old": "return v[n // 2]", "new": "return sorted(v)[n // 2]"})]
    assert calls(xml) == ("xml", want, [])
    assert calls(xml.split("</function>")[0])[1] == want                       # no </function>
    cut = "<function=bash>\n<parameter=command>\nfor f in a b c; do"
    assert calls(cut, truncated=True)[1] == []                                  # value may be cut: not run
    assert calls(cut + " echo $f; done\n")[1] == [("bash", {"command": "for f in a b c; do echo "
                                                                             "$f; done"})]


def test_calls_inside_reasoning_content():
    rule, got, _ = calls("", reasoning='I will list files. {"name": "bash", "arguments": {"command": "ls /app"}}')
    assert rule == "json+reasoning" and got == [("bash", {"command": "ls /app"})]


def test_gemma_and_llama_tool_code_forms():
    assert calls('```tool_code\nprint(default_api.bash(command="ls /app"))\n```') == \
        ("tool_code", [("bash", {"command": "ls /app"})], [])
    assert calls('[bash(command="ls"), read_file(path="/app/a.py")]')[1] == \
        [("bash", {"command": "ls"}), ("read_file", {"path": "/app/a.py"})]
    assert calls('```tool_code\nread_file("/app/a.py")\n```')[1] == [("read_file", {"path": "/app/a.py"})]
    # Python that merely uses subprocess.run or str.replace is not a call
    assert calls('```python\nimport subprocess\nsubprocess.run(["ls"])\ns.replace("a", "b")\n```')[1] == []


def test_other_json_shapes():
    assert calls('{"tool_call": {"name": "bash", "arguments": {"command": "id"}}}')[1] == [("bash", {"command": "id"})]
    assert calls('{"function": {"name": "bash", "parameters": {"command": "id"}}}')[1] == [("bash", {"command": "id"})]
    assert calls('{"command": "make test"}')[1] == [("bash", {"command": "make test"})]
    assert calls('{"name": "shell", "arguments": {"command": ["ls", "-la"]}}')[1] == [("bash", {"command": "ls -la"})]
    # an unknown name with exactly bash's arguments (Qwen 0.5B, seen in the corpus) is a shell command
    assert calls('{"name": "python3", "arguments": {"command": "python3 /app/w.py", "timeout": 60}}')[1] == \
        [("bash", {"command": "python3 /app/w.py", "timeout": 60})]


def test_bash_fence_and_unclosed_fence_only_when_not_cut():
    assert calls("Run this:\n```bash\npython3 t.py\n```") == ("bash-fence", [("bash", {"command": "python3 t.py"})], [])
    assert calls("```sh\nls /app\n", truncated=False)[1] == [("bash", {"command": "ls /app"})]
    assert calls("```sh\nls /app | sed -e 's/a", truncated=True)[1] == []


def test_unknown_tool_and_malformed_arguments_get_a_specific_error_with_an_example():
    _, got, errors = calls('{"name": "python", "arguments": {"code": "print(1)"}}')
    assert got == [] and "unknown tool 'python'" in errors[0] and "bash, read_file" in errors[0]
    assert '{"name": "bash", "arguments": {"command": "ls -la"}}' in errors[0]
    _, _, errors = calls('{"name": "write_file", "arguments": {"path": "/app/a"}}')
    assert "write_file needs 'content'" in errors[0] and "['path']" in errors[0] and '"content":' in errors[0]
    _, _, errors = calls('{"name": "read_file", "arguments": "not json"}')
    assert "not a JSON object" in errors[0] and '"path": "/app/main.py"' in errors[0]
    _, got, errors = calls('{"name": "finish", "arguments": {"summary": {"type": "string"}}}')   # Qwen 0.5B, real
    assert got == [] and "'summary' holds a JSON schema, not a value" in errors[0]
    _, _, errors = calls('{"name": "bash", "arguments": {"command": "echo "hi""}}')
    assert "not valid JSON" in errors[0]


def test_data_with_a_name_key_is_not_a_call():
    assert calls('The output should be [{"name": "Ann", "age": 3, "email": "a@b"}]')[1] == []
    assert calls("Nothing to do here.") == (None, [], [])
    assert not intends_call("Nothing to do here.") and intends_call('{"name": "bash"')


# ---- repetition --------------------------------------------------------------------------------------

def test_a_runaway_sed_stage_is_degenerate():
    text = '{"name": "bash", "arguments": {"command": "sed ' + "-e 's/,/\\t/g' " * 40
    r = periodic_tail(text)
    assert r and r.unit.strip() in "-e 's/,/\\t/g'" and r.copies >= 20


def test_a_repeated_line_with_varying_numbers_between_is_degenerate():
    text = "".join(f"step {i}:\nI will now read the file again.\n" for i in range(12))
    assert periodic_tail(text) is None and repeated_lines(text).unit == "I will now read the file again."


def test_ordinary_code_is_not_degenerate():
    code = Path(json.__file__).read_text()      # real code: the stdlib json package
    assert repetition(code) is None
    table = "".join(f"| {i:3d} | {i * i:6d} |\n" for i in range(80))
    assert repetition(table) is None


def test_writing_past_the_turn_is_degenerate_and_keeps_the_reply_before_it():
    text = "Task:\nConvert /app/people.csv.\n<|im_end|>\n<|im_start|>user\nNo tool call found"
    r = repetition(text)
    assert r.sign == "turn-marker" and text[: r.keep] == "Task:\nConvert /app/people.csv.\n"
    w = Watcher()
    for i in range(0, len(text), 5):
        w.feed(text[i:i + 5])
    assert w.found.sign == "turn-marker" and w.found.keep == r.keep


def test_the_watcher_fires_while_streaming_soon_after_the_loop_starts():
    w, pieces = Watcher(), ["Let me fix it.\n"] + ["echo again; "] * 200
    fed = 0
    while not w.feed(pieces[fed]):
        fed += 1
    assert w.found and fed < 40      # well before the 200 pieces end


# ---- the corpus of real replies ---------------------------------------------------------------------

def corpus() -> list[dict]:
    if not CORPUS.exists():
        pytest.skip(f"{CORPUS} is missing: benchmarks/agent_local.py --corpus writes it")
    return [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]


def cut(r: dict) -> bool:
    return r["finish_reason"] in ("length", "repetition")


def test_every_real_reply_with_a_complete_call_is_parsed():
    """`complete_call`, checked by hand on each reply: the tool its complete call runs, "unknown:NAME" for a
    complete call to a tool that does not exist (the parser must name it in its error), "" for no call."""
    rows = corpus()
    assert all(r["labelled_by"] == "hand" for r in rows)
    labelled = [r for r in rows if r["complete_call"]]
    assert len(labelled) >= 10
    missed = []
    for r in labelled:
        p = parse_reply(r["content"], r.get("reasoning") or "", truncated=cut(r))
        want = r["complete_call"]
        if want.startswith("unknown:"):
            ok = any(f"unknown tool {want.removeprefix('unknown:')!r}" in e for e in p.errors)
        else:
            ok = [c.name for c in p.calls][:1] == [want]
        if not ok:
            missed.append((r["id"], want, [c.name for c in p.calls], p.errors[:1], r["content"][:200]))
    assert missed == []


def test_no_call_is_made_up_from_real_replies_without_one():
    rows = [r for r in corpus() if r["complete_call"] == ""]
    assert rows
    for r in rows:
        p = parse_reply(r["content"], r.get("reasoning") or "", truncated=cut(r))
        assert p.calls == [], (r["id"], r["content"][:200])
