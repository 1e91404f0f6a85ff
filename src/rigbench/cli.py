"""The `rigbench` command: one subcommand per stage, Rich tables, `--json` everywhere."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from rigbench import __version__, catalog, hardware
from rigbench import model as model_mod
from rigbench.engines.options import LlamaCppOptions, VllmOptions, parse_command, parse_llama_args
from rigbench.errors import RigbenchError
from rigbench.plan import memory

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Plan, serve, benchmark and evaluate open-weight coding models on your own rig.")
# wide enough for the tables when output goes to a file or a pipe
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, soft_wrap=True)
ENGINE_PROGRAMS = ("llama-server", "llama-cli", "vllm", "python", "python3", "env")
GiB = 2**30

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def _gib(n: int | float) -> str:
    return f"{n / GiB:,.2f}"


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()


# ---- models / rigs -----------------------------------------------------------------------------

@app.command()
def models(as_json: JsonOpt = False) -> None:
    """List the catalog's models with their size and kind."""
    rows = []
    for name in catalog.models():
        s = model_mod.from_catalog(name)
        rows.append({"name": name, "arch": s.arch, "params_b": round(s.total_params() / 1e9, 2),
                     "active_b": round(s.active_params() / 1e9, 2), "layers": s.layers,
                     "kind": ("MoE " if s.is_moe else "dense ") + _layout_kind(s), "context": s.context,
                     "source": s.source})
    if as_json:
        return _emit_json(rows)
    t = Table(title="catalog models")
    for c in ("name", "arch", "params (B)", "active (B)", "layers", "kind", "context"):
        t.add_column(c, justify="right" if c in ("params (B)", "active (B)", "layers", "context") else "left")
    for r in rows:
        t.add_row(r["name"], r["arch"], f"{r['params_b']}", f"{r['active_b']}", str(r["layers"]), r["kind"],
                  str(r["context"]))
    out.print(t)


def _layout_kind(s: model_mod.ModelSpec) -> str:
    kinds = {"L": "Gated DeltaNet", "M": "Mamba2", "S": "sliding window", "C": "chunked attention"}
    extra = [v for k, v in kinds.items() if k in s.layout]
    return " + ".join(["attention", *extra]) if extra else "attention"


@app.command()
def rigs(as_json: JsonOpt = False) -> None:
    """List catalog rigs and what was detected on this machine."""
    names = list(catalog.hardware()["rigs"])
    items = [hardware.load(n) for n in names] + [hardware.detect()]
    if as_json:
        return _emit_json([r.model_dump() for r in items])
    t = Table(title="rigs (`--rig NAME`, `--rig 2x rtx3090`, `--rig my-rig.yaml`, `--rig detect`)")
    for c in ("name", "GPUs", "VRAM (GiB)", "GPU GB/s", "RAM (GiB)", "RAM GB/s"):
        t.add_column(c)
    for r in items:
        t.add_row(r.name, " + ".join(g.name for g in r.gpus) or "-", _gib(r.vram_bytes),
                  " / ".join(f"{g.bandwidth_gbs:.0f}" for g in r.gpus) or "-", _gib(r.ram_bytes),
                  f"{r.ram_bandwidth_gbs:.0f}")
    out.print(t)


@app.command()
def inspect(model: Annotated[str, typer.Argument(help="catalog name, config.json or .gguf")],
            as_json: JsonOpt = False) -> None:
    """Show a model's shape and parameters per tensor group."""
    s = model_mod.load(model)
    groups = s.params_by_group()
    info = s.model_dump(exclude={"tensors"})
    info.update({"params_by_group": groups, "total_params": s.total_params(), "active_params": s.active_params(),
                 "tensor_count": len(s.table())})
    if as_json:
        return _emit_json(info)
    out.print(f"[bold]{s.name}[/] ({s.arch}): {s.layers} layers, hidden {s.hidden}, layout {s.layout}")
    t = Table()
    t.add_column("group")
    t.add_column("params (M)", justify="right")
    for g, n in groups.items():
        if n:
            t.add_row(g, f"{n / 1e6:,.1f}")
    out.print(t)
    out.print(f"total {s.total_params() / 1e9:.2f} B, active per token {s.active_params() / 1e9:.2f} B")


# ---- plan ----------------------------------------------------------------------------------------

