"""The store on SQLite and on a real PostgreSQL server: Alembic migrations, upgrade on open, idempotent task
rows, many writers at once."""

from __future__ import annotations

import multiprocessing as mp
import socket

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from rigbench import store
from rigbench.errors import StoreError


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return request.getfixturevalue("pg_url")


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(store.MIGRATIONS))
    return ScriptDirectory.from_config(cfg).get_current_head()


def test_a_new_store_is_migrated_to_the_tables_rigbench_defines(url):
    db = store.connect(url)
    with db.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == _head()
        # the migrations build exactly the tables, columns and indexes of store.metadata
        assert compare_metadata(MigrationContext.configure(c), store.metadata) == []
    run = store.new_run(db, "eval", config={"a": [1, 2]})
    assert store.get_run(db, run)["config"] == {"a": [1, 2]}


def test_a_store_made_before_migrations_is_stamped_and_upgraded_with_its_rows(tmp_path):
    path = tmp_path / "old.db"
    old = sa.create_engine(f"sqlite:///{path}")
    store.upgrade(old, "0001")                 # the tables exactly as create_all made them before Alembic
    with old.begin() as c:
        c.execute(sa.text("DROP TABLE alembic_version"))
        c.execute(sa.text("INSERT INTO runs (kind, status, started_at) VALUES ('eval', 'done', '2026-01-01')"))
        for attempt in (1, 2):
            c.execute(sa.text("INSERT INTO task_results (run_id, task, attempt, status) "
                              f"VALUES (1, 'fix-git', {attempt}, 'success')"))
    old.dispose()
    db = store.connect(f"sqlite:///{path}")
    assert [r["attempt"] for r in store.task_rows(db, 1, final_only=False)] == [1, 2]
    with db.connect() as c:
        assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == _head()
    with pytest.raises(sa.exc.IntegrityError):   # 0002's one row per (run, task, attempt) is in force
        with db.begin() as c:
            c.execute(sa.insert(store.task_results).values(run_id=1, task="fix-git", attempt=2, status="x"))


def test_a_retried_attempt_is_one_row_with_the_last_try_trace(url):
    db = store.connect(url)
    run = store.new_run(db, "eval")
    attempt = store.queue_task(db, run, "csv-to-json")
    assert store.task_rows(db, run)[0]["status"] == "queued"
    assert store.claim_task(db, run, "csv-to-json", attempt) is False
    store.add_event(db, run, "csv-to-json", attempt, 1, 0.0, "note", {"try": 1})
    # the worker is lost here; Ray runs the same attempt again
    assert store.claim_task(db, run, "csv-to-json", attempt) is True
    store.add_event(db, run, "csv-to-json", attempt, 1, 0.0, "note", {"try": 2})
    store.finish_task(db, run, "csv-to-json", attempt, status="success", reward=1.0, detail="a\x00b")
    rows = store.task_rows(db, run, final_only=False)
    assert [(r["attempt"], r["status"], r["detail"]) for r in rows] == [(1, "success", "ab")]
    assert [e["data"] for e in store.task_events(db, run)] == [{"try": 2}]
    # a new attempt (a --resume) interrupts a queued one that never ran
    a2 = store.queue_task(db, run, "fix-git")
    a3 = store.queue_task(db, run, "fix-git")
    assert (a2, a3) == (1, 2)
    assert [r["status"] for r in store.task_rows(db, run, final_only=False) if r["task"] == "fix-git"] == [
        "interrupted", "queued"]


def _writer(url: str, run: int, k: int, n: int) -> None:
    db = store.connect(url)      # every process opens (and would migrate) the store at the same time
    for i in range(n):
        task = f"t{k}-{i}"
        a = store.queue_task(db, run, task)
        store.claim_task(db, run, task, a)
        for seq in range(3):
            store.add_event(db, run, task, a, seq, 0.1 * seq, "note", {"k": k, "i": i})
        store.finish_task(db, run, task, a, status="success", reward=1.0)


def test_many_processes_write_one_postgres_store_at_once(pg_url):
    # the run is made first; the schema is not: 6 processes race to open a fresh database
    eng = sa.create_engine(store.engine_url(pg_url))
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(pg_url, 1, k, 0)) for k in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 6
    db = store.connect(pg_url)
    run = store.new_run(db, "eval")
    procs = [ctx.Process(target=_writer, args=(pg_url, run, k, 10)) for k in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 6
    rows = store.task_rows(db, run, final_only=False)
    assert len(rows) == 60 and len({r["task"] for r in rows}) == 60 and {r["status"] for r in rows} == {"success"}
    assert len(store.task_events(db, run)) == 180
    with eng.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    eng.dispose()


def test_a_database_that_does_not_answer_is_a_one_line_error(run_cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://nobody@127.0.0.1:{port}/rigbench"
    with pytest.raises(StoreError, match="cannot open the store"):
        store.connect(url)
    p = run_cli("runs", "--db", url, ok=False)
    assert p.returncode != 0 and "cannot open the store" in p.stderr and "Traceback" not in p.stderr
