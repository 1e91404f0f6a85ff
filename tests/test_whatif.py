"""What-if and replay: a stored run's turns read back, predicted on other placements, and sent to a real
llama-server; advise ranked by expected tasks solved in a time limit."""

from __future__ import annotations

import json
import math

import pytest

from rigbench import hardware, store
from rigbench.engines.options import parse_command, parse_llama_args
from rigbench.model import from_catalog
from rigbench.plan import memory, speed
from rigbench.whatif import StoredRunTimes, Target, load, predict
from rigbench.whatif.trace import NotAnEvalRun


def _stored_run(db, turns, limit=600.0, status="success", task="t1", cached=True) -> int:
    """An eval run in the store written the way the agent and runner write one: a note with the time limit,
    then request / response / tool_call / tool_output events per turn at the given times, then the verifier."""
    run_id = store.new_run(db, "eval", model="qwen3.6-35b-a3b", url="http://x")
    attempt = store.start_task(db, run_id, task)
    seq = 0

    def ev(t, kind, data):
        nonlocal seq
        seq += 1
        store.add_event(db, run_id, task, attempt, seq, t, kind, data)

    ev(0.0, "note", {"sandbox": "bwrap", "time_limit_s": limit})
    t = 2.0                                   # sandbox setup before the first request
    for prompt, cache_n, out, model_s, tool_s in turns:
        ev(t, "request", {"messages": 2})
        t += model_s
        timings = {"cache_n": cache_n, "prompt_n": prompt - cache_n, "predicted_n": out} if cached else None
        ev(t, "response", {"prompt_tokens": prompt, "completion_tokens": out, "timings": timings})
        ev(t, "tool_call", {"name": "bash"})
        t += tool_s
        ev(t, "tool_output", {"exit_code": 0})
    ev(t + 3.0, "verifier", {"reward": 1.0})
    store.finish_task(db, run_id, task, attempt, status=status, wall_s=t + 3.5, turns=len(turns))
    store.finish_run(db, run_id, "done")
    return run_id


def _second_task(db, run_id: int, prompt: int, output: int, cache_n: int) -> None:
    """A second task of one request in a stored run, its response reporting what the server reused."""
    attempt = store.start_task(db, run_id, "t2")
    for seq, (t, kind, data) in enumerate([(0.0, "request", {}), (1.0, "response", {
            "prompt_tokens": prompt, "completion_tokens": output, "timings": {"cache_n": cache_n}})], 1):
        store.add_event(db, run_id, "t2", attempt, seq, t, kind, data)
    store.finish_task(db, run_id, "t2", attempt, status="success", wall_s=2.0)


TURNS = [(6000, 0, 200, 10.0, 4.0), (7100, 5990, 150, 5.0, 1.5), (8000, 7000, 300, 8.0, 0.5)]


@pytest.fixture
def db(tmp_path):
    return store.connect(f"sqlite:///{tmp_path / 's.db'}")


def test_trace_reads_turns_tool_time_and_shared_prefix(db):
    tr = load(db, _stored_run(db, TURNS))
    (task,) = tr.tasks
    assert [t.prompt_tokens for t in task.turns] == [6000, 7100, 8000]
    assert [t.output_tokens for t in task.turns] == [200, 150, 300]
    assert [t.tool_s for t in task.turns] == pytest.approx([4.0, 1.5, 0.5])
    assert [t.model_s for t in task.turns] == pytest.approx([10.0, 5.0, 8.0])
    # what the server reused where it says so, capped at the previous prompt
    assert [t.shared_prefix for t in task.turns] == [0, 5990, 7000]
    assert task.setup_s == pytest.approx(2.0) and task.finish_s == pytest.approx(3.5)
    assert task.agent_s == pytest.approx(29.0) and task.time_limit_s == 600


def test_trace_without_cache_report_takes_the_previous_prompt_as_prefix(db):
    tr = load(db, _stored_run(db, [(1000, 0, 10, 1, 1), (1500, 0, 10, 1, 1), (1400, 0, 10, 1, 1)], cached=False))
    assert [t.shared_prefix for t in tr.tasks[0].turns] == [0, 1000, 1399]   # never the whole prompt


