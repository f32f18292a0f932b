#!/usr/bin/env bash
# Set everything up, then run the test suite (CPU only; a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
.venv/bin/python -m pytest -q "$@"
