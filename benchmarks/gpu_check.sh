#!/usr/bin/env bash
# Issue 9's device check as one run on a lent GPU machine: the README's command on device auto, the
# captured-step benchmark, then the suite on CUDA, each stopped in time so that the run fits its budget.
#
# The machine has torch, numpy, pandas, matplotlib, scipy, tqdm and pytest but no pyro and no internet, so
# prepare here first (both folders are git-ignored):
#     pip download pyro-ppl==1.9.2 pyro-api==0.1.2 opt-einsum --no-deps -d .whl
#     cp -r ../shared/prototypes/capture .proto      # optional: the prototype, run first
# then call the device tool's run with command "bash benchmarks/gpu_check.sh", carry [".whl", ".proto"] and
# timeout_s a little above BUDGET_S (default 420). Logs come back from $OUT; the suite's log is verbose, so
# a part stopped by its timeout still shows every test it finished.
set -uo pipefail
out="${OUT:-/tmp/gpu_check}"
budget="${BUDGET_S:-420}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }

{ nvidia-smi -L; python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; } \
    > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
pip install --no-index --no-deps .whl/*.whl > "$out/install.txt" 2>&1
pip install --no-deps --no-build-isolation -e . >> "$out/install.txt" 2>&1 || { tail -20 "$out/install.txt"; exit 1; }

if [ -f .proto/graph_step.py ]; then
    timeout 45 python .proto/graph_step.py --device cuda > "$out/prototype_graph_step.txt" 2>&1
    echo "prototype graph_step: exit $?"; tail -12 "$out/prototype_graph_step.txt"
fi

timeout 60 python -m pyro_vi_zoo.fit bayes_regression --fast --no-progress --out "$out/runs" > "$out/fit_auto.txt" 2>&1
echo "fit bayes_regression (device auto): exit $?"; tail -12 "$out/fit_auto.txt"

timeout 120 python benchmarks/svi_overhead.py --device cuda --rounds 10 > "$out/svi_overhead_cuda.txt" 2>&1
echo "svi_overhead --device cuda: exit $?"; cat "$out/svi_overhead_cuda.txt"

timeout 45 python benchmarks/enum_elbo.py --device cuda --rounds 10 > "$out/enum_elbo_cuda.txt" 2>&1
echo "enum_elbo --device cuda: exit $?"; cat "$out/enum_elbo_cuda.txt"

# the notebooks need Jupyter, which the machine lacks (CPU demonstrations); the data-parallel tests run gloo
# processes on the CPU (their two-GPU variant needs two GPUs)
timeout "$(( $(left) > 30 ? $(left) - 10 : 20 ))" python -m pytest --device cuda -v -rfE -p no:cacheprovider \
    --durations=15 --ignore=tests/test_notebooks.py --ignore=tests/test_distributed.py \
    > "$out/pytest_cuda.txt" 2>&1
echo "pytest --device cuda: exit $? (124: stopped by the budget)"
grep -E "FAILED|ERROR" "$out/pytest_cuda.txt" | head -40; tail -25 "$out/pytest_cuda.txt"
