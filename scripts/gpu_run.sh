#!/usr/bin/env bash
# The prepared GPU run (issue 17): the book's GPU figures in ONE call of the device tool.
#
#   on the GPU machine, from the project root (what scripts/gpu_prepare.sh prints):
#       bash scripts/gpu_run.sh                 # $OUT set by the device tool; carry: [".gpu"]
#   on any CPU, every step at tiny settings (< 3 min; tests/test_gpu_run.py runs it):
#       GPU_DRY=1 bash scripts/gpu_run.sh       # output in build/gpu-dry/out (or $OUT)
#   at home:
#       python -m awm_lib gpu-import DIR        # DIR = the folder the files came back to
#
# Steps, in order, each under its own `timeout`, each writing to $OUT as soon as it ends
# (a run cut short still returns what finished; $OUT/manifest.json says what did):
#   bench-model  python -m awm_lib bench: full-518/1036/2072/3514, paper-b1, paper, default-b1,
#                default (bf16, model only)                                  -> $OUT/bench.json
#   bench-data   reference and paper-e2e on synthetic DICOMs made here       -> $OUT/bench.json
#   pretrain     python -m awm_lib pretrain --preset gpu-20min, minutes from the time left, on
#                synthetic images made here + the carried mini-MIAS bank (the "pretrain" half of
#                the women only: the other half is the probe's)   -> $OUT/awm-dino-gpu.tar.partNN
#   chapter2     chapter 2 executed with the GPU profile, if >= CH2_MIN_S are left, else
#                skipped and said so                                         -> $OUT/ch02-gpu.ipynb
# plus $OUT/log.txt (everything printed). At most 8 files of < 16 MiB come back: this is 6.
#
# Knobs (environment): GPU_DRY=1; GPU_BUDGET_S (whole run, default 510 s, dry 600 s);
# GPU_STEPS (comma list, default all four: a retry can run only what failed);
# GPU_CARRY (default .gpu: whl/ + mias512-pretrain.npz + commit.txt); PYTHON; GPU_WORK.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DRY=${GPU_DRY:-0}
STEPS=${GPU_STEPS:-bench-model,bench-data,pretrain,chapter2}
CARRY=${GPU_CARRY:-.gpu}
BANK_NAME=mias512-pretrain.npz
T0=$(date +%s)

if [ "$DRY" = 1 ]; then
  if [ -z "${PYTHON:-}" ]; then if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi; fi
  BUDGET=${GPU_BUDGET_S:-600}   # generous: on a slow CI machine every step should still run
  OUT=${OUT:-build/gpu-dry/out}
  WORK=${GPU_WORK:-build/gpu-dry/work}
  CARRY=$WORK/carry                  # the dry run builds its own tiny bank
  DEVICE_FLAG="--device cpu --threads 2 --tiny --steps 1 --warmup 0 --source-size 256"
  MODEL_MAX=90; DATA_MAX=90; PRETRAIN_MAX=90; PRETRAIN_OVERHEAD=0; CH2_MIN_S=25; CH2_MAX=90
  DATA_NOTE="4 synthetic DICOMs (256 px) generated here"
else
  PYTHON=${PYTHON:-python3}
  BUDGET=${GPU_BUDGET_S:-510}
  [ -n "${OUT:-}" ] || { echo "gpu_run: error: OUT is not set (the device tool sets it); on a CPU use GPU_DRY=1" >&2; exit 2; }
  WORK=${GPU_WORK:-/tmp/gpu-run}
  DEVICE_FLAG="--device cuda --steps 10 --warmup 3"
  MODEL_MAX=120; DATA_MAX=100; PRETRAIN_MAX=300; PRETRAIN_OVERHEAD=75; CH2_MIN_S=30; CH2_MAX=90
  DATA_NOTE="16 synthetic DICOMs (2048 px) generated on this machine"
fi
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd); WORK=$(cd "$WORK" && pwd)
rm -rf "$OUT"/manifest.json "$OUT"/log.txt "$OUT"/bench.json "$OUT"/awm-dino-gpu.tar.part* "$OUT"/ch02-gpu.ipynb \
       "$WORK"/bench.json "$WORK"/bench-merged.json "$WORK"/awm-dino-gpu "$WORK"/ch02-gpu.ipynb
exec > >(tee "$OUT/log.txt") 2>&1
TEE_PID=$!
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