def test_a_turn_the_agent_stopped_early_is_kept_with_its_prompt_estimated(db):
    """A stream the agent cut off on repetition ends before the server's usage: no prompt_tokens. The turn (its
    model time and output) is kept; its prompt is what the next request reused of it (the server held it)."""
    run_id = store.new_run(db, "eval", model="m", url="http://x")
    attempt = store.start_task(db, run_id, "t")
    evs = [(0.0, "note", {"time_limit_s": 60}), (0.5, "request", {}),
           (9.9, "response", {"prompt_tokens": None, "completion_tokens": 88, "timings": None,
                              "stopped_early": True}),
           (9.9, "request", {}),
           (16.2, "response", {"prompt_tokens": 690, "completion_tokens": 96, "timings": {"cache_n": 609}}),
           (16.3, "verifier", {"reward": 0.0})]
    for seq, (t, kind, data) in enumerate(evs, 1):
        store.add_event(db, run_id, "t", attempt, seq, t, kind, data)
    store.finish_task(db, run_id, "t", attempt, status="failure", wall_s=16.3, turns=2)
    (task,) = load(db, run_id).tasks
    assert [(x.prompt_tokens, x.output_tokens, x.estimated) for x in task.turns] == [(609, 88, True),
                                                                                    (690, 96, False)]
    assert task.turns[0].model_s == pytest.approx(9.4) and task.agent_s == pytest.approx(15.7)
    assert task.turns[1].shared_prefix == 609


def test_trace_refuses_a_bench_run_and_a_run_without_turns(db):
    bench = store.new_run(db, "bench")
    with pytest.raises(NotAnEvalRun, match="bench run"):
        load(db, bench)
    empty = _stored_run(db, [])
    with pytest.raises(NotAnEvalRun, match="no model turns"):
        load(db, empty)
    with pytest.raises(NotAnEvalRun, match="no run 999"):
        load(db, 999)


def _target(model="qwen3.6-35b-a3b", rig="rtx4090", args="-c 32768 -np 1", cache="auto"):
    spec = from_catalog(model)
    r = hardware.load(rig)
    opts = parse_llama_args(["-m", "m.gguf", *args.split()])
    return Target(label=rig, spec=spec, rig=r, plan=memory.plan(spec, r, opts, "Q4_K_M"), prefix_cache=cache)


def test_prediction_prefills_only_what_the_cache_misses_and_keeps_tool_time(db):
    tr = load(db, _stored_run(db, TURNS))
    w = predict(tr, _target("qwen3-coder-30b-a3b"))
    (t,) = w.tasks
    assert [x.prefill_tokens for x in t.turn_times] == [6000, 1110, 1000]
    assert t.tools_s == pytest.approx(6.0) and t.other_s == pytest.approx(5.5)
    assert t.agent_s.value == pytest.approx(t.prefill_s + t.decode_s + t.tools_s, abs=0.02)
    assert t.agent_s.low < t.agent_s.value < t.agent_s.high
    off = predict(tr, _target("qwen3-coder-30b-a3b", cache="off")).tasks[0]
    assert [x.prefill_tokens for x in off.turn_times] == [6000, 7100, 8000]
    assert off.prefill_s > 2 * t.prefill_s and off.decode_s == pytest.approx(t.decode_s, rel=1e-6)


def test_hybrid_on_llama_server_goes_back_to_a_checkpoint(db):
    """Gated DeltaNet state cannot be cut back: a prompt that repeats the whole last request (prompt and reply)
    continues from it, one that diverges earlier restores the latest checkpoint before the divergence (llama-server
    takes them 4 + n_ubatch and 4 tokens before the end of each prompt), and a new task sharing only a system prompt
    starts over."""
    lag, ubatch = 4, 512
    turns = [(6000, 0, 200, 1, 0), (7100, 6199, 150, 1, 0), (8000, 7000, 300, 1, 0)]
    rid = _stored_run(db, turns)
    _second_task(db, rid, 3000, 10, 500)
    tr = load(db, rid)
    hybrid = predict(tr, _target("qwen3.6-35b-a3b"))
    assert "checkpoint" in hybrid.prefix_cache
    assert [x.prefill_tokens for x in hybrid.tasks[0].turn_times] == [6000, 7100 - 6199, 8000 - (7100 - lag - ubatch)]
    assert hybrid.tasks[1].turn_times[0].prefill_tokens == 3000         # no checkpoint inside its 500 shared
    dense = predict(tr, _target("qwen3-coder-30b-a3b"))
    assert [x.prefill_tokens for x in dense.tasks[0].turn_times] == [6000, 901, 1000]
    assert dense.tasks[1].turn_times[0].prefill_tokens == 2500
    on = predict(tr, _target("qwen3.6-35b-a3b", cache="on"))
    assert [x.prefill_tokens for x in on.tasks[0].turn_times] == [6000, 901, 1000]


