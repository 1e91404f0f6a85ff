"""The turns of a stored eval run: what each turn sent, what the server reused, what it generated, and how long
the model and the tools took. Read from the recording gateway's `turn` events (any agent: the built-in one,
Claude Code, aider, ...), or, in runs stored before the gateway, from the built-in agent's request/response
events."""

from __future__ import annotations

from pydantic import BaseModel

from rigbench import store
from rigbench.errors import RigbenchError

AGENT_KINDS = ("request", "response", "tool_call", "tool_output")


class Turn(BaseModel):
    prompt_tokens: int
    cached_tokens: int | None      # what the recording server reused (llama-server `timings.cache_n`)
    shared_prefix: int             # tokens this prompt shares with what the server held: its last prompt and reply
    output_tokens: int
    model_s: float                 # request sent -> reply received, as recorded
    tool_s: float                  # reply -> next request (or the agent's end): tools and the agent's own work
    # the prompt length was not reported (a stream the agent stopped early, on repetition, ends before the
    # server's usage): taken from what the next request reused of it, or the previous prompt and reply
    estimated: bool = False

    @property
    def new_tokens(self) -> int:
        return self.prompt_tokens - self.shared_prefix


class TaskTrace(BaseModel):
    task: str
    status: str
    time_limit_s: float | None
    wall_s: float
    setup_s: float                 # task start -> first request (sandbox, environment)
    finish_s: float                # the agent's last step -> task end (verifier, teardown)
    turns: list[Turn]

    @property
    def agent_s(self) -> float:
        return sum(t.model_s + t.tool_s for t in self.turns)

    @property
    def truncated(self) -> bool:
        """The recorded run stopped this task at its time limit: turns it would have taken later are unknown."""
        return self.status == "timeout"


class RunTrace(BaseModel):
    run: int
    model: str | None
    url: str | None
    tasks: list[TaskTrace]


class NotAnEvalRun(RigbenchError):
    pass


def _shared_prefix(cached: int | None, prompt: int, previous: int, previous_output: int) -> int:
    """The builtin agent's history only grows, so a prompt starts with the previous one (and often with its
    reply, rendered back token for token). A server that reports what it reused (cache_n) says how far exactly;
    one that reused nothing (no prefix cache, or a hybrid model it re-read) does not tell the prefix apart, so
    the previous prompt's length is taken."""
    shared = cached if cached else previous
    held = previous + previous_output if previous else shared     # what the server's slot held
    return max(0, min(shared, held, prompt - 1))


def _gateway_raw(events: list[dict]) -> tuple[list[list], float, float]:
    """[prompt, cached, output, model_s, tool_s, estimated] per model request the gateway recorded, in the order
    they were sent; with the first request's start and the agent's end (its last recorded event)."""
    turns = sorted((e["data"] for e in events if e["kind"] == "turn" and e["data"].get("api") != "count_tokens"
                    and e["data"].get("status", 200) < 400), key=lambda d: d["sent_t"])
    end = max((e["t"] for e in events if e["kind"] in (*AGENT_KINDS, "turn")), default=0.0)
    raw = []
    for i, d in enumerate(turns):
        done = d["sent_t"] + d["seconds"]
        nxt = turns[i + 1]["sent_t"] if i + 1 < len(turns) else end
        prompt = d.get("prompt_tokens") or None
        raw.append([prompt, d.get("cached_tokens"), int(d.get("output_tokens") or 0), d["seconds"],
                    max(0.0, nxt - done), prompt is None])
    return raw, (turns[0]["sent_t"] if turns else 0.0), end


def _task(row: dict, events: list[dict]) -> TaskTrace:
    limit = next((e["data"].get("time_limit_s") for e in events
                  if e["kind"] == "note" and isinstance(e["data"], dict) and "time_limit_s" in e["data"]), None)
    if any(e["kind"] == "turn" for e in events):
        raw, first, last = _gateway_raw(events)
        return _trace(row, events, limit, raw, first, last)
    sent = None
    replied = None          # (t, prompt, cached, output, model_s) of the last reply still waiting for its tool time
    agent = [e for e in events if e["kind"] in AGENT_KINDS]
    first = agent[0]["t"] if agent else 0.0
    last = agent[-1]["t"] if agent else 0.0

    raw: list[list] = []     # [prompt or None, cached, output, model_s, tool_s, estimated] per answered request

    def close(until: float) -> None:
        nonlocal replied
        if replied is None:
            return
        t, prompt, cached, output, model_s = replied
        raw.append([prompt, cached, output, model_s, max(0.0, until - t), prompt is None])
        replied = None

    for e in agent:
        d = e["data"] if isinstance(e["data"], dict) else {}
        if e["kind"] == "request":
            close(e["t"])
            sent = e["t"]
        elif e["kind"] == "response" and sent is not None:
            timings = d.get("timings") or {}
            prompt = d.get("prompt_tokens") or None
            output = d.get("completion_tokens") or timings.get("predicted_n") or 0
            if prompt or output:
                replied = (e["t"], int(prompt) if prompt else None, timings.get("cache_n"), int(output),
                           e["t"] - sent)
            sent = None
    close(last)
    return _trace(row, events, limit, raw, first, last)


def _trace(row: dict, events: list[dict], limit: float | None, raw: list[list], first: float,
           last: float) -> TaskTrace:
    turns: list[Turn] = []
    previous_prompt, previous_output = 0, 0
    for i, r in enumerate(raw):
        if r[0] is None:     # the server held this prompt (and part of its reply) when the next request came
            nxt = raw[i + 1][1] if i + 1 < len(raw) else None
            prev = raw[i - 1][0] + raw[i - 1][2] if i and raw[i - 1][0] else None
            r[0] = nxt or prev
    for prompt, cached, output, model_s, tool_s, estimated in raw:
        if not prompt:
            continue         # no length anywhere: nothing to replay
        turns.append(Turn(prompt_tokens=prompt, cached_tokens=cached, output_tokens=output,
                          shared_prefix=_shared_prefix(cached, prompt, previous_prompt, previous_output),
                          model_s=round(model_s, 4), tool_s=round(tool_s, 4), estimated=estimated))
        previous_prompt, previous_output = prompt, output
    end = max((e["t"] for e in events), default=last)
    wall = row["wall_s"] or end
    return TaskTrace(task=row["task"], status=row["status"], time_limit_s=limit, wall_s=wall,
                     setup_s=round(first, 4), finish_s=round(max(0.0, wall - last), 4), turns=turns)


def load(db, run_id: int) -> RunTrace:
    """Every task of an eval run (its latest attempt) with its turns."""
    run = store.get_run(db, run_id)
    if not run:
        raise NotAnEvalRun(f"no run {run_id} in the store; `rigbench runs` lists them")
    if run["kind"] != "eval":
        raise NotAnEvalRun(f"run {run_id} is a {run['kind']} run; what-if and replay take an eval run "
                           f"(`rigbench runs` lists them)")
    events = store.task_events(db, run_id)
    tasks = []
    for row in store.task_rows(db, run_id):
        mine = [e for e in events if e["task"] == row["task"] and e["attempt"] == row["attempt"]]
        tasks.append(_task(row, mine))
    if not any(t.turns for t in tasks):
        raise NotAnEvalRun(f"run {run_id} has no model turns on record (an oracle or noop run, or one stored "
                           f"without the recording gateway); what-if needs a run of an agent")
    return RunTrace(run=run_id, model=run["model"], url=run["url"], tasks=tasks)
