"""The chaos runner's workload (heirflow-chaos, issue 10): a ledger DAG.

Every task execution records itself on the ledger endpoint that heirflow-chaos serves on the
controller (outside every component under test): a `start` line when it begins, an `end` line
when its work is done, each with (dag, run, task, try, host, time, uid). The uid is drawn by the
execution, so two executions of one try are told apart even if neither finished.

The endpoint comes with each run: `airflow dags trigger heirflow_ledger --conf
'{"ledger_url": "http://172.30.0.1:7480/event"}'` (the environment's HEIRFLOW_LEDGER_URL
otherwise). HEIRFLOW_LEDGER_TASKS (20) and HEIRFLOW_LEDGER_SECONDS (6, each task's work) are
read where the DAG file is parsed.

The deferrable family (`deferred_N`, HEIRFLOW_LEDGER_DEFERRED of them, 4) goes through the
triggerer: each records its `start`, defers for HEIRFLOW_LEDGER_DEFER_SECONDS (15) and records
its `end` when a worker resumes it — with the start's uid, so a deferral lost with a triggerer
host shows as an execution cut short.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
import uuid
from datetime import datetime, timedelta

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import DAG, BaseOperator, task

LEDGER_URL = os.environ.get("HEIRFLOW_LEDGER_URL", "http://172.30.0.1:7480/event")
TASKS = int(os.environ.get("HEIRFLOW_LEDGER_TASKS", "20"))
SECONDS = float(os.environ.get("HEIRFLOW_LEDGER_SECONDS", "6"))
DEFERRED = int(os.environ.get("HEIRFLOW_LEDGER_DEFERRED", "4"))
DEFER_SECONDS = float(os.environ.get("HEIRFLOW_LEDGER_DEFER_SECONDS", "15"))


def record(phase: str, ti, uid: str, url: str) -> None:
    line = {
        "phase": phase,
        "dag": ti.dag_id,
        "run": ti.run_id,
        "task": ti.task_id,
        "try": ti.try_number,
        "host": socket.gethostname(),
        "t": time.time(),
        "uid": uid,
    }
    req = urllib.request.Request(
        url,
        data=json.dumps(line).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    # A ledger that cannot be reached fails the try: an execution nobody recorded would make
    # the duplicate check blind.
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()


def ledger_url(context) -> str:
    return (context["dag_run"].conf or {}).get("ledger_url", LEDGER_URL)


class LedgerDeferral(BaseOperator):
    """Records its start, waits in the triggerer, records its end when resumed."""

    def execute(self, context):
        uid = uuid.uuid4().hex
        record("start", context["ti"], uid, ledger_url(context))
        self.defer(
            trigger=TimeDeltaTrigger(timedelta(seconds=DEFER_SECONDS)),
            method_name="resume",
            kwargs={"uid": uid},
        )

    def resume(self, context, uid: str, event=None):
        record("end", context["ti"], uid, ledger_url(context))


with DAG(
    dag_id="heirflow_ledger",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    # The workers (16 slots locally) are the limit, not the DAG (default 16 tasks over all runs).
    max_active_tasks=64,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=5)},
    tags=["heirflow", "chaos"],
) as dag:

    @task
    def work(n: int, **context) -> int:
        ti = context["ti"]
        url = ledger_url(context)
        uid = uuid.uuid4().hex
        record("start", ti, uid, url)
        time.sleep(SECONDS)
        record("end", ti, uid, url)
        return n

    for i in range(TASKS):
        work.override(task_id=f"t{i:02d}")(i)

    for i in range(DEFERRED):
        LedgerDeferral(task_id=f"deferred_{i}")
