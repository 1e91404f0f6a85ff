"""The built-in agent with the small embedded models: is every reply understood, and how much time do
degenerate replies cost? Today's agent (the code at another checkout, e.g. `main`) and this one run the
same starter tasks with the same limits against the same llama-server.

For each (model, agent) pair the script starts llama-server with the packaged GGUF, runs
`rigbench eval --url ...` with PYTHONPATH set to that agent's source, and reads the stored trace back:
per reply, whether a tool call was parsed (and by which rule), whether it was cut off at the token limit,
and whether it is degenerate (runaway repetition, judged by `rigbench.agent.loops.repetition` on the text,
the same test for both agents); per task, the outcome, steps, wall time and the seconds spent in degenerate
replies. Pairs can be run one at a time (`--only qwen:before`); each run's store is kept under
.rigbench/agent_local/ and the JSON is rebuilt from all stores present.

Usage (under the shared CPU lock):
  git worktree add /tmp/agent-before main
  flock /tmp/rigbench-cpu.lock python benchmarks/agent_local.py --before-src /tmp/agent-before/src
  python benchmarks/agent_local.py --summarize      # rebuild the JSON from the stored runs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rigbench import packaged, store

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / ".rigbench" / "agent_local"
CORPUS = ROOT / "tests" / "data" / "agent_replies.jsonl"
MODELS = {"qwen": ("qwen2.5-coder-0.5b", packaged.qwen_coder_05b),
          "gemma": ("gemma3-270m", packaged.gemma3_270m)}
SETTINGS = {"tasks": ["csv-to-json", "fix-failing-test", "wordfreq-cli", "log-errors-per-hour", "lru-cache",
                      "fix-backup-script"], "max_steps": 5,
            "max_response_tokens": 512, "time_limit_s": 150.0, "context": 8192, "temperature": 0.2,
            "server": "llama-server -c 8192 -np 1 --jinja (one server per model, shared by both agents)"}


def run_pair(model: str, agent: str, src: Path, settings: dict) -> None:
    from rigbench.engines import llamacpp
    from rigbench.engines.options import parse_llama_args

    alias, gguf = MODELS[model]
    RUNS.mkdir(parents=True, exist_ok=True)
    db_path = RUNS / f"{model}-{agent}.db"
    db_path.unlink(missing_ok=True)
    o = parse_llama_args(["-m", str(gguf()), "-c", str(settings["context"]), "-np", "1", "--jinja"])
    spec = llamacpp.launch_spec(o, llamacpp.find_binary(), alias=alias)
    server = llamacpp.start(spec, RUNS / f"{model}-{agent}-llama-server.log", timeout=300)
    try:
        cmd = [sys.executable, "-m", "rigbench", "eval", "--url", server.url, "--model", alias,
               "--max-steps", str(settings["max_steps"]), "--max-response-tokens",
               str(settings["max_response_tokens"]), "--time-limit", str(settings["time_limit_s"]),
               "--db", f"sqlite:///{db_path}", "--json"]
        for t in settings["tasks"]:
            cmd += ["--task", t]
        env = {**os.environ, "PYTHONPATH": str(src)}
        t0 = time.monotonic()
        print(f"agent_local: {model}/{agent}: {' '.join(cmd[3:])}", file=sys.stderr, flush=True)
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT,
                           timeout=len(settings["tasks"]) * (settings["time_limit_s"] + 240) + 120)
        print(f"agent_local: {model}/{agent}: exit {p.returncode} in {time.monotonic() - t0:.0f} s",
              file=sys.stderr, flush=True)
        if p.returncode != 0:
            print(p.stderr[-3000:], file=sys.stderr)
        (RUNS / f"{model}-{agent}.json").write_text(json.dumps(
            {"settings": settings, "src": str(src), "exit": p.returncode, "stdout": p.stdout[-4000:],
             "git": _git(src)}, indent=1))
    finally:
        server.stop()


def _git(src: Path) -> str:
    r = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "src"], capture_output=True, text=True)
    return r.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def replies(events: list[dict]) -> list[dict]:
    """Each model reply of a task's trace with what the agent did with it and the shared verdicts."""
    from rigbench.agent.loops import repetition
    from rigbench.agent.parse import intends_call, parse_reply

    out: list[dict] = []
    for e in events:
        d = e["data"]
        if e["kind"] == "response":
            text = d.get("content") or ""
            rep = repetition(text) or repetition(d.get("reasoning") or "")
            cut = d.get("finish_reason") == "length"
            out.append({"task": e["task"], "seconds": d.get("seconds") or 0.0, "finish_reason": d.get("finish_reason"),
                        "completion_tokens": d.get("completion_tokens"), "cut_off": cut,
                        "degenerate": rep is not None or bool(d.get("degenerate")),
                        "stopped_early": bool(d.get("stopped_early")),
                        "native_calls": len(d.get("tool_calls") or []),
                        "intends_call": bool(d.get("tool_calls")) or intends_call(text, d.get("reasoning") or ""),
                        "agent_rule": d.get("parse_rule"), "agent_calls": 0,
                        "offline_rule": parse_reply(text, d.get("reasoning") or "", truncated=cut).rule,
                        "content": text, "reasoning": d.get("reasoning")})
        elif e["kind"] == "tool_call" and out:
            out[-1]["agent_calls"] += 1
    labels = _labels()
    for r in out:
        # understood: a call was run, or (this agent) a call form was found and its error explained
        r["parsed"] = r["agent_calls"] > 0 or r["native_calls"] > 0 or r["agent_rule"] is not None
        r["hand_label"] = labels.get(_reply_id(r["content"], r["reasoning"] or ""))
    return out