left() { echo $(( BUDGET - ($(date +%s) - T0) )); }
min() { if [ "$1" -lt "$2" ]; then echo "$1"; else echo "$2"; fi; }
want() { case ",$STEPS," in *",$1,"*) return 0;; *) return 1;; esac; }
record() {  # name status seconds rc command note
  "$PYTHON" -m awm_lib.bench.gpu_run step "$OUT" "$1" "$2" "$3" "$4" --command "$5" --note "$6" \
    || echo "gpu_run: could not record step $1 in the manifest"
}
STEP_RC=0; STEP_S=0; STEP_STATUS=ok; STEP_CMD=""
run_step() {  # name timeout_s command...: runs it, sets STEP_RC / STEP_S / STEP_STATUS / STEP_CMD
  local name=$1 t=$2; shift 2
  STEP_CMD=$(printf '%q ' "$@"); STEP_CMD=${STEP_CMD% }
  echo "== $name: up to ${t} s, $(left) s of the budget left"
  echo "   $STEP_CMD"
  local s; s=$(date +%s)
  timeout -k 10 "$t" "$@"
  STEP_RC=$?
  STEP_S=$(( $(date +%s) - s ))
  if [ "$STEP_RC" -eq 124 ] || [ "$STEP_RC" -eq 137 ]; then STEP_STATUS=timeout
  elif [ "$STEP_RC" -eq 0 ]; then STEP_STATUS=ok; else STEP_STATUS=failed; fi
  echo "== $name: $STEP_STATUS (exit $STEP_RC) after ${STEP_S} s"
}

# --- setup: the carried inputs, the wheels, the device ------------------------------------------------
echo "== gpu_run: dry=$DRY budget=${BUDGET}s steps=$STEPS out=$OUT"
if [ "$DRY" = 1 ]; then
  mkdir -p "$CARRY"
  # 4 images of the "pretrain" half of the mini-MIAS women at 96 px (gpu_prepare.sh builds the real one: all, 512 px)
  [ -f "$CARRY/$BANK_NAME" ] || "$PYTHON" -c "import sys; from awm_lib.pretrain.loop import PretrainConfig, load_bank; \
load_bank(PretrainConfig(mias_half='pretrain', long_side=96, max_images=4, progress=False)).save(sys.argv[1])" "$CARRY/$BANK_NAME" \
    || { echo "gpu_run: error: could not build the dry run's tissue bank (is mini-MIAS at ../shared/data/mini-mias?)"; exit 2; }
