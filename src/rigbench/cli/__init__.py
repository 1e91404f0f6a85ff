"""The `rigbench` command (Typer): one module per command group; each parses its options and calls a stage.
The work happens in the stage modules, every table in `report`."""

from rigbench.cli.main import app, main

__all__ = ["app", "main"]
