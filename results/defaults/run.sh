#!/bin/bash
# Defaults screen (issue 13): every grid of results/defaults/spaces on both real sets, validation only.
# SPACES="mgcn" DATASETS="tiktok" limit it; SEEDS="0 1 2" scores every point on those training seeds (default 0).
# Rerunning resumes: each (space, set, seed) is a recplug tune study, in results/defaults/<dataset>/<space> for
# seed 0 and results/defaults/<dataset>/<space>_seed<N> for another seed.
cd "$(dirname "$0")/../.."
export RECPLUG_DATA_MIRROR=${RECPLUG_DATA_MIRROR:-../shared/data} OMP_NUM_THREADS=1
# The default list is the seed-0 screens; the 3-seed one: SPACES=lightgcn_l2 SEEDS="0 1 2" bash results/defaults/run.sh
# --trials: more than any screen's grid; recplug tune caps a grid study at its size (every point once).
for space in ${SPACES:-vbpr lightgcn mf mgcn lightgcn_layers mf_wide}; do
  for dataset in ${DATASETS:-amazon_office tiktok}; do
    for seed in ${SEEDS:-0}; do
      study=results/defaults/$dataset/$space$([ "$seed" = 0 ] || echo "_seed$seed")
      .venv/bin/recplug tune --space results/defaults/spaces/$space.yaml --trials 1000 --pruner none \
        --study "$study" --no-plot -- --data.path $dataset $([ "$seed" = 0 ] || echo "--seed_everything $seed")
    done
  done
done
