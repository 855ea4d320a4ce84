#!/usr/bin/env bash
# Install everything the test suite, the examples and the benchmarks use:
# Debian packages (when run as root), the project with its test extras, and
# the Node packages of the cross-client tests.  Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(redis-server postgresql nginx chromium wrk strace linux-perf)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: please install these Debian packages: ${missing[*]}" >&2
        exit 1
    fi
fi

python -m pip install -q --disable-pip-version-check -e ".[test]"

if [ -f tests/js/package.json ] && command -v npm >/dev/null; then
    (cd tests/js && npm install --silent --no-audit --no-fund >/dev/null)
fi
