# Run `make help` for the targets. Every target installs what it needs into .venv first.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# make bench: the ML-100K folder (read in place) and Surprise's own venv (it needs numpy<2).
ML100K_DIR ?= $(abspath ../shared/data/ml-100k)
SURPRISE_VENV ?= .venv-surprise
# The pipeline's own commands (python, dvc, mlflow, bentoml) come from the project environment.
export PATH := $(abspath $(BIN)):$(PATH)
# Telemetry off for every tool in every process started from here.
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export DVC_NO_ANALYTICS := 1
export ITERATIVE_DO_NOT_TRACK := 1
export DO_NOT_TRACK := true
export GX_ANALYTICS_ENABLED := false
export TF_ENABLE_ONEDNN_OPTS := 0
export TF_CPP_MIN_LOG_LEVEL := 2
# MLflow's "View run ... at: <tracking URI>" links carry the URI's password, if it has one.
export MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT := true
# make bento / serve / bench-serve: the project's own BentoML store (gitignored; dvc.yaml's too).
export BENTOML_HOME := $(CURDIR)/bentoml
# make bench-serve: seconds of load per server and endpoint (DURATION=10 for a quick check).
DURATION ?= 60
PACKAGED = $(BIN)/python -c 'import json; print(json.load(open("reports/package.json"))$(1))'

.PHONY: help install run test test-fast lint format clean ui bench bench-scale bench-synthetic tune bento serve bench-serve \
	tracking-server tracking-server-stop bench-ann bench-distributed push pull monitor retrain bench-loop bench-monitor bench-spark \
	spark-cluster

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The lock pins the runtime dependencies and every extra of pyproject.toml (stack, s3, tune, dev),
# so the pipeline, the tests, make tune and make tracking-server all find theirs; pip check proves
# the set consistent.
$(BIN)/.installed: requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 is required, found {sys.version.split()[0]} at {sys.executable}; set PYTHON=/path/to/python3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/pip check --quiet --disable-pip-version-check
	@touch $@

install: $(BIN)/.installed ## Create .venv and install the locked stack (once; again when the lock changes)

run: install ## Run the whole pipeline (dvc repro) on params.yaml's data (default: embedded synthetic)
	@[ -d .git ] || { echo "dvc needs a git repository: run from a clone of this project"; exit 1; }
	$(BIN)/dvc repro
	@$(BIN)/python -m recommender.summary

# Two xdist workers, one per core here. `--dist loadfile` keeps each module on one worker, so a
# module's fixtures (trained models, servers) are built once; a session fixture (tests/serving's
# packaged champion) is built once per worker that needs it.
test: install ## Run every test (installs Debian's PostgreSQL for the mlflow-server test and Chromium for the Swagger UI test, fetches MovieLens 100K, if missing)
	bash scripts/ensure_debian_package.sh postgresql '/usr/lib/postgresql/*/bin/pg_ctl'
	bash scripts/ensure_debian_package.sh chromium /usr/bin/chromium
	$(BIN)/python scripts/ensure_ml100k.py
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=15

# tests/model, serving, integration and e2e hold only slow / integration / e2e tests (a unit test
# checks it), so test-fast need not even import them: nothing in it imports TensorFlow. Two xdist
# workers (one per core here); hypothesis' plugin is only for tests/serving, and costs 1.5 s to load.
# `--dist loadfile` keeps tests/data/test_validation.py on one worker (xdist hands out the modules
# with the most tests first), so only one worker imports Great Expectations (~5 s of CPU).
test-fast: install ## Run the tests not marked slow, integration or e2e (seconds; nothing trains)
	$(BIN)/python scripts/ensure_ml100k.py
	$(BIN)/python -m pytest tests/unit tests/data -m "not slow and not e2e and not integration" \
		-n 2 --dist loadfile -p no:hypothesispytest --durations=5

ui: install ## MLflow UI on 127.0.0.1:$MLFLOW_PORT (default 5000): runs, model versions, aliases
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $${MLFLOW_PORT:-5000} --workers 1

# make tracking-server: state (databases, S3 data, the generated admin password) in .stack/ (git-ignored).
STACK_DIR ?= .stack

tracking-server: install ## Shared MLflow server with login (PostgreSQL + SeaweedFS S3 + basic-auth) on 127.0.0.1:$MLFLOW_PORT (default 5000)
	bash scripts/ensure_debian_package.sh postgresql '/usr/lib/postgresql/*/bin/pg_ctl'
	$(BIN)/python -m recommender.stack up --dir $(STACK_DIR) --port $${MLFLOW_PORT:-5000}

