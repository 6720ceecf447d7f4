#!/bin/bash
# One GPU window on one H200, under 9 minutes (reproduce/gpu/README.md says how to run it):
#   1. the wheels carried in .whl/ if the image lacks jsonargparse or datasets;
#   2. the training-step bench on the idle GPU (python -m reproduce bench --steps: medium and
#      large, every method, step_impl eager vs fused vs graph, with the matmul/bandwidth floor);
#   3. the medium PTB comparison with --model.step_impl=graph, side by side on the one GPU:
#      dense, L0 at two lambdas, ISS, then the direct design at L0's sizes once L0 has finished;
#      tests/test_cuda.py runs beside them;
#   4. the large dense and L0 runs, once the medium ones are done or LARGE_AT is reached;
#   5. at DEADLINE every run still training gets SIGTERM (it checkpoints and exits 143: the same
#      command resumes it), the finished exports are timed, and what must come back is packed
#      into at most 8 files of at most 16 MiB under $OUT.
# WINDOW_PLAN=small instead runs issue 12's whole small comparison (every run of the small
# profile, side by side, step_impl=graph), times each export on the machine's CPU (one thread) and
# packs the run records: see reproduce/gpu/README.md.
# Dry run, on a CPU machine, in seconds: WINDOW_DRY_RUN=1 bash reproduce/gpu/window.sh
# (tiny sizes, the bench's --quick, step_impl=graph falling back to the eager fused step).
set -u
T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
DRY=${WINDOW_DRY_RUN:-0}
OUT=${OUT:-$(mktemp -d /tmp/window_out.XXXXXX)}
R=${WINDOW_RUNS:-results/window}  # run dirs; only their records come back (packed)
mkdir -p "$OUT" "$R"
LOG=$OUT/log.txt
say() { echo "[$(el)s] $*" | tee -a "$LOG" >&2; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled \
  JSONARGPARSE_DEPRECATION_WARNINGS=off CUBLAS_WORKSPACE_CONFIG=:4096:8

if [ "$DRY" = 1 ]; then
  # seconds, tiny models, the CPU: the same schedule and the same commands, shrunk
  PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
  DEADLINE=${WINDOW_DEADLINE_S:-170}; LARGE_AT=${WINDOW_LARGE_AT_S:-110}
  BENCH_S=60; TEST_S=90; NICE=${WINDOW_NICE-nice -n 19}  # WINDOW_NICE= : not niced (a busy machine starves nice 19)
  export OMP_NUM_THREADS=1
  SHRINK=(--data.train_tokens=6000 --model.embedding_dim=16 "--model.hidden_sizes=[16,16]"
          --trainer.max_epochs=2 --data.test_batch_size=20)
  BENCH=(--steps --quick --methods dense,l0)
else
  PY=${PYTHON:-python3}
  # 9 min = 540 s: setup ~40, bench <= 110, trainings to 450, SIGTERM <= 30, speed <= 40, pack
  DEADLINE=${WINDOW_DEADLINE_S:-450}; LARGE_AT=${WINDOW_LARGE_AT_S:-320}
  BENCH_S=110; TEST_S=300; NICE=""
  export OMP_NUM_THREADS=2  # 16 cores, up to 8 processes
  SHRINK=()
  BENCH=(--steps --sizes medium,large)
fi
say "window: dry=$DRY deadline=${DEADLINE}s large_at=${LARGE_AT}s python=$PY out=$OUT runs=$R"

# ---- 1. environment -------------------------------------------------------------------------------
if ! $PY -c "import jsonargparse, datasets" 2>/dev/null; then
  if ! ls .whl/*.whl > /dev/null 2>&1; then
    say "jsonargparse/datasets missing and no wheels in .whl/ (see reproduce/gpu/README.md)"; exit 3
  fi
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >> "$LOG" 2>&1 || { say "wheel install failed"; exit 3; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
{ command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "cpu cores: $(nproc --all)"
  $PY -c "import torch, lightning, torchmetrics, jsonargparse, datasets; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'lightning', lightning.__version__, 'torchmetrics',
torchmetrics.__version__, 'jsonargparse', jsonargparse.__version__, 'datasets', datasets.__version__,
'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
  git log -1 --format='commit %H %s' 2>/dev/null; git status --short 2>/dev/null | head -20; } >> "$LOG" 2>&1
$PY -m reproduce.train --config reproduce/configs/ptb_medium_l0.yaml --model.step_impl=graph --print_config \
  > /dev/null 2>> "$LOG" || { say "the training CLI does not start"; exit 4; }

# MPS lets the runs' kernels share the GPU at once instead of in time slices; used only if a CUDA
# client works under it (it may not in a sandboxed runtime), else the runs share the GPU without it
MPS=0
if [ "$DRY" != 1 ] && [ "${WINDOW_MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control > /dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  if nvidia-cuda-mps-control -d >> "$LOG" 2>&1 && \
     timeout 60 $PY -c "import torch; torch.ones(1, device='cuda').sum().item()" >> "$LOG" 2>&1; then
    MPS=1
  else
    echo quit | nvidia-cuda-mps-control > /dev/null 2>&1
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
  fi
fi
say "environment ready (MPS: $MPS)"

# what comes back of a run dir: no weights; and the exports whose run finished
TAR_EXCLUDE=(--exclude='*.ckpt' --exclude='*.safetensors' --exclude='*.onnx' --exclude='*.tmp')
finished_exports() { local e; for e in "$@"; do [ -f "$(dirname "$e")/result.json" ] && echo "$e"; done; }

# ---- the small plan: the small profile's runs in one window ------------------------------------------
if [ "${WINDOW_PLAN:-paper}" = small ]; then
  SMALL=$R/ptb/small
  if [ "$DRY" = 1 ]; then SMALL_END=${WINDOW_DEADLINE_S:-150}; SPEED_S=60; WORKERS=${WINDOW_WORKERS:-2}
  else SMALL_END=${WINDOW_DEADLINE_S:-380}; SPEED_S=120; WORKERS=${WINDOW_WORKERS:-8}; fi
  TRAIN_ARGS=(--train-arg=--wandb=disabled --train-arg=--model.step_impl=graph
              --train-arg=--trainer.enable_progress_bar=false)
  for a in "${SHRINK[@]}"; do TRAIN_ARGS+=("--train-arg=$a"); done
  N_SMALL=$($PY -c "from reproduce.profiles import PROFILES; print(len(PROFILES['ptb']['small'].runs))")
  say "small profile: $N_SMALL runs, $WORKERS side by side until ${SMALL_END}s"
  # SIGINT at the deadline: the runner stops its runs (each checkpoints) and exits; what finished stays
  timeout -s INT -k 40 $(( SMALL_END - $(el) )) $NICE $PY -m reproduce profile ptb --profile small \
    --results "$R" --workers "$WORKERS" --no-analyse "${TRAIN_ARGS[@]}" > "$R/profile.log" 2>&1
  say "profile rc=$? ($(ls "$SMALL"/*/result.json 2>/dev/null | wc -l) of $N_SMALL runs finished)"
  grep -E "started|finished|FAILED|not started" "$R/profile.log" >> "$LOG"
  EXPORTS=$(finished_exports "$SMALL"/*/export)
  if [ -n "$EXPORTS" ]; then  # the CPU, one thread: the setting of the CPU table; --quick for the time
    timeout "$SPEED_S" $NICE $PY -m reproduce speed --export $EXPORTS --backends torch --threads 1 --devices cpu \
      --quick > "$R/speed.log" 2>&1
    say "speed of the finished exports rc=$?"
    $PY -m reproduce table ptb --runs "$SMALL" >> "$R/speed.log" 2>&1
  fi
  cp -f "$R/speed.log" "$R/profile.log" "$OUT/" 2>/dev/null
  tar czf "$OUT/runs_small.tgz" -C "$SMALL" "${TAR_EXCLUDE[@]}" --exclude=wandb . 2>/dev/null
  [ "$MPS" = 1 ] && echo quit | nvidia-cuda-mps-control > /dev/null 2>&1
  say "done; back in \$OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
  exit 0
fi

pack() {  # what must come back, repacked whenever called (a window cut short keeps the last pack)
  local kind files
  for kind in medium large; do
    files=$(cd "$R" && ls -d ${kind}_* 2>/dev/null)
    [ -n "$files" ] || continue
    tar czf "$OUT/runs_$kind.tgz" -C "$R" "${TAR_EXCLUDE[@]}" $files 2>/dev/null
    if [ "$(stat -c %s "$OUT/runs_$kind.tgz")" -gt 16000000 ]; then  # the gate histories are the bulk
      tar czf "$OUT/runs_$kind.tgz" -C "$R" "${TAR_EXCLUDE[@]}" --exclude=gate_history.jsonl $files 2>/dev/null
    fi
  done
  cp -f "$R/bench.log" "$OUT/bench.log" 2>/dev/null
}

# ---- 2. the bench, on the idle GPU ------------------------------------------------------------------
say "bench: ${BENCH[*]}"
timeout "$BENCH_S" $NICE $PY -m reproduce bench "${BENCH[@]}" --out "$OUT/bench_steps.json" > "$R/bench.log" 2>&1
say "bench rc=$? ($(grep -c 'ms/step' "$R/bench.log") configs timed)"
grep -A40 '^Training step' "$R/bench.log" >> "$LOG"
pack

# ---- 3./4. the runs ----------------------------------------------------------------------------------
declare -A PID
start() {  # name config [overrides...]
  local name=$1 config=$2; shift 2
  $NICE $PY -m reproduce.train --config "reproduce/configs/$config" --run_dir "$R/$name" --profile paper \
    --wandb disabled --model.step_impl=graph --checkpoint_every_n_steps=0 --trainer.enable_progress_bar=false \
    "${SHRINK[@]}" "$@" > "$R/$name.log" 2>&1 &
  PID[$name]=$!
  say "started $name (pid ${PID[$name]}): $config $*"
}
alive() { [ -n "${PID[$1]:-}" ] && kill -0 "${PID[$1]}" 2>/dev/null; }
done_ok() { [ -f "$R/$1/result.json" ]; }

start medium_dense ptb_medium_dense.yaml
start medium_l0 ptb_medium_l0.yaml
start medium_l0_lambda1e-7 ptb_medium_l0.yaml --model.reg_lambda=1e-7
# ISS at medium scale: the medium config with iss-rnns' large lambda (7e-5 per token), untuned
start medium_iss ptb_medium_dense.yaml --model.method=group_lasso --model.reg_lambda=7e-5
( timeout "$TEST_S" $NICE $PY -m pytest tests/test_cuda.py -rA -q -p no:cacheprovider > "$OUT/pytest_cuda.txt" 2>&1
  echo "[$(el)s] tests/test_cuda.py rc=$? $(tail -1 "$OUT/pytest_cuda.txt")" >> "$LOG" ) &

FIRST_WAVE=(medium_dense medium_l0 medium_l0_lambda1e-7 medium_iss)
last_sample=0; last_pack=$(el)
while [ "$(el)" -lt "$DEADLINE" ]; do
  if [ -z "${PID[medium_direct]:-}" ] && done_ok medium_l0; then
    start medium_direct ptb_medium_dense.yaml "--model.sizes_from=$R/medium_l0/result.json"
  fi
  wave_running=0
  for n in "${FIRST_WAVE[@]}"; do alive "$n" && wave_running=1; done
  if [ -z "${PID[large_dense]:-}" ] && { [ $wave_running = 0 ] || [ "$(el)" -ge "$LARGE_AT" ]; }; then
    start large_dense ptb_large_dense.yaml
    start large_l0 ptb_large_l0.yaml
  fi
  any=0
  for n in "${!PID[@]}"; do alive "$n" && any=1; done
  [ $any = 0 ] && [ -n "${PID[large_dense]:-}" ] && break
  if [ $(( $(el) - last_sample )) -ge 30 ] && command -v nvidia-smi > /dev/null; then
    echo "$(el),$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits | head -1)" \
      >> "$OUT/gpu_samples.csv"
    last_sample=$(el)
  fi
  if [ $(( $(el) - last_pack )) -ge 60 ]; then pack; last_pack=$(el); fi
  sleep 2
done

# ---- 5. deadline: checkpoint and stop, time the finished exports, pack ------------------------------
for n in "${!PID[@]}"; do
  if alive "$n"; then kill -TERM "${PID[$n]}"; say "SIGTERM $n"; fi
done
for _ in $(seq 30); do
  any=0; for n in "${!PID[@]}"; do alive "$n" && any=1; done
  [ $any = 0 ] && break
  sleep 1
done
for n in "${!PID[@]}"; do alive "$n" && { kill -KILL "${PID[$n]}"; say "SIGKILL $n (no checkpoint in 30 s)"; }; done
wait 2>/dev/null  # the tests too (they have their own timeout)
for n in $(printf '%s\n' "${!PID[@]}" | sort); do
  if done_ok "$n"; then
    state="finished: $($PY -c "import json,sys; r=json.load(open(sys.argv[1])); print('val_ppl %.2f test_ppl %.2f kept %s epochs %s train %ss' % (r['metrics']['val_ppl'], r['metrics']['test_ppl'], r['neurons_kept']['hidden'], r['epochs'], r['wall_time_s']['train']))" "$R/$n/result.json")"
  else
    state="stopped: $(grep -o 'stopped by SIGTERM[^;]*' "$R/$n.log" | tail -1) epochs logged $(grep -c 'val_ppl' "$R/$n/metrics.csv" 2>/dev/null)"
  fi
  say "$n $state"
done
EXPORTS=$(finished_exports "$R"/medium_*/export)
if [ -n "$EXPORTS" ] && [ "$DRY" != 1 ]; then
  timeout 40 $PY -m reproduce speed --export $EXPORTS --devices cuda --backends torch --quick >> "$R/speed.log" 2>&1
  say "speed of the finished medium exports rc=$?"
elif [ -n "$EXPORTS" ]; then
  timeout 60 $NICE $PY -m reproduce speed --export $EXPORTS --backends torch --quick --batches 1 >> "$R/speed.log" 2>&1
  say "speed (dry run, CPU) rc=$?"
fi
cp -f "$R/speed.log" "$OUT/speed.log" 2>/dev/null
[ "$MPS" = 1 ] && echo quit | nvidia-cuda-mps-control > /dev/null 2>&1
pack
say "done; back in \$OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
