"""`rigbench demo`: every catalog model planned here and on a 24 GB GPU, then a small experiment with the
embedded model on this machine (serve, bench, eval), reported as HTML."""

from __future__ import annotations

from pathlib import Path

from rigbench import catalog, hardware
from rigbench import model as model_mod
from rigbench.engines.options import LlamaCppOptions
from rigbench.plan import memory
from rigbench.report.rows import GiB

DEMO_EXPERIMENT = Path(__file__).with_name("data") / "cpu-embedded.yaml"


def catalog_plans(rigs: list[hardware.Rig], context: int = 32768) -> list[dict]:
    rows = []
    for r in rigs:
        for name in catalog.models():
            spec = model_mod.from_catalog(name)
            q = "MXFP4_MOE" if spec.native_quant == "MXFP4" else "Q4_K_M"
            p = memory.plan(spec, r, LlamaCppOptions(model_path=name, ctx=context), q)
            gpu = sum(d.total for d in p.devices if d.kind == "gpu")
            cpu = sum(d.total for d in p.devices if d.kind == "cpu")
            rows.append({"rig": r.describe(), "model": name, "quant": p.quant, "context": p.context,
                         "weights_gib": round(p.weights_bytes / GiB, 2), "vram_gib": round(gpu / GiB, 2),
                         "ram_gib": round(cpu / GiB, 2), "kv_gib": round(p.kv_cache_bytes / GiB, 2),
                         "fits": p.fits, "change": p.suggestion or "; ".join(p.notes)})
    return rows


def plans_markdown(rows: list[dict]) -> str:
    md = ["| rig | model | quant | weights GiB | VRAM GiB | RAM GiB | KV GiB | fits | change / note |",
          "|---|---|---|---:|---:|---:|---:|---|---|"]
    md += [f"| {r['rig']} | {r['model']} | {r['quant']} | {r['weights_gib']} | {r['vram_gib']} | {r['ram_gib']} | "
           f"{r['kv_gib']} | {'yes' if r['fits'] else 'no'} | {r['change']} |" for r in rows]
    return "\n".join(md) + "\n"
