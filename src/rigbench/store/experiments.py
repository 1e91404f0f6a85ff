"""Experiments: candidates x stages, each step naming the bench or eval run it made."""

from __future__ import annotations

import json

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine

from rigbench.store.database import now as _now
from rigbench.store.schema import experiment_steps, experiments


def new_experiment(db: Engine, name: str, config: dict) -> int:
    with db.begin() as c:
        row = c.execute(insert(experiments).values(name=name, status="running", started_at=_now(),
                                                   config=json.loads(json.dumps(config, default=str))))
        return row.inserted_primary_key[0]


def get_experiment(db: Engine, experiment_id: int) -> dict | None:
    with db.connect() as c:
        r = c.execute(select(experiments).where(experiments.c.id == experiment_id)).first()
    return dict(r._mapping) if r else None


def finish_experiment(db: Engine, experiment_id: int, status: str, error: str | None = None) -> None:
    with db.begin() as c:
        c.execute(update(experiments).where(experiments.c.id == experiment_id)
                  .values(status=status, finished_at=None if status == "running" else _now(), error=error))


def put_step(db: Engine, experiment_id: int, candidate: str, stage: str, repeat: int, status: str,
             run_id: int | None = None, data: dict | None = None) -> None:
    """Record (or replace) one step of an experiment: the latest word on (candidate, stage, repeat)."""
    key = ((experiment_steps.c.experiment_id == experiment_id) & (experiment_steps.c.candidate == candidate)
           & (experiment_steps.c.stage == stage) & (experiment_steps.c.repeat == repeat))
    values = {"status": status, "run_id": run_id, "data": json.loads(json.dumps(data or {}, default=str))}
    with db.begin() as c:
        if c.execute(select(experiment_steps.c.id).where(key)).first():
            c.execute(update(experiment_steps).where(key).values(**values))
        else:
            c.execute(insert(experiment_steps).values(experiment_id=experiment_id, candidate=candidate, stage=stage,
                                                      repeat=repeat, **values))


def experiment_steps_of(db: Engine, experiment_id: int) -> list[dict]:
    with db.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(experiment_steps).where(
            experiment_steps.c.experiment_id == experiment_id).order_by(experiment_steps.c.id))]


def list_experiments(db: Engine) -> list[dict]:
    with db.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(experiments).order_by(experiments.c.id))]
