# One-command setup. `make demo` and `make test` create .venv on first use; a second run installs nothing new.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
RAY     := .venv/bin/ray
PRESET  ?= tiny
# Extra job flags for `make demo`, e.g. ARGS="--compare.dmoe true" (adds the DMoERM baseline) or "--compare.seeds 2".
ARGS    ?=
RAY_CPUS ?= 8
DASH    := http://127.0.0.1:8265
# Real HH-RLHF harmless pairs for the report's "acc HH" column, when the shared data folder sits beside the clone
# (the job runs from Ray's copy of the working dir, so it is handed an absolute path).
HH_FILE := $(wildcard $(abspath $(CURDIR)/..)/shared/data/hh-rlhf/harmless-base/test.jsonl.gz)
export RAY_AUTH_MODE ?= token
export TOKENIZERS_PARALLELISM := false
export RAY_agent_register_timeout_ms ?= 180000

.PHONY: install test test-all demo bench ray-up ray-down clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	touch $(STAMP)

# The CI suite: everything not marked slow (real Ray, Ray Train, Serve, DeepSpeed, vLLM included).
test: $(STAMP)
	$(PY) -m pytest -q tests -m "not slow"

# Everything, slow tests too (vLLM per-family sync, autoscaling, PPO hacking runs): about an hour on 2 cores.
test-all: $(STAMP)
	$(PY) -m pytest -q tests

# Token auth needs a token before the head starts: `--generate` writes ~/.ray/auth_token on a machine that has none
# (a fresh HOME) and leaves an existing one alone; `ray job submit` reads the same file.
ray-up: $(STAMP)
	@$(RAY) get-auth-token --generate >/dev/null
	@if $(PY) -c "import socket; socket.create_connection(('127.0.0.1', 6379), 1)" 2>/dev/null; then \
		$(RAY) status >/dev/null 2>&1 || { echo "ray-up: a Ray cluster already listens on port 6379 but does not answer this user's token (~/.ray/auth_token);" \
		          "stop it with 'make ray-down' (or 'ray stop') and run again" >&2; exit 1; }; \
	else \
		$(RAY) start --head --num-cpus $(RAY_CPUS) --include-dashboard true --dashboard-host 127.0.0.1 --disable-usage-stats; \
	fi

ray-down:
	-$(RAY) stop --force

demo: $(STAMP) ray-up
	RAY=$(RAY) RAY_DASHBOARD=$(DASH) bash scripts/submit.sh --working-dir . --runtime-env-json '{"excludes": [".venv", "runs", ".git"]}' \
		-- $(CURDIR)/$(PY) -m jobs.compare --preset $(PRESET) --run.output_dir $(CURDIR)/runs/demo \
		$(if $(HH_FILE),--compare.hh_eval $(HH_FILE)) $(ARGS)

# Every benchmark in turn (about 25 min on 2 cores); each writes its JSON under runs/bench and prints a table.
bench: $(STAMP)
	$(PY) benchmarks/rm_throughput.py
	$(PY) -m benchmarks.rollout_throughput
	$(PY) -m benchmarks.weight_sync
	$(PY) -m benchmarks.ppo_phases --preset tiny --run.output_dir runs/bench
	$(PY) benchmarks/serve_load.py

clean:
	rm -rf runs .pytest_cache
