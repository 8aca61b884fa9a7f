#!/usr/bin/env bash
# Host side of the prepared GPU run (issue 17): build what travels, check its size, print the device call.
#
#   bash scripts/gpu_prepare.sh          # from the project root, with network for pip download
#
# It fills .gpu/ (ignored by git), which the device tool's `carry` takes along:
#   .gpu/whl/                   wheels the GPU machine lacks: pydicom (the benchmark's synthetic DICOMs),
#                               papermill, ipykernel, ... (chapter 2); built by ../shared/gpu/wheels.sh
#   .gpu/mias512-pretrain.npz   the tissue bank: the "pretrain" half of the mini-MIAS women
#                               (awm_lib.pretrain.split), breast-cropped, 512 px; the other half is the probe's
#   .gpu/commit.txt             the commit the run is prepared from (recorded in the run's manifest)
# then checks that the working tree + .gpu/ stay under the 64 MiB that may travel, and prints the
# exact `run` call. REBUILD=1 rebuilds the wheels and the bank.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
WHEELS_SH=${WHEELS_SH:-../shared/gpu/wheels.sh}
CARRY=.gpu
BANK=$CARRY/mias512-pretrain.npz
mkdir -p "$CARRY"
git check-ignore -q "$CARRY/" || { echo "gpu_prepare: error: $CARRY/ is not ignored by git (.gitignore lists /.gpu/)" >&2; exit 2; }

if [ "${REBUILD:-0}" = 1 ]; then rm -rf "$CARRY/whl" "$BANK"; fi
if ! ls "$CARRY"/whl/*.whl >/dev/null 2>&1; then
  [ -f "$WHEELS_SH" ] || { echo "gpu_prepare: error: $WHEELS_SH not found (set WHEELS_SH)" >&2; exit 2; }
  bash "$WHEELS_SH" "$CARRY/whl"
fi
ls "$CARRY"/whl/pydicom-*.whl "$CARRY"/whl/papermill-*.whl >/dev/null \
  || { echo "gpu_prepare: error: pydicom or papermill missing from $CARRY/whl (REBUILD=1 to fetch again)" >&2; exit 2; }
if [ ! -f "$BANK" ]; then
  "$PYTHON" -m awm_lib pretrain --build-bank "$BANK" --long-side 512 --set mias_half=pretrain --no-progress
fi

{ git rev-parse HEAD; git diff --quiet HEAD -- awm_lib scripts notebooks || echo "(with uncommitted changes)"; } \
  | paste -sd' ' > "$CARRY/commit.txt"
"$PYTHON" -m awm_lib.bench.gpu_run check-carry "$CARRY"
GPU_DRY_HINT="GPU_DRY=1 bash scripts/gpu_run.sh"
cat <<EOF

Ready. Check the script once on this CPU if it changed since its last dry run:  $GPU_DRY_HINT
Then the ONE device call (the run tool), from this checkout:

  run(command="bash scripts/gpu_run.sh", carry=[".gpu"], timeout_s=560)

It runs about 8.5 minutes (GPU_BUDGET_S=510, enforced by the script; timeout_s leaves 50 s of slack).
Afterwards, here:

  python -m awm_lib gpu-import <files_at>          # bench rows, checkpoints/awm-dino-gpu, held-out probe

If a step failed or was skipped and device time is left, rerun only it on the still-warm machine
(it is given back after 30 s idle), for example:

  run(command="GPU_STEPS=bench-data,chapter2 GPU_BUDGET_S=200 bash scripts/gpu_run.sh", carry=[".gpu"], timeout_s=240)

then import that folder too (rows merge per device and configuration).
EOF
