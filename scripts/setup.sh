#!/usr/bin/env bash
# Create .venv with the CPU build of torch and install mimo-audio into it (idempotent).
# Extras: EXTRAS="dev,server" bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
pip_install() {
    if ! .venv/bin/python -m pip install -q "$@" >"$log" 2>&1; then
        cat "$log" >&2
        exit 1
    fi
}
if [ ! -x .venv/bin/python ]; then
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
pip_install --upgrade pip
pip_install torch==2.13.0
pip_install -c <(echo torch==2.13.0) -e ".[${EXTRAS:-dev}]"
rm -f "$log"