else
  [ -d "$CARRY" ] || { echo "gpu_run: error: $CARRY is missing: run scripts/gpu_prepare.sh here and name it in carry"; exit 2; }
  "$PYTHON" -m awm_lib.bench.gpu_run check-carry "$CARRY" --no-tree || exit 2
  if ls "$CARRY"/whl/*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$CARRY"/whl/*.whl \
      || echo "gpu_run: WARNING: installing the carried wheels failed: bench-data and chapter2 may fail"
    export PYTHONPATH=/tmp/site:$ROOT
  else
    echo "gpu_run: WARNING: no wheels in $CARRY/whl: no pydicom (bench-data) and no papermill (chapter2)"
    export PYTHONPATH=$ROOT
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
COMMIT=$(cat "$CARRY/commit.txt" 2>/dev/null || git rev-parse HEAD 2>/dev/null || echo "")
INFO=$("$PYTHON" -c "import json; from awm_lib.io_utils import run_record as r; x = r(device=None if '$DRY' != '1' else 'cpu'); print(json.dumps([x['device'], x['versions']]))") \
  || { echo "gpu_run: error: python cannot import awm_lib (PYTHON=$PYTHON)"; exit 2; }
DEVICE=$(echo "$INFO" | "$PYTHON" -c "import json, sys; print(json.load(sys.stdin)[0])")
VERSIONS=$(echo "$INFO" | "$PYTHON" -c "import json, sys; print(json.dumps(json.load(sys.stdin)[1]))")
RUN_CMD="$([ "$DRY" = 1 ] && echo "GPU_DRY=1 ")bash scripts/gpu_run.sh"
"$PYTHON" -m awm_lib.bench.gpu_run init "$OUT" --dry "$DRY" --budget "$BUDGET" --device "$DEVICE" \
  --command "$RUN_CMD" --commit "$COMMIT" --steps "$STEPS" --versions "$VERSIONS" || exit 2
echo "== device: $DEVICE; $(left) s left after setup"

bench_to_out() { [ -f "$WORK/bench.json" ] && cp "$WORK/bench.json" "$OUT/bench.json"; }

# --- a. the benchmark, model only --------------------------------------------------------------------
if want bench-model; then
  t=$(min "$MODEL_MAX" "$(( $(left) - 10 ))")
  if [ "$t" -lt 15 ]; then record bench-model skipped 0 - "" "only $(left) s of the budget left"
  else
    run_step bench-model "$t" "$PYTHON" -m awm_lib bench $DEVICE_FLAG --no-progress \
      --config full-518 --config full-1036 --config full-2072 --config full-3514 \
      --config paper-b1 --config paper --config default-b1 --config default --out "$WORK/bench.json"
    bench_to_out
    record bench-model "$STEP_STATUS" "$STEP_S" "$STEP_RC" "$STEP_CMD" "rows are written after each configuration"
  fi
fi

# --- a. the benchmark, data: the reference implementation's way and ours, end to end ----------------------
if want bench-data; then
  t=$(min "$DATA_MAX" "$(( $(left) - 10 ))")
  if [ "$t" -lt 15 ]; then record bench-data skipped 0 - "" "only $(left) s of the budget left"
  else
    run_step bench-data "$t" "$PYTHON" -m awm_lib bench $DEVICE_FLAG --no-progress \
      --config reference --config paper-e2e --data-root "$WORK/bench-data" --out "$WORK/bench.json"
    bench_to_out
    record bench-data "$STEP_STATUS" "$STEP_S" "$STEP_RC" "$STEP_CMD" "$DATA_NOTE"
  fi
fi

# --- b. self-supervised pretraining ------------------------------------------------------------------------
if want pretrain; then
  t=$(min "$PRETRAIN_MAX" "$(( $(left) - 5 ))")
  if [ "$DRY" = 1 ]; then
    PRE_ARGS=(--set hidden_size=32 --set depth=1 --set heads=2 --set image_size=28 --set global_size=28
              --set local_size=14 --set n_local=2 --set out_dim=64 --set ibot_out_dim=64 --set head_hidden=64
              --set head_bottleneck=32 --set batch_size=4 --set max_steps=3 --set time_limit_minutes=none
              --set bf16=false --set log_every=1 --set n_synthetic=2 --set workers=1)
    minutes=0
  else
    minutes=$("$PYTHON" -c "print(round(max(0.0, ($t - $PRETRAIN_OVERHEAD) / 60), 2))")
    PRE_ARGS=(--time-limit-minutes "$minutes" --set n_synthetic=480 --set workers=14 --set checkpoint_every_minutes=1000)
  fi
  if [ "$DRY" != 1 ] && [ "$(( t - PRETRAIN_OVERHEAD ))" -lt 60 ] || [ "$t" -lt 15 ]; then
    record pretrain skipped 0 - "" "only $(left) s of the budget left: less than one minute of training"
  else
    run_step pretrain "$t" "$PYTHON" -m awm_lib pretrain --out "$WORK/awm-dino-gpu" --preset gpu-20min --no-progress \
      --set bank_path="$CARRY/$BANK_NAME" --set mias_half=pretrain "${PRE_ARGS[@]}"
    note="training minutes: $minutes"
    if [ "$STEP_STATUS" = ok ]; then
      "$PYTHON" -m awm_lib.bench.gpu_run pack "$WORK/awm-dino-gpu" "$OUT" awm-dino-gpu \
        || { STEP_STATUS=failed; note="$note; packing failed (see the log)"; }
    fi
    record pretrain "$STEP_STATUS" "$STEP_S" "$STEP_RC" "$STEP_CMD" "$note"
  fi
fi

# --- c. chapter 2 with the GPU profile, with the rows just measured --------------------------------------------
if want chapter2; then
  t=$(min "$CH2_MAX" "$(( $(left) - 3 ))")
  if [ "$t" -lt "$CH2_MIN_S" ]; then
    record chapter2 skipped 0 - "" "skipped: only $(left) s of the budget left (needs $CH2_MIN_S s)"
    echo "== chapter2: skipped, only $(left) s left"
  else
    cp results/bench.json "$WORK/bench-merged.json" 2>/dev/null || true
    [ -f "$WORK/bench.json" ] && "$PYTHON" -m awm_lib.bench.gpu_run merge-bench "$WORK/bench.json" "$WORK/bench-merged.json"
    run_step chapter2 "$t" "$PYTHON" scripts/execute_notebook.py notebooks/02_tokenization_cost.ipynb "$WORK/ch02-gpu.ipynb" \
      --profile gpu --param "bench_path=$WORK/bench-merged.json"
    [ -f "$WORK/ch02-gpu.ipynb" ] && cp "$WORK/ch02-gpu.ipynb" "$OUT/ch02-gpu.ipynb"
    record chapter2 "$STEP_STATUS" "$STEP_S" "$STEP_RC" "$STEP_CMD" "bench_path: results/bench.json merged with this run's rows"
  fi
fi

echo "== gpu_run: done in $(( $(date +%s) - T0 )) s; in $OUT:"
ls -l "$OUT"
"$PYTHON" -m awm_lib.bench.gpu_run summary "$OUT"
rc=$?
exec 1>&- 2>&-
wait "$TEE_PID" 2>/dev/null
exit $rc