spark-cluster: install ## A standalone Spark master + worker on 127.0.0.1 until Ctrl-C (prints the spark:// URL for spark.master)
	$(BIN)/python -m recommender.stack.spark_cluster --cores $${SPARK_CORES:-2} --memory $${SPARK_MEMORY:-2g}

tracking-server-stop: ## Stop what make tracking-server started (the data stays in .stack/)
	$(BIN)/python -m recommender.stack down --dir $(STACK_DIR)

# make push / pull: the DVC remote is each user's to set (README: "S3 storage"); none is committed,
# so a clone's push cannot silently aim at someone else's loopback port.
NO_REMOTE = { echo "no default DVC remote: set one first, e.g. dvc remote add -d storage s3://BUCKET/PATH;" \
	"dvc remote modify storage endpointurl http://127.0.0.1:PORT; keys in AWS_* or dvc remote modify --local (README: S3 storage)"; exit 1; }

push: install ## Upload the pipeline's cached outputs (data, models) to the default DVC remote (dvc push)
	@$(BIN)/dvc remote default >/dev/null 2>&1 || $(NO_REMOTE)
	$(BIN)/dvc push

pull: install ## Download the pipeline's outputs from the default DVC remote (dvc pull)
	@$(BIN)/dvc remote default >/dev/null 2>&1 || $(NO_REMOTE)
	$(BIN)/dvc pull

$(SURPRISE_VENV)/.installed:
	$(PYTHON) -m venv $(SURPRISE_VENV)
	$(SURPRISE_VENV)/bin/pip install --quiet --disable-pip-version-check "numpy==1.26.4" "scikit-surprise==1.1.5"
	@touch $@

# make bench: which families the ranking table trains on each fold (default: all; each fold of
# every family takes ~10 min on 2 cores), and which folds.
RANKING_FAMILIES ?=
RANKING_FOLDS ?= u1,u2,u3,u4,u5

bench: install $(SURPRISE_VENV)/.installed ## Rating table vs Surprise (u1) and ranking table vs popularity/EASE (u1..u5) -> reports/ (long)
	$(BIN)/python benchmarks/run.py --ml100k $(ML100K_DIR) --params params.yaml \
		--surprise-python $(SURPRISE_VENV)/bin/python --out reports/benchmark.md --json reports/benchmark.json
	$(BIN)/python benchmarks/ranking.py --ml100k $(ML100K_DIR) --params params.yaml \
		--folds $(RANKING_FOLDS) $(if $(RANKING_FAMILIES),--families $(RANKING_FAMILIES)) \
		--out reports/bench_ranking.md --json reports/bench_ranking.json

# make bench-scale: which sizes (100k, 1m, 10m: ML-1M's and ML-10M's shapes); SCALE_25M=1 adds
# ML-25M's shape (long). Each size runs the whole pipeline in a scratch repository of its own.
SCALE_SIZES ?= 100k,1m,10m
SCALE_25M ?=

bench-scale: install $(SURPRISE_VENV)/.installed ## Pipeline cost per stage vs data size (100K, 1M, 10M; SCALE_25M=1 adds 25M) and Surprise SVD -> reports/bench_scale.md (long)
	$(BIN)/python benchmarks/scale.py --sizes $(SCALE_SIZES) $(if $(SCALE_25M),--with-25m) \
		--surprise-python $(SURPRISE_VENV)/bin/python \
		--out reports/bench_scale.md --json reports/bench_scale.json --plot reports/bench_scale.png

# make bench-spark: which sizes (1m: ML-1M's shape, the quick check; 25m: ML-25M's, pandas and
# Spark side by side; 100m: the Netflix Prize's, Spark, and pandas' ingest until it stops);
# SPARK_TRAIN_EPOCH=1 adds one training epoch streamed from Spark's Parquet output.
SPARK_SIZES ?= 25m,100m
SPARK_TRAIN_EPOCH ?=

bench-spark: install ## Data stages on pandas vs Spark local[2] (25M) and Spark at 100M: time, every process's peak RSS -> reports/bench_spark.md (long)
	$(BIN)/python benchmarks/spark.py --sizes $(SPARK_SIZES) $(if $(SPARK_TRAIN_EPOCH),--train-epoch) \
		--out reports/bench_spark.md --json reports/bench_spark.json

tune: install ## Search tune.family's knobs on the validation split (MLflow runs), write the best to params.yaml
	@[ -d .git ] || { echo "dvc needs a git repository: run from a clone of this project"; exit 1; }
	$(BIN)/dvc repro preprocess
	$(BIN)/python pipeline/tune.py --data data/processed --report reports/tune.json --write-params params.yaml

