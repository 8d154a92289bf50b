#!/bin/bash
# Defaults screen (issue 13): every grid of results/defaults/spaces on both real sets, validation only.
cd "$(dirname "$0")/../.."
export RECPLUG_DATA_MIRROR=${RECPLUG_DATA_MIRROR:-../shared/data} OMP_NUM_THREADS=1
for bundle in vbpr lightgcn mf; do
  trials=$(.venv/bin/python -c "import yaml,math;p=yaml.safe_load(open('results/defaults/spaces/$bundle.yaml'))['params'];print(math.prod(len(v['choices']) for v in p.values()))")
  for dataset in amazon_office tiktok; do
    .venv/bin/recplug tune --space results/defaults/spaces/$bundle.yaml --trials "$trials" --pruner none \
      --study results/defaults/$dataset/$bundle --no-plot -- --data.path $dataset
  done
done
