#!/usr/bin/env bash
# Wheels for a GPU machine that has CUDA PyTorch and transformers but no package index (an air-gapped node, or a
# rented box behind a firewall): Ray, DeepSpeed and the dependencies such images usually lack, for one Python
# version, into one folder to copy there. Run it where pip can reach an index:
#
#   bash scripts/offline_wheels.sh [DEST=.whl] [PYVER=3.12]
#   # there:  python3 -m pip install --no-index --no-deps --target /tmp/site DEST/*.whl && export PYTHONPATH=/tmp/site
#
# Ray's wheel is ~80 MB; its Java jar, dashboard web client, RLlib and tests (unused by umm_ray) are dropped from
# the copy, leaving ~43 MB. DeepSpeed ships only a source archive, so it is built into a pure-Python wheel here
# (DS_BUILD_OPS=0: its CUDA ops are compiled just in time on the GPU machine, as with a plain `pip install`).
set -euo pipefail
DEST=${1:-.whl}
PYVER=${2:-3.12}
PY=${PYTHON:-python3}
command -v zip >/dev/null || { echo "offline_wheels: needs zip (to drop Ray's unused parts from its wheel)" >&2; exit 1; }
mkdir -p "$DEST"
tag=cp${PYVER/./}
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DEST" \
    "ray==2.60.0" "pydantic==2.14.4" "pydantic-core==2.50.5" annotated-types typing-inspection \
    jsonschema jsonschema-specifications referencing rpds-py hjson
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "deepspeed==0.19.8"
for w in "$DEST"/ray-*-"$tag"-*.whl; do
    # exit 12 = nothing matched (already stripped): fine; anything else is a real error
    zip -q -d "$w" 'ray/jars/*' 'ray/dashboard/client/build/*' 'ray/rllib/*' 'ray/tests/*' >/dev/null || [ $? -eq 12 ]
done
du -sh "$DEST"
ls "$DEST"
