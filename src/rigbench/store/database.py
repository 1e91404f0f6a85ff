"""Opening a store: its URL (a SQLite file by default, any SQLAlchemy URL such as PostgreSQL), one engine per URL
and process, and the schema upgraded to Alembic's newest revision on the way in."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from rigbench.errors import StoreError

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"      # the schema rigbench created with create_all before it had migrations


def default_url() -> str:
    return os.environ.get("RIGBENCH_DB") or f"sqlite:///{Path('.rigbench/rigbench.db').resolve()}"


def engine_url(url: str) -> str:
    """`postgresql://` means psycopg 3 (the `scale` extra), not SQLAlchemy's default psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


_engines: dict[str, Engine] = {}


def connect(url: str | None = None) -> Engine:
    """The store at `url` (default: .rigbench/rigbench.db), upgraded to the newest schema. One engine per URL
    and process: a Ray worker that runs many tasks keeps its connection pool."""
    url = engine_url(url or default_url())
    file = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if url in _engines and (file is None or file.exists()):
        return _engines[url]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        # several processes (parallel tasks, Ray workers on one machine) write one file: wait for the lock
        engine = create_engine(url, connect_args={"timeout": 60})
    else:
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except ModuleNotFoundError as e:
            raise StoreError(f"no database driver for {url.split(':')[0]} ({e.name}); "
                                f"pip install 'rigbench[scale]'") from None
    try:
        upgrade(engine)
    except OperationalError as e:
        raise StoreError(f"cannot open the store {engine.url.render_as_string(hide_password=True)}: "
                            f"{str(e.orig).strip().splitlines()[0]}") from None
    _engines[url] = engine
    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the store's schema to `revision` with Alembic. Many workers may open one store at once: on
    PostgreSQL an advisory lock held for the transaction makes them take turns, on SQLite a lock file next to
    the database does (SQLite runs DDL outside the driver's transactions)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    lock = None
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        import fcntl
        lock = open(f"{engine.url.database}.lock", "w")  # noqa: SIM115 - held until the upgrade is done
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(72711017)"))
            cfg.attributes["connection"] = conn
            names = set(inspect(conn).get_table_names())
            if "runs" in names and "alembic_version" not in names:
                command.stamp(cfg, BASELINE)
            command.upgrade(cfg, revision)
    finally:
        if lock is not None:
            lock.close()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)
