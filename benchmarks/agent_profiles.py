"""Agent profiles, measured: what each agent sends the model over a task, read from the recording gateway's turns.

Each agent (`rigbench eval --agent NAME`: the built-in one, Claude Code, mini-swe-agent, aider) works on a few
starter tasks against one llama-server with the embedded model (Qwen2.5-Coder-0.5B; tokens are counted by its
tokenizer, close to other Qwen models' and within a few percent of most BPE vocabularies of that size). From the
stored `turn` events of each task:

  first_prompt     the first model request's prompt tokens (system prompt + tool definitions + instruction)
  turn_new_tokens  per later request: its prompt minus the previous prompt and the previous reply (tool output,
                   user text the agent added)
  output_tokens    tokens written per reply
  turns            model requests per task

Profiles report the median over tasks (first_prompt, turns) or over turns (the rest), with min and max. The
first prompt is the agent's own (it does not depend on the model); the turn counts and output lengths do, and a
0.5B model stops early or loops, so `turns` here says little about a strong model's tasks (the catalog keeps the
published Terminal-Bench distribution for those).

The second view: each run's token sums are checked against llama-server's own counters (/metrics
prompt_tokens_total + prompt_tokens_cached_total, tokens_predicted_total) over the same run; a mismatch stops the
benchmark.

Usage:  python benchmarks/agent_profiles.py [--agents claude-code,mini-swe-agent] [--tasks csv-to-json,...]
        [--url http://127.0.0.1:8091/v1]   (default: starts the embedded model at a 32K context)
Writes benchmarks/results/agent_profiles.json (the command that made it included).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from rigbench import store
from rigbench.plan.speed import AgentProfile
from rigbench.tasks.runner import agent_rows

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "agent_profiles.json"
COUNTERS = ("prompt_tokens_total", "prompt_tokens_cached_total", "tokens_predicted_total")
VERSION = {"claude-code": ["claude", "--version"], "mini-swe-agent": ["mini", "--version"],
           "aider": ["aider", "--version"]}


def counters(url: str) -> dict[str, int]:
    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=30).text
    return {k: int(float(re.search(rf"^llamacpp:{k} (\S+)$", text, re.M)[1])) for k in COUNTERS}


def version(name: str, path: str | None) -> str | None:
    if name == "builtin":
        from rigbench import __version__
        return f"rigbench {__version__}"
    if not path:
        return None
    argv = [path, *VERSION[name][1:]]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                       env={"PATH": str(Path(path).parent) + ":/usr/bin:/bin", "MSWEA_SILENT_STARTUP": "1",
                            "HOME": "/tmp"})
    m = re.search(r"\d+\.\d+\.\d+", p.stdout + p.stderr)
    return m[0] if m else None


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)} if xs else {}


def profile_of(turns_by_task: dict[str, list[dict]]) -> dict:
    firsts, new, outs, counts = [], [], [], []
    for turns in turns_by_task.values():
        model = sorted((t for t in turns if t["api"] != "count_tokens" and t.get("prompt_tokens")),
                       key=lambda t: t["sent_t"])
        if not model:
            continue
        counts.append(len(model))
        firsts.append(model[0]["prompt_tokens"])
        outs += [t["output_tokens"] for t in model]
        for a, b in zip(model, model[1:], strict=False):
            new.append(max(0, b["prompt_tokens"] - a["prompt_tokens"] - a["output_tokens"]))
    return {"first_prompt": spread(firsts), "turn_new_tokens": spread(new), "output_tokens": spread(outs),
            "turns": spread(counts)}


def measure(name: str, url: str, model: str, tasks: list[str], steps: int, db: str) -> dict:
    before = counters(url)
    t0 = time.monotonic()
    argv = [sys.executable, "-m", "rigbench", "eval", "--url", url, "--model", model, "--agent", name,
            "--max-steps", str(steps), "--db", db, "--json", *[x for t in tasks for x in ("--task", t)]]
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{name}: eval failed: {p.stderr.strip().splitlines()[-1:]}")
    d = json.loads(p.stdout)
    after = counters(url)
    events = store.task_events(store.connect(db), d["run"])
    by_task: dict[str, list[dict]] = {}
    for e in events:
        if e["kind"] == "turn":
            by_task.setdefault(e["task"], []).append(e["data"])
    model_turns = [t for ts in by_task.values() for t in ts if t["api"] != "count_tokens"]
    sums = {"prompt_tokens_total": sum(t["prompt_tokens"] - t["cached_tokens"] for t in model_turns),
            "prompt_tokens_cached_total": sum(t["cached_tokens"] for t in model_turns),
            "tokens_predicted_total": sum(t["output_tokens"] for t in model_turns)}
    delta = {k: after[k] - before[k] for k in COUNTERS}
    if sums != delta:
        raise SystemExit(f"{name}: the gateway's sums {sums} differ from llama-server's counters {delta}")
    return {"run": d["run"], "wall_s": round(time.monotonic() - t0, 1),
            "statuses": {t["task"]: t["status"] for t in d["tasks"]}, "tokens_checked": delta,
            **profile_of(by_task)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default="builtin,mini-swe-agent,aider,claude-code")
    ap.add_argument("--tasks", default="csv-to-json,fix-failing-test")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--url")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--db", default=f"sqlite:///{ROOT / '.rigbench' / 'agent_profiles.db'}")
    args = ap.parse_args()
    server = None
    url = args.url
    if not url:
        from rigbench.engines import llamacpp
        from rigbench.engines.launch import embedded_launch

        server = llamacpp.start(embedded_launch(32768), ROOT / ".rigbench" / "logs" / "agent_profiles.log",
                                timeout=180)
        url = server.url
    installed = {r["name"]: r["installed"] for r in agent_rows()}
    old = json.loads(OUT.read_text()) if OUT.exists() else {"agents": {}}
    result = {"command": "python benchmarks/agent_profiles.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
              "model": args.model, "tasks": args.tasks.split(","), "max_steps": args.steps,
              "tokenizer": "Qwen2.5-Coder-0.5B-Instruct", "agents": dict(old.get("agents", {}))}
    try:
        for name in args.agents.split(","):
            if name != "builtin" and not installed.get(name):
                print(f"{name}: not installed ({AgentProfile.named(name).install}); skipped")
                continue
            print(f"{name}: {len(result['tasks'])} tasks ...", flush=True)
            m = measure(name, url, args.model, result["tasks"], args.steps, args.db)
            m["version"] = version(name, installed.get(name))
            m["measured_at"] = time.strftime("%Y-%m-%d")
            result["agents"][name] = m
            print(f"  {name} {m['version']}: first request {m['first_prompt'].get('median')} tokens, "
                  f"+{m['turn_new_tokens'].get('median')} per turn, {m['output_tokens'].get('median')} out per "
                  f"turn, {m['turns'].get('median')} turns; token sums = llama-server's counters "
                  f"{m['tokens_checked']}", flush=True)
            OUT.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        if server:
            server.stop()
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
