"""Heirflow smoke test: many short independent tasks, to prove the Celery workers share work.

Trigger it (`airflow dags trigger heirflow_smoke`) and check the task instances' hostnames:
with several workers the tasks land on at least two of them.
"""

from __future__ import annotations

import socket
import time

import pendulum
from airflow.sdk import dag, task

N_TASKS = 16


@dag(
    dag_id="heirflow_smoke",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    tags=["heirflow", "smoke"],
    default_args={"retries": 1, "retry_delay": pendulum.duration(seconds=5)},
)
def heirflow_smoke():
    @task
    def where(i: int) -> str:
        host = socket.gethostname()
        time.sleep(2)
        print(f"heirflow_smoke task {i} ran on {host}")
        return host

    for i in range(N_TASKS):
        where.override(task_id=f"where_{i:02d}")(i)


heirflow_smoke()
