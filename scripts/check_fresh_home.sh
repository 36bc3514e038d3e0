#!/usr/bin/env bash
# A newcomer's machine has no ~/.ray: start the local cluster exactly as `make demo` does under a throw-away HOME,
# submit a one-line job through the dashboard (the client needs the same token), and stop the cluster again.
# CI runs this before the tests; run it yourself after changing `make ray-up`.
set -euo pipefail
cd "$(dirname "$0")/.."
export HOME
HOME=$(mktemp -d)
trap 'make -s ray-down >/dev/null 2>&1 || true; rm -rf "$HOME"' EXIT
export RAY_AUTH_MODE=token
make -s ray-up RAY_CPUS=2
out=$(bash scripts/submit.sh -- "$PWD/.venv/bin/python" -c \
    "import ray; ray.init(); print('fresh-HOME cluster ok:', int(ray.cluster_resources()['CPU']), 'CPUs')")
echo "$out" | tail -3
grep -q "fresh-HOME cluster ok" <<<"$out"
echo "fresh HOME: make ray-up + ray job submit work with no ~/.ray"
