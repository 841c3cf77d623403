# The README's commands. Every target bootstraps its own virtualenv from nothing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: test lint types layers unit crd fmt bench bench-quick sweep demo bench-operator bench-gateway bench-batch clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,sim,operator,demo]'
	touch $(STAMP)

## test: lint, types, layering and the whole pytest suite (what CI runs)
test: lint types layers unit

## system-deps: the real Prometheus and PostgreSQL servers the integration tests run (Debian
## packages). The tests start their own PostgreSQL cluster on a free loopback port and a private
## socket directory, so the `main` cluster the package creates (and starts on port 5432 where an
## init system runs) never gets in their way.
system-deps:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; }

lint: $(STAMP)
	$(BIN)/ruff check chiron_operator tests
	$(BIN)/ruff format --check chiron_operator tests

types: $(STAMP)
	$(BIN)/mypy

layers: $(STAMP)
	$(BIN)/lint-imports

unit: $(STAMP) system-deps
	$(BIN)/pytest -q

## crd: regenerate crds/ from the pydantic models (the single source)
crd: $(STAMP)
	$(BIN)/chiron-crd --out crds/chiron.io_llmservingpools.yaml

## bench: the benchmark suite (every scenario x every policy, full length; minutes on 2 cores),
## then the same on 20 generated scenarios nobody tuned on (`chiron-sim robustness`, their files
## under $(BENCH_DIR)/generated), the side-by-side figures of every packaged scenario Chiron lost
## ($(BENCH_DIR)/explain), then docs/BENCHMARKS.md and its plots from both (and from the
## recorded Chiron sweeps). The generator's seed is one no change was developed or swept on
## (seeds 0 and 2 were used to develop session 6's policy, 3 to check it, 1 is the sweep's).
BENCH_DIR := docs/benchmarks
ROBUSTNESS_COUNT ?= 20
ROBUSTNESS_SEED ?= 4
bench: $(STAMP)
	nice $(BIN)/chiron-sim bench --json $(BENCH_DIR)/bench.json
	nice $(BIN)/chiron-sim robustness --count $(ROBUSTNESS_COUNT) --seed $(ROBUSTNESS_SEED) \
	  --json $(BENCH_DIR)/robustness.json --out-dir $(BENCH_DIR)/generated
	nice $(BIN)/chiron-sim explain --bench $(BENCH_DIR)/bench.json --out-dir $(BENCH_DIR)/explain
	$(BIN)/chiron-sim report --bench $(BENCH_DIR)/bench.json \
	  --robustness $(BENCH_DIR)/robustness.json \
	  $(foreach f,$(sort $(wildcard $(BENCH_DIR)/sweep-*.json)),--sweep $(f)) \
	  --notes $(BENCH_DIR)/NOTES.md --out docs/BENCHMARKS.md --img-dir docs/img

## bench-quick: the same on the scenarios' quick variants (under a minute), into /tmp
bench-quick: $(STAMP)
	$(BIN)/chiron-sim bench --quick --json /tmp/chiron-bench-quick.json

## sweep: re-run the one-at-a-time sweep of Chiron's tunables on the training seed, over the
## packaged scenarios and 20 generated ones (generator seed 1, apart from the robustness table's)
sweep: $(STAMP)
	nice $(BIN)/chiron-sim sweep --json $(BENCH_DIR)/sweep-chiron.json \
	  --generated 20 --generated-seed 1 --generated-dir $(BENCH_DIR)/sweep-generated \
	  --param gateway.batchOnInteractive=false \
	  --param gateway.interactiveReserveSlots=4,16 \
	  --param roles.interactive.maxBatchSizeSeqs=64,128 \
	  --param global.ibpLowRatio=0.05,0.2 --param global.busyRunningRatio=0.2,0.4 \
	  --param global.ibpHighRatio=0.6,0.8 \
	  --param local.itlTargetRatio=0.7,0.9 \
	  --param guards.scaleDownStabilizationS=120,600 \
	  --context "Round 15, around round 14's adoption (busyRunningRatio 0.3), round 13's (ibpHighRatio 0.7), round 10's (ibpLowRatio 0.1) and round 9's (interactive pods lend their spare slots to batch work beyond 8), leximin tie-break: one at a time around the defaults, on the packaged scenarios and 20 generated ones."

## demo: the real operator autoscaling emulated vLLM pods on a local dev cluster (about 3 min):
## a live table in the terminal, then demo-out/summary.json and demo-out/demo.png
demo: system-deps $(STAMP)
	$(BIN)/chiron-demo --out demo-out

## bench-operator: the operator's own costs (CPU per tick at 8/64/256 pods, Prometheus queries
## per tick, memory with 500 pools) measured into docs/OPERATOR_PERFORMANCE.md (minutes)
bench-operator: system-deps $(STAMP)
	nice $(BIN)/python -m chiron_operator.perf --out docs/OPERATOR_PERFORMANCE.md

## bench-gateway: what the gateway costs against emulator pods on loopback (about 2 min): the
## time to first token it adds at p50 and p99 at 100 and 1,000 requests/s, and the streamed
## chunks it relays per CPU-second, into docs/GATEWAY_PERFORMANCE.md and $(BENCH_DIR)/gateway.json
bench-gateway: $(STAMP)
	nice $(BIN)/python -m chiron_operator.perf.gateway --out docs/GATEWAY_PERFORMANCE.md \
	  --json $(BENCH_DIR)/gateway.json

## bench-batch: what the Batch API costs on loopback (a minute; 2.5 with PostgreSQL): a
## 50,000-request input file uploaded and queued (seconds, the gateway's memory), and
## 20,000-request batches against the same requests sent directly to an upstream that answers at
## once (requests/s, the gateway's CPU per request), into docs/BATCH_PERFORMANCE.md and
## $(BENCH_DIR)/batch.json. On SQLite; BENCH_POSTGRES_URL=postgresql://SUPERUSER@HOST:PORT/postgres
## measures PostgreSQL as well (a new database on that server for each gateway, dropped after)
BENCH_POSTGRES_URL ?=
bench-batch: $(STAMP)
	nice $(BIN)/python -m chiron_operator.perf.batch --out docs/BATCH_PERFORMANCE.md \
	  --json $(BENCH_DIR)/batch.json $(if $(BENCH_POSTGRES_URL),--postgres-url $(BENCH_POSTGRES_URL))

## fmt: apply the formatter and the safe lint fixes
fmt: $(STAMP)
	$(BIN)/ruff format chiron_operator tests
	$(BIN)/ruff check --fix chiron_operator tests

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
