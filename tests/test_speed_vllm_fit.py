"""vLLM's time terms are fitted on published runs split by source: the held-out reports never reach the fit."""

from __future__ import annotations

import collections
import copy
import json
import sys
from pathlib import Path

import yaml

from rigbench.plan import speed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import speed_prediction as sp  # noqa: E402

ENTRIES = yaml.safe_load((ROOT / "benchmarks" / "data" / "published_speeds.yaml").read_text())
VLLM = [e for e in ENTRIES if e["engine"] == "vllm"]


def test_every_entry_has_a_fixed_split_and_vllm_has_at_least_40_linked_points():
    assert all(e.get("split") in ("fit", "heldout") for e in ENTRIES)
    assert len(VLLM) >= 40
    assert all(e["source"].startswith("https://") for e in VLLM)
    assert all(e.get("prefill_tok_s") or e.get("decode_tok_s") for e in VLLM)


def test_the_split_is_by_report_not_by_point():
    parts = collections.defaultdict(set)
    for e in ENTRIES:
        parts[sp.report_of(e)].add(e["split"])
    mixed = [r for r, s in parts.items() if len(s) > 1]
    assert not mixed, f"reports with points on both sides: {mixed}"
    held = [e for e in VLLM if e["split"] == "heldout"]
    assert 0.25 <= len(held) / len(VLLM) <= 0.45          # about a third
    assert len({sp.report_of(e) for e in held}) >= 5      # several whole reports, not one


def test_the_shipped_fit_used_exactly_the_fit_part():
    fitted = json.loads(speed.VLLM_FIT.read_text())
    assert set(fitted["fitted_on"]) == {e["id"] for e in VLLM if e["split"] == "fit"}
    assert not set(fitted["fitted_on"]) & {e["id"] for e in ENTRIES if e["split"] == "heldout"}
    assert "--fit" in fitted["command"]
    assert set(fitted["terms"]) == set(speed.VLLM_TERMS)


def test_changing_held_out_figures_does_not_change_the_fit():
    cal = speed.load_calibration()
    a = sp.fit_vllm(ENTRIES, cal, rounds=1)
    wild = copy.deepcopy(ENTRIES)
    for e in wild:
        if e["split"] == "heldout":
            for k in ("prefill_tok_s", "decode_tok_s"):
                if e.get(k):
                    e[k] *= 3.0
    b = sp.fit_vllm(wild, cal, rounds=1)
    assert a["terms"] == b["terms"]
    # and a change on the fit side does move it: the fit reads those
    moved = copy.deepcopy(ENTRIES)
    for e in moved:
        if e["engine"] == "vllm" and e["split"] == "fit" and e.get("decode_tok_s"):
            e["decode_tok_s"] *= 2.0
    assert sp.fit_vllm(moved, cal, rounds=1)["terms"] != a["terms"]


def _decode(args: list[str], gpus: int = 2, **rig) -> float:
    from rigbench import hardware
    from rigbench.engines.options import parse_vllm_args
    from rigbench.model import load
    from rigbench.plan import memory

    spec = load("qwen3.6-27b")
    r = hardware.described("rtx3090", gpus, "", "pcie4x16", rig.get("p2p"), rig.get("peer_link", ""))
    p = memory.plan(spec, r, parse_vllm_args(["MODEL", "--tensor-parallel-size", str(gpus), "--max-model-len",
                                              "32768", *args]), "autoround")
    return speed.predict(p, spec, r, prompt_tokens=1, context=1024).decode_tok_s.value


def test_eager_mode_pays_a_launch_per_layer_and_mtp_lifts_decode():
    graphs, eager = _decode([]), _decode(["--enforce-eager"])
    assert eager < graphs
    mtp = _decode(["--speculative-config", '{"method":"mtp","num_speculative_tokens":3}'])
    assert mtp > graphs


def test_held_out_medians_are_reported_apart():
    res = json.loads((ROOT / "benchmarks" / "results" / "speed_prediction.json").read_text())
    s = res["published"]["summary"]
    assert res["command"].startswith("python benchmarks/speed_prediction.py")
    for eng in ("vllm", "llama.cpp"):
        for part in ("fit", "heldout"):
            assert s[eng][part]["decode"]["points"] > 0
    assert s["vllm"]["heldout"]["decode"]["points"] + s["vllm"]["fit"]["decode"]["points"] == \
        s["vllm"]["decode"]["points"]

