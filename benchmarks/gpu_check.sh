#!/usr/bin/env bash
# One command for a machine with a CUDA device: the CUDA tests and the GPU benchmarks, one table.
# At most 8 minutes (the Python driver plans for 7.5 and skips what no longer fits).
# Usage, from the repository root:  bash benchmarks/gpu_check.sh [--budget SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c "import torch, sknn_kernels" 2>/dev/null \
  || python -m pip install -q -e ".[test]"
exec timeout 480 python benchmarks/gpu_check.py "$@"
