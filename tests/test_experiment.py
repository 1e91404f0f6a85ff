"""`rigbench experiment`: predict-only with no hardware, refusal of what does not fit, and a real run with
the embedded model on llama-server that is killed and resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
RB = [sys.executable, "-m", "rigbench"]


def rb(*args, check=True, timeout=300):
    p = subprocess.run([*RB, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                       env={**os.environ, "COLUMNS": "160"})
    if check:
        assert p.returncode == 0, p.stderr[-3000:]
    return p


def predict(name: str) -> dict[str, dict]:
    d = json.loads(rb("experiment", f"examples/{name}.yaml", "--predict-only", "--json").stdout)
    assert d["predict_only"] is True
    return {c["name"]: c for c in d["candidates"]}


def test_predict_only_dense_vs_moe_on_16gb_refuses_the_27b_and_says_why():
    c = predict("dense-vs-moe-16gb")
    assert c["qwopus-9b-dense"]["fits"] and c["35b-a3b-cpu-moe"]["fits"]
    whole = c["27b-dense-whole"]
    assert not whole["fits"] and "RTX 5080 needs" in whole["reason"] and whole["suggestion"]
    moe = c["35b-a3b-cpu-moe"]
    # --cpu-moe: the routed experts are in RAM, and the plan's command says so
    ram = sum(d["ram_bytes"] for d in moe["plan"]["devices"] if d["kind"] == "cpu")
    assert ram > moe["plan"]["weights_by_group"]["routed_experts"] * 0.9 and "--cpu-moe" in moe["command"]
    for cand in c.values():
        p = cand["predicted"]
        assert p["decode_tok_s"] > 0 and p["ttft_short_ms"] > 0 and p["ttft_long_ms"] > p["ttft_short_ms"]
        assert [pt["x"] for pt in p["throughput_curve"]] == [1, 2, 4]
        assert p["agent_task_s"] > 0 and p["agent_turns"] == 30


def test_predict_only_matches_rigbench_plan_for_the_same_flags():
    """A second view: `rigbench plan` with the same options places the same bytes and predicts the same decode."""
    c = predict("dense-vs-moe-16gb")["35b-a3b-cpu-moe"]
    d = json.loads(rb("plan", "qwen3.6-35b-a3b", "--rig", "rtx5080", "--cpu-moe", "--ngl", "99", "--ctx", "65536",
                      "--parallel", "1", "--quant", "Q4_K_M", "--prompt-tokens", "64", "--context", "192", "--json",
                      check=False).stdout)
    assert d["weights_bytes"] == c["plan"]["weights_bytes"]
    assert d["kv_cache_tokens"] == c["plan"]["kv_cache_tokens"]
    assert d["speed"]["decode_tok_s"]["value"] == pytest.approx(c["predicted"]["decode_tok_s"], rel=1e-6)


def test_predict_only_vllm_on_two_3090s():
    c = predict("vllm-27b-vs-35b-a3b-2x3090")
    for name in ("27b-autoround-tp2", "35b-a3b-awq-tp2"):
        assert c[name]["fits"] and c[name]["engine"] == "vllm" and c[name]["plan"]["tensor_parallel"] == 2
        assert "--tensor-parallel-size 2" in c[name]["command"]
    # a hub repo id stays a repo id (vllm serve ORG/NAME)
    assert c["35b-a3b-awq-tp2"]["weights"] == "cyankiwi/Qwen-AgentWorld-35B-A3B-AWQ-INT4"
    # the MoE reads ~3B parameters a token against 27B: it decodes faster on the same cards
    assert c["35b-a3b-awq-tp2"]["predicted"]["decode_tok_s"] > 2 * c["27b-autoround-tp2"]["predicted"]["decode_tok_s"]


def test_predict_only_cpu_embedded(qwen_gguf):
    c = predict("cpu-embedded")
    assert set(c) == {"1-slot", "2-slots"}
    assert all(x["fits"] and x["weights"] == str(qwen_gguf) for x in c.values())
    # two slots: twice the streams decode at once
    t1, t2 = (c[n]["predicted"]["throughput_tok_s"] for n in ("1-slot", "2-slots"))
    assert t2 > 1.5 * t1


@pytest.mark.parametrize("text, msg", [
    ("name: x\ncandidates: []\n", "candidates"),
    ("name: x\ncandidates:\n  - {name: a, model: qwen3.6-27b, colour: red}\n", "colour"),
    ("name: x\ncandidates:\n  - {name: a, model: qwen3.6-27b}\nbench: {scenarios: [fast]}\n", "unknown scenario"),
    ("name: [\n", "not valid YAML"),
])
def test_a_bad_file_is_one_line(tmp_path, text, msg):
    f = tmp_path / "x.yaml"
    f.write_text(text)
    p = rb("experiment", str(f), "--predict-only", check=False)
    assert p.returncode == 2 and msg in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def _steps(db: Path) -> list[dict]:
    e = sa.create_engine(f"sqlite:///{db}")
    try:
        with e.connect() as c:
            rows = [dict(r._mapping) for r in c.execute(sa.text("select * from experiment_steps order by id"))]
        return [{**r, "data": json.loads(r["data"]) if isinstance(r["data"], str) else r["data"]} for r in rows]
    except sa.exc.OperationalError:
        return []
    finally:
        e.dispose()


@pytest.mark.llama
def test_a_killed_experiment_resumes_where_it_stopped(tmp_path, llama_server, qwen_gguf):
    """A real experiment is started, killed mid-run and resumed (about 10 s on 2 cores): each candidate serves the
    embedded model in its own llama-server."""
    f = tmp_path / "exp.yaml"
    f.write_text("name: resume\nrig: detect\ncandidates:\n"
                 "  - {name: first, model: embedded, flags: -c 1024 -np 1}\n"
                 "  - {name: second, model: embedded, flags: -c 1024 -np 1}\n"
                 "  - {name: too-big, model: qwen3.6-27b, rig: rtx3060, weights: /nonexistent.gguf,"
                 " flags: -c 262144 -ngl 99}\n"
                 "bench:\n  scenarios: [short_ttft, decode]\n"
                 "  config: {short_prompt: 16, short_output: 4, decode_output: 16, repeats: 1}\n")
    db = tmp_path / "store.db"
    url = f"sqlite:///{db}"
    proc = subprocess.Popen([*RB, "experiment", str(f), "--db", url], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        s = {(x["candidate"], x["stage"]): x for x in _steps(db)}
        if s.get(("first", "bench"), {}).get("status") == "done":
            break
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the first candidate's bench did not finish in 240 s")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "--resume 1" in err
    before = {(x["candidate"], x["stage"]): x for x in _steps(db)}
    first_run = before[("first", "bench")]["run_id"]
    assert ("second", "bench") not in before or before[("second", "bench")]["status"] != "done"
    e = sa.create_engine(url)
    with e.connect() as c:
        assert c.execute(sa.text("select status from experiments where id = 1")).scalar_one() == "interrupted"

    p = rb("experiment", "--resume", "1", "--db", url, "--json", timeout=300)
    d = json.loads(p.stdout)
    after = {(x["candidate"], x["stage"]): x for x in _steps(db)}
    assert after[("first", "bench")]["run_id"] == first_run            # kept, not measured again
    assert after[("second", "bench")]["status"] == "done"
    assert after[("too-big", "plan")]["status"] == "refused"
    assert "does not fit" in after[("too-big", "plan")]["data"]["why"]
    assert [s["candidate"] for s in d["steps"] if s["stage"] == "bench"] == ["second"]
    with e.connect() as c:
        assert c.execute(sa.text("select status from experiments where id = 1")).scalar_one() == "done"
        # the resumed run's numbers are in the store and in the report built from it
        ttft = c.execute(sa.text("select count(*) from requests where run_id = :r"),
                         {"r": after[("second", "bench")]["run_id"]}).scalar_one()
    assert ttft >= 2
    speed = {r["metric"]: r for r in d["report"]["speed"]}
    assert speed["ttft_short_ms"]["cells"]["first"]["measured"] > 0
    assert speed["ttft_short_ms"]["cells"]["second"]["measured"] > 0
    assert any("too-big" in v and "refused" in v for v in d["report"]["verdict"])
