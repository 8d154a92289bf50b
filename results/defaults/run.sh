#!/bin/bash
# Defaults screen (issue 13): every grid of results/defaults/spaces on both real sets, validation only.
# SPACES="mgcn" DATASETS="tiktok" limit it; rerunning resumes (each study is a recplug tune study, in
# results/defaults/<dataset>/<space>).
cd "$(dirname "$0")/../.."
export RECPLUG_DATA_MIRROR=${RECPLUG_DATA_MIRROR:-../shared/data} OMP_NUM_THREADS=1
# --trials: more than any screen's grid; recplug tune caps a grid study at its size (every point once).
for space in ${SPACES:-vbpr lightgcn mf mgcn lightgcn_layers mf_wide}; do
  for dataset in ${DATASETS:-amazon_office tiktok}; do
    .venv/bin/recplug tune --space results/defaults/spaces/$space.yaml --trials 1000 --pruner none \
      --study results/defaults/$dataset/$space --no-plot -- --data.path $dataset
  done
done