def plan_json(p: memory.Plan) -> dict:
    d = p.model_dump()
    d["devices"] = [{"name": x.name, "kind": x.kind, "vram_bytes": x.vram_bytes, "ram_bytes": x.ram_bytes,
                     "capacity_bytes": x.capacity_bytes, "weights_bytes": x.weights_bytes,
                     "kv_cache_bytes": x.kv_cache_bytes, "recurrent_bytes": x.recurrent_bytes,
                     "compute_bytes": x.compute_bytes, "other_bytes": x.other_bytes} for x in p.devices]
    return d


def print_plan(p: memory.Plan) -> None:
    t = Table(title=f"{p.model} on {p.rig}: {p.engine}, {p.quant}, context {p.context:,}")
    for c in ("device", "weights", "KV cache", "recurrent", "compute", "other", "total", "of"):
        t.add_column(c + ("" if c in ("device",) else " GiB"), justify="left" if c == "device" else "right")
    for d in p.devices:
        if d.total == 0 and d.kind == "gpu":
            continue
        t.add_row(d.name, _gib(d.weights_bytes), _gib(d.kv_cache_bytes), _gib(d.recurrent_bytes),
                  _gib(d.compute_bytes), _gib(d.other_bytes), _gib(d.total), _gib(d.capacity_bytes))
    out.print(t)
    out.print(f"weights {_gib(p.weights_bytes)} GiB · KV cache {p.kv_cache_tokens:,} tokens · "
              f"max concurrency at {p.context:,} tokens: {p.max_concurrency}x")
    for n in p.notes:
        out.print(f"[dim]note:[/] {n}")
    if p.fits:
        out.print("[green]fits[/]")
    else:
        out.print(f"[red]does not fit:[/] {p.reason}")
        if p.suggestion:
            out.print(f"cheapest change: [bold]{p.suggestion}[/]")
        for a in p.alternatives:
            out.print(f"  or: {a}")
    out.print("command: " + " ".join(_quote(a) for a in p.command))


def _quote(a: str) -> str:
    import shlex
    return shlex.quote(a)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def plan(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(help="catalog name, config.json or .gguf")] = None,
    model_opt: Annotated[str | None, typer.Option("--model", help="what the pasted command's model path is")] = None,
    rig: Annotated[str | None, typer.Option(help="catalog rig, 'Nx GPU', a YAML file, or 'detect'")] = None,
    engine: Annotated[str, typer.Option(help="llama.cpp or vllm")] = "llama.cpp",
    quant: Annotated[str | None, typer.Option(help="GGUF type (Q4_K_M, UD-Q4_K_XL, ...) or vLLM format")] = None,
    context: Annotated[int | None, typer.Option("--ctx", "-c", help="context length")] = None,
    ngl: Annotated[int | None, typer.Option(help="llama.cpp: layers on the GPU")] = None,
    cpu_moe: Annotated[bool, typer.Option("--cpu-moe", help="llama.cpp: all experts in RAM")] = False,
    n_cpu_moe: Annotated[int, typer.Option(help="llama.cpp: experts of the first N layers in RAM")] = 0,
    kv_type: Annotated[str | None, typer.Option(help="KV cache type (q8_0, q4_0, fp8_e5m2, ...)")] = None,
    parallel: Annotated[int | None, typer.Option(help="sequences served at once")] = None,
    tp: Annotated[int, typer.Option(help="vLLM tensor parallel size")] = 1,
    gpu_util: Annotated[float, typer.Option(help="vLLM --gpu-memory-utilization")] = 0.9,
    as_json: JsonOpt = False,
) -> None:
    """Memory placement of a model on a rig: per device weights, KV cache, state and buffers.

    Either options (`rigbench plan qwen3.6-35b-a3b --rig rtx5080 --cpu-moe`) or a pasted engine command
    after `--` (`rigbench plan --model qwen3.6-27b --rig 2x-rtx3090 -- vllm serve ... --tensor-parallel-size 2`).
    """
    command = list(ctx.args)
    if model and (Path(model).name.startswith(ENGINE_PROGRAMS) or "=" in model):
        # `rigbench plan --model M --rig R -- vllm serve ...`: click hands the program name over as MODEL
        command, model = [model, *command], None
    r = hardware.load(rig)
    if command:
        options = parse_command(command)
        ref = model_opt or model or options.model_path
        if not ref:
            raise typer.BadParameter("name the model with --model (the command has no model path)")
        spec = model_mod.load(ref)
        if options.model_path is None:
            options.model_path = ref
    else:
        ref = model_opt or model
        if not ref:
            raise typer.BadParameter("give a MODEL (catalog name, config.json or .gguf)")
        spec = model_mod.load(ref)
        if engine in ("vllm", "vLLM"):
            options = VllmOptions(model_path=ref, tensor_parallel=tp, gpu_memory_utilization=gpu_util,
                                  max_model_len=context, max_num_seqs=parallel, quantization=quant,
                                  kv_cache_dtype=kv_type or "auto")
            quant = None
        elif engine in ("llama.cpp", "llama-server", "llamacpp"):
            args = ["-m", spec.path or ref]
            if context:
                args += ["-c", str(context)]
            if ngl is not None:
                args += ["-ngl", str(ngl)]
            if cpu_moe:
                args += ["--cpu-moe"]
            if n_cpu_moe:
                args += ["--n-cpu-moe", str(n_cpu_moe)]
            if kv_type:
                args += ["-ctk", kv_type, "-ctv", kv_type]
            if parallel:
                args += ["-np", str(parallel)]
            options = parse_llama_args(args)
        else:
            raise typer.BadParameter(f"unknown engine {engine!r}; use llama.cpp or vllm")
    if isinstance(options, LlamaCppOptions) and quant is None and spec.tensors is None:
        quant = spec.native_quant and "MXFP4_MOE" or "Q4_K_M"
    p = memory.plan(spec, r, options, quant)
    if as_json:
        _emit_json(plan_json(p))
    else:
        print_plan(p)
    if not p.fits:
        raise typer.Exit(3)


