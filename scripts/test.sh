#!/usr/bin/env bash
# Runs the whole test suite (unit, property and multi-node tests) in ./.venv.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/venv.sh"
cd "$root"
# The partition fault tests (tests/test_faults.py) cut node addresses apart with
# iptables; as root on a Debian-like machine without it, install it (else they skip
# with a message saying why).
if [ "$(id -u)" = 0 ] && ! command -v iptables > /dev/null && command -v apt-get > /dev/null; then
    (apt-get update -qq && apt-get install -y -qq iptables) > /dev/null 2>&1 \
        || echo "note: could not install iptables; the partition fault tests will skip"
fi
exec "$root/.venv/bin/python" -m pytest "$@"
