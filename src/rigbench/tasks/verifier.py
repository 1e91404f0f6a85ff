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
    else:
        r = sb.run("bash /tests/run-tests.sh", timeout=task.verifier_timeout_s, env={"TEST_DIR": "/tests"})
        failed = re.search(r"\b(FAILED|ERROR)\b", r.output) is not None
        verdict = Verdict(reward=1.0 if r.exit_code == 0 and not failed else 0.0)
    trace("verifier", {"exit_code": r.exit_code, "timed_out": r.timed_out, "reward": verdict.reward,
                       "error": verdict.error, "output": r.output[-8000:]})
    return verdict
