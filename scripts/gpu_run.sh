#!/usr/bin/env bash
# One GPU session for lordfx (docs/gpu.md): bench → train the paper preset `cars3d` scaled to
# the time left → eval → results in $OUT, written as they appear so a timeout still returns
# them. Run from anywhere; works in the repo root. Needs the carried folders:
#   .gpu/data/cars3d64.npz   lordfx export-data cars3d --data ../shared/data/cars3d --out ...
#   .gpu/*-fp16.safetensors[.xz]  lordfx export-weights --out .gpu (then xz -9 them)
#   .whl/                    ../shared/gpu/wheelhouse.sh .whl (+ the lordfx_trainer wheel)
#
# $OUT gets at most 8 files: log.txt, bench.json, summary.json, run-files.tar (config,
# metrics.jsonl, losses.png, last grids, eval figures), swap_grid.png, eval.json and the
# fp16 bundle as bundle-fp16.tar.part0/1 (join: cat bundle-fp16.tar.part* > b.tar).
#
# Environment (defaults for the GPU; the CPU dry run in docs/gpu.md shrinks them):
#   OUT                  results folder (required)
#   GPU_DEVICE=cuda      GPU_PRECISION=bf16   GPU_BATCH=256   GPU_BENCH_STEPS=10
#   GPU_DEADLINE_S=540   the whole script ends by then (the run tool's limit is 600 s)
#   GPU_EVAL_RESERVE_S=110  kept for eval + packing after training
#   GPU_TRAIN_OVERHEAD_S=30 start-up inside the training budget (data, VGG, cuDNN)
#   GPU_SAFETY=0.7       fraction of the benched rate the plan counts on (saves, grids)
#   GPU_EPOCHS="E1 E2"   skip the plan;  GPU_MAX_EPOCHS=200 (the preset's)
#   GPU_SET="k=v ..."    more `lordfx train --set` overrides (e.g. max_classes=4)
#   GPU_EVAL_PAIRS=2000  GPU_BENCH_AFTER="128" (benched at the end if time is left)
#   GPU_TIMEOUT_FACTOR=1 multiplies the fixed limits of check/bench/salvage/collect
#   GPU_DATA=.gpu/data   GPU_RUN_DIR=runs/gpu-TIME   PYTHON=python3
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${OUT:?set OUT to the folder the results go to}"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

DEVICE=${GPU_DEVICE:-cuda}
PRECISION=${GPU_PRECISION:-bf16}
BATCH=${GPU_BATCH:-256}
BENCH_STEPS=${GPU_BENCH_STEPS:-10}
DEADLINE=${GPU_DEADLINE_S:-540}
EVAL_RESERVE=${GPU_EVAL_RESERVE_S:-110}
TRAIN_OVERHEAD=${GPU_TRAIN_OVERHEAD_S:-30}
SAFETY=${GPU_SAFETY:-0.7}
EPOCHS=${GPU_EPOCHS:-}
MAX_EPOCHS=${GPU_MAX_EPOCHS:-200}
EVAL_PAIRS=${GPU_EVAL_PAIRS:-2000}
BENCH_AFTER=${GPU_BENCH_AFTER-128}  # empty: none
TF=${GPU_TIMEOUT_FACTOR:-1}  # scales the fixed step limits (a slow CPU dry run)
DATA=${GPU_DATA:-.gpu/data}
RUN=${GPU_RUN_DIR:-runs/gpu-$(date +%Y%m%d-%H%M%S)}
PY=${PYTHON:-python3}
PRESET=cars3d
export PYTHONUNBUFFERED=1

T0=$SECONDS
say() { echo "[gpu_run +$((SECONDS - T0))s] $*"; }
left() { echo $((DEADLINE - (SECONDS - T0))); }
helper() { "$PY" scripts/gpu_session.py "$@"; }

