"""The shape of the code: the stage order of pyproject.toml's [tool.importlinter] contracts kept (a module imports only
the stages below its own), no import circle between any two modules, and `__init__.py` files that are only a
package's face. The checks are shown to bite: an import reaching up and a circle, added to the real graph, are
caught."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


@pytest.fixture(scope="module")
def edges() -> dict[str, list[str]]:
    """This checkout's import graph (module -> modules it imports, in functions too), read by grimp in a child
    process that finds src/ first, whatever rigbench is installed."""
    code = ("import grimp, json; g = grimp.build_graph('rigbench', cache_dir=None); "
            "print(json.dumps({m: sorted(g.find_modules_directly_imported_by(m)) for m in g.modules}))")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(r.stdout)


def _graph(edges: dict[str, list[str]]) -> grimp.ImportGraph:
    g = grimp.ImportGraph()
    for m in edges:
        g.add_module(m)
    for m, imported in edges.items():
        for w in imported:
            g.add_import(importer=m, imported=w)
    return g


@pytest.fixture
def graph(edges) -> grimp.ImportGraph:
    return _graph(edges)


def _contract(kind: str) -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c["type"] == kind)


def _layers() -> list[grimp.Layer]:
    out = []
    for line in _contract("layers")["layers"]:
        names = [n.strip() for n in line.split("|")]
        out.append(grimp.Layer(*names, independent=True))
    return out


def _reaching_up(graph: grimp.ImportGraph) -> list[str]:
    found = graph.find_illegal_dependencies_for_layers(layers=_layers(), containers={"rigbench"})
    return sorted(f"{d.importer} -> {d.imported}" for d in found)


def _circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every set of two or more modules that import each other round a loop (strongly connected components),
    package faces included: a submodule importing its own package's __init__ back counts."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_lint_imports_keeps_every_contract():
    """What `make lint` runs: import-linter's own check of the stage order and of circles inside each package."""
    exe = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([str(exe), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 kept, 0 broken" in r.stdout


def test_every_module_has_its_place_in_the_stage_order(graph):
    placed = {n for layer in _contract("layers")["layers"] for n in (x.strip() for x in layer.split("|"))}
    children = {m.split(".")[1] for m in graph.find_children("rigbench")}
    assert children == placed, f"unplaced: {children - placed}; gone: {placed - children}"


def test_no_stage_imports_one_above_it(graph):
    assert _reaching_up(graph) == []


def test_no_import_circles_anywhere(graph):
    assert _circles(graph) == []


def test_the_checks_catch_an_import_reaching_up_and_a_circle(graph):
    g = graph
    g.add_import(importer="rigbench.plan.advise", imported="rigbench.whatif.predict")
    assert _reaching_up(g) == ["rigbench.plan -> rigbench.whatif"]
    g.add_import(importer="rigbench.agent.tools", imported="rigbench.agent.parse")
    assert ["rigbench.agent.parse", "rigbench.agent.tools"] in _circles(g)
    g.add_import(importer="rigbench.store.runs", imported="rigbench.store")      # a face imported back
    assert any("rigbench.store" in c and "rigbench.store.runs" in c for c in _circles(g))


def _code_in(path: Path, base: Path = ROOT) -> list[str]:
    """Statements of an __init__.py that are more than a face: anything but its docstring, imports, __all__ and
    __version__."""
    out = []
    for i, node in enumerate(ast.parse(path.read_text()).body):
        if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            continue
        if isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id in ("__all__", "__version__")
                                                for t in node.targets):
            continue
        out.append(f"{path.relative_to(base)}:{node.lineno}: {type(node).__name__}")
    return out


def test_package_init_files_are_only_faces():
    hits = [h for p in sorted((SRC / "rigbench").rglob("__init__.py")) for h in _code_in(p)]
    assert hits == [], "code in __init__.py (move it to a named module and re-export it):\n" + "\n".join(hits)


def test_the_face_check_sees_code(tmp_path):
    face = tmp_path / "__init__.py"
    face.write_text((SRC / "rigbench" / "store" / "__init__.py").read_text() + "\n\ndef helper():\n    return 1\n")
    (hit,) = _code_in(face, tmp_path)
    assert hit.startswith("__init__.py:") and hit.endswith(": FunctionDef")
