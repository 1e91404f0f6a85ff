"""MkDocs hook: figures on the docs pages are generated from benchmarks/results/*.json and from the code at build
time, never typed by hand. A page asks for one with a marker on a line of its own:

    <!-- results: speed_published -->

and the hook replaces it with a Markdown table. A marker with no generator, or a results file that is missing or
lacks a field, fails the build with a message naming both (so a renamed or regenerated file cannot leave a page
showing stale figures)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
MARKER = re.compile(r"^<!-- results: ([a-z0-9_]+) -->$", re.MULTILINE)


class ResultsError(Exception):
    pass


def _load(name: str) -> dict | list:
    path = RESULTS / name
    if not path.is_file():
        raise ResultsError(f"benchmarks/results/{name} is missing: regenerate it or update docs/hooks/results.py")
    return json.loads(path.read_text())


def _get(d: dict, *keys: str, file: str):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            raise ResultsError(f"benchmarks/results/{file} has no {'.'.join(keys)}: update docs/hooks/results.py")
        d = d[k]
    return d


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x * 100:+.1f}%" if signed else f"{abs(x) * 100:.1f}%"


def _num(x: float | None, nd: int = 0) -> str:
    return "–" if x is None else f"{x:,.{nd}f}"


def _table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join(sep) + " |"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def _source(*files: str) -> str:
    names = ", ".join(f"`benchmarks/results/{f}`" for f in files)
    return f"\n\n<small>Generated at build time from {names}.</small>"


# --- generators -------------------------------------------------------------------------------------------------

def speed_loo() -> str:
    f = "speed_prediction.json"
    s = _get(_load(f), "summary", file=f)
    t = s.get("targets", {})
    rows = [
        ["decode", s["decode_points"], _pct(s["decode_median_abs_error"]), _pct(t.get("decode"))],
        ["prefill", s["prefill_points"], _pct(s["prefill_median_abs_error"]), _pct(t.get("prefill"))],
    ]
    return _table(["leave-one-out", "points", "median error", "target"], rows) + _source(f)


def speed_published() -> str:
    f = "speed_prediction.json"
    s = _get(_load(f), "published", "summary", file=f)
    rows = []
    for eng in ("llama.cpp", "vllm", "all"):
        e = _get(s, eng, file=f)
        p, d = e["prefill"], e["decode"]
        rows.append([eng if eng != "all" else "**all**", p["points"], _pct(p["median_abs_error"]),
                     _pct(p["worst_abs_error"]), d["points"], _pct(d["median_abs_error"]), _pct(d["worst_abs_error"])])
    t = s.get("targets", {})
    rows.append(["target", "", _pct(t.get("prefill")), "", "", _pct(t.get("decode")), ""])
    head = ["published set", "prefill points", "median error", "worst", "decode points", "median error", "worst"]
    return _table(head, rows) + _source(f)


def speed_published_split() -> str:
    f = "speed_prediction.json"
    s = _get(_load(f), "published", "summary", file=f)
    base = s.get("baseline_before_fit", {})
    rows = []
    for eng in ("vllm", "llama.cpp"):
        e = _get(s, eng, file=f)
        for part in ("fit", "heldout"):
            x = _get(e, part, file=f)
            p, d = x["prefill"], x["decode"]
            rows.append([eng, part, x["reports"], p["points"], _pct(p.get("median_abs_error")),
                         d["points"], _pct(d.get("median_abs_error"))])
        b = base.get(eng)
        if b:
            rows.append([eng, "before the vLLM fit (all points)", "", b["prefill"]["points"],
                         _pct(b["prefill"]["median_abs_error"]), b["decode"]["points"],
                         _pct(b["decode"]["median_abs_error"])])
    t = s.get("targets", {}).get("vllm_heldout", {})
    rows.append(["target", "vllm held out", "", "", _pct(t.get("prefill")), "", _pct(t.get("decode"))])
    head = ["engine", "part", "reports", "prefill points", "median error", "decode points", "median error"]
    out = _table(head, rows, "llrrrrr")
    terms = s.get("vllm_terms")
    if terms:
        out += "\n\nvLLM's fitted terms: " + ", ".join(f"`{k}` {v:g}" for k, v in terms.items()) + "."
    return out + _source(f)


def speed_published_worst() -> str:
    f = "speed_prediction.json"
    rows = _get(_load(f), "published", "rows", file=f)
    pts = []
    for r in rows:
        for kind in ("prefill", "decode"):
            err = r.get(f"{kind}_error")
            if err is not None:
                pts.append((abs(err), kind, r))
    pts.sort(key=lambda p: -p[0])
    out = [[f"`{r['id']}`", kind, r["engine"], _num(r[f"{kind}_measured"], 1), _num(r[f"{kind}_predicted"], 1),
            _pct(r[f"{kind}_error"], signed=True)] for _, kind, r in pts[:8]]
    head = ["published entry", "what", "engine", "measured tok/s", "predicted tok/s", "error"]
    return _table(head, out, "lllrrr") + _source(f)


def plan_accuracy() -> str:
    f = "plan_accuracy.json"
    rows = _get(_load(f), "rows", file=f)
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        model = re.sub(r"^[0-9a-f]{8}-", "", r["model"]).removesuffix(".gguf")
        groups.setdefault((model, r["what"]), []).append(r["error_pct"])
    out = [[f"`{m}`", w, len(errs), f"{max(errs, key=abs):+.2f}%"] for (m, w), errs in groups.items()]
    return _table(["model", "allocation", "settings", "largest error"], out, "llrr") + _source(f)


def gpu_memory() -> str:
    f = "gpu_calibration_h100.json"
    d = _load(f)
    rows = _get(d, "memory", file=f)
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(r["what"], []).append(r["error_pct"])
    out = [[w, len(e), f"{min(e):+.1f}% … {max(e):+.1f}%"] for w, e in groups.items()]
    return _table(["allocation", "placements", "error range"], out, "lrr") + _source(f)


def holdout() -> str:
    f = "gpu_h200_s6_holdout.json"
    d = _load(f)
    s = _get(d, "summary", file=f)
    rows = [[f"`{r['config']}`", _num(r["measured_tok_s"]), _num(r["predicted_tok_s"]), _pct(r["error"], True)]
            for r in _get(d, "rows", file=f)]
    rows.append([f"**median / worst of {s['points']}**", "", "", f"{_pct(s['median_abs_error'])} / "
                 f"{_pct(s['worst_abs_error'])}"])
    head = [f"{d.get('model', '')} on {d.get('gpu', '').upper()}: llama-bench config",
            "measured tok/s (pp: prefill, tg: decode)", "predicted", "error"]
    return _table(head, rows) + _source(f)


def _whatif_rows(f: str, label: str) -> list[str]:
    d = _load(f)
    per = _get(d, "per_target", file=f)
    return [label, ", ".join(f"{k} {_pct(v)}" for k, v in per.items()), _get(d, "tasks_compared", file=f),
            f"{_get(d, 'within_predicted_range', file=f)}", f"**{_pct(_get(d, 'median_abs_error', file=f))}**",
            _pct(_get(d, "worst_abs_error", file=f)), _pct(d.get("target_median_abs_error"))]


def whatif() -> str:
    files = [("whatif_accuracy.json", "CPU, 2 cores"), ("whatif_accuracy_gpu.json", "H200, trace A"),
             ("whatif_accuracy_gpu_b.json", "H200, trace B (held out)")]
    rows = [_whatif_rows(f, label) for f, label in files]
    head = ["where", "median error per target", "tasks", "inside predicted range", "median error", "worst",
            "target"]
    return _table(head, rows, "llrrrrr") + _source(*(f for f, _ in files))


def whatif_tasks() -> str:
    f = "whatif_accuracy.json"
    out = []
    for r in _get(_load(f), "rows", file=f):
        rep = r.get("measured_agent_s_repeats") or [r["measured_agent_s"]]
        err = r["predicted_agent_s"] / r["measured_agent_s"] - 1
        out.append([r["target"], r["task"], f"{r['predicted_agent_s']:.1f} ({r['predicted_low_s']:.1f}–"
                    f"{r['predicted_high_s']:.1f})", " / ".join(f"{x:.1f}" for x in rep), _pct(err, True),
                    f"{r['reused_predicted']:,} / {r['reused_measured']:,}"])
    head = ["target placement", "task", "predicted s (range)", "measured s (replays)", "error",
            "reused tokens predicted / measured"]
    return _table(head, out, "llrrrr") + _source(f)


def routing_spread() -> str:
    f = "routing_spread.json"
    d = _load(f)
    out = [[r["skew"], r["tokens"], _num(r["distinct_measured"], 1), _num(r["distinct_model"], 1),
            _pct(r["distinct_error"])] for r in _get(d, "rows", file=f)]
    head = ["router skew", "u-batch tokens", "experts used (llama-imatrix)", "experts used (model)", "error"]
    return _table(head, out) + _source(f)


def synth_speed() -> str:
    f = "synth_speed.json"
    out = [[r["test"], _num(r["real_tok_s"], 1), _num(r["synthetic_tok_s"], 1), f"{r['diff_pct']:+.1f}%"]
           for r in _get(_load(f), "rows", file=f)]
    return _table(["llama-bench test", "real model tok/s", "synthetic twin tok/s", "difference"], out) + _source(f)


def graph_nodes() -> str:
    f = "graph_nodes.json"
    out = [[r["model"], r["layers"], r["llama_cpp"], r["rigbench"], r["error"]] for r in _get(_load(f), "rows", file=f)]
    return _table(["model", "layers", "llama.cpp graph nodes", "rigbench", "difference"], out) + _source(f)


def loadgen() -> str:
    f = "loadgen_accuracy.json"
    d = _load(f)
    levels = _get(d, "levels", file=f)
    out = [[v["streams"], _num(v["tokens_per_s"]), v["ttft_err_ms_p50"], v["ttft_err_ms_p99"], v["itl_err_ms_p50"],
            v["itl_err_ms_p99"], v["server_cpu_us_per_token"], v["client_cpu_us_per_token"]] for v in levels.values()]
    head = ["streams", "tokens/s", "TTFT error p50 ms", "p99", "ITL error p50 ms", "p99", "server CPU µs/token",
            "client CPU µs/token"]
    seen = _get(d, "sampling", file=f) or {}
    note = (f"\n\nTargets (p50 < 1 ms, p99 < 5 ms, ≥ 20,000 tokens/s) met: {'yes' if d['targets_met'] else 'no'}"
            + (f"; other processes used {seen['others_cpu']:.0%} of the CPU during the run" if seen else "") + ".")
    return _table(head, out) + note + _source(f)


def router_overhead() -> str:
    f = "router_overhead.json"
    d = _load(f)
    direct = _get(d, "direct", file=f)
    out = [["direct", direct["ttft_ms_p50"], direct["ttft_ms_p99"], "–", "–", _num(direct["max_tokens_per_s"])]]
    for name, p in _get(d, "proxies", file=f).items():
        out.append([name, p["ttft_ms_p50"], p["ttft_ms_p99"], f"**{p['added_ttft_ms_p50']}**", p["added_ttft_ms_p99"],
                    _num(p.get("max_tokens_per_s"))])
    head = ["through", "TTFT p50 ms", "TTFT p99 ms", "added TTFT p50 ms", "added p99 ms", "max tokens/s"]
    return _table(head, out) + _source(f)


def agent_local() -> str:
    f = "agent_local.json"
    comp = _get(_load(f), "comparison", file=f)
    out = []
    for model, c in comp.items():
        out.append([model, f"{c['median_degenerate_s_per_task_before']:.1f} → {c['after']:.1f}",
                    f"{c['total_degenerate_s_before']:.0f} → {c['total_degenerate_s_after']:.0f}",
                    "–" if c.get("parsed_share_before") is None else
                    f"{_pct(c['parsed_share_before'])} → {_pct(c['parsed_share_after'])}",
                    f"{c['solved_before']} → {c['solved_after']}"])
    head = ["model", "s lost to degenerate replies per task (median)", "in all, s", "replies with a call parsed",
            "solved"]
    return _table(head, out) + _source(f)


def results_index() -> str:
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        try:
            d = json.loads(path.read_text())
        except ValueError:
            continue
        keys = ("command", "made_by", "generated_by") if isinstance(d, dict) else ()
        cmd = next((d[k] for k in keys if k in d), None)
        out.append([f"`{path.name}`", f"`{cmd}`" if cmd else "–"])
    return _table(["file", "command that made it"], out, "ll") + "\n\n<small>Generated at build time.</small>"


def store_schema() -> str:
    src = str(ROOT / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    from rigbench import store

    parts = []
    for table in store.metadata.sorted_tables:
        rows = []
        for c in table.columns:
            fk = ", ".join(f"→ {k.target_fullname}" for k in c.foreign_keys)
            key = "primary key" if c.primary_key else ("not null" if not c.nullable else "")
            rows.append([f"`{c.name}`", str(c.type).lower(), ", ".join(x for x in (key, fk) if x)])
        idx = [", ".join(c.name for c in i.columns) + (" (unique)" if i.unique else "") for i in table.indexes]
        parts.append(f"### `{table.name}`\n\n" + _table(["column", "type", ""], rows, "lll")
                     + (f"\n\nIndexes: {'; '.join(sorted(idx))}." if idx else ""))
    return "\n\n".join(parts) + "\n\n<small>Generated at build time from `rigbench.store.metadata`.</small>"


def tuner_gpu() -> str:
    f = "gpu_s8_prefill_views.json"
    names = {"tuned": "`rigbench tune`'s pick", "fit": "llama.cpp `--fit`", "cpumoe": "`--cpu-moe`"}
    out = []
    for r in _get(_load(f), "records", file=f):
        if not r.get("first_request"):
            continue
        kind = re.sub(r"^35b-|\d+$", "", r["config"])
        pred = r["predicted"]
        prefill = r.get("rigbench_prefill_tok_s") or r.get("server_prefill_tok_s")
        views = " / ".join(_num(r.get(k)) for k in ("rigbench_prefill_tok_s", "server_prefill_tok_s",
                                                     "llama_bench_pp_tok_s"))
        out.append([f"{r['budget_gib']:g} GiB", names.get(kind, kind), f"**{r['turn_s']:.2f}**",
                    f"{pred['turn_s']:.2f}", views, _num(pred["prefill_tok_s"]),
                    _pct(pred["prefill_tok_s"] / prefill - 1, True),
                    _num(r.get("rigbench_decode_tok_s") or r.get("server_decode_tok_s"), 1)])
    head = ["VRAM free", "placement", "turn s", "predicted turn s", "prefill tok/s (client / server / llama-bench)",
            "predicted prefill", "prefill error", "decode tok/s"]
    return _table(head, out, "llrrrrrr") + _source(f)


def module_table() -> str:
    import ast

    src = ROOT / "src" / "rigbench"
    out = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src)
        if "migrations" in rel.parts or rel.name == "__main__.py":
            continue
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        first = re.split(r"(?<=[.!?])\s", " ".join(doc.split("\n\n")[0].split()), maxsplit=1)[0]
        parts = rel.parts[:-1] if rel.name == "__init__.py" else (*rel.parts[:-1], rel.stem)
        name = "/".join(("rigbench", *parts)) + ("/" if rel.name == "__init__.py" else ".py")
        lines = len(path.read_text().splitlines())
        out.append([f"`{name}`", lines, first or "–"])
    return _table(["module", "lines", "what it is (its docstring)"], out, "lrl") + \
        "\n\n<small>Generated at build time from the source tree.</small>"


def stage_order() -> str:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    rows = [[str(i), " · ".join(f"`{n.strip()}`" for n in line.split("|"))] for i, line in enumerate(layers, 1)]
    return _table(["", "stage (top first; one row: independent of each other)"], rows, "rl") + \
        "\n\n<small>Generated at build time from pyproject.toml's `[tool.importlinter]` contract.</small>"


GENERATORS: dict[str, Callable[[], str]] = {f.__name__: f for f in (
    speed_loo, speed_published, speed_published_split, speed_published_worst, plan_accuracy, gpu_memory, holdout,
    whatif, whatif_tasks,
    routing_spread, synth_speed, graph_nodes, loadgen, router_overhead, agent_local, results_index, store_schema,
    module_table, tuner_gpu, stage_order)}


def render(markdown: str, where: str = "") -> str:
    def one(m: re.Match) -> str:
        name = m.group(1)
        if name not in GENERATORS:
            raise ResultsError(f"{where}: no generator '{name}' in docs/hooks/results.py ({', '.join(GENERATORS)})")
        try:
            return GENERATORS[name]()
        except (KeyError, TypeError) as e:
            raise ResultsError(f"{where}: results table '{name}': field {e} missing or malformed") from e
    return MARKER.sub(one, markdown)


def on_page_markdown(markdown, page, config, files):  # MkDocs hook
    from mkdocs.exceptions import PluginError

    try:
        return render(markdown, page.file.src_path)
    except ResultsError as e:
        raise PluginError(str(e)) from e

