#!/usr/bin/env bash
# The package as users install it. Builds the sdist and, from it, the wheel (`python -m build`: so the sdist is
# known to build), checks what both hold, installs the wheel with the serve and export extras into a fresh
# virtual env outside the repository, and from a folder outside it (so the source tree cannot be imported) runs
# `scalegan info`, a 3-iteration training run on a generated NPZ, `scalegan sample`, `scalegan export --format onnx`
# (and the file in onnxruntime) and `scalegan serve` (the page, /health, one /v1/generate). Exit 0 when all pass;
# otherwise one "check_wheel: FAILED: ..." line says which step failed.
#
# Usage: scripts/check_wheel.sh
#   PYTHON       interpreter with the `build` package (dev extra)      default: .venv/bin/python
#   BASE_PYTHON  interpreter the fresh virtual env is made from        default: python3
#   KEEP=1       keep the temporary folder (its path is printed)
# Network: pip reads the package index (or its cache) for the fresh env's dependencies and, through build
# isolation, for setuptools; the build stays isolated so that it sees only what pyproject.toml declares.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
BASE_PYTHON=${BASE_PYTHON:-python3}
START=$SECONDS
SERVER_PID=""

fail() { echo "check_wheel: FAILED: $*" >&2; exit 1; }
step() { echo "check_wheel: [$((SECONDS - START)) s] $*" >&2; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/scalegan-wheel.XXXXXX")
case "$WORK/" in "$ROOT"/*) fail "the temporary folder $WORK is inside the repository: set TMPDIR elsewhere" ;; esac
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then kill "$SERVER_PID"; wait "$SERVER_PID" || true; fi
    if [ "${KEEP:-0}" = 1 ]; then echo "check_wheel: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# ------------------------------------------------------------------------------------------------ build
step "building the sdist and the wheel from it into $WORK/dist"
"$PYTHON" -c "import build" 2>/dev/null \
    || fail "$PYTHON has no 'build' package: pip install -c constraints.txt build (it is in the dev extra)"
# From a copy of the files git tracks or would track (what a fresh clone has, with this checkout's changes): in
# the checkout itself setuptools would also read a stale scalegan.egg-info/SOURCES.txt from earlier builds and
# editable installs, which can put a file in the sdist that pyproject.toml and MANIFEST.in do not.
mkdir "$WORK/src"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -z -co --exclude-standard \
        | while IFS= read -r -d '' f; do if [ -e "$f" ]; then printf '%s\0' "$f"; fi; done \
        | xargs -0 cp --parents -t "$WORK/src") \
        || fail "copying the checkout's files to $WORK/src"
else
    tar -C "$ROOT" --exclude=.venv --exclude=build --exclude='*.egg-info' --exclude=__pycache__ --exclude=runs -cf - . \
        | tar -C "$WORK/src" -xf - || fail "copying $ROOT to $WORK/src"
fi
"$PYTHON" -m build --outdir "$WORK/dist" "$WORK/src" >"$WORK/build.log" 2>&1 \
    || { tail -30 "$WORK/build.log" >&2; fail "python -m build (log above)"; }
# setuptools' warnings (deprecated metadata, files it skipped) are shown; "byte-compiling is disabled" is not one.
grep -i "warning" "$WORK/build.log" | grep -v "byte-compiling is disabled" | sort -u | sed 's/^/  /' >&2 || true
WHEELS=("$WORK"/dist/scalegan-*.whl)
SDISTS=("$WORK"/dist/scalegan-*.tar.gz)
[ "${#WHEELS[@]}" = 1 ] && [ -f "${WHEELS[0]}" ] || fail "expected one wheel in $WORK/dist"
[ "${#SDISTS[@]}" = 1 ] && [ -f "${SDISTS[0]}" ] || fail "expected one sdist in $WORK/dist"
WHEEL=${WHEELS[0]}
SDIST=${SDISTS[0]}

step "checking what $(basename "$WHEEL") and $(basename "$SDIST") hold"
# Every file of the package in the repository (Python or not) must be in both; the wheel holds nothing else.
"$PYTHON" - "$ROOT" "$WHEEL" "$SDIST" <<'EOF' || fail "the wheel or the sdist is incomplete (above)"
import subprocess, sys, tarfile, zipfile
from pathlib import Path

root, wheel, sdist = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
try:
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-co", "--exclude-standard", "scalegan"],
                            capture_output=True, text=True, check=True).stdout.split()
except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. an unpacked sdist): the files on disk
    listed = [p.relative_to(root).as_posix() for p in (root / "scalegan").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts]
package = {p for p in listed if (root / p).is_file()}
wheel_names = set(zipfile.ZipFile(wheel).namelist())
with tarfile.open(sdist) as tar:
    sdist_names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
errors = []
for what, names in (("wheel", wheel_names), ("sdist", sdist_names)):
    missing = sorted(package - names)
    if missing:
        errors.append(f"{what} lacks {len(missing)} package file(s): {missing[:10]}")
stray = sorted(n for n in wheel_names if n.split("/")[0] != "scalegan" and ".dist-info/" not in n)
if stray:
    errors.append(f"wheel holds files outside the package: {stray[:10]}")
missing = sorted({"README.md", "constraints.txt", "pyproject.toml", "PKG-INFO"} - sdist_names)
if missing:
    errors.append(f"sdist lacks {missing}")
if errors:
    sys.exit("\n".join(errors))
data = sorted(p for p in package if not p.endswith(".py"))
print(f"  {len(package)} package files in both, package data: {', '.join(data)}", file=sys.stderr)
EOF

# ------------------------------------------------------------------------------------------------ install
VENV=$WORK/venv
step "installing torch==2.13.0, then the wheel with [serve,export], into a fresh env $VENV"
"$BASE_PYTHON" -m venv "$VENV" || fail "$BASE_PYTHON -m venv"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
# torch first and pinned: an unpinned torch (or a dependency asking for one) would pull GBs of CUDA wheels.
"${PIP[@]}" torch==2.13.0 || fail "pip install torch==2.13.0"
"${PIP[@]}" -c "$ROOT/constraints.txt" "$WHEEL[serve,export]" || fail "pip install the wheel"

# From here on nothing may come from the repository: no PYTHONPATH, a working folder outside it.
unset PYTHONPATH
mkdir "$WORK/cwd"
cd "$WORK/cwd"
PY=$VENV/bin/python
SG=$VENV/bin/scalegan
[ -x "$SG" ] || fail "the wheel installed no 'scalegan' console script"
where=$("$PY" -c "import scalegan; print(scalegan.__file__)") || fail "import scalegan"
case "$where" in "$VENV"/*) ;; *) fail "scalegan was imported from $where, not from the fresh env" ;; esac

# ------------------------------------------------------------------------------------------------ run it
step "scalegan info"
"$SG" info --list >info_list.txt || fail "scalegan info --list"
grep -q "stylegan2" info_list.txt || fail "scalegan info --list names no stylegan2 preset"
"$SG" info biggan-fmnist >/dev/null || fail "scalegan info biggan-fmnist"
"$PY" -c "from scalegan import imagenet; assert len(imagenet.class_names()) == 1000" \
    || fail "the ImageNet class table (package data scalegan/data/imagenet_classes.tsv)"

step "a 3-iteration training run on a generated 32x32 NPZ"
"$PY" - <<'EOF' || fail "making the NPZ"
import numpy as np

rng = np.random.default_rng(0)
y = np.arange(64) % 3
x = rng.integers(0, 40, size=(64, 32, 32, 1), dtype=np.uint8)
for i, k in enumerate(y):
    x[i, 4 + 8 * k:10 + 8 * k, 4:28] = 220  # class k: a bright bar at a k-dependent place
np.savez("tiny.npz", x=x, y=y.astype(np.int64), class_names=np.array(["top", "middle", "bottom"]))
EOF
"$SG" train --data npz:tiny.npz --out-dir run --model biggan-fmnist --iterations 3 --batch-size 16 \
    --n-d-steps 1 --no-progress --no-tensorboard --sample-every 0 --set ch=8 --set d_ch=8 --set dim_z=16 \
    --set shared_dim=16 >train.log 2>&1 || { tail -20 train.log >&2; fail "scalegan train (log above)"; }

step "scalegan sample"
"$SG" sample run --per-class 2 --seed 1 --grid grid.png --npz samples.npz >/dev/null || fail "scalegan sample"
"$PY" - <<'EOF' || fail "the sample files"
import numpy as np
from PIL import Image

assert Image.open("grid.png").size[0] > 0
data = np.load("samples.npz")
assert data["x"].shape == (6, 32, 32, 1) and data["y"].tolist() == [0, 0, 1, 1, 2, 2], (data["x"].shape, data["y"])
EOF

step "scalegan export --format onnx, then the file in onnxruntime"
"$SG" export run --format onnx model.onnx >/dev/null || fail "scalegan export"
"$PY" - <<'EOF' || fail "running model.onnx in onnxruntime"
import numpy as np
import onnxruntime as ort

session = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
feeds = {}
for i in session.get_inputs():
    if i.name == "z":
        feeds["z"] = np.random.default_rng(0).standard_normal((2, i.shape[1]), dtype=np.float32)
    else:
        feeds[i.name] = np.array([0, 2], dtype=np.int64)
(images,) = session.run(None, feeds)
assert images.shape == (2, 1, 32, 32) and np.isfinite(images).all(), images.shape
EOF

step "scalegan serve on 127.0.0.1: the page, /health, one /v1/generate"
PORT=$("$PY" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$SG" serve run --host 127.0.0.1 --port "$PORT" >serve.log 2>&1 &
SERVER_PID=$!
"$PY" - "$PORT" "$ROOT/scalegan/serve/page.html" "$SERVER_PID" <<'EOF' || { tail -20 serve.log >&2; fail "scalegan serve (log above)"; }
import json, os, sys, time, urllib.request

port, page_file, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
base = f"http://127.0.0.1:{port}"


def server_alive() -> bool:  # until the shell waits for it, an exited server is a zombie: kill(pid, 0) succeeds
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


deadline = time.monotonic() + 120
while True:
    try:
        health = json.load(urllib.request.urlopen(base + "/health", timeout=5))
        break
    except OSError:
        if not server_alive():
            sys.exit("the server exited before it answered /health")
        if time.monotonic() > deadline:
            sys.exit("the server did not answer /health within 120 s")
        time.sleep(0.5)
assert health["status"] == "ok" and health["models"] == ["run"], health
page = urllib.request.urlopen(base + "/", timeout=10).read().decode()
assert page == open(page_file, encoding="utf-8").read(), "GET / is not the package's page.html"
request = urllib.request.Request(base + "/v1/generate", data=json.dumps({"n": 2, "seed": 0}).encode(),
                                 headers={"Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=60) as answer:
    body = answer.read()
    assert answer.headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG"), answer.headers
EOF
kill "$SERVER_PID"
wait "$SERVER_PID" || true
SERVER_PID=""

step "all passed: sdist, wheel, install, info, train, sample, export, serve"
