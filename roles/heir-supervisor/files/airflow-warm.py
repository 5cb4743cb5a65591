#!/usr/bin/env python3
"""Warm standby for an Airflow command under `heir-supervisor run --warm`.

Usage (as the unit's command, with the Airflow venv's interpreter):
    /opt/airflow/venv/bin/python /usr/local/lib/heirflow/airflow-warm.py scheduler
    /opt/airflow/venv/bin/python /usr/local/lib/heirflow/airflow-warm.py dag-processor

Every member starts this at once. It pays Airflow's start-up cost while standing by (importing
airflow, reading airflow.cfg, loading providers and building the CLI parser: ~4-5 s), then
blocks on stdin. heir-supervisor writes "go <epoch>" when this member takes the lease; only then
does the Airflow command run, so takeover costs detection + well under a second. End of file
(the supervisor stopped it as a standby) exits without running anything.
"""
import os
import sys


def main() -> int:
    # The expensive part, done before we are needed.
    from airflow.__main__ import main as airflow_main  # noqa: F401  (imports airflow + config)
    from airflow.cli import cli_parser

    cli_parser.get_parser()
    # What the command itself imports before doing any work (scheduler: job runner + executor,
    # dag-processor: its manager); best effort, a failure here only costs speed.
    try:
        if "scheduler" in sys.argv[1:2]:
            from airflow.executors.executor_loader import ExecutorLoader
            from airflow.jobs.scheduler_job_runner import SchedulerJobRunner  # noqa: F401

            ExecutorLoader.import_default_executor_cls()
            # imported by the scheduler command before its job starts (~0.3-0.5 s)
            import airflow.utils.serve_logs  # noqa: F401
        elif "dag-processor" in sys.argv[1:2]:
            from airflow.dag_processing.manager import DagFileProcessorManager  # noqa: F401
    except Exception as e:  # noqa: BLE001
        print(f"airflow-warm: pre-import skipped: {e}", file=sys.stderr)

    line = sys.stdin.readline()
    if not line.startswith("go"):
        return 0
    parts = line.split()
    if len(parts) > 1:
        os.environ["HEIR_EPOCH"] = parts[1]
    sys.argv = ["airflow", *sys.argv[1:]]
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
