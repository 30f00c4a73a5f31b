#!/usr/bin/env bash
# Issue 9's device check as one run on a lent GPU machine: the suite on CUDA and the captured-step benchmark.
#
# The machine has torch, numpy, pandas, matplotlib, scipy, tqdm and pytest but no pyro and no internet, so
# prepare the wheels here first (the folder is git-ignored):
#     pip download pyro-ppl==1.9.2 pyro-api==0.1.2 opt-einsum --no-deps -d .whl
# then call the device tool's run with command "bash benchmarks/gpu_check.sh", carry [".whl"] and a
# timeout_s near 480 (this script stops its own parts in time). Logs come back from $OUT.
set -uo pipefail
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{ nvidia-smi -L; python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } \
    > "$out/machine.txt" 2>&1
pip install --no-index --no-deps .whl/*.whl > "$out/install.txt" 2>&1
pip install --no-deps --no-build-isolation -e . >> "$out/install.txt" 2>&1 || { tail -20 "$out/install.txt"; exit 1; }
# the notebooks need Jupyter, which the machine lacks; they are CPU demonstrations
timeout 300 python -m pytest --device cuda -q -p no:cacheprovider --ignore=tests/test_notebooks.py \
    > "$out/pytest_cuda.txt" 2>&1
echo "pytest --device cuda: exit $?"; tail -25 "$out/pytest_cuda.txt"
timeout 150 python benchmarks/svi_overhead.py --device cuda --rounds 10 > "$out/svi_overhead_cuda.txt" 2>&1
echo "svi_overhead --device cuda: exit $?"; cat "$out/svi_overhead_cuda.txt"
timeout 60 python -m pyro_vi_zoo.fit bayes_regression --fast --no-progress --out "$out/runs" > "$out/fit_auto.txt" 2>&1
echo "fit bayes_regression (device auto): exit $?"; tail -12 "$out/fit_auto.txt"
