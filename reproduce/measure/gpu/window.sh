#!/bin/bash
# One GPU window on one H100/H200, under 9 minutes (reproduce/measure/gpu/README.md says how to run it). The
# medium plan (default), by elapsed seconds:
#   1. environment (~40 s): the wheels carried in .whl/ if the image lacks jsonargparse or datasets;
#   2. the CUDA tests that check graph-mode numbers, the batched step's included (~30 s, stop at the first
#      failure): if they fail, the runs train with model.step_impl=fused instead of graph;
#   3. the probe (~60 s, reproduce/measure/gpu/probe.py): the batched step time with 1, 4 and 7 members and the
#      packed step time with 1, 4 and 8 runs, in fp32 and TF32, and the floor; then the plan: how many runs of
#      the list finish by DEADLINE (WINDOW_TRAIN_S: the training seconds the whole lent period may give),
#      batched or packed, whichever fits more;
#   4. that many medium runs, in this order: L0 lambda 1, ISS lambda 1, L0 lambda 2, ISS lambda 2,
#      structured magnitude, direct design (the last two at sizes fixed in their configs, so no run waits
#      for another), then the TF32 controls (dense and L0 in TF32, seeds 1 and 2; medium dense fp32 is
#      recorded), less what is recorded: as ONE batched model (reproduce/run/train_batched.py; the TF32
#      controls are a second precision group of the same step) or packed in one process. The batched job
#      checkpoints on this machine's disk (every WINDOW_CKPT_STEPS steps and at DEADLINE's SIGTERM): the same
#      command, called again while the machine is warm, skips 2 and 3 and resumes it;
#   5. the finished exports timed on the GPU and on the machine's CPU; the step bench only in what is
#      left before END; everything packed into at most 8 files of at most 16 MiB under $OUT.
# WINDOW_PLAN=large: the large runs (dense, L0, then ISS if the probe says they fit), the same way.
# WINDOW_PLAN=small instead runs issue 12's whole small comparison (every run of the small
# profile, side by side, step_impl=graph), times each export on the machine's CPU (one thread) and
# packs the run records: see reproduce/measure/gpu/README.md.
# Dry run, on a CPU machine, in minutes: WINDOW_DRY_RUN=1 bash reproduce/measure/gpu/window.sh
# (tiny sizes, step_impl=graph falling back to the eager fused step, the probe on a tiny model).
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
  DEADLINE=${WINDOW_DEADLINE_S:-400}; END=${WINDOW_END_S:-470}
  TEST_S=90; PROBE_S=150; NICE=${WINDOW_NICE-nice -n 19}  # WINDOW_NICE= : not niced (a busy machine starves nice 19)
  PROBE=(--rounds 2 --counts 1,2 --batched 1,2); STEPS_PER_RUN=16  # two epochs of 8 windows
  export OMP_NUM_THREADS=1
  # magnitude's targets and schedule shrunk too (every method takes them; only magnitude uses them)
  SHRINK=(--data.train_tokens=6000 --data.eval_tokens=4000 --model.embedding_dim=16 "--model.hidden_sizes=[16,16]"
          --trainer.max_epochs=2 --data.test_batch_size=20 "--model.target_neurons=[8,8]"
          --model.prune_begin_step=2 --model.prune_end_step=12 --model.prune_every=2)
  BENCH=(--steps --quick --methods dense,l0)
else
  PY=${PYTHON:-python3}
  # 9 min = 540 s: setup ~40, graph tests ~30, probe ~40, trainings to DEADLINE, SIGTERM <= 30,
  # speed <= 40, bench in what is left before END, pack
  DEADLINE=${WINDOW_DEADLINE_S:-460}; END=${WINDOW_END_S:-530}
  TEST_S=60; PROBE_S=80; NICE=""
  PROBE=(); STEPS_PER_RUN=0  # 0: the plan's default (39 epochs x 1327 steps; large: 55 x 1327)
  export OMP_NUM_THREADS=2  # 16 cores, up to 8 processes
  SHRINK=()
  BENCH=(--steps --sizes medium,large)
