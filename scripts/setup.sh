#!/usr/bin/env bash
# Set up scalegan on a fresh machine: a virtual env in .venv with the CPU torch 2.13.0 wheel, the package
# (editable), and the Fashion-MNIST files from Debian. Safe to run again.
# Usage: scripts/setup.sh [EXTRAS]   e.g. scripts/setup.sh dev  (test dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# torch first and pinned: an unpinned torch (or a dependency asking for one) would pull GBs of CUDA wheels.
.venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
EXTRAS=${1:+[$1]}
.venv/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".${EXTRAS}"

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    echo "installing dataset-fashion-mnist (Debian package) ..." >&2
    $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
        || echo "warning: could not install dataset-fashion-mnist; run: sudo apt-get install dataset-fashion-mnist" >&2
fi
