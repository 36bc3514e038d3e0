# One-command setup. `make demo` and `make test` create .venv on first use; a second run installs nothing new.
PY      := .venv/bin/python
PIP     := .venv/bin/pip
STAMP   := .venv/.installed
RAY     := .venv/bin/ray
PRESET  ?= tiny
RAY_CPUS ?= 8
DASH    := http://127.0.0.1:8265
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

ray-up: $(STAMP)
	@$(RAY) status >/dev/null 2>&1 || $(RAY) start --head --num-cpus $(RAY_CPUS) --include-dashboard true --dashboard-host 127.0.0.1 --disable-usage-stats

ray-down:
	-$(RAY) stop --force

demo: $(STAMP) ray-up
	$(RAY) job submit --address $(DASH) --working-dir . --runtime-env-json '{"excludes": [".venv", "runs", ".git"]}' \
		-- $(CURDIR)/$(PY) -m jobs.compare --preset $(PRESET) --run.output_dir $(CURDIR)/runs/demo

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

clean:
	rm -rf runs .pytest_cache