def test_a_slower_placement_predicts_longer_and_times_out(db):
    tr = load(db, _stored_run(db, TURNS, limit=60.0))
    fast = predict(tr, _target())
    slow = predict(tr, _target(rig="rtx3060", args="-c 32768 -np 1 --cpu-moe"))
    assert slow.tasks[0].agent_s.value > 1.5 * fast.tasks[0].agent_s.value
    assert fast.tasks[0].in_time == "yes" and fast.totals.timeouts == 0
    tight = predict(tr, _target(rig="rtx3060", args="-c 32768 -np 1 --cpu-moe"), time_limit_s=7.0)
    assert tight.tasks[0].in_time == "no" and tight.totals.timeouts == 1 == tight.totals.timeouts_low


def test_vllm_hybrid_without_mamba_align_reprocesses_every_prompt(db):
    tr = load(db, _stored_run(db, TURNS))
    spec, r = from_catalog("qwen3.6-35b-a3b"), hardware.load("rtx5090")

    def vllm(*extra):
        o = parse_command(["vllm", "serve", "m", "--quantization", "awq_marlin", "--max-model-len", "32768",
                           "--max-num-batched-tokens", "8192", *extra])
        return predict(tr, Target(label="v", spec=spec, rig=r, plan=memory.plan(spec, r, o, None)))

    plain, align = vllm(), vllm("--enable-prefix-caching", "--mamba-cache-mode", "align")
    assert "off" in plain.prefix_cache and [x.prefill_tokens for x in plain.tasks[0].turn_times] == [6000, 7100, 8000]
    block = int(align.prefix_cache.split("blocks of ")[1].split()[0])
    assert block > 16     # the hybrid block size: only whole blocks of it are reused
    for turn, x in zip(tr.tasks[0].turns, align.tasks[0].turn_times, strict=True):
        assert x.prefill_tokens == turn.prompt_tokens - turn.shared_prefix // block * block


def test_cli_whatif_two_targets_json_and_bad_run(tmp_path, run_cli):
    url = f"sqlite:///{tmp_path / 's.db'}"
    db = store.connect(url)
    rid = _stored_run(db, TURNS, limit=60.0)
    res = run_cli("whatif", str(rid), "--rig", "rtx4090", "--rig", "rtx3060", "--cpu-moe", "-c", "32768",
                  "--db", url, "--json")
    d = json.loads(res.stdout)
    a, b = d["targets"]
    assert a["rig"] == "rtx4090" and b["rig"] != a["rig"]
    assert b["totals"]["wall_s"]["value"] > a["totals"]["wall_s"]["value"]
    assert {"prefill_s", "decode_s", "tools_s", "timeouts"} <= set(a["totals"])
    two = json.loads(run_cli("whatif", str(rid), "--db", url, "--json", "--target", "rtx3060: llama-server -m m.gguf "
                             "-c 32768 --cpu-moe", "--target", "rtx3060: llama-server -m m.gguf -c 32768 -ngl 999 "
                             "--n-cpu-moe 20 -ub 2048 --load-mode none").stdout)["targets"]
    assert "--cpu-moe" in two[0]["command"] and "--n-cpu-moe" in two[1]["command"]
    assert two[1]["totals"]["wall_s"]["value"] < two[0]["totals"]["wall_s"]["value"]
    table = run_cli("whatif", str(rid), "--rig", "rtx4090", "--db", url)
    assert "predicted" in table.stdout and "t1" in table.stdout
    bad = run_cli("whatif", "999", "--rig", "rtx4090", "--db", url, ok=False)
    assert bad.returncode != 0 and "no run 999" in bad.stderr and "Traceback" not in bad.stderr


