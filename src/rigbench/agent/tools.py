"""The built-in agent's tools, run inside the task's sandbox (the calls a model leaves in its text are
recovered by `rigbench.agent.parse`, which knows these tools; this module knows no parsing)."""

from __future__ import annotations

import json

from pydantic import BaseModel

from rigbench.sandbox import Sandbox

TOOLS = [
    {"type": "function", "function": {
        "name": "bash", "description": "Run a bash command in the working directory; returns output and exit code.",
        "parameters": {"type": "object", "properties": {
            "command": {"type": "string"}, "timeout": {"type": "integer", "description": "seconds (default 60)"}},
            "required": ["command"]}}},
    {"type": "function", "function": {
        "name": "read_file", "description": "Read a text file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}},
    {"type": "function", "function": {
        "name": "write_file", "description": "Create or overwrite a text file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
                       "required": ["path", "content"]}}},
    {"type": "function", "function": {
        "name": "str_replace", "description": "Replace one exact occurrence of old with new in a file.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}, "old": {"type": "string"},
                                                        "new": {"type": "string"}},
                       "required": ["path", "old", "new"]}}},
    {"type": "function", "function": {
        "name": "finish", "description": "Say the task is done.",
        "parameters": {"type": "object", "properties": {"summary": {"type": "string"}}}}},
]

_REPLACE = r"""
import json, sys
a = json.load(sys.stdin)
s = open(a["path"]).read()
n = s.count(a["old"])
if n != 1:
    sys.exit(f"old text found {n} times in {a['path']}; it must match exactly once")
open(a["path"], "w").write(s.replace(a["old"], a["new"]))
print("replaced")
"""


class ToolCall(BaseModel):
    id: str
    name: str
    arguments: dict


def execute(sb: Sandbox, call: ToolCall, command_timeout: float) -> tuple[str, int]:
    """(output, exit code) of one tool call; every file operation runs inside the sandbox too."""
    a = call.arguments
    if call.name == "bash":
        r = sb.run(str(a.get("command", "")), timeout=min(float(a.get("timeout") or command_timeout), command_timeout))
        suffix = f"\n[timed out after {command_timeout:.0f} s; the command was killed]" if r.timed_out else ""
        return r.output + suffix, r.exit_code
    if call.name == "read_file":
        r = sb.run(f"cat -- {_q(a.get('path', ''))}", timeout=30)
        return r.output, r.exit_code
    if call.name == "write_file":
        path = _q(a.get("path", ""))
        r = sb.run(f"mkdir -p \"$(dirname -- {path})\" && cat > {path} && echo written", timeout=30,
                   stdin=str(a.get("content", "")))
        return r.output, r.exit_code
    if call.name == "str_replace":
        r = sb.run("python3 -c " + _q(_REPLACE), timeout=30, stdin=json.dumps(a))
        return r.output, r.exit_code
    return f"unknown tool {call.name!r}; use bash, read_file, write_file, str_replace or finish", 2


def _q(s: str) -> str:
    import shlex
    return shlex.quote(str(s))

