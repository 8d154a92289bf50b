#!/usr/bin/env bash
# Set up recplug in ./.venv on a fresh machine.
#   bash scripts/setup.sh          # runtime only (what `recplug fit` needs)
#   bash scripts/setup.sh --dev    # + tests, the torch-sparse backend, reports/plots, offline text encoder, Optuna,
#                                  scipy + statsmodels (benchmark statistics), LitServe (recplug serve),
#                                  PyG (model.sampling's neighbour sampler)
# Installs the CPU build of torch when the machine has no CUDA GPU (a plain `pip install torch` would pull a
# multi-GB CUDA build), then recplug itself in editable mode. Idempotent: re-running is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
TORCH_VERSION=2.13.0
extras=""
[ "${1:-}" = "--dev" ] && extras="[test,report,text,tune,benchmark,serve,sampling]"

[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip setuptools wheel

if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    pip install "torch==${TORCH_VERSION}"
  else
    # a local/find-links CPU wheel if there is one, else PyTorch's CPU index
    pip install "torch==${TORCH_VERSION}+cpu" 2>/dev/null \
      || pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
  fi
fi
pip install -q -e ".${extras}"

if [ "${1:-}" = "--dev" ] && ! python -c "import torch_sparse" 2>/dev/null; then
  # torch-scatter/torch-sparse have no wheels for this torch: built from source against the installed torch
  # (about 17 minutes on 2 cores the first time; pip's wheel cache makes later installs instant).
  pip install --no-build-isolation "torch-scatter>=2.1" "torch-sparse>=0.6.17"
fi
python -c "import torch, recplug; print(f'recplug {recplug.__version__} with torch {torch.__version__} ready in .venv')"