def _reply_id(content: str, reasoning: str) -> str:
    from rigbench.agent.loops import turn_marker

    marker = turn_marker(content)
    own = content[: marker.keep] if marker else content     # the model's own turn
    return hashlib.sha1(json.dumps([own, reasoning]).encode()).hexdigest()[:12]


def _labels() -> dict[str, str]:
    """Hand labels of the corpus: reply id -> the tool it completely calls ("" for none)."""
    if not CORPUS.exists():
        return {}
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    return {r["id"]: r["complete_call"] for r in rows if r.get("labelled_by") == "hand"}


def summarize(settings: dict) -> dict:
    pairs: dict[str, dict] = {}
    for meta_path in sorted(RUNS.glob("*-*.json")):
        key = meta_path.stem
        db_path = RUNS / f"{key}.db"
        if not db_path.exists():
            continue
        meta = json.loads(meta_path.read_text())
        db = store.connect(f"sqlite:///{db_path}")
        run = store.task_rows(db, 1)
        tasks, all_replies = [], []
        for row in run:
            ev = store.task_events(db, 1, row["task"])
            rs = replies(ev)
            all_replies += rs
            ends = [e["data"] for e in ev if e["kind"] == "note"]
            tasks.append({"task": row["task"], "outcome": row["status"], "reward": row["reward"],
                          "steps": row["turns"], "wall_s": round(row["wall_s"] or 0, 1),
                          "degenerate_s": round(sum(r["seconds"] for r in rs if r["degenerate"]), 1),
                          "degenerate_replies": sum(r["degenerate"] for r in rs),
                          "detail": (row["detail"] or "")[:300], "notes": ends[-3:]})
        intending = [r for r in all_replies if r["intends_call"]]
        labelled = [r for r in all_replies if r["hand_label"]]
        pairs[key] = {
            "agent_source": meta["src"], "git": meta.get("git"), "settings": meta["settings"],
            "solved": sum(t["outcome"] == "success" for t in tasks), "tasks": tasks,
            "replies": len(all_replies),
            "replies_intending_a_call": len(intending),
            "parsed_share_of_intending": round(sum(r["parsed"] for r in intending) / len(intending), 3)
            if intending else None,
            "replies_with_a_complete_call_by_hand": len(labelled),
            "parsed_share_of_hand_labelled": round(sum(r["parsed"] for r in labelled) / len(labelled), 3)
            if labelled else None,
            "cut_off": sum(r["cut_off"] for r in all_replies),
            "degenerate": sum(r["degenerate"] for r in all_replies),
            "stopped_early": sum(r["stopped_early"] for r in all_replies),
            "median_degenerate_s_per_task": statistics.median([t["degenerate_s"] for t in tasks]) if tasks else None,
            "total_degenerate_s": round(sum(t["degenerate_s"] for t in tasks), 1),
            "by_rule": _count(r["agent_rule"] or ("native" if r["native_calls"] else
                                                  ("tool_call event" if r["parsed"] else "none"))
                              for r in all_replies),
            "per_reply": [{k: v for k, v in r.items() if k not in ("content", "reasoning")} for r in all_replies],
        }
    comparison = {}
    for m in MODELS:
        b, a = pairs.get(f"{m}-before"), pairs.get(f"{m}-after")
        if a and b:
            mb, ma = b["median_degenerate_s_per_task"], a["median_degenerate_s_per_task"]
            comparison[m] = {"median_degenerate_s_per_task_before": mb, "after": ma,
                             "cut_by": round(1 - ma / mb, 3) if mb else None,
                             "total_degenerate_s_before": b["total_degenerate_s"],
                             "total_degenerate_s_after": a["total_degenerate_s"],
                             "parsed_share_before": b["parsed_share_of_intending"],
                             "parsed_share_after": a["parsed_share_of_intending"],
                             "parsed_share_of_hand_labelled_before": b["parsed_share_of_hand_labelled"],
                             "parsed_share_of_hand_labelled_after": a["parsed_share_of_hand_labelled"],
                             "solved_before": b["solved"], "solved_after": a["solved"]}
    return {"benchmark": "agent_local", "settings": settings, "comparison": comparison, "pairs": pairs}


