"""The README and the docs: a front door of bounded length, no words about how the project was built, every page in
the navigation present, and every generated table generated (docs/hooks/results.py, run here without MkDocs; the
strict MkDocs build itself is `make docs`, which `make test` runs)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# how the project was built is not the reader's business: no sessions, lent machines or issue numbers
FORBIDDEN = re.compile(r"\bsessions?\b|\blent\b|\bissues?\s+#?\d+", re.IGNORECASE)


def _hook():
    spec = importlib.util.spec_from_file_location("docs_results_hook", DOCS / "hooks" / "results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def _nav_files(nav) -> list[str]:
    out = []
    for item in nav:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for v in item.values():
                out += _nav_files(v) if isinstance(v, list) else [v]
    return out


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move detail into docs/"
    head = "\n".join(lines[:15])
    assert "make demo" in head and "make test" in head, "the two set-up commands come first"
    for link in re.findall(r"\]\((docs/[^)#]+)", "\n".join(lines)):
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_no_words_about_how_the_project_was_built():
    hook = _hook()
    hits = []
    for path in [ROOT / "README.md", ROOT / "mkdocs.yml", *_pages(), *DOCS.rglob("*.py")]:
        text = path.read_text()
        if path.suffix == ".md" and path.is_relative_to(DOCS):
            text = hook.render(text, str(path))      # generated tables too: they quote results files
        for n, line in enumerate(text.splitlines(), 1):
            for m in FORBIDDEN.finditer(line):
                hits.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)!r} in {line.strip()[:100]}")
    assert not hits, "words about how the project was built:\n" + "\n".join(hits)


def test_forbidden_words_are_caught():
    for text in ("Session 7 re-measured it", "on the lent machine", "see issue 24", "issues #12", "two sessions"):
        assert FORBIDDEN.search(text), text
    for text in ("the present tense", "talent", "a lentil", "tissue 24", "the issues list"):
        assert not FORBIDDEN.search(text), text


def test_every_nav_page_exists_and_every_page_is_in_the_nav():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    nav = set(_nav_files(config["nav"]))
    missing = [p for p in nav if not (DOCS / p).is_file()]
    assert not missing, f"in mkdocs.yml's nav but not in docs/: {missing}"
    orphans = [str(p.relative_to(DOCS)) for p in _pages() if str(p.relative_to(DOCS)) not in nav]
    assert not orphans, f"pages missing from mkdocs.yml's nav: {orphans}"


def test_every_results_marker_renders_from_the_results_files():
    hook = _hook()
    markers = 0
    for page in _pages():
        text = page.read_text()
        markers += len(hook.MARKER.findall(text))
        out = hook.render(text, str(page))
        assert not hook.MARKER.search(out)
    assert markers >= 10


def test_generated_figures_follow_the_results_file(tmp_path, monkeypatch):
    hook = _hook()
    real = json.loads((ROOT / "benchmarks" / "results" / "speed_prediction.json").read_text())
    real["published"]["summary"]["all"]["prefill"]["median_abs_error"] = 0.4321
    (tmp_path / "speed_prediction.json").write_text(json.dumps(real))
    monkeypatch.setattr(hook, "RESULTS", tmp_path)
    assert "43.2%" in hook.render("<!-- results: speed_published -->")


def test_a_missing_results_file_or_field_or_marker_fails_the_build(tmp_path, monkeypatch):
    hook = _hook()
    monkeypatch.setattr(hook, "RESULTS", tmp_path)
    with pytest.raises(hook.ResultsError, match="speed_prediction.json is missing"):
        hook.render("<!-- results: speed_published -->", "validation.md")
    (tmp_path / "speed_prediction.json").write_text(json.dumps({"summary": {}}))
    with pytest.raises(hook.ResultsError, match="has no published.summary"):
        hook.render("<!-- results: speed_published -->", "validation.md")
    with pytest.raises(hook.ResultsError, match="no generator 'no_such_table'"):
        hook.render("<!-- results: no_such_table -->", "validation.md")


def test_the_store_schema_page_lists_every_table():
    from rigbench import store

    out = _hook().render("<!-- results: store_schema -->")
    for table in store.metadata.tables:
        assert f"### `{table}`" in out