# ---- demo ----------------------------------------------------------------------------------------

@app.command()
def demo(out_dir: Annotated[Path, typer.Option(help="where the report goes")] = Path(".rigbench/demo"),
         as_json: JsonOpt = False) -> None:
    """rigbench's main job on embedded defaults: plan every catalog model here and on a 24 GB GPU."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rigs_ = [hardware.detect(), hardware.load("rtx4090")]
    rows = []
    for r in rigs_:
        for name in catalog.models():
            spec = model_mod.from_catalog(name)
            q = "MXFP4_MOE" if spec.native_quant == "MXFP4" else "Q4_K_M"
            p = memory.plan(spec, r, LlamaCppOptions(model_path=name, ctx=32768), q)
            gpu = sum(d.total for d in p.devices if d.kind == "gpu")
            cpu = sum(d.total for d in p.devices if d.kind == "cpu")
            rows.append({"rig": r.describe(), "model": name, "quant": p.quant, "context": p.context,
                         "weights_gib": round(p.weights_bytes / GiB, 2), "vram_gib": round(gpu / GiB, 2),
                         "ram_gib": round(cpu / GiB, 2), "kv_gib": round(p.kv_cache_bytes / GiB, 2),
                         "fits": p.fits, "change": p.suggestion or "; ".join(p.notes)})
    (out_dir / "plans.json").write_text(json.dumps(rows, indent=2))
    md = ["| rig | model | quant | weights GiB | VRAM GiB | RAM GiB | KV GiB | fits | change / note |",
          "|---|---|---|---:|---:|---:|---:|---|---|"]
    md += [f"| {r['rig']} | {r['model']} | {r['quant']} | {r['weights_gib']} | {r['vram_gib']} | {r['ram_gib']} | "
           f"{r['kv_gib']} | {'yes' if r['fits'] else 'no'} | {r['change']} |" for r in rows]
    (out_dir / "plans.md").write_text("\n".join(md) + "\n")
    if as_json:
        return _emit_json(rows)
    for r in rigs_:
        t = Table(title=f"llama.cpp plans at 32K context on {r.describe()}")
        for c in ("model", "quant", "weights GiB", "VRAM GiB", "RAM GiB", "KV GiB", "fits", "change / note"):
            t.add_column(c)
        for row in (x for x in rows if x["rig"] == r.describe()):
            t.add_row(row["model"], row["quant"], f"{row['weights_gib']}", f"{row['vram_gib']}", f"{row['ram_gib']}",
                      f"{row['kv_gib']}", "[green]yes[/]" if row["fits"] else "[red]no[/]", row["change"])
        out.print(t)
    out.print(f"report: {(out_dir / 'plans.md').resolve()} (JSON: {(out_dir / 'plans.json').resolve()})")


def main() -> None:
    try:
        rc = app(standalone_mode=False)
    except RigbenchError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        raise SystemExit(e.exit_code) from None
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted")
        raise SystemExit(130) from None
    except Exception as e:  # click usage errors arrive here in non-standalone mode
        import click
        if isinstance(e, click.ClickException):
            e.show()
            raise SystemExit(e.exit_code) from None
        raise
    if isinstance(rc, int) and rc:
        raise SystemExit(rc)
