#!/usr/bin/env bash
# Runs the demo: a small network of node processes trading on this machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/venv.sh"
cd "$root"
exec "$root/.venv/bin/python" -m p2pexchange demo "$@"