bento: install ## Package the champion: BentoML model + Bento (dvc repro package) -> reports/package.json
	@[ -d .git ] || { echo "dvc needs a git repository: run from a clone of this project"; exit 1; }
	$(BIN)/dvc repro package
	@cat reports/package.json

serve: install ## Serve the packaged Bento on 127.0.0.1 (port: params serve.port, or PORT=...)
	@[ -f reports/package.json ] || { echo "reports/package.json missing: run make bento first"; exit 1; }
	@$(BIN)/python -c 'import json, sys; r = json.load(open("reports/package.json")); r.get("packaged") or sys.exit("nothing packaged: " + r["reason"])'
	$(BIN)/bentoml serve $$($(call PACKAGED,["bento"])) --host 127.0.0.1 \
		--port $${PORT:-$$($(call PACKAGED,["serve"]["port"]))}

monitor: install ## Read a window of the service's inference log: traffic, drift, online quality, retrain verdict -> reports/monitor/ and an MLflow run
	$(BIN)/python pipeline/monitor.py --out reports/monitor

retrain: install ## Retrain on the data plus the logged feedback, through the registry's gate; packages only a promoted model (dvc repro)
	$(BIN)/dvc repro
	@$(BIN)/python -m recommender.summary

bench-loop: install ## Replay ML-100K's later ratings against a served v1, monitor, retrain through the gate, serve v2 -> reports/bench_loop.md
	$(BIN)/python benchmarks/loop.py --ml100k $(ML100K_DIR) --out reports/bench_loop.md --json reports/bench_loop.json

bench-monitor: install ## make monitor's reader and report on 1M synthetic log records: time and peak RSS -> reports/bench_monitor.md
	$(BIN)/python benchmarks/monitor_scale.py --records 1000000 --out reports/bench_monitor.md

bench-serve: bento ## Load-test the Bento (1 and 2 workers) vs a no-op BentoML service with wrk -> reports/bench_serve.md
	@command -v wrk >/dev/null || { echo "installing wrk (Debian package)"; \
		if [ "$$(id -u)" = 0 ]; then apt-get install -y wrk; else sudo apt-get install -y wrk; fi; }
	$(BIN)/python benchmarks/bench_serve.py --duration $(DURATION) --out reports/bench_serve.md

# make bench-distributed: which synthetic size (benchmarks/scale.py's) and family.
DIST_SIZE ?= 1m
DIST_FAMILY ?= biased_mf

bench-distributed: install ## train.distribute: 2 loopback workers vs 1 process (model.fit and the same loop), time and RMSE -> reports/bench_distributed.md
	$(BIN)/python benchmarks/distributed.py --size $(DIST_SIZE) --family $(DIST_FAMILY) \
		--out reports/bench_distributed.md --json reports/bench_distributed.json

# make bench-ann: which catalog sizes (100k, 1m). Synthetic factors; nothing else needs to run first.
ANN_SIZES ?= 100k,1m

bench-ann: install ## Exact vs ANN (FAISS) top-K: recall@10 and per-query p50 at 100k and 1M items -> reports/bench_ann.md
	$(BIN)/python benchmarks/ann.py --sizes $(ANN_SIZES) --out reports/bench_ann.md --json reports/bench_ann.json

bench-synthetic: install ## The generator at ML-1M/10M/25M shapes: keyed vs rejection draw, time and peak RSS -> reports/bench_synthetic.md
	$(BIN)/python benchmarks/synthetic_draw.py --out reports/bench_synthetic.md

lint: install ## ruff check, ruff format check, mypy on src/
	$(BIN)/ruff check src pipeline serving tests benchmarks scripts
	$(BIN)/ruff format --check src pipeline serving tests benchmarks scripts
	$(BIN)/mypy

format: install ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix src pipeline serving tests benchmarks scripts
	$(BIN)/ruff format src pipeline serving tests benchmarks scripts

# What `dvc repro` writes (dvc.yaml's outs, metrics and plots). Benchmark reports are tracked in git
# and stay; so do the MLflow store and the BentoML store (they hold the registry's history).
PIPELINE_OUTPUTS := data/interim data/processed models reports/validation reports/validation.json \
	reports/data.json reports/train_history.csv reports/metrics.json reports/plots \
	reports/promotion.json reports/package.json

clean: ## Remove pipeline outputs (keeps .venv, the DVC cache, MLflow/BentoML stores, benchmark reports)
	rm -rf $(PIPELINE_OUTPUTS)
