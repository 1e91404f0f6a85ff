"""Tool calls a local model left in its text instead of the API's tool_calls, in every form small models
use, and a specific error for each call that names an unknown tool or carries bad arguments.

Rules, tried in order on the content and then on the reasoning; the first that finds a call wins:
- `xml`: the qwen3_coder form `<function=NAME><parameter=KEY>VALUE</parameter></function>`, with or
  without `<tool_call>` around it; a missing `</function>` is forgiven, a parameter without its
  `</parameter>` is not (its value may be cut);
- `hermes`: `<tool_call>{json}</tool_call>` (Qwen2.5, Hermes), a missing closing tag forgiven;
- `json`: JSON objects anywhere in the text, bare or in a fence (closed or not), one or several, as
  {"name", "arguments"|"parameters"|"args"|"input"}, {"function": {...}}, {"tool_call": {...}} or
  {"tool": ...}; arguments may be a JSON string; a reply cut just before the final braces is repaired;
- `tool_code`: Gemma/Llama-style Python calls, `bash(command="ls")` or `print(default_api.bash(...))`, in a
  ```tool_code / ```python fence or a `[bash(command="ls")]` list;
- `bash-fence`: the first ```bash / ```sh block (an unclosed one only when the reply was not cut off).
"""

from __future__ import annotations

import ast
import json
import re

from pydantic import BaseModel, Field

from rigbench.agent.tools import TOOLS, ToolCall

SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
EXAMPLE = '{"name": "bash", "arguments": {"command": "ls -la"}}'
# names small models give the tools, taken as the tool they mean
ALIASES = {"shell": "bash", "sh": "bash", "terminal": "bash", "run": "bash", "execute": "bash", "cmd": "bash",
           "run_command": "bash", "execute_command": "bash", "execute_bash": "bash", "run_bash": "bash",
           "cat": "read_file", "open_file": "read_file", "view_file": "read_file", "create_file": "write_file",
           "edit_file": "str_replace", "replace": "str_replace", "submit": "finish", "done": "finish"}


class Parsed(BaseModel):
    calls: list[ToolCall] = Field(default_factory=list)   # valid calls, in order
    errors: list[str] = Field(default_factory=list)       # one message per call that could not be run
    rule: str | None = None                               # which rule found them ("+reasoning" if there)


def parse_reply(content: str, reasoning: str = "", truncated: bool = False) -> Parsed:
    """The calls in a reply's content, else in its reasoning; `truncated`: the reply was cut off."""
    for text, where in ((content or "", ""), (reasoning or "", "+reasoning")):
        for rule, find in RULES:
            raw = find(text, truncated)
            if raw:
                out = Parsed(rule=rule + where)
                for i, (name, args) in enumerate(raw):
                    call, error = validate(name, args, f"{rule}-{i}")
                    if call:
                        out.calls.append(call)
                    else:
                        out.errors.append(error)
                return out
    if intends_call(content, reasoning):
        return Parsed(errors=[_diagnose(content or reasoning or "")])
    return Parsed()


def parse_content(content: str) -> list[ToolCall]:
    """The valid tool calls left in message content (all forms)."""
    return parse_reply(content).calls


def _diagnose(text: str) -> str:
    """What is wrong with a reply that looks like a tool call but holds none that can be read."""
    m = re.search(r"\{\s*\"name\"", text)
    if m:
        try:
            _DECODER.raw_decode(text, m.start())
        except json.JSONDecodeError as e:
            return (f"your tool call is not valid JSON ({e.msg} at character {e.pos - m.start()} of the call); "
                    f"escape quotes and newlines inside strings. Example of a valid call: {EXAMPLE}")
    return f"no complete tool call found in your reply. Example of a valid call: {EXAMPLE}"


