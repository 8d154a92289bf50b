#!/bin/bash
# Defaults screen (issue 13): every grid of results/defaults/spaces on both real sets, validation only.
# SPACES="mgcn" DATASETS="tiktok" limit it; rerunning resumes (each study is a recplug tune study, in
# results/defaults/<dataset>/<space>).
cd "$(dirname "$0")/../.."
export RECPLUG_DATA_MIRROR=${RECPLUG_DATA_MIRROR:-../shared/data} OMP_NUM_THREADS=1
for space in ${SPACES:-vbpr lightgcn mf mgcn lightgcn_layers mf_wide}; do
  trials=$(.venv/bin/python -c "import yaml,math;p=yaml.safe_load(open('results/defaults/spaces/$space.yaml'))['params'];print(math.prod(len(v['choices']) for v in p.values()))")
  for dataset in ${DATASETS:-amazon_office tiktok}; do
    .venv/bin/recplug tune --space results/defaults/spaces/$space.yaml --trials "$trials" --pruner none \
      --study results/defaults/$dataset/$space --no-plot -- --data.path $dataset
  done
done
