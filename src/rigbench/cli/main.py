"""The `rigbench` command: every subcommand, in the order `--help` lists them, and the entry point that turns
errors a user can cause into one line and an exit code."""

from __future__ import annotations

from typing import Annotated

import typer

from rigbench import __version__
from rigbench.cli import bench, evals, experiment, models, plan, route, serve, whatif
from rigbench.cli.common import PASSTHROUGH, err, out
from rigbench.errors import RigbenchError
from rigbench.procs import stop_on_signals, stop_reason

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Plan, serve, benchmark and evaluate open-weight coding models on your own rig.")


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False) -> None:
    if version:
        out.print(__version__)
        raise typer.Exit()


app.command()(models.agents)
app.command()(models.models)
app.command()(models.rigs)
app.command()(models.inspect)
app.command(context_settings=PASSTHROUGH)(plan.plan)
app.command(context_settings=PASSTHROUGH)(serve.serve)
app.command()(serve.synth)
app.command()(bench.bench)
app.command()(bench.runs)
app.command(name="tune")(plan.tune)
app.command()(plan.advise)
app.command()(plan.calibrate)
app.command(name="eval")(evals.eval_cmd)
app.command()(evals.compare)
app.command()(evals.show)
app.command(name="experiment")(experiment.experiment_cmd)
app.command(name="report")(experiment.report_cmd)
app.command()(experiment.demo)
app.command(name="ray-resources")(experiment.ray_resources)
app.command(context_settings=PASSTHROUGH)(whatif.whatif)
app.command()(whatif.replay)
app.command(name="tasks")(evals.tasks_cmd)
app.command()(route.route)


def main() -> None:
    stop_on_signals()
    try:
        rc = app(standalone_mode=False)
    except RigbenchError as e:
        err.print(f"[red]error:[/] {e}", highlight=False)
        raise SystemExit(e.exit_code) from None
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except (typer.Abort, KeyboardInterrupt) as e:
        reason, code = stop_reason(e)
        err.print(f"stopped ({reason})")
        raise SystemExit(code) from None
    except Exception as e:  # usage errors arrive here in non-standalone mode (click's, or typer's own since
        show = getattr(e, "show", None)  # typer 0.2x vendors click)
        if callable(show) and isinstance(getattr(e, "exit_code", None), int):
            show()
            raise SystemExit(e.exit_code) from None
        raise
    if isinstance(rc, int) and rc:
        raise SystemExit(rc)
