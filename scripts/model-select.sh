#!/usr/bin/env bash
# Runs the demo DAG model_select (feature selection over the workers, scores in the KV ring) on
# the local cluster and prints the selected features and their cross-validated score.
# usage: scripts/model-select.sh [--print-run-id]   (last line of output = the run id)
# env: MODEL_SELECT_TIMEOUT (seconds, default 900)
set -euo pipefail
source "$(dirname "$0")/../tests/cluster/lib.sh"
PRINT_ID=0; [ "${1:-}" = --print-run-id ] && PRINT_ID=1
run_id="model-select-$(date +%Y%m%dT%H%M%S)-$$"
run_dag model_select "$run_id" "${MODEL_SELECT_TIMEOUT:-900}" || exit 1
model_select_result "$run_id" | python3 -c 'import json, sys
r = json.load(sys.stdin)
print("model_select: features %s, cv rmse %.3f (mse %.3f)" % (", ".join(r["features"]), r["cv_rmse"], r["cv_mse"]))
print("  y = %.3f %s" % (r["intercept"], " ".join("%+.3f*%s" % (b, f) for f, b in r["coefficients"].items())))' >&2
[ "$PRINT_ID" = 1 ] && echo "$run_id"
exit 0
