#!/usr/bin/env python3
"""Warm standby for an Airflow command under `heir-supervisor run --warm`.

Usage (as the unit's command, with the Airflow venv's interpreter):
    /opt/airflow/venv/bin/python /usr/local/lib/heirflow/airflow-warm.py scheduler
    /opt/airflow/venv/bin/python /usr/local/lib/heirflow/airflow-warm.py dag-processor

Every member starts this at once. It pays Airflow's start-up cost while standing by (importing
airflow, reading airflow.cfg, loading providers, building the CLI parser, configuring the ORM
mappers, loading the migration scripts: ~4-5 s), then blocks on stdin. heir-supervisor writes
"go <epoch>" when this member takes the lease; only then does the Airflow command run, so
takeover costs detection + well under a second. End of file (the supervisor stopped it as a
standby) exits without running anything.
"""
import os
import sys
import time


def warm(command: str) -> None:
    """Everything the command would do before its job starts that needs neither the lease nor
    the database: a standby never acts on shared state (and holds no connection). Best effort past
    the imports: a failure here only costs speed (the command then does it itself)."""
    from airflow.__main__ import main as airflow_main  # noqa: F401  (imports airflow + config)
    from airflow.cli import cli_parser

    cli_parser.get_parser()
    steps = [_providers, _orm, _listeners, _migration_heads, _metrics]
    if command == "scheduler":
        steps.append(_scheduler)
    elif command == "dag-processor":
        steps.append(_dag_processor)
    for step in steps:
        try:
            step()
        except Exception as e:  # noqa: BLE001
            print(f"airflow-warm: {step.__name__.strip('_')} skipped: {e}", file=sys.stderr)


def _providers() -> None:
    # what @providers_configuration_loaded does first
    from airflow.providers_manager import ProvidersManager

    ProvidersManager().initialize_providers_configuration()


def _orm() -> None:
    # the first ORM object (the command's Job) configures every mapper: ~0.4 s
    from sqlalchemy.orm import configure_mappers

    from airflow.models import import_all_models

    import_all_models()
    configure_mappers()


def _listeners() -> None:
    # Job() calls the listener hooks (plugins are loaded for them)
    from airflow.listeners.listener import get_listener_manager

    get_listener_manager()


def _migration_heads() -> None:
    """The CLI checks that the database schema matches this Airflow before every command:
    importing alembic and loading ~125 migration scripts (~0.4 s). Do that here, and at "go"
    check only the database's current revision against these heads (one query); any mismatch
    or error runs Airflow's own check, which logs why and exits."""
    from airflow.utils import db

    heads = frozenset(db._get_script_object().get_heads())
    full_check = db.check_and_run_migrations

    def quick_check() -> None:
        from sqlalchemy import text

        from airflow import settings

        try:
            with settings.get_engine().connect() as conn:
                current = {r[0] for r in conn.execute(text("select version_num from alembic_version"))}
        except Exception:  # noqa: BLE001
            current = None
        if current != heads:
            full_check()

    db.check_and_run_migrations = quick_check


def _metrics() -> None:
    # the job's first metric loads the metrics registry (a YAML file)
    from airflow._shared.observability.metrics import stats

    stats._get_registry()


def _scheduler() -> None:
    from airflow.executors.executor_loader import ExecutorLoader
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner  # noqa: F401

    for name in ExecutorLoader.get_executor_names():
        ExecutorLoader.import_executor_cls(name)
    # imported by the scheduler command before its job starts
    import airflow.callbacks.database_callback_sink  # noqa: F401
    import airflow.utils.scheduler_health  # noqa: F401
    import airflow.utils.serve_logs  # noqa: F401


def _dag_processor() -> None:
    from airflow.dag_processing.manager import DagFileProcessorManager  # noqa: F401
    from airflow.jobs.dag_processor_job_runner import DagProcessorJobRunner  # noqa: F401


# Task instances the previous leader queued this recently may never have reached the broker:
# it can die between committing "queued" and publishing the message (or the publish dies with a
# broker node). Airflow adopts them as sent and waits task_queued_timeout (10 min) for them.
STRANDED_WINDOW_S = 30


def requeue_stranded() -> None:
    """At takeover (scheduler only, before its loop): hand recently queued task instances back to
    the scheduler ("scheduled"), which queues and sends them again at once. One that did reach a
    worker runs only once: the worker's start call to the Execution API needs state "queued", so
    of two deliveries only the first start wins (the other is refused with 409)."""
    from sqlalchemy import text

    from airflow import settings

    engine = settings.get_engine()
    if engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        rows = conn.execute(
            text(
                "update task_instance set state = 'scheduled', queued_by_job_id = null, "
                "external_executor_id = null where state = 'queued' "
                "and queued_dttm > now() - make_interval(secs => :window) "
                "returning dag_id, run_id, task_id, map_index"
            ),
            {"window": STRANDED_WINDOW_S},
        ).fetchall()
    for r in rows:
        print(f"airflow-warm: requeued {r.dag_id} {r.run_id} {r.task_id}[{r.map_index}] (queued by the previous leader)", file=sys.stderr)


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    started = time.monotonic()
    warm(command)
    print(f"airflow-warm: {command} ready in {time.monotonic() - started:.1f}s", file=sys.stderr)

    line = sys.stdin.readline()
    if not line.startswith("go"):
        return 0
    parts = line.split()
    if len(parts) > 1:
        os.environ["HEIR_EPOCH"] = parts[1]
    if command == "scheduler":
        try:
            requeue_stranded()
        except Exception as e:  # noqa: BLE001  (the scheduler must start regardless)
            print(f"airflow-warm: requeue of stranded task instances skipped: {e}", file=sys.stderr)
    sys.argv = ["airflow", *sys.argv[1:]]
    from airflow.__main__ import main as airflow_main

    try:
        airflow_main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    # The command has finished its work (the scheduler logs "Exited execute loop" at once on
    # SIGTERM); the interpreter's teardown then joins leftover non-daemon threads for ~8 s,
    # which would delay the handover. Leave at once.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
