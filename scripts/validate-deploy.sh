#!/usr/bin/env bash
# Validates the deployment files with tools (there is no Docker engine or cluster here).
set -euo pipefail
cd "$(dirname "$0")/.."
docker-compose -f docker-compose.yml config -q
docker-compose -f docker-compose.yml --profile dev config -q
echo "docker-compose.yml is valid"
if [ -d deploy/k8s ] && command -v kubectl >/dev/null 2>&1; then
  for overlay in deploy/k8s/overlays/*/; do
    kubectl kustomize "$overlay" >/dev/null
    echo "kustomize renders $overlay"
  done
fi
