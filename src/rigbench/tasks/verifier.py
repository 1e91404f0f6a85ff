"""The verifier's verdict: it runs alone after the agent (see rigbench.sandbox), and only what it wrote counts."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from rigbench.sandbox import FileRead, Sandbox
from rigbench.tasks.formats import Task

REWARD_FILES = ("reward.txt", "reward.json")
# bash names the script when a command the script itself runs is missing (not one the agent's code runs)
_NOT_FOUND = re.compile(r"^(?:bash: )?/tests/(?:test|run-tests)\.sh: line \d+: (\S+): command not found$", re.M)
_OFFLINE = re.compile(r"Could not resolve host|Temporary failure (?:in name )?resolution|Temporary failure resolving|"
                      r"Network is unreachable|Name or service not known|Failed to establish a new connection|"
                      r"nodename nor servname")


class Verdict(BaseModel):
    reward: float | None = None
    error: str = ""          # why there is no reward: the task is an `error`, never a pass


def parse_reward(files: dict[str, FileRead]) -> Verdict:
    """Harbor: /logs/verifier/reward.txt (one number) or reward.json ({"reward": x}, other named numbers, or
    one number)."""
    for name in REWARD_FILES:
        f = files.get(name)
        if f is None:
            continue
        where = f"/logs/verifier/{name}"
        if f.error or f.text is None:
            return Verdict(error=f"{where} {f.error}")
        value = _number(f.text.strip()) if name == "reward.txt" else _from_json(f.text)
        if value is None:
            return Verdict(error=f"{where} holds no valid reward ({f.text.strip()[:60]!r})")
        return Verdict(reward=value)
    return Verdict(error="the verifier wrote no reward (/logs/verifier/reward.txt or reward.json)")


def _number(x) -> float | None:
    if isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _from_json(text: str) -> float | None:
    try:
        v = json.loads(text)
    except ValueError:
        return None
    if isinstance(v, dict):
        nums = [x for x in v.values() if _number(x) is not None]
        return _number(v["reward"]) if "reward" in v else (_number(nums[0]) if nums else None)
    return _number(v)


def fetches(task: Task) -> bool:
    """Whether the task's verifier script downloads software (most published TB2 test.sh files install uv)."""
    script = task.tests_dir / "test.sh" if task.format == "tb2" else task.path / "run-tests.sh"
    text = script.read_text(errors="replace") if script.is_file() else ""
    return re.search(r"\b(curl|wget|apt-get|apt|uvx|uv|pip3?|npm)\s", text) is not None


def could_not_run(output: str, network: bool, downloads: bool) -> str:
    """Why the verifier itself could not run, from its output ('' when it ran): a command its script calls is
    missing, or, for a script that downloads software, no network to do it. Its reward then says nothing
    about the agent's work (published test.sh files write 0 when `uvx` is missing)."""
    if not network and downloads and (m := _OFFLINE.search(output)):
        return f"verifier needs the network (it has none: {m.group(0)}); give --verifier-network on"
    if m := _NOT_FOUND.search(output):
        return f"verifier could not run: its script calls {m.group(1)}, which this sandbox lacks"
    return ""


def verify(task: Task, sb: Sandbox, trace: Callable[[str, dict], None]) -> Verdict:
    tests: list[tuple[Path, str]] = [(task.tests_dir, "/tests")] if task.tests_dir.is_dir() else []
    if task.format == "tb1":
        tests.append((task.path / "run-tests.sh", "/tests/run-tests.sh"))
    sb.start_verifier(tests)
    if task.format == "tb2":
        r = sb.run("bash /tests/test.sh", timeout=task.verifier_timeout_s, env=task.verifier_env)
        verdict = parse_reward(sb.verifier_files(REWARD_FILES))
        if r.timed_out and verdict.reward is None:
            verdict = Verdict(error=f"the verifier ran past its {task.verifier_timeout_s:.0f} s limit")
        elif verdict.reward is None or verdict.reward < 1:
            if why := could_not_run(r.output, sb.network["verifier"], fetches(task)):
                verdict = Verdict(error=why)
    else:
        r = sb.run("bash /tests/run-tests.sh", timeout=task.verifier_timeout_s, env={"TEST_DIR": "/tests"})
        failed = re.search(r"\b(FAILED|ERROR)\b", r.output) is not None
        verdict = Verdict(reward=1.0 if r.exit_code == 0 and not failed else 0.0)
        if verdict.reward < 1 and (why := could_not_run(r.output, sb.network["verifier"], fetches(task))):
            verdict = Verdict(error=why)
    trace("verifier", {"exit_code": r.exit_code, "timed_out": r.timed_out, "reward": verdict.reward,
                       "error": verdict.error, "output": r.output[-8000:]})
    return verdict
