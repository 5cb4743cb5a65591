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

    line = sys.stdin.readline()
    if not line.startswith("go"):
        return 0
    parts = line.split()
    if len(parts) > 1:
        os.environ["HEIR_EPOCH"] = parts[1]
    sys.argv = ["airflow", *sys.argv[1:]]
    airflow_main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
