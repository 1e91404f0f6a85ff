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
    pinned = Path(path).parent.parent / ".version"     # a virtualenv made by scripts/install_agents.sh
    if pinned.exists():
        return pinned.read_text().strip().split("==")[-1]
    argv = [path, *VERSION[name][1:]]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                       env={"PATH": str(Path(path).parent) + ":/usr/bin:/bin", "MSWEA_SILENT_STARTUP": "1",
                            "HOME": "/tmp"})
    m = re.search(r"\d+\.\d+\.\d+", p.stdout + p.stderr)
    return m[0] if m else None


def spread(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)} if xs else {}


def profile_of(turns_by_task: dict[str, list[dict]]) -> dict:
    firsts, new, growth, outs, counts = [], [], [], [], []
    for turns in turns_by_task.values():
        model = sorted((t for t in turns if t["api"] != "count_tokens" and t.get("prompt_tokens")),
                       key=lambda t: t["sent_t"])
        if not model:
            continue
        counts.append(len(model))
        firsts.append(model[0]["prompt_tokens"])
        outs += [t["output_tokens"] for t in model]
        for a, b in zip(model, model[1:], strict=False):
            growth.append(b["prompt_tokens"] - a["prompt_tokens"])
            new.append(max(0, b["prompt_tokens"] - a["prompt_tokens"] - a["output_tokens"]))
    # turn_new_tokens: what a turn adds besides the previous reply (tool output, the agent's text); an agent that
    # keeps less than the whole reply in its history (mini-swe-agent keeps the parsed action) adds 0 by this
    # measure, so the prompt's growth per turn is given too
    return {"first_prompt": spread(firsts), "turn_new_tokens": spread(new), "prompt_growth": spread(growth),
            "output_tokens": spread(outs), "turns": spread(counts)}


def measure(name: str, url: str, model: str, tasks: list[str], steps: int, db: str, limit: float) -> dict:
    before = counters(url)
    t0 = time.monotonic()
    argv = [sys.executable, "-m", "rigbench", "eval", "--url", url, "--model", model, "--agent", name,
            "--max-steps", str(steps), "--time-limit", str(limit), "--max-response-tokens", "512", "--db", db,
            "--json", *[x for t in tasks for x in ("--task", t)]]
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"{name}: eval failed: {p.stderr.strip().splitlines()[-1:]}")
    d = json.loads(p.stdout)
    after = counters(url)
    by_task = turns_by_task(db, d["run"])
    model_turns = [t for ts in by_task.values() for t in ts if t["api"] != "count_tokens"]
    sums = {"prompt_tokens_total": sum((t.get("prompt_tokens") or 0) - (t.get("cached_tokens") or 0)
                                       for t in model_turns),
            "prompt_tokens_cached_total": sum(t.get("cached_tokens") or 0 for t in model_turns),
            "tokens_predicted_total": sum(t.get("output_tokens") or 0 for t in model_turns)}
    delta = {k: after[k] - before[k] for k in COUNTERS}
    cut = sum(1 for t in model_turns if t.get("client_left"))
    if cut:     # a request the agent gave up on (its own timeout) or the time limit cut: the server counted what
        # it computed, the reply never came
        check = f"not exact: {cut} request(s) cut off (the agent gave up waiting or the task's time ran out); " \
                f"gateway {sums}, server {delta}"
    elif sums != delta:
        raise SystemExit(f"{name}: the gateway's sums {sums} differ from llama-server's counters {delta}")
    else:
        check = "exact"
    return {"run": d["run"], "wall_s": round(time.monotonic() - t0, 1),
            "statuses": {t["task"]: t["status"] for t in d["tasks"]}, "tokens_checked": delta, "check": check,
            **profile_of(by_task)}


def turns_by_task(db: str, run: int) -> dict[str, list[dict]]:
    by_task: dict[str, list[dict]] = {}
    for e in store.task_events(store.connect(db), run):
        if e["kind"] == "turn":
            by_task.setdefault(e["task"], []).append(e["data"])
    return by_task


def recompute(db: str) -> None:
    """The profiles again from the stored turns of each agent's run (the token checks were made when they ran)."""
    result = json.loads(OUT.read_text())
    installed = {r["name"]: r["installed"] for r in agent_rows()}
    for name, m in result["agents"].items():
        m.update(profile_of(turns_by_task(db, m["run"])))
        m["version"] = version(name, installed.get(name)) or m.get("version")
    result["recomputed_with"] = "python benchmarks/agent_profiles.py --from-store"
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: {f: m[f] for f in ("version", "first_prompt", "prompt_growth", "output_tokens")}
                      for k, m in result["agents"].items()}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--agents", default="builtin,mini-swe-agent,aider,claude-code")
    ap.add_argument("--tasks", default="csv-to-json,fix-failing-test")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--time-limit", type=float, default=1800, help="seconds per task (a slow CPU needs them)")
    ap.add_argument("--url")
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--db", default=f"sqlite:///{ROOT / '.rigbench' / 'agent_profiles.db'}")
    ap.add_argument("--from-store", action="store_true",
                    help="recompute the profiles (and versions) from the runs already stored, running nothing")
    args = ap.parse_args()
    if args.from_store:
        return recompute(args.db)
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
            m = measure(name, url, args.model, result["tasks"], args.steps, args.db, args.time_limit)
            m["version"] = version(name, installed.get(name))
            m["measured_at"] = time.strftime("%Y-%m-%d")
            result["agents"][name] = m
            print(f"  {name} {m['version']}: first request {m['first_prompt'].get('median')} tokens, "
                  f"+{m['turn_new_tokens'].get('median')} per turn, {m['output_tokens'].get('median')} out per "
                  f"turn, {m['turns'].get('median')} turns; token sums = llama-server's counters "
                  f"{m['tokens_checked']} ({m['check']})", flush=True)
            OUT.write_text(json.dumps(result, indent=1) + "\n")
    finally:
        if server:
            server.stop()
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
