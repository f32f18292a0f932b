#!/usr/bin/env bash
# Set up scalegan on a fresh machine: a virtual env in .venv with the CPU torch 2.13.0 wheel, the package
# (editable), and the Fashion-MNIST files from Debian; with the dev extra also Debian's chromium, which the browser
# test (tests/test_serve_browser.py) drives through Playwright (no browser download). Safe to run again.
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

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
# apt_install PACKAGE WHY: install a Debian package (apt-get update only when the first try fails); a failure is a
# warning that says what to run, not an error: the rest of the set-up stays usable.
apt_install() {
    echo "installing $1 (Debian package, $2) ..." >&2
    $SUDO apt-get install -y -qq "$1" >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq "$1" >/dev/null; } \
        || echo "warning: could not install $1 ($2); run: sudo apt-get install $1" >&2
}

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
    apt_install dataset-fashion-mnist "the Fashion-MNIST files"
fi
# The browser test drives Debian's chromium (Playwright's executable_path); only test set-ups need it.
case ",${1:-}," in
    *,dev,*)
        if ! command -v chromium >/dev/null 2>&1; then
            apt_install chromium "the browser tests/test_serve_browser.py drives"
        fi ;;
esac
