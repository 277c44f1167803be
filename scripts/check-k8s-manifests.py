#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests (the output of `kubectl kustomize`) for this project's rules.

Usage: kubectl kustomize deploy/k8s/overlays/example | python3 scripts/check-k8s-manifests.py [label]

Schema validation (field names and types) is done by kubernetes-validate when it is installed; this
script checks what a schema cannot: every object is named, every workload runs one of our binaries
non-root with a read-only root, no capabilities, probes on /healthz and /readyz, requests and limits,
a grace period covering the 30 s drain, and every reference (Secret, ConfigMap, PVC, scale target,
Service/PDB selector) points at an object that is rendered too. Exits 1 listing every problem.
"""

import sys

import yaml

BINARIES = {"ingress", "sender", "conversation-sync", "reminder-scheduler", "graph-mock", "wactl"}
DRAIN_SECONDS = 30


def main() -> int:
    label = sys.argv[1] if len(sys.argv) > 1 else "<stdin>"
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]
    problems: list[str] = []
    by_kind: dict[str, dict[str, dict]] = {}

    for i, doc in enumerate(docs):
        kind, name = doc.get("kind"), (doc.get("metadata") or {}).get("name")
        if not doc.get("apiVersion") or not kind or not name:
            problems.append(f"object #{i} lacks apiVersion, kind or metadata.name")
            continue
        by_kind.setdefault(kind, {})[name] = doc

    def exists(kind: str, name: str, where: str) -> None:
        if name not in by_kind.get(kind, {}):
            problems.append(f"{where}: refers to {kind} {name!r}, which is not rendered")

    def check_pod(where: str, spec: dict, long_running: bool) -> None:
        psc = spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken should be false")
        for c in spec.get("containers", []):
            cw = f"{where} container {c.get('name')}"
            cmd = c.get("command") or []
            if not cmd or cmd[0] not in BINARIES:
                problems.append(f"{cw}: command {cmd} is not one of {sorted(BINARIES)}")
            csc = c.get("securityContext") or {}
            if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
                problems.append(f"{cw}: runAsNonRoot is not true")
            if csc.get("runAsUser", psc.get("runAsUser")) != 10001:
                problems.append(f"{cw}: runAsUser is not 10001 (the image's user)")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cw}: readOnlyRootFilesystem is not true")
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cw}: allowPrivilegeEscalation is not false")
            if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
                problems.append(f"{cw}: capabilities do not drop ALL")
            res = c.get("resources") or {}
            for section in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(section) or {}):
                        problems.append(f"{cw}: resources.{section}.{r} missing")
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    exists("Secret", ref["name"], cw)
                    secret = by_kind.get("Secret", {}).get(ref["name"])
                    keys = set((secret or {}).get("data") or {}) | set((secret or {}).get("stringData") or {})
                    if secret and ref["key"] not in keys:
                        problems.append(f"{cw}: Secret {ref['name']!r} has no key {ref['key']!r}")
            for src in c.get("envFrom") or []:
                if "configMapRef" in src:
                    exists("ConfigMap", src["configMapRef"]["name"], cw)
                if "secretRef" in src:
                    exists("Secret", src["secretRef"]["name"], cw)
            if long_running:
                for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                    got = ((c.get(probe) or {}).get("httpGet") or {}).get("path")
                    if got != path:
                        problems.append(f"{cw}: {probe} should GET {path}, has {got}")
                if not ((c.get("lifecycle") or {}).get("preStop")):
                    problems.append(f"{cw}: no preStop hook (endpoints must go before SIGTERM)")
        for vol in spec.get("volumes") or []:
            if "persistentVolumeClaim" in vol:
                exists("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"], where)
        if long_running and spec.get("terminationGracePeriodSeconds", 30) < DRAIN_SECONDS + 5:
            problems.append(f"{where}: terminationGracePeriodSeconds below the {DRAIN_SECONDS} s drain + preStop")

    deployments = by_kind.get("Deployment", {})
    for name, d in deployments.items():
        tpl = d["spec"]["template"]
        sel = d["spec"]["selector"]["matchLabels"]
        if not sel.items() <= (tpl["metadata"].get("labels") or {}).items():
            problems.append(f"Deployment {name}: selector does not match its template labels")
        ann = tpl["metadata"].get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true":
            problems.append(f"Deployment {name}: no prometheus.io/scrape annotation")
        check_pod(f"Deployment {name}", tpl["spec"], long_running=True)
    for name, j in by_kind.get("Job", {}).items():
        check_pod(f"Job {name}", j["spec"]["template"]["spec"], long_running=False)

    def matches_a_deployment(selector: dict) -> bool:
        return any(selector.items() <= (d["spec"]["template"]["metadata"].get("labels") or {}).items()
                   for d in deployments.values())

    for name, s in by_kind.get("Service", {}).items():
        if not matches_a_deployment(s["spec"].get("selector") or {}):
            problems.append(f"Service {name}: selector matches no Deployment")
    for name, p in by_kind.get("PodDisruptionBudget", {}).items():
        if not matches_a_deployment(p["spec"]["selector"].get("matchLabels") or {}):
            problems.append(f"PodDisruptionBudget {name}: selector matches no Deployment")
    for name, h in by_kind.get("HorizontalPodAutoscaler", {}).items():
        exists(h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"], f"HPA {name}")
    scaled = set(by_kind.get("HorizontalPodAutoscaler", {}))
    for name, so in by_kind.get("ScaledObject", {}).items():
        target = so["spec"]["scaleTargetRef"]["name"]
        exists("Deployment", target, f"ScaledObject {name}")
        if target in scaled:
            problems.append(f"ScaledObject {name}: {target} is also scaled by an HPA")
        scaled.add(target)
        for t in so["spec"].get("triggers", []):
            meta = t.get("metadata") or {}
            if t.get("type") != "rabbitmq" or meta.get("mode") != "QueueLength" or not meta.get("queueName"):
                problems.append(f"ScaledObject {name}: trigger is not rabbitmq/QueueLength with a queueName")
            exists("TriggerAuthentication", (t.get("authenticationRef") or {}).get("name", ""), f"ScaledObject {name}")
    for name, ta in by_kind.get("TriggerAuthentication", {}).items():
        for ref in ta["spec"].get("secretTargetRef", []):
            exists("Secret", ref["name"], f"TriggerAuthentication {name}")
    for name in scaled:
        if name in deployments and "replicas" in deployments[name]["spec"]:
            problems.append(f"Deployment {name}: autoscaled, so spec.replicas must be left unset")

    for p in problems:
        print(f"{label}: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"{label}: {len(docs)} objects pass the project checks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
