"""model_select: forward stepwise feature selection for linear regression, over the workers.

Each round fans out one mapped task per candidate feature (dynamic task mapping); each fits
ordinary least squares on the features chosen so far plus its candidate, scores it by k-fold
cross-validation and writes the score to the key-value ring over the workers (heirflow_demo.kv:
Redis Cluster locally, Riak on real hosts). The round's reduce task reads every score back from
the ring, keeps the best candidate if it lowers the error enough, and stops the selection when
none does; `final` fits the chosen model on all rows, stores it in the ring and returns it.

The arithmetic is heirflow_demo.model's, so the run's result equals `model.select()` computed in
one process (tests/cluster/model-select-test.sh checks it). Every task writes only keys named by
its run, round and candidate, with the value it computes: a retried task rewrites the same value;
its XCom names the key it wrote ("key") beside the value ("value", "state" or the result).
Unpause and trigger it, then kill a worker host while it runs: the run still succeeds.
"""

from __future__ import annotations

import pendulum
from airflow.exceptions import AirflowSkipException
from airflow.sdk import dag, get_current_context, task

from heirflow_demo import kv, model

MAX_ROUNDS = len(model.FEATURES)


def run_key(*parts) -> str:
    return "/".join(["model_select", get_current_context()["run_id"], *map(str, parts)])


def next_round(state: dict) -> list[dict]:
    """The mapped tasks of the round after `state` (none once the selection stopped): each
    carries what its task needs, as dynamic task mapping expands over a task's return value."""
    if state["done"]:
        return []
    r = state["round"] + 1
    return [{"round": r, "selected": state["selected"], "feature": f} for f in model.candidates(state["selected"])]


def publish(state: dict) -> list[dict]:
    """Stores the state of a finished round in the ring and in the XCom "state" (with its key)."""
    key = run_key("state", state["round"])
    kv.ring().put(key, state)
    get_current_context()["ti"].xcom_push(key="state", value={"key": key, "state": state})
    return next_round(state)


@dag(
    dag_id="model_select",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=2,
    tags=["heirflow", "demo"],
    default_args={"retries": 3, "retry_delay": pendulum.duration(seconds=5)},
)
def model_select():
    @task
    def start() -> list[dict]:
        x_rows, y = model.dataset()
        return publish({"round": 0, "selected": [], "score": model.cv_mse(x_rows, y, []), "done": False})

    @task
    def score(candidate: dict) -> dict:
        x_rows, y = model.dataset()
        key = run_key("round", candidate["round"], "feature", candidate["feature"])
        value = model.cv_mse(x_rows, y, candidate["selected"] + [candidate["feature"]])
        kv.ring().put(key, value)
        return {"key": key, "value": value}

    @task(trigger_rule="none_failed_min_one_success")
    def reduce(previous: str) -> list[dict]:
        pulled = get_current_context()["ti"].xcom_pull(task_ids=previous, key="state")
        if pulled is None:
            raise AirflowSkipException(f"{previous} did not run: the selection stopped earlier")
        state = pulled["state"]
        if state["done"]:
            raise AirflowSkipException("the selection stopped in the previous round")
        ring = kv.ring()
        r = state["round"] + 1
        scores = {}
        for f in model.candidates(state["selected"]):
            value = ring.get(run_key("round", r, "feature", f))
            if value is None:
                raise RuntimeError(f"round {r}: no score for candidate {model.FEATURES[f]} in the ring")
            scores[f] = value
        f, s = model.best_candidate(scores)
        if model.improves(s, state["score"]):
            new = {"round": r, "selected": state["selected"] + [f], "score": s, "done": False}
            print(f"round {r}: + {model.FEATURES[f]} (cv mse {s:.3f})")
        else:
            new = dict(state, round=r, done=True)
            print(f"round {r}: best candidate {model.FEATURES[f]} (cv mse {s:.3f}) does not improve; done")
        new["done"] = new["done"] or not model.candidates(new["selected"])
        return publish(new)

    @task(trigger_rule="none_failed_min_one_success")
    def final() -> dict:
        ti = get_current_context()["ti"]
        for r in range(MAX_ROUNDS, 0, -1):
            pulled = ti.xcom_pull(task_ids=f"reduce_{r}", key="state")
            if pulled is not None:
                break
        else:
            raise RuntimeError("no round finished")
        state = pulled["state"]
        x_rows, y = model.dataset()
        result = model.result(x_rows, y, state["selected"], state["score"])
        key = run_key("result")
        kv.ring().put(key, result)
        print(f"selected {result['features']}: cv rmse {result['cv_rmse']:.3f}")
        return dict(result, key=key)

    prev = start()
    prev_id = "start"
    done = final()
    for r in range(1, MAX_ROUNDS + 1):
        scores = score.override(task_id=f"score_{r}").expand(candidate=prev)
        red = reduce.override(task_id=f"reduce_{r}")(prev_id)
        prev >> red
        scores >> red
        red >> done
        prev, prev_id = red, f"reduce_{r}"


model_select()
