#!/bin/bash
# One device session: CUDA tests, paper-scale medium PTB runs (dense + L0), GPU speed.
set -u
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled JSONARGPARSE_DEPRECATION_WARNINGS=off
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
R=res; mkdir -p $R
LOG=$OUT/log.txt
pack() { tar czf $OUT/res.tgz --exclude='*.ckpt' --exclude='*.safetensors' --exclude='*.onnx' $R 2>/dev/null; }
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc;
  python3 -c "import torch,lightning,torchmetrics,jsonargparse,datasets,pyarrow;print('datasets',datasets.__version__,'pyarrow',pyarrow.__version__,'torch',torch.__version__,'lightning',lightning.__version__,'cudnn',torch.backends.cudnn.version(),torch.cuda.get_device_name(0))"; } >> $LOG 2>&1
python3 -c "import datasets" 2>> $LOG || exit 5
python3 -m reproduce.train --config reproduce/configs/ptb_medium_l0.yaml --print_config > /dev/null 2>> $LOG || { echo "CLI broken" >> $LOG; exit 4; }
# the long pole first: both medium runs side by side, stopped (SIGTERM: checkpoint, exit 143) at the deadline
for m in dense l0; do
  timeout -s TERM ${TRAIN_S:-470} python3 -m reproduce.train --config reproduce/configs/ptb_medium_$m.yaml \
    --run_dir $R/medium_$m --profile paper --wandb disabled > $R/medium_$m.log 2>&1 &
done
echo "[$(el)s] trainings started" >> $LOG
timeout 300 python3 -m pytest tests/test_cuda.py -rA -s -p no:cacheprovider -q > $R/pytest_cuda.txt 2>&1; rc=$?
echo "[$(el)s] pytest rc=$rc $(tail -1 $R/pytest_cuda.txt)" >> $LOG
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv >> $LOG 2>&1; pack
wait
echo "[$(el)s] trainings ended" >> $LOG
for m in dense l0; do echo "== $m"; tail -c 1500 $R/medium_$m.log; ls $R/medium_$m; done >> $LOG 2>&1; pack
# speed on an otherwise idle GPU: the paper's large sizes, then the medium L0 export if it finished
timeout 45 python3 -m reproduce speed --sizes 1500,1500 373,315 --devices cuda --backends torch --out $R/speed_sizes_cuda.json >> $LOG 2>&1; rc=$?
echo "[$(el)s] speed sizes rc=$rc" >> $LOG; pack
if [ -f $R/medium_l0/result.json ]; then
  timeout 45 python3 -m reproduce speed --export $R/medium_l0/export --devices cuda --backends torch >> $LOG 2>&1; rc=$?
  echo "[$(el)s] speed export rc=$rc" >> $LOG
fi
pack; echo "[$(el)s] done" >> $LOG
