#!/usr/bin/env bash
# The demo: set everything up, train biggan-fmnist on Fashion-MNIST into runs/demo (a 690 s training budget:
# about 13 minutes in all on a 2-core CPU of any kind; precision auto: bf16 where the CPU has it, float32
# elsewhere), then sample from it. Writes runs/demo/samples/final.png (10 x 10, one row per class).
# Run it again to continue the same run (it resumes from the latest checkpoint); extra arguments go to
# `scalegan train`, e.g. scripts/demo.sh --time-budget 1200
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

RUN=runs/demo
RESUME=()
if [ -f "$RUN/checkpoints/latest" ]; then RESUME=(--resume); fi
.venv/bin/scalegan train --model biggan-fmnist --data fashion-mnist --out-dir "$RUN" "${RESUME[@]}" "$@"

# Sampling from the trained run: a truncated class grid and a class-to-class interpolation GIF.
.venv/bin/scalegan sample "$RUN" --per-class 10 --truncation 1.0 --seed 1 --grid "$RUN/samples/truncated.png"
.venv/bin/scalegan sample "$RUN" --interp class --rows 8 --steps 12 --grid "$RUN/samples/interp_class.png" \
    --gif "$RUN/samples/interp_class.gif"
echo "done: $RUN/samples/final.png (class grid), $RUN/samples/truncated.png, $RUN/samples/interp_class.gif"