def validate(name: str, args, call_id: str) -> tuple[ToolCall | None, str]:
    """A runnable call, or the message that tells the model what was wrong and how a right one looks."""
    name = str(name or "").strip()
    tool = name if name in SCHEMAS else ALIASES.get(name.lower())
    if isinstance(args, str) and args.strip().startswith("{"):
        try:
            args = json.loads(args, strict=False)
        except json.JSONDecodeError:
            pass
    if tool is None and isinstance(args, dict) and isinstance(args.get("command"), str) and \
            set(args) <= {"command", "timeout"}:
        tool = "bash"       # {"name": "python3", "arguments": {"command": "python3 x.py"}}: a shell command
    if tool is None:
        return None, (f"unknown tool {name!r}: the tools are {', '.join(SCHEMAS)}. Example of a valid call: "
                      f"{EXAMPLE}")
    if isinstance(args, str):
        try:
            args = json.loads(args, strict=False) if args.strip() else {}
        except json.JSONDecodeError:
            if tool != "bash":
                return None, (f"the arguments of {tool} are not a JSON object: {args[:120]!r}. Example of a valid "
                              f"call: {_example(tool)}")
            args = {"command": args}
    if args is None:
        args = {}
    if not isinstance(args, dict):
        if tool == "bash" and isinstance(args, list) and all(isinstance(a, str) for a in args):
            args = {"command": " ".join(args)}
        else:
            return None, (f"the arguments of {tool} must be a JSON object, not {type(args).__name__}. Example of "
                          f"a valid call: {_example(tool)}")
    schema = SCHEMAS[tool]
    echoed = [k for k, v in args.items() if isinstance(v, dict) and "type" in v]
    if echoed:      # {"path": {"type": "string"}}: the tool's schema copied, not a value given
        return None, (f"{tool}: {', '.join(repr(k) for k in echoed)} holds a JSON schema, not a value; give the "
                      f"actual values. Example of a valid call: {_example(tool)}")
    if tool == "bash" and "command" not in args and len(args) == 1 and isinstance(next(iter(args.values())), str):
        args = {"command": next(iter(args.values()))}   # {"cmd": ...}, {"script": ...}
    if isinstance(args.get("command"), list):
        args["command"] = " ".join(str(a) for a in args["command"])
    missing = [k for k in schema.get("required", []) if k not in args]
    if missing:
        return None, (f"{tool} needs {', '.join(repr(k) for k in missing)}; your call had "
                      f"{sorted(args) or 'no arguments'}. Example of a valid call: {_example(tool)}")
    bad = [k for k in schema.get("required", []) if not isinstance(args[k], str)]
    if bad:
        return None, (f"{tool}: {', '.join(repr(k) for k in bad)} must be a string. Example of a valid call: "
                      f"{_example(tool)}")
    return ToolCall(id=call_id, name=tool, arguments=args), ""


def _example(tool: str) -> str:
    return {"bash": EXAMPLE,
            "read_file": '{"name": "read_file", "arguments": {"path": "/app/main.py"}}',
            "write_file": '{"name": "write_file", "arguments": {"path": "/app/a.py", "content": "print(1)\\n"}}',
            "str_replace": '{"name": "str_replace", "arguments": {"path": "/app/a.py", "old": "x = 1", '
                           '"new": "x = 2"}}',
            "finish": '{"name": "finish", "arguments": {"summary": "fixed the bug"}}'}[tool]


# ---- the rules: each returns [(name, arguments)] -----------------------------------------------------

_XML_FN = re.compile(r"<function=([^>\s]+)>(.*?)(?:</function>|(?=<function=)|\Z)", re.S)
_XML_PARAM = re.compile(r"<parameter=([^>\s]+)>\n?(.*?)\n?</parameter>", re.S)
_XML_OPEN_PARAM = re.compile(r"<parameter=([^>\s]+)>\n?(?![\s\S]*</parameter>)", re.S)


def _xml(text: str, truncated: bool) -> list:
    out = []
    for name, body in _XML_FN.findall(text):
        params = dict(_XML_PARAM.findall(body))
        left_open = _XML_OPEN_PARAM.search(body)
        if left_open:
            if truncated:
                continue    # a parameter still open in a reply cut at the token limit: its value may be cut
            params[left_open.group(1)] = body[left_open.end():].strip("\n")
        out.append((name, params))
    return out


_HERMES = re.compile(r"<tool_call>\s*", re.S)
_DECODER = json.JSONDecoder(strict=False)   # strict=False: raw newlines inside strings, as models write them


def _hermes(text: str, truncated: bool) -> list:
    out = []
    for m in _HERMES.finditer(text):
        obj = _decode_at(text, m.end())
        call = _as_call(obj) if obj is not None else None
        if call:
            out.append(call)
    return out


