#!/usr/bin/env bash
# The GPU check, run on a CUDA machine without Qt (the core is Qt-free): the CUDA tests, the core tests,
# and the live pipeline's throughput on CUDA. Results go to the folder given (default: results-gpu).
#   bash benchmarks/gpu_check.sh OUT_DIR [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results-gpu}; quick=${2:-}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
{ nvidia-smi -L 2>/dev/null; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"; } | tee "$out/machine.txt"
# 1. the CUDA tests
"$PY" -m pytest -p no:cacheprovider -q -m gpu tests/test_models.py tests/test_live_core.py 2>&1 | tee "$out/gpu_tests.txt"
# 2. the tests that need no Qt (files naming PySide6, qtbot or the GUI need a display stack this machine lacks;
#    the import-contract and packaging tests need the dev tools, which it lacks too)
core_tests=$(grep -L -E "PySide6|qtbot|explorer\.gui|explorer\.sources|pytestqt" tests/test_*.py | grep -v -E "test_architecture|test_packaging")
[ -n "$quick" ] && core_tests=$(echo "$core_tests" | head -3)
"$PY" -m pytest -p no:cacheprovider -q --timeout 300 $core_tests 2>&1 | tail -40 | tee "$out/core_tests.txt"
# 3. live throughput on CUDA, frames in memory
"$PY" benchmarks/gpu_live.py --out "$out/gpu_live.json" --device "${DEVICE:-cuda}" $quick 2>&1 | tee "$out/gpu_live.txt"