main() {
  say "start $(date -u +%FT%TZ) on $(hostname); OUT=$OUT RUN=$RUN device=$DEVICE"
  # -- install the carried wheels; the repo's own sources come first on the path, so the
  #    lordfx wheels only contribute their entry points (a stale wheel cannot run old code)
  if compgen -G ".whl/*.whl" >/dev/null; then
    rm -rf .site
    local pipi=("$PY" -m pip install -q --no-index --no-deps --disable-pip-version-check --target .site)
    if ! "${pipi[@]}" .whl/*.whl; then  # e.g. a cp312 wheel on another Python (CPU dry run)
      say "not every wheel installs on this Python: installing them one by one"
      local whl
      for whl in .whl/*.whl; do "${pipi[@]}" "$whl" || say "skipped $whl"; done
    fi
  fi
  local src="$PWD:$PWD/trainer"
  for d in plugins/*/; do src="$src:$PWD/${d%/}"; done
  export PYTHONPATH="$src:$PWD/.site${PYTHONPATH:+:$PYTHONPATH}"
  local name f
  for name in vgg16 alexnet; do  # carried as .safetensors or .safetensors.xz (smaller)
    f=.gpu/$name-features-fp16.safetensors
    if [ ! -f "$f" ] && [ -f "$f.xz" ]; then
      mkdir -p .site/weights
      "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$f.xz" ".site/weights/${f##*/}"
      f=.site/weights/${f##*/}
    fi
    if [ -f "$f" ]; then export "LORDFX_${name^^}_WEIGHTS=$PWD/$f"; fi
  done
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

  local sets=(--set dataset=npz --set "device=$DEVICE" --set "precision=$PRECISION"
              --set channels_last=true --set "batch_size=$BATCH")
  local kv
  for kv in ${GPU_SET:-}; do sets+=(--set "$kv"); done

  say "check: imports, device, weights, LPIPS, data and split"
  timeout $((180 * TF)) "$PY" scripts/gpu_session.py check --out "$OUT" --data "$DATA" --preset "$PRESET" "${sets[@]}"

  say "bench: $PRESET batch $BATCH $PRECISION channels_last, $BENCH_STEPS steps"
  if timeout $((150 * TF)) "$PY" scripts/gpu_session.py lordfx bench "$PRESET" --device "$DEVICE" \
      --precision "$PRECISION" --channels-last --batch-size "$BATCH" --steps "$BENCH_STEPS" \
      --json >"$OUT/.bench.json.tmp"; then
    mv "$OUT/.bench.json.tmp" "$OUT/bench.json"
    cat "$OUT/bench.json"
  else
    say "bench failed (rc $?): the plan falls back"
    rm -f "$OUT/.bench.json.tmp"
  fi

  local train_s=$(( $(left) - EVAL_RESERVE ))
  [ "$train_s" -ge 60 ] || train_s=60  # (timeout 0 would mean no limit at all)
  local e1 e2
  read -r e1 e2 < <(helper plan --out "$OUT" --budget $((train_s - TRAIN_OVERHEAD)) \
      --safety "$SAFETY" --max-epochs "$MAX_EPOCHS" --epochs "$EPOCHS" | tail -n 1)
  say "train: $e1 + $e2 epochs, hard limit ${train_s}s"
  ( while sleep 20; do helper collect "$RUN" --out "$OUT" || true; done ) >/dev/null 2>&1 &
  local progress=$!
  local train_rc=0
  timeout --kill-after=10 "$train_s" "$PY" scripts/gpu_session.py lordfx train "$PRESET" \
      --data "$DATA" --out "$RUN" "${sets[@]}" \
      --set "latent_epochs=$e1" --set "amortized_epochs=$e2" || train_rc=$?
  kill "$progress" 2>/dev/null || true
  wait "$progress" 2>/dev/null || true
  say "train ended rc=$train_rc (124: hit its time limit)"
  if [ "$train_rc" -ne 0 ] && [ -d "$RUN" ]; then
    timeout $((60 * TF)) "$PY" scripts/gpu_session.py salvage "$RUN" --out "$OUT" || say "salvage failed"
  fi
  helper collect "$RUN" --out "$OUT" || true

  local eval_rc=0
  if [ -d "$RUN/bundle" ]; then
    local eval_s=$(( $(left) - 40 ))
    [ "$eval_s" -ge 30 ] || eval_s=30
    say "eval: $EVAL_PAIRS held-out pairs, limit ${eval_s}s"
    timeout --kill-after=10 "$eval_s" "$PY" scripts/gpu_session.py lordfx eval "$RUN" \
        --device "$DEVICE" --pairs "$EVAL_PAIRS" || eval_rc=$?
  else
    eval_rc=-1
    say "eval skipped: no bundle"
  fi
  say "collect: eval.json, fp16 bundle, timing"
  timeout $((60 * TF)) "$PY" scripts/gpu_session.py collect "$RUN" --out "$OUT" --final \
      --train-rc "$train_rc" --eval-rc "$eval_rc" || say "final collect failed"

  local b
  for b in $BENCH_AFTER; do
    if [ "$(left)" -gt 45 ]; then
      say "bench at batch $b (time left $(left)s)"
      timeout $(( $(left) - 15 )) "$PY" scripts/gpu_session.py lordfx bench "$PRESET" \
          --device "$DEVICE" --precision "$PRECISION" --channels-last --batch-size "$b" \
          --steps "$BENCH_STEPS" --json >"$RUN/bench-b$b.json" &&
        "$PY" - "$OUT" "$RUN/bench-b$b.json" "$b" <<'EOF' || true
import json, sys
from pathlib import Path
sys.path.insert(0, "scripts")
from gpu_session import read_summary, update_summary
out, path, b = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
after = read_summary(out).get("bench_after", {})
bench = json.loads(path.read_text())
n = read_summary(out)["check"]["data"]["n_train_preset"]
r1, r2 = bench["latent_images_per_s"], bench["amortized_images_per_s"]
bench["full_preset_200_200_minutes"] = round((200 * n / r1 + 200 * n / r2) / 60, 1)
after[f"batch{b}"] = bench
update_summary(out, "bench_after", after)
print(f"gpu_session: FULL PRESET (200+200 epochs) at batch {b}, bench rate: "
      f"{bench['full_preset_200_200_minutes']} min")
EOF
    fi
  done
  say "done in $((SECONDS - T0))s; train rc $train_rc, eval rc $eval_rc"
  ls -la "$OUT"
}

main 2>&1 | tee -a "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
