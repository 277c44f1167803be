#!/usr/bin/env bash
# Installs the tools the checks need, only when missing (a fresh machine has neither).
set -euo pipefail
if ! command -v diesel >/dev/null 2>&1; then
  echo "installing diesel_cli (postgres only)"
  cargo install diesel_cli --version '^2.3' --no-default-features --features postgres --locked
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  echo "installing docker-compose (used only to validate docker-compose.yml)"
  if [ "$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null
  else sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null; fi
fi
if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool (Debian package prometheus; validates the alert rules and scrape config)"
  if [ "$(id -u)" = 0 ]; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null
  else sudo apt-get update -q && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; fi
fi
if ! python3 -c 'import yaml' >/dev/null 2>&1; then
  echo "installing PyYAML (used by scripts/validate-deploy.sh and scripts/check-k8s-manifests.py)"
  python3 -m pip install -q pyyaml
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "installing kubernetes-validate (offline Kubernetes schema validation of the kustomize output)"
  python3 -m pip install -q 'kubernetes-validate>=1.30'
fi
