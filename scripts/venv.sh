#!/usr/bin/env bash
# Creates (or reuses) ./.venv with the project and its test extras installed.
# Sourced by scripts/demo.sh and scripts/test.sh; needs only python3 (3.11+).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "p2pexchange needs Python 3.11 or newer; $py is $("$py" --version 2>&1)" >&2
    exit 2
fi
stamp="$venv/.installed-$(cat "$root/pyproject.toml" | cksum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
    "$py" -m venv "$venv"
fi
if [ ! -f "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip >&2
    "$venv/bin/python" -m pip install -q -e "$root[test]" >&2
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
