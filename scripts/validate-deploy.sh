#!/usr/bin/env bash
# Validates the deployment files without a cluster or a Docker engine:
#   - k8s/base/config.toml is an exact copy of config/default.toml
#   - yamllint on every YAML file (.yamllint)
#   - hadolint on the Dockerfile, shellcheck on this script
#   - docker-compose.yml against the Compose Specification JSON schema, plus health
#     checks on every service
#   - every kustomization rendered with `kubectl kustomize` (k8s/base, k8s/overlays/*,
#     k8s/models, and check overlays adding the optional components), every object
#     validated against the Kubernetes JSON schemas (strict), KEDA and Prometheus
#     Operator objects checked field by field (no schemas for those CRDs ship offline),
#     and cross-object rules (probes, drain vs grace period, security context,
#     selectors, one autoscaler per Deployment).
#
#   scripts/validate-deploy.sh                 # validate; exit 1 on any failure
#   scripts/validate-deploy.sh --sync-config   # first copy config/default.toml into k8s/base
#
# The tools (pinned in scripts/deploy-tools.txt) are installed from PyPI on first use
# into a venv at a fixed path outside the clone, reinstalled when that file changes.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${TW_DEPLOY_VENV:-$HOME/.cache/translation-worker/deploy-venv}"
REQ=scripts/deploy-tools.txt

if [ "${1:-}" = "--sync-config" ]; then
  cp config/default.toml k8s/base/config.toml
  echo "validate-deploy: copied config/default.toml to k8s/base/config.toml"
  shift
fi

want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  echo "validate-deploy: installing tools into $VENV"
  command -v python3 >/dev/null || { echo "validate-deploy: python3 is required" >&2; exit 1; }
  if ! python3 -m venv --clear "$VENV" 2>/dev/null; then
    # Debian/Ubuntu split venv (ensurepip) out of python3.
    if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
      python3 -m venv --clear "$VENV"
    else
      echo "validate-deploy: 'python3 -m venv' failed: install python3-venv" >&2
      exit 1
    fi
  fi
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$REQ"
  echo "$want" >"$VENV/.requirements.sha256"
fi

export PATH="$VENV/bin:$PATH"
exec "$VENV/bin/python" scripts/validate_deploy.py "$@"