def test_replay_sends_the_recorded_shape_to_llama_server(tmp_path, live_model):
    """A real llama-server: prompt lengths, reused prefix and output lengths come back as recorded."""
    from rigbench.whatif.replay import ReplayError, replay

    db = store.connect(f"sqlite:///{tmp_path / 's.db'}")
    # turn 2 repeats turn 1's prompt and its reply (all but the last generated token, as llama-server counts)
    turns = [(300, 0, 12, 1.0, 0.2), (420, 311, 8, 1.0, 0.1), (500, 410, 10, 1.0, 0.0)]
    rid = _stored_run(db, turns)
    res = replay(load(db, rid), live_model.url, db, idle=True)
    big = _stored_run(db, [(9000, 0, 10, 1, 0)], task="big")     # the server holds 8192 a slot
    with pytest.raises(ReplayError, match="larger -c"):
        replay(load(db, big), live_model.url, db)
    (m,) = res.tasks
    assert [x.prompt_tokens for x in m.turns] == [300, 420, 500]
    assert [x.output_tokens for x in m.turns] == [12, 8, 10]
    assert [x.sent_shared for x in m.turns] == [0, 311, 410]
    assert all(x.cached_tokens == x.sent_shared for x in m.turns[1:])   # the server reused what was shared
    assert m.agent_s >= m.model_s + 0.3 - 0.05                           # tool gaps were waited out
    rows = store.task_rows(db, res.run)
    assert rows[0]["turns"] == 3 and store.get_run(db, res.run)["kind"] == "replay"
    assert len(store.task_events(db, res.run)) == 3
    # the machine was watched through the replay: samples stored, a summary of the run and of its task
    from rigbench.monitor import stored_summary
    machine = stored_summary(db, res.run)
    assert len(store.run_samples(db, res.run)) >= machine["samples"] >= 1 and set(machine["tasks"]) == {rows[0]["task"]}


def test_advise_ranks_by_expected_tasks_solved_in_time(run_cli):
    d = json.loads(run_cli("advise", "--rig", "rtx5080", "--time-limit", "20m", "--json", timeout=600).stdout)
    assert d["time_limit_s"] == 1200
    scored, unscored = d["scored"], d["unscored"]
    assert scored and unscored
    for a in scored:
        assert a["pass_rate"] is not None and 0 <= a["in_time_share"] <= 1
        assert a["expected_solved"] == pytest.approx(a["pass_rate"] / 100 * a["in_time_share"], abs=1e-3)
    assert [a["expected_solved"] for a in scored] == sorted((a["expected_solved"] for a in scored), reverse=True)
    assert all(a["pass_rate"] is None for a in unscored)
    assert "qwen2.5-coder-0.5b" in {a["model"] for a in unscored}
    assert "qwen2.5-coder-0.5b" not in {a["model"] for a in scored}
    q27 = next(a for a in scored if a["model"] == "qwen3.6-27b")
    assert (q27["quality"]["swe_bench_verified"], q27["quality"]["terminal_bench_2"]) == (77.2, 59.3)
    assert "harness" in q27["quality"] and "http" in q27["quality"]["source"]

    def t(a):
        return math.inf if a["task_s_median"] is None else a["task_s_median"]

    # the front, checked independently: a row is on it iff no row has pass rate >= and time <=, one strictly
    for a in scored:
        beaten = any(b["pass_rate"] >= a["pass_rate"] and t(b) <= t(a) and (b["pass_rate"] > a["pass_rate"]
                                                                         or t(b) < t(a)) for b in scored)
        assert a["pareto"] == (not beaten)
    assert {(a["model"], a["quant"]) for a in d["pareto"]} == {(a["model"], a["quant"]) for a in scored
                                                               if a["pareto"]}


def test_advise_time_limit_changes_the_ranking_and_bad_durations_are_refused(run_cli):
    from rigbench.plan import advise

    r = hardware.load("rtx5080")
    rows = advise.advise(r, models=["qwen3.6-27b", "qwen3.6-35b-a3b"])
    long, short = advise.rank(rows, r, 4 * 3600), advise.rank(rows, r, 300)
    best = {x.model: x for x in reversed(long.scored)}
    assert best["qwen3.6-27b"].in_time_share >= best["qwen3.6-35b-a3b"].in_time_share - 0.05
    assert long.scored[0].model == "qwen3.6-27b"          # given time, the stronger model wins
    assert short.scored[0].model == "qwen3.6-35b-a3b"     # in 5 minutes, the faster one does
    bad = run_cli("advise", "--rig", "rtx5080", "--time-limit", "soon", ok=False)
    assert bad.returncode != 0 and "20m" in bad.stderr


