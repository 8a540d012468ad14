#!/usr/bin/env bash
# Install everything tierflow and its tests need, into .venv/ at the repository root.
# Idempotent and safe to re-run: Debian packages are installed only when missing, and the
# Python environment is rebuilt only when pyproject.toml changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: real captures (tcpdump, tshark), conntrack, a DNS server for
# the lab (dnsmasq-base), netns tooling (iproute2), and Chromium for the report browser test.
DEB_PACKAGES=(tcpdump libpcap0.8 tshark conntrack iproute2 nftables iptables dnsmasq-base chromium)
missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: not root, skipping Debian packages: ${missing[*]} (capture tests will be skipped)" >&2
  fi
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for c in python3.11 python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then PY=$c; break; fi
  done
fi
[ -n "$PY" ] || { echo "setup: Python 3.11+ is required" >&2; exit 1; }

stamp=.venv/.tierflow-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing tierflow into .venv (editable, with capture and dev extras)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[capture,dev]'
  echo "$want" > "$stamp"
fi
