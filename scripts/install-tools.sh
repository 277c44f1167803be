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
