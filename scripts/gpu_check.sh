#!/usr/bin/env bash
# The GPU checks, on one GPU machine: `pytest -m gpu` (tests/test_gpu.py: bf16 DDP step and collectives on a one-rank
# NCCL group, CUDA vLLM weight sync vs HF log-probs) and a short smoke run of the main job with the `gpu` preset,
# shrunk to minutes: the tiny testbed world and models instead of the preset's hub models, 3 PPO steps, one rank,
# every role actor on a tenth of the one GPU. Prints a summary; exits non-zero when a check fails. On a machine with
# no GPU (nvidia-smi missing, or torch sees no CUDA device) it skips, saying why, and exits 0.
#
#   bash scripts/gpu_check.sh              # the checks (logs and the smoke run under $GPU_CHECK_DIR)
#   bash scripts/gpu_check.sh --dry-run    # only validate the smoke run's config and inputs (any machine)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3 || command -v python)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false
OUT=${GPU_CHECK_DIR:-runs/gpu_check}

# The gpu preset with everything that names a hub model or dataset set back to the testbed's, and sized to one GPU.
# Resources: the preset's per-role claims (colocation on an 8-GPU node, the gold pinned to an A100-80G) set back to
# inherit run.num_gpus_per_actor 0.1, so up to ten role actors and one-worker Ray Train runs share the one GPU.
SMOKE=(--preset gpu --run.output_dir "$OUT/smoke" --run.ray_address local
       --run.num_gpus_per_actor 0.1 --run.num_cpus_per_actor 1
       --resources.colocate none --resources.policy_gpus -1 --resources.policy_cpus -1
       --resources.policy_accelerator= --resources.reference_gpus -1 --resources.rollout_gpus -1
       --resources.proxy_gpus -1 --resources.gold_gpus -1 --resources.gold_accelerator=
       --model.max_seq_len 256 --testbed.n_prompts 200 --testbed.n_pairs 120
       --sft.epochs 1 --sft.num_workers 1
       --rm.base_path "" --rm.data testbed --rm.epochs 1 --rm.num_workers 1 --rm.max_len 256
       --ensemble.members 2 --reward.gold testbed
       --rollout.num_engines 1 --rollout.max_new_tokens 16 --rollout.gpu_memory_utilization 0.1
       --ppo.policy_path "" --ppo.prompts "" --ppo.steps 3 --ppo.rollout_batch_size 8 --ppo.micro_batch_size 8
       --ppo.world_size 1
       --bon.n_prompts 8 --bon.n_samples 8
       --compare.expert_counts "[2]" --compare.ppo_rms dense,ensemble-wco --compare.ppo_kl_rms dense)

# GPU_CHECK_EXTRA: more job flags for the smoke run, e.g. "--compare.parallel_stages 3 --compare.parallel_ppo 2".
read -r -a EXTRA <<<"${GPU_CHECK_EXTRA:-}"
SMOKE+=("${EXTRA[@]}")

if [ "${1:-}" = "--dry-run" ]; then
    "$PY" -c "import vllm" >/dev/null 2>&1 || SMOKE+=(--rollout.backend hf)
    exec "$PY" -m jobs.compare "${SMOKE[@]}" --dry-run
fi

reason=""
if ! command -v nvidia-smi >/dev/null 2>&1; then
    reason="nvidia-smi not found"
elif ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    reason="torch.cuda.is_available() is False (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES-unset})"
fi
if [ -n "$reason" ]; then
    echo "gpu_check: SKIPPED: no GPU on this machine ($reason)"
    exit 0
fi

# Without a CUDA vLLM build the checks still run: the smoke run generates with the HF rollout backend on the GPU and
# the CUDA vLLM test is left out, and the summary says so (it is then not a check of the vLLM path).
PYTEST_SELECT=(-m gpu)
if ! "$PY" -c "import vllm" >/dev/null 2>&1; then
    SMOKE+=(--rollout.backend hf)
    PYTEST_SELECT=(-m gpu -k "not cuda-vllm")
    echo "gpu_check: vLLM is not installed: the smoke run uses --rollout.backend hf; the CUDA vLLM test is not run"
fi

mkdir -p "$OUT"
gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)
echo "gpu_check: $gpu; logs in $OUT/"

t0=$SECONDS
"$PY" -m pytest -q "${PYTEST_SELECT[@]}" -rs tests/test_gpu.py tests/actors/test_reward.py tests/train/test_collective.py >"$OUT/pytest_gpu.log" 2>&1
pytest_rc=$?
pytest_s=$((SECONDS - t0))
pytest_line=$(grep -E "passed|failed|error|skipped|no tests ran" "$OUT/pytest_gpu.log" | tail -1)
if [ $pytest_rc -eq 0 ] && grep -q "skipped" <<<"$pytest_line"; then
    pytest_rc=1  # a gpu test that skips on a GPU machine did not check anything
    pytest_line="$pytest_line (a gpu test skipped on a GPU machine)"
fi

t0=$SECONDS
timeout "${GPU_CHECK_SMOKE_TIMEOUT:-0}" "$PY" -m jobs.compare "${SMOKE[@]}" >"$OUT/smoke.log" 2>&1  # 0: no limit
smoke_rc=$?
smoke_s=$((SECONDS - t0))
report=$(grep -E "^report: " "$OUT/smoke.log" | tail -1)
if [ $smoke_rc -eq 0 ] && [ -z "$report" ]; then
    smoke_rc=1
    report="(no report line)"
fi

status() { [ "$1" -eq 0 ] && echo PASS || echo "FAIL (exit $1)"; }
echo
echo "================ gpu_check summary ($gpu) ================"
printf "%-34s %-14s %5ss  %s\n" "pytest -m gpu" "$(status $pytest_rc)" "$pytest_s" "$pytest_line"
printf "%-34s %-14s %5ss  %s\n" "jobs.compare --preset gpu (smoke)" "$(status $smoke_rc)" "$smoke_s" "${report:-}"
if [ $pytest_rc -ne 0 ]; then echo "--- $OUT/pytest_gpu.log (tail) ---"; tail -40 "$OUT/pytest_gpu.log"; fi
if [ $smoke_rc -ne 0 ]; then echo "--- $OUT/smoke.log (tail) ---"; tail -40 "$OUT/smoke.log"; fi
[ $pytest_rc -eq 0 ] && [ $smoke_rc -eq 0 ]
