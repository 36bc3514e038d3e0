#!/usr/bin/env bash
# `ray job submit` that waits for a just-started cluster: right after `ray start` the dashboard may answer
# "No available agent to submit job" until the node's job agent has registered (tens of seconds on a busy 2-core
# machine). That refusal happens before a job exists, so submitting again is safe. Then follows the job's logs and
# exits non-zero unless it succeeded.
#   scripts/submit.sh [ray job submit options ...] -- command ...
set -euo pipefail
RAY=${RAY:-.venv/bin/ray}
ADDRESS=${RAY_DASHBOARD:-http://127.0.0.1:8265}
WAIT_S=${SUBMIT_WAIT_S:-300}
id="umm-$(date +%Y%m%d-%H%M%S)-$$"
deadline=$(( $(date +%s) + WAIT_S ))
until err=$("$RAY" job submit --address "$ADDRESS" --submission-id "$id" --no-wait "$@" 2>&1 >/dev/null); do
    if ! grep -q "No available agent" <<<"$err" || [ "$(date +%s)" -ge "$deadline" ]; then
        echo "$err" >&2
        echo "submit.sh: ray job submit failed (see above)" >&2
        exit 1
    fi
    echo "submit.sh: the cluster's job agent is not up yet; retrying in 5 s" >&2
    sleep 5
done
echo "submitted job $id (dashboard $ADDRESS)"
"$RAY" job logs --address "$ADDRESS" --follow "$id" || true
status=$("$RAY" job status --address "$ADDRESS" "$id" 2>&1)
if grep -q "Job '$id' succeeded" <<<"$status"; then
    echo "job $id succeeded"
else
    echo "$status" | tail -5 >&2
    echo "submit.sh: job $id did not succeed (ray job logs --address $ADDRESS $id shows its output)" >&2
    exit 1
fi
