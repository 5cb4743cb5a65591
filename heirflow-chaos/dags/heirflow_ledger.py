"""The chaos runner's workload (heirflow-chaos, issue 10): a ledger DAG.

Every task execution records itself on the ledger endpoint that heirflow-chaos serves on the
controller (outside every component under test): a `start` line when it begins, an `end` line
when its work is done, each with (dag, run, task, try, host, time, uid). The uid is drawn by the
execution, so two executions of one try are told apart even if neither finished.

The endpoint comes with each run: `airflow dags trigger heirflow_ledger --conf
'{"ledger_url": "http://172.30.0.1:7480/event"}'` (the environment's HEIRFLOW_LEDGER_URL
otherwise). HEIRFLOW_LEDGER_TASKS (40) and HEIRFLOW_LEDGER_SECONDS (6, each task's work) are
read where the DAG file is parsed.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
import uuid
from datetime import datetime, timedelta

from airflow.sdk import DAG, task

LEDGER_URL = os.environ.get("HEIRFLOW_LEDGER_URL", "http://172.30.0.1:7480/event")
TASKS = int(os.environ.get("HEIRFLOW_LEDGER_TASKS", "40"))
SECONDS = float(os.environ.get("HEIRFLOW_LEDGER_SECONDS", "6"))


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


with DAG(
    dag_id="heirflow_ledger",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": 3, "retry_delay": timedelta(seconds=5)},
    tags=["heirflow", "chaos"],
) as dag:

    @task
    def work(n: int, **context) -> int:
        ti = context["ti"]
        url = (context["dag_run"].conf or {}).get("ledger_url", LEDGER_URL)
        uid = uuid.uuid4().hex
        record("start", ti, uid, url)
        time.sleep(SECONDS)
        record("end", ti, uid, url)
        return n

    for i in range(TASKS):
        work.override(task_id=f"t{i:02d}")(i)
