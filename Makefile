# The Makefile mirrors CI. Quick start: `make demo`, `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/whatsapp
export AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672/%2f
CARGO ?= cargo

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-14s %s\n", $$1, $$2}'

.PHONY: services
services: ## Make sure the local RabbitMQ (with management plugin) and PostgreSQL are up
	@bash scripts/ensure-services.sh

.PHONY: tools
tools: ## Install the tools the checks need (diesel CLI, docker-compose for validation) if missing
	@bash scripts/install-tools.sh

.PHONY: build
build: ## Build every binary
	$(CARGO) build --workspace --bins

.PHONY: migrate
migrate: services ## Apply the migrations to DATABASE_URL (creates the database if missing)
	$(CARGO) run -q -p wa_ops --bin wactl -- migrate

.PHONY: proto
proto: ## Regenerate proto/ (JSON Schemas, examples, AsyncAPI) from the Rust types
	UPDATE_PROTO=1 $(CARGO) test -q -p wa_common proto_directory_matches_the_rust_types

.PHONY: schema
schema: services ## Regenerate crates/db/src/schema.rs from the migrations
	bash scripts/check-schema.sh --write

.PHONY: fmt
fmt: ## Check formatting
	$(CARGO) fmt --all --check

.PHONY: lint
lint: ## Clippy with warnings as errors, and the dependency rules
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	bash scripts/check-common-deps.sh

.PHONY: check-generated
check-generated: services ## schema.rs and proto/ match their sources; deploy files validate
	bash scripts/check-schema.sh
	bash scripts/validate-deploy.sh

.PHONY: test
test: services tools fmt lint check-generated ## Everything CI runs: fmt, clippy, generated-file checks, all tests
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --no-fail-fast

.PHONY: demo
demo: services ## Build, migrate, start every service and the fake Graph API, run a scripted scenario, print a summary
	$(CARGO) build -q --workspace --bins
	$(CARGO) run -q -p wa_demo --bin wa-demo

.PHONY: run
run: services ## Start everything (fake Graph API included) and leave it running until Ctrl-C
	$(CARGO) build -q --workspace --bins
	$(CARGO) run -q -p wa_demo --bin wa-demo -- --keep-running

.PHONY: chaos
chaos: services ## Fault injection under load on a private broker and database (kills, restarts, Graph faults), then reconciliation
	$(CARGO) build -q --workspace --bins
	$(CARGO) run -q -p wa_demo --bin wa-chaos

.PHONY: bench
bench: services ## Run the benchmarks and write bench-results/report.{md,json}
	$(CARGO) build -q --release --workspace --bins
	$(CARGO) run -q --release -p wa_bench --bin wa-bench

.PHONY: clean
clean: ## Remove build output and demo state
	$(CARGO) clean
	rm -rf .demo bench-results