def test_advise_ranks_on_a_stored_runs_turns_handed_in_from_whatif(db):
    """`advise --run`: planning takes the stored run's task times from whatif through `rank(times=...)` (it imports
    no whatif itself); each row's median is whatif's own prediction for that placement, and the limit splits them."""
    from rigbench.plan import advise

    r = hardware.load("rtx5080")
    trace = load(db, _stored_run(db, TURNS, limit=1200.0))
    rows = advise.advise(r, models=["qwen3.6-27b", "qwen3.6-35b-a3b"])
    ranking = advise.rank(rows, r, 1200, StoredRunTimes(trace))
    assert ranking.distribution == f"the 1 tasks of stored run {trace.run}, predicted from their recorded turns"
    cal = speed.load_calibration()
    for a in ranking.scored + ranking.unscored:
        spec, p = advise._replan(a, r, {})
        w = predict(trace, Target(label=a.model, spec=spec, rig=r, plan=p), 1200, cal)
        assert a.task_s_median == pytest.approx(round(w.tasks[0].agent_s.value, 1))
        assert a.in_time_share == (1.0 if w.tasks[0].agent_s.value <= 1200 else 0.0)


def test_whatif_speed_matches_the_plan_speed_model_for_one_turn(db):
    """One turn predicted by whatif is the plan speed model's own agent turn (a second path to the same figure)."""
    tr = load(db, _stored_run(db, [(8000, 0, 256, 1.0, 0.0)]))
    tg = _target()
    (t,) = predict(tr, tg).tasks
    coef = speed.load_calibration().for_plan(tg.plan, tg.rig)
    pre, dec = speed.agent_turn_seconds(tg.plan, tg.spec, tg.rig, coef, 8000, 8000, 256)
    assert t.prefill_s == pytest.approx(pre, rel=1e-3) and t.decode_s == pytest.approx(dec, rel=1e-3)


def test_llama_server_state_copies_cost_time_where_its_log_says(db):
    """A hybrid model's two checkpoints per request and the RAM prompt cache's save of a slot a new task displaces
    are time (tools/server: seen in the test H200's -lv 4 log, gpu_s9_server_cache_lines.txt); sizes as logged
    there: checkpoint 62.8125 MiB, slot state of 1,730 tokens 96.6 MiB for the 35B-A3B."""
    from rigbench.plan import speed

    t = _target("qwen3.6-35b-a3b", rig="h100", args="-c 32768 -np 1 -ngl 99")
    st = speed.server_state(t.plan, t.spec, t.rig)
    assert st.recurrent_bytes / 2**20 == pytest.approx(62.8125, abs=0.01)
    assert (st.kv_bytes_per_token * 1730 + st.recurrent_bytes) / 2**20 == pytest.approx(96.64, abs=0.1)
    assert st.new_checkpoints(0, 568) == [52, 564] and st.new_checkpoints(610, 636) == [610, 632]
    # a new task keeping under half of the slot: saved first; one continuing its conversation is not
    assert st.saves(1730, 525, 620) and not st.saves(1310, 1190, 1322) and st.saves(897, 0, 577)
    turns = [(577, 0, 38, 1, 0), (671, 614, 38, 1, 0)]
    rid = _stored_run(db, turns)
    _second_task(db, rid, 620, 48, 80)
    tr = load(db, rid)
    quiet = _target("qwen3.6-35b-a3b", rig="h100", args="-c 32768 -np 1 -ngl 99 --cache-ram 0 --ctx-checkpoints 0")
    a, b = predict(tr, t).tasks, predict(tr, quiet).tasks
    ckpt = st.checkpoint_s()
    # every request of the first task writes two checkpoints, and turn 2 continues from the live state
    assert a[0].turn_times[1].prefill_s - b[0].turn_times[1].prefill_s == pytest.approx(2 * ckpt, rel=0.01)
    # the second task displaces a 709-token slot with 4 checkpoints: saved, then two checkpoints of its own
    save = st.save_s(671 + 38 - 1, 4)
    extra = a[1].turn_times[0].prefill_s - b[1].turn_times[0].prefill_s
    assert extra == pytest.approx(save + 2 * ckpt, rel=0.05)
    assert save > 2 * ckpt