def _json(text: str, truncated: bool) -> list:
    out, i = [], 0
    while (i := text.find("{", i)) != -1:
        obj, end = _decode_span(text, i)
        call = _as_call(obj) if obj is not None else None
        if call:
            out.append(call)
            i = end
        else:
            i += 1
    return out


def _decode_at(text: str, i: int):
    return _decode_span(text, i)[0]


def _decode_span(text: str, i: int):
    """The JSON object starting at text[i] and where it ends; a text that ends inside it after a complete
    value gets up to three closing braces added (a reply cut just before its last `}}`)."""
    try:
        obj, end = _DECODER.raw_decode(text, i)
        return obj, end
    except json.JSONDecodeError as e:
        if e.pos < len(text.rstrip().removesuffix("```").rstrip()):
            return None, i + 1      # broken before the end of the text: not a cut-off, nothing to repair
    tail = text[i:].rstrip().removesuffix("```").rstrip()
    for extra in ("}", "}}", "}}}"):
        try:
            obj, _ = _DECODER.raw_decode(tail + extra)
            return obj, len(text)
        except json.JSONDecodeError:
            continue
    return None, i + 1


def _as_call(obj) -> tuple[str, object] | None:
    """(name, arguments) if the object is a tool call in one of the JSON shapes models use."""
    if not isinstance(obj, dict):
        return None
    for wrap in ("tool_call", "function_call", "function"):
        if isinstance(obj.get(wrap), dict) and "name" in obj[wrap]:
            return _as_call(obj[wrap])
    name = obj.get("name", obj.get("tool", obj.get("tool_name")))
    if not isinstance(name, str):
        if isinstance(obj.get("command"), str) and set(obj) <= {"command", "timeout"}:
            return "bash", obj      # the arguments alone: {"command": "ls"}
        return None
    for key in ("arguments", "parameters", "args", "input", "tool_input"):
        if key in obj:
            return name, obj[key]
    if name in SCHEMAS or name.lower() in ALIASES:    # {"name": "bash", "command": "ls"}
        return name, {k: v for k, v in obj.items() if k not in ("name", "tool", "tool_name", "id", "type")}
    return None     # some other data with a "name" key (a person, a package)


_CODE_FENCE = re.compile(r"```(?:tool_code|tool_call|python|py)\s*\n(.*?)(?:```|\Z)", re.S)
_PY_LIST = re.compile(r"^\s*\[\s*\w+\(.*\)\s*\]\s*$", re.M | re.S)


def _tool_code(text: str, truncated: bool) -> list:
    out = []
    for block in [*_CODE_FENCE.findall(text), *_PY_LIST.findall(text)]:
        out += _py_calls(block)
    return out


def _py_calls(src: str) -> list:
    try:
        tree = ast.parse(src.strip())
    except SyntaxError:
        return []
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
        tool = name if name in SCHEMAS else None    # exact names: subprocess.run or str.replace are no calls
        if tool is None:
            continue
        try:
            args = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
            pos = [ast.literal_eval(a) for a in node.args]
        except ValueError:
            continue
        required = SCHEMAS[tool].get("required", [])
        args.update({k: v for k, v in zip(required, pos, strict=False) if k not in args})
        out.append((name, args))
    return out


_BASH = re.compile(r"```(?:bash|sh|shell|console)\s*\n(.*?)```", re.S)
_BASH_OPEN = re.compile(r"```(?:bash|sh|shell|console)\s*\n(.*)\Z", re.S)


def _bash_fence(text: str, truncated: bool) -> list:
    m = _BASH.search(text) or (None if truncated else _BASH_OPEN.search(text))
    if m and m.group(1).strip():
        return [("bash", {"command": m.group(1).strip()})]
    return []


RULES = [("xml", _xml), ("hermes", _hermes), ("json", _json), ("tool_code", _tool_code), ("bash-fence", _bash_fence)]

_INTENT = re.compile(r"<function=|<tool_call>|\"name\"\s*:|\"command\"\s*:|```(?:bash|sh|shell|tool_code)\b|"
                     r"\b(?:bash|read_file|write_file|str_replace|finish)\s*\(", re.S)


def intends_call(content: str, reasoning: str = "") -> bool:
    """A loose view, independent of the rules above: does the reply look like it tries to call a tool?"""
    return bool(_INTENT.search(content or "") or _INTENT.search(reasoning or ""))
