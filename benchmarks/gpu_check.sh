#!/usr/bin/env bash
# The GPU figures of docs/performance.md in one go, about 5 minutes on one H200 (results of one run: benchmarks/results/gpu/):
#   1. scaling.py in float32: forward at 1e4-1e7 columns (the 1e9 column-steps/s target at 1e6), gradient at 1e6;
#   2. backend_agreement.py: 5e4 such columns on the GPU and on the host CPU (differences, speed-up);
#   3. scaling.py in float64 (1e4 and 1e6 columns).
# Each part has its own time limit and stops with SIGINT, so a slow compile costs that part's tail, not the run.
# scaling.py rewrites its JSON after every row, so even the kill 20 s later (SIGINT waits for a running
# compile) keeps the finished rows.
# Run from the repository root: `bash benchmarks/gpu_check.sh [OUTPUT_DIR]` (default $OUT, else
# benchmarks/results/gpu). dam is installed, without its dependencies, into a temporary folder: the machine
# needs JAX with CUDA, equinox, numpy, tqdm, tabulate, psutil, matplotlib and pyyaml, and no network.
set -uo pipefail
out=${1:-${OUT:-benchmarks/results/gpu}}
mkdir -p "$out"
site=$(mktemp -d)
if ! python3 -m pip install -q --no-index --no-deps --no-build-isolation --target "$site" .; then
    echo "pip could not build dam here; copying the package folders instead (pyproject.toml's package-dir)"
    cp -r dam "$site/dam" && for sub in physics surrogates coupling; do cp -r "$sub" "$site/dam/$sub"; done || exit 1
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
cd "$site" || exit 1 # import the installed dam, not the source folders
repo=$OLDPWD
if [[ $out != /* ]]; then out=$repo/$out; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1
python3 -c "import jax; print(jax.__version__, jax.devices())" >>"$out/gpu.txt" 2>&1

scaling() { # LIMIT_S NAME ARGS...
    local limit=$1 name=$2
    shift 2
    timeout -s INT -k 20 "$limit" python3 "$repo/benchmarks/scaling.py" --devices --column-chunk 0 --no-progress \
        --time-budget 5 --output "$out/scaling_$name.json" "$@"
}
{
    echo "== float32 sweep"
    scaling 240 float32 --dtypes float32 --columns 10000 100000 1000000 10000000 --grad-columns 1000000
    echo "== accelerator against host CPU"
    timeout -k 20 100 python3 "$repo/benchmarks/backend_agreement.py" --columns 50000 --output "$out/agreement.json"
    echo "== float64 sweep"
    scaling 100 float64 --dtypes float64 --columns 10000 1000000 --grad-columns 1000000
} 2>&1 | tee "$out/gpu_check.log"
