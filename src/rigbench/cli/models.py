"""`models`, `rigs`, `inspect`: what the catalog holds and what this machine has."""

from __future__ import annotations

from typing import Annotated

import typer

from rigbench import catalog, hardware
from rigbench import model as model_mod
from rigbench.cli.common import MODEL_HELP, JsonOpt, emit_json, out
from rigbench.report import terminal
from rigbench.report.rows import inspect_info, model_rows


def agents(as_json: JsonOpt = False) -> None:
    """The agent profiles: what each agent sends the model over a task, measured through the recording gateway."""
    from rigbench.tasks.runner import agent_rows

    rows = agent_rows()
    return emit_json(rows) if as_json else terminal.print_agents(out, rows)


def models(as_json: JsonOpt = False) -> None:
    """List the catalog's models with their size and kind."""
    rows = model_rows()
    if as_json:
        return emit_json(rows)
    terminal.print_models(out, rows)


def rigs(as_json: JsonOpt = False) -> None:
    """List catalog rigs and what was detected on this machine."""
    names = list(catalog.hardware()["rigs"])
    items = [hardware.load(n) for n in names] + [hardware.detect()]
    if as_json:
        return emit_json([r.model_dump() for r in items])
    terminal.print_rigs(out, items)


def inspect(model: Annotated[str, typer.Argument(help=MODEL_HELP)],
            as_json: JsonOpt = False) -> None:
    """Show a model's shape and parameters per tensor group."""
    s = model_mod.load(model)
    info = inspect_info(s)
    if as_json:
        return emit_json(info)
    terminal.print_inspect(out, s, info["params_by_group"])
