"""Usage errors on the versions a fresh install gets: Typer without click installed beside it.

The shared environment has click through ray; a fresh `pip install rigbench` has only the copy Typer
vendors. The command runs here with `import click` made to fail, as it fails there.
"""

import os
import subprocess
import sys

import pytest

# `import click` fails, as on a fresh install; then the real entry point runs
NO_CLICK = ("import sys\n"
            "class NoClick:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'click' or name.startswith('click.'):\n"
            "            raise ModuleNotFoundError(\"No module named 'click'\")\n"
            "sys.meta_path.insert(0, NoClick())\n"
            "sys.modules.pop('click', None)\n"
            "from rigbench.cli import main\n"
            "sys.argv = ['rigbench', *sys.argv[1:]]\n"
            "main()\n")


def rb(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_CLICK, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "160"})


def commands() -> list[str]:
    import typer.main

    from rigbench.cli import app
    return sorted(typer.main.get_command(app).commands)


def test_click_is_really_blocked():
    p = subprocess.run([sys.executable, "-c", NO_CLICK.replace("from rigbench.cli import main\n", "import click\n")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "No module named 'click'" in p.stderr


@pytest.mark.parametrize("command", commands())
def test_every_command_rejects_an_unknown_option_with_its_usage(command):
    p = rb(command, "--bogus")
    assert p.returncode == 2, p.stderr
    # whatif passes unknown flags on to the target engine, so its required RUN argument takes the word first
    said = "Invalid value for 'run'" if command == "whatif" else "No such option: --bogus"
    assert f"Usage: rigbench {command}" in p.stderr and said in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("args, msg", [
    (["plan", "qwen3.6-27b", "--ctx", "notanumber"], "Invalid value for '--ctx'"),
    (["advise", "--top", "many"], "Invalid value for '--top'"),
    (["nosuchcommand"], "No such command"),
    (["plan"], "give a MODEL"),
    (["experiment"], "give an experiment FILE.yaml"),
    (["report", "--format", "pdf"], "--format is html or md"),
])
def test_bad_values_print_usage_and_exit_2(args, msg):
    p = rb(*args)
    assert p.returncode == 2, p.stderr
    assert "Usage: rigbench" in p.stderr and msg in p.stderr and "Traceback" not in p.stderr
