#!/usr/bin/env bash
# Validates the deployment files with tools (there is no Docker engine or cluster here):
#   - docker-compose.yml for the default, dev and observability profiles;
#   - every JSON file under deploy/ parses, every YAML file under deploy/ parses;
#   - every kustomize overlay (and the base) renders, passes the project checks
#     (scripts/check-k8s-manifests.py) and, when kubernetes-validate is installed, the Kubernetes schemas;
#   - with promtool: the alert rules, their unit tests, the scrape config and the dashboard's PromQL.
set -euo pipefail
cd "$(dirname "$0")/.."

docker-compose -f docker-compose.yml config -q
docker-compose -f docker-compose.yml --profile dev config -q
docker-compose -f docker-compose.yml --profile observability config -q
docker-compose -f docker-compose.yml --profile dev --profile observability config -q
echo "docker-compose.yml is valid (default, dev and observability profiles)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

json_count=0
while IFS= read -r -d '' f; do
  python3 -m json.tool "$f" >/dev/null || { echo "$f is not valid JSON" >&2; exit 1; }
  json_count=$((json_count + 1))
done < <(find deploy -name '*.json' -print0)
echo "$json_count JSON file(s) under deploy/ parse"
# Dashboards: the datasource is the template variable DS_PROMETHEUS everywhere, panel ids are unique.
python3 - <<'EOF'
import json, pathlib, sys
for path in sorted(pathlib.Path("deploy/grafana").glob("*.json")):
    dash = json.loads(path.read_text())
    names = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    if "DS_PROMETHEUS" not in names:
        sys.exit(f"{path}: no DS_PROMETHEUS template variable")
    ids = [p["id"] for p in dash["panels"]]
    if len(ids) != len(set(ids)):
        sys.exit(f"{path}: duplicate panel ids")
    for p in dash["panels"]:
        for obj in [p] + p.get("targets", []):
            ds = obj.get("datasource")
            if ds is not None and ds.get("uid") != "${DS_PROMETHEUS}":
                sys.exit(f"{path}: panel {p['id']} {p.get('title')!r} does not use ${{DS_PROMETHEUS}}")
    print(f"{path}: {len(ids)} panels, datasource ${{DS_PROMETHEUS}}")
EOF

python3 - <<'EOF'
import pathlib, sys, yaml
files = sorted(p for p in pathlib.Path("deploy").rglob("*") if p.suffix in (".yml", ".yaml"))
for p in files:
    try:
        list(yaml.safe_load_all(p.read_text()))
    except yaml.YAMLError as e:
        sys.exit(f"{p} is not valid YAML: {e}")
print(f"{len(files)} YAML file(s) under deploy/ parse")
EOF

if [ -d deploy/k8s ] && command -v kubectl >/dev/null 2>&1; then
  # Oldest Kubernetes minor the manifests target (PDB policy/v1, HPA autoscaling/v2, Job TTL).
  k8s_version=1.30.0
  for dir in deploy/k8s/base/ deploy/k8s/overlays/*/; do
    name="$(basename "$dir")"
    kubectl kustomize "$dir" >"$tmp/$name.yaml"
    echo "kustomize renders $dir"
    python3 scripts/check-k8s-manifests.py "$dir" <"$tmp/$name.yaml"
    if command -v kubernetes-validate >/dev/null 2>&1; then
      # CRDs (KEDA) have no bundled schema: their warning is expected; check-k8s-manifests.py covers them.
      kubernetes-validate --strict --quiet --kubernetes-version "$k8s_version" "$tmp/$name.yaml" 2>&1 \
        | { grep -v "Couldn't find schema for kind \(ScaledObject\|TriggerAuthentication\) with api version keda.sh/" || true; }
      [ "${PIPESTATUS[0]}" = 0 ] || { echo "kubernetes-validate rejected $dir" >&2; exit 1; }
      echo "kubernetes-validate (strict, Kubernetes $k8s_version) accepts $dir"
    else
      echo "kubernetes-validate not installed: schema check of $dir skipped (scripts/install-tools.sh installs it)"
    fi
  done
fi

if command -v promtool >/dev/null 2>&1; then
  promtool check rules deploy/prometheus/alerts.yml
  promtool test rules deploy/prometheus/alerts_test.yml
  promtool check config deploy/prometheus/prometheus.yml
  # Every dashboard query must parse: wrap them as recording rules and let promtool parse them.
  python3 - "$tmp/dashboard-queries.yml" <<'EOF'
import json, pathlib, sys, yaml
rules = []
for path in sorted(pathlib.Path("deploy/grafana").glob("*.json")):
    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels", []))
    for p in walk(json.loads(path.read_text()).get("panels", [])):
        for t in p.get("targets", []):
            expr = t["expr"].replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$tenant", ".*")
            rules.append({"record": f"dashboard:{path.stem.replace('-', '_')}:{p['id']}{t['refId']}", "expr": expr})
yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, open(sys.argv[1], "w"))
EOF
  promtool check rules "$tmp/dashboard-queries.yml" >/dev/null
  echo "dashboard PromQL parses"
else
  echo "promtool not installed: alert rules and scrape config not checked (scripts/install-tools.sh installs it)"
fi
echo "deploy files are valid"
