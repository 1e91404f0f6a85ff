"""Runs, requests and aggregates in SQLAlchemy Core tables (a SQLite file by default, any URL with --db, such
as PostgreSQL shared by many machines). The schema is Alembic's (migrations/ in this package): a store is
upgraded to the newest revision when it is opened.

The names below are the package's face: the tables in `schema`, opening a store in `database`, runs, tasks and
samples in `runs`, experiments in `experiments`."""

from rigbench.store.database import BASELINE, MIGRATIONS, connect, default_url, engine_url, upgrade
from rigbench.store.experiments import (
    experiment_steps_of,
    finish_experiment,
    get_experiment,
    list_experiments,
    new_experiment,
    put_step,
)
from rigbench.store.runs import (
    add_event,
    add_request,
    add_request_rows,
    add_samples,
    add_summary,
    claim_task,
    finish_run,
    finish_task,
    get_run,
    list_runs,
    new_run,
    queue_task,
    run_requests,
    run_samples,
    run_summaries,
    set_run_status,
    set_summary,
    start_task,
    task_events,
    task_rows,
)
from rigbench.store.schema import (
    aggregates,
    events,
    experiment_steps,
    experiments,
    metadata,
    requests,
    runs,
    samples,
    task_results,
)

__all__ = [
    "BASELINE", "MIGRATIONS", "connect", "default_url", "engine_url", "upgrade",
    "experiment_steps_of", "finish_experiment", "get_experiment", "list_experiments", "new_experiment", "put_step",
    "add_event", "add_request", "add_request_rows", "add_samples", "add_summary", "claim_task", "finish_run",
    "finish_task", "get_run", "list_runs", "new_run", "queue_task", "run_requests", "run_samples", "run_summaries",
    "set_run_status", "set_summary", "start_task", "task_events", "task_rows",
    "aggregates", "events", "experiment_steps", "experiments", "metadata", "requests", "runs", "samples",
    "task_results",
]