fi
say "window: plan=${WINDOW_PLAN:-medium} dry=$DRY deadline=${DEADLINE}s end=${END}s python=$PY out=$OUT runs=$R"

# ---- 1. environment -------------------------------------------------------------------------------
if ! $PY -c "import jsonargparse" 2>/dev/null; then
  if ! ls .whl/*.whl > /dev/null 2>&1; then
    say "jsonargparse missing and no wheels in .whl/ (see reproduce/measure/gpu/README.md)"; exit 3
  fi
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >> "$LOG" 2>&1 || { say "wheel install failed"; exit 3; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
{ command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  echo "cpu cores: $(nproc --all)"
  $PY -c "import torch, lightning, torchmetrics, jsonargparse; print('torch', torch.__version__, 'cuda',
torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), 'lightning', lightning.__version__, 'torchmetrics',
torchmetrics.__version__, 'jsonargparse', jsonargparse.__version__,
'gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"
  git log -1 --format='commit %H %s' 2>/dev/null; git status --short 2>/dev/null | head -20; } >> "$LOG" 2>&1
$PY -m reproduce.train --config reproduce/configs/ptb_medium_l0.yaml --model.step_impl=graph --print_config \
  > /dev/null 2>> "$LOG" || { say "the training CLI does not start"; exit 4; }

# The small plan's separate processes: MPS would let their kernels share the GPU at once instead of in
# time slices; used only if a CUDA client works under it (never seen on the lent H200). The medium and
# large plans need no MPS: their runs are packed in one process.
MPS=0
if [ "$DRY" != 1 ] && [ "${WINDOW_PLAN:-medium}" = small ] && [ "${WINDOW_MPS:-1}" = 1 ] && command -v nvidia-cuda-mps-control > /dev/null; then
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
  N_SMALL=$($PY -c "from reproduce.orchestrate.profiles import PROFILES; print(len(PROFILES['ptb']['small'].runs))")
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

done_ok() { [ -f "$R/$1/result.json" ]; }

pack() {  # what must come back, repacked whenever called (a window cut short keeps the last pack)
  local files
  files=$(cd "$R" && ls -d "${KIND}"_* 2>/dev/null | grep -v '\.log$')
  if [ -n "$files" ]; then
    tar czf "$OUT/runs_$KIND.tgz" -C "$R" "${TAR_EXCLUDE[@]}" $files 2>/dev/null
    if [ "$(stat -c %s "$OUT/runs_$KIND.tgz")" -gt 16000000 ]; then  # the gate histories are the bulk
      tar czf "$OUT/runs_$KIND.tgz" -C "$R" "${TAR_EXCLUDE[@]}" --exclude=gate_history.jsonl $files 2>/dev/null
    fi
  fi
  # the trainer's log (batched or packed): every run's lines; its tail if it would pass the limit
  [ -f "$R/train.log" ] && tail -c 15000000 "$R/train.log" > "$OUT/train.log"
  cp -f "$R/probe.json" "$R/speed.log" "$OUT/" 2>/dev/null
  return 0
}

# ---- 2. the CUDA tests that check graph-mode numbers ------------------------------------------------
KIND=${WINDOW_PLAN:-medium}
JOB=$R/batched_$KIND  # the batched job's file and member list: a later call of the same lent period resumes it
IMPL=$(cat "$JOB/step_impl" 2>/dev/null || echo graph)
if [ ! -f "$JOB/members.tsv" ]; then  # a resumed job was checked and probed by the call that started it
  timeout "$TEST_S" $NICE $PY -m pytest tests/test_cuda.py -m "not slow" -x -q -p no:cacheprovider \
    -k "graph_step_captures or stale" > "$OUT/pytest_cuda.txt" 2>&1
  rc=$?
  say "graph tests rc=$rc: $(tail -1 "$OUT/pytest_cuda.txt")"
  if [ $rc != 0 ] && [ "$DRY" != 1 ]; then IMPL=fused; say "graph-mode numbers unchecked or wrong: the runs train with step_impl=fused"; fi

# ---- 3. the probe and the plan ----------------------------------------------------------------------
  timeout "$PROBE_S" $NICE $PY reproduce/measure/gpu/probe.py probe --scale "$([ "$KIND" = large ] && echo large || echo medium)" --out "$R/probe.json" "${PROBE[@]}" > "$R/probe.log" 2>&1
  say "probe rc=$?"
  grep -E "packed|batched" "$R/probe.log" >> "$LOG"
fi
# the runs, in the paper profile's order (reproduce/profiles/ptb.yaml: each experiment defined once):
# medium: dense, L0 lambda 1, ISS lambda 1, L0 lambda 2, ISS lambda 2, magnitude, direct, then the TF32
# controls (dense and L0 in TF32, seeds 1 and 2); large: dense, L0, ISS (its fine-tuning and direct design
# wait for other runs: not in a window). A run whose record is committed (an earlier window finished it)
# is not trained again, so each window takes the next runs of the order; the dry run (a check of the
# whole schedule) and WINDOW_RERUN=1 take them all.
RECORDS=reproduce/measured/ptb_$KIND
NAMES=(); CONFIGS=(); OVERRIDES=(); PRECS=()
if [ -f "$JOB/members.tsv" ]; then
  LIST="$JOB/members.tsv"; say "a batched job of an earlier call is here: it resumes ($JOB)"
else
  LIST=$(mktemp); $PY -m reproduce.orchestrate.gpu_window "$KIND" --records "$RECORDS" \
    $([ "$DRY" = 1 ] || [ "${WINDOW_RERUN:-0}" = 1 ] && echo --rerun) > "$LIST" 2>> "$LOG"
fi
while IFS=$'\t' read -r name config precision overrides; do
  NAMES+=("$name"); CONFIGS+=("$config"); OVERRIDES+=("$overrides"); PRECS+=("$precision")
done < "$LIST"
[ ${#NAMES[@]} = 0 ] && { say "every run of this plan is recorded in $RECORDS (WINDOW_RERUN=1 trains them again)"; pack; exit 0; }
if [ "$KIND" = large ]; then
  NAMES=("${NAMES[@]:0:3}"); EPOCHS=55
else
  EPOCHS=39
fi
say "runs of the paper profile for this plan: ${NAMES[*]}"
if [ -f "$JOB/members.tsv" ]; then
  RUNS=${#NAMES[@]}; MODE=batched; PLAN="resumed"
else
  PLAN=$($PY reproduce/measure/gpu/probe.py plan "$R/probe.json" --seconds ${WINDOW_TRAIN_S:-$(( DEADLINE - $(el) ))} \
    --precisions "$(IFS=,; echo "${PRECS[*]:0:${#NAMES[@]}}")" --epochs $EPOCHS \
    --steps-per-run $(( STEPS_PER_RUN > 0 ? STEPS_PER_RUN : EPOCHS * 1327 )) 2>> "$LOG")
  eval "$PLAN"  # RUNS=, MODE=, PREDICTED_S=
  if [ -z "${RUNS:-}" ]; then RUNS=4; MODE=batched; say "no plan (probe failed): 4 runs batched"; fi
  [ "$KIND" = large ] && [ "$RUNS" -lt 2 ] && { RUNS=2; say "large: dense and L0 start anyway; they stop at the deadline, not finished"; }
  [ "$RUNS" -lt 1 ] && RUNS=1
  if [ "$MODE" = batched ]; then mkdir -p "$JOB"; head -n "$RUNS" "$LIST" > "$JOB/members.tsv"; echo "$IMPL" > "$JOB/step_impl"; fi
fi
say "plan: $PLAN -> $RUNS runs $MODE, step_impl=$IMPL, precisions ${PRECS[*]:0:$RUNS}"

# ---- 4. the runs: one batched model (reproduce/run/train_batched.py), or packed in one process ------
RUN_ARGS=()
for (( k = 0; k < RUNS; k++ )); do
  RUN_ARGS+=("$([ "$MODE" = batched ] && echo --member || echo --run)" "--config reproduce/configs/${CONFIGS[$k]} --run_dir $R/${NAMES[$k]} --profile paper --wandb disabled
 --model.step_impl=$IMPL --checkpoint_every_n_steps=0 --checkpoint_every_epoch=false --trainer.enable_progress_bar=false
 ${SHRINK[*]} ${OVERRIDES[$k]}")
  say "run $((k + 1)): ${NAMES[$k]}: ${CONFIGS[$k]} ${OVERRIDES[$k]} (${PRECS[$k]})"
done
if [ "$MODE" = batched ]; then
  # checkpoints stay on this machine's disk: a later call of the same lent period resumes from them
  $NICE $PY -m reproduce.run.train_batched --step_impl "$IMPL" --job_dir "$JOB" \
    --checkpoint_every_n_steps ${WINDOW_CKPT_STEPS:-5000} "${RUN_ARGS[@]}" > "$R/train.log" 2>&1 &
else
  $NICE $PY -m reproduce.run.train_packed --precision "${PRECS[0]}" "${RUN_ARGS[@]}" > "$R/train.log" 2>&1 &
fi
TRAINER=$!
last_sample=0; last_pack=$(el)
while kill -0 $TRAINER 2>/dev/null && [ "$(el)" -lt "$DEADLINE" ]; do
  if [ $(( $(el) - last_sample )) -ge 30 ] && command -v nvidia-smi > /dev/null; then
    echo "$(el),$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits | head -1)" \
      >> "$OUT/gpu_samples.csv"
    last_sample=$(el)
  fi
  if [ $(( $(el) - last_pack )) -ge 60 ]; then pack; last_pack=$(el); fi
  sleep 2
done
if kill -0 $TRAINER 2>/dev/null; then
  say "deadline: SIGTERM to the $MODE trainer (every run checkpoints at its next step's end)"
  kill -TERM $TRAINER
  for _ in $(seq 30); do kill -0 $TRAINER 2>/dev/null || break; sleep 1; done
  kill -0 $TRAINER 2>/dev/null && { kill -KILL $TRAINER; say "SIGKILL (no stop in 30 s)"; }
fi
wait $TRAINER 2>/dev/null
say "$MODE trainer rc=$?"
grep -E "^\[(packed|batched)|^error" "$R/train.log" >> "$LOG"
[ "$MODE" = batched ] && [ -f "$JOB/batched_job.json" ] && say "batched job at $(cat "$JOB/batched_job.json" | head -c 200)"
for (( k = 0; k < RUNS; k++ )); do
  n=${NAMES[$k]}
  if done_ok "$n"; then
    state="finished: $($PY -c "import json,sys; r=json.load(open(sys.argv[1])); print('val_ppl %.2f test_ppl %.2f kept %s epochs %s train %ss' % (r['metrics']['val_ppl'], r['metrics']['test_ppl'], r['neurons_kept']['hidden'], r['epochs'], r['wall_time_s']['train']))" "$R/$n/result.json")"
  else
    state="NOT FINISHED: epochs logged $(grep -c 'val_ppl' "$R/$n/metrics.csv" 2>/dev/null)"
  fi
  say "$n $state"
done
pack

# ---- 5. speed of the finished exports (GPU and this machine's CPU), then the bench if time is left ---
EXPORTS=$(finished_exports "$R/${KIND}"_*/export)
if [ -n "$EXPORTS" ]; then
  if [ "$DRY" = 1 ]; then DEVICES=(cpu); else DEVICES=(cuda cpu); fi
  timeout 60 $NICE $PY -m reproduce speed --export $EXPORTS --devices "${DEVICES[@]}" --backends torch --threads 1 \
    --quick > "$R/speed.log" 2>&1
  say "speed of the finished exports (${DEVICES[*]}) rc=$?"
fi
LEFT=$(( END - $(el) ))
if [ "$LEFT" -gt 30 ]; then
  timeout "$LEFT" $NICE $PY -m reproduce bench --steps --quick --sizes "$([ "$KIND" = large ] && echo large || echo medium)" \
    --out "$OUT/bench_steps.json" > "$R/bench.log" 2>&1
  say "bench in the ${LEFT}s left rc=$?"
  grep -A20 '^Training step' "$R/bench.log" >> "$LOG"
fi
pack
say "done; back in \$OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