def corpus(path: Path) -> int:
    """Every distinct real reply of the stored runs as JSON lines for the parser's tests. `complete_call`
    (the tool the reply completely calls, "unknown:NAME" for a complete call to a tool that does not exist,
    "" for none) starts as the parser's answer and is then checked by hand; labels already in the file are
    kept (`labelled_by: "hand"`)."""
    from rigbench.agent.loops import turn_marker
    from rigbench.agent.parse import parse_reply

    old = {}
    if path.exists():
        old = {r["id"]: r for r in map(json.loads, path.read_text().splitlines()) if r.get("labelled_by") == "hand"}
    rows, seen = [], set()
    # the stored runs, and those of the first, smaller round (3 tasks, 384 tokens) where kept
    for db_path in sorted([*RUNS.glob("*-*.db"), *RUNS.with_name("agent_local_v1").glob("*-*.db")]):
        model, agent = db_path.stem.split("-")
        db = store.connect(f"sqlite:///{db_path}")
        for e in store.task_events(db, 1):
            if e["kind"] != "response":
                continue
            d = e["data"]
            content, reasoning = d.get("content") or "", d.get("reasoning") or ""
            marker = turn_marker(content)
            own = content[: marker.keep] if marker else content     # the model's own turn
            rid = _reply_id(content, reasoning)
            if rid in seen:
                continue
            seen.add(rid)
            finish = d.get("finish_reason")
            p = parse_reply(own, reasoning, truncated=finish in ("length", "repetition"))
            row = {"id": rid, "model": model, "agent": agent, "task": e["task"], "finish_reason": finish,
                   "native_calls": len(d.get("tool_calls") or []), "content": own, "reasoning": reasoning,
                   "past_turn_chars": len(content) - len(own),
                   "complete_call": p.calls[0].name if p.calls else "", "labelled_by": "parser",
                   "parser_errors": p.errors[:1]}
            if rid in old:
                row["complete_call"], row["labelled_by"] = old[rid]["complete_call"], "hand"
                row["note"] = old[rid].get("note", "")
            rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return len(rows)


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before-src", type=Path, help="src/ of today's agent (a checkout of main)")
    ap.add_argument("--only", action="append", help="model:agent pairs to run, e.g. qwen:before (repeatable)")
    ap.add_argument("--summarize", action="store_true", help="only rebuild the JSON from the stored runs")
    ap.add_argument("--corpus", type=Path, help="also write the distinct real replies here (tests/data/...jsonl)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "agent_local.json")
    a = ap.parse_args()
    if not a.summarize:
        todo = a.only or [f"{m}:{g}" for m in MODELS for g in ("before", "after")]
        for pair in todo:
            m, g = pair.split(":")
            if g == "before" and not a.before_src:
                raise SystemExit("--before-src is needed to run today's agent")
            run_pair(m, g, a.before_src if g == "before" else ROOT / "src", SETTINGS)
    res = summarize(SETTINGS)
    a.out.write_text(json.dumps(res, indent=1))
    if a.corpus:
        print(f"corpus: {corpus(a.corpus)} distinct replies in {a.corpus}")
    for key, p in res["pairs"].items():
        print(f"{key:14s} solved {p['solved']}/{len(p['tasks'])}  replies {p['replies']}  parsed "
              f"{p['parsed_share_of_intending']} of {p['replies_intending_a_call']} that look like a call, "
              f"{p['parsed_share_of_hand_labelled']} of {p['replies_with_a_complete_call_by_hand']} with a complete "
              f"call (hand)  cut {p['cut_off']}  "
              f"degenerate {p['degenerate']} (stopped early {p['stopped_early']})  median degenerate s/task "
              f"{p['median_degenerate_s_per_task']}")
    for m, c in res["comparison"].items():
        print(f"{m}: median degenerate s per task {c['median_degenerate_s_per_task_before']} -> {c['after']} "
              f"(cut by {c['cut_by']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
