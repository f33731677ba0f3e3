#!/usr/bin/env bash
# The train stage on one CUDA GPU with the options that only matter there or were only ever run on
# the CPU: torch.compile, the over-budget (temporary file) cache, letterbox input, the SimCC head.
#   bash benchmarks/gpu_variants.sh
# Each row is a separate benchmarks/ddp.py run (1 process, same images, same seed); results in
# benchmarks/results/gpu_<variant>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
run() {
    local name=$1
    shift
    python3 benchmarks/ddp.py --device cuda --processes 1 --noise-seed -1 --images 320 \
        --batch-size 64 --epochs 8 --name "gpu_$name" "$@"
}
run baseline
run compile --set compile=true
run disk_cache --set cache_budget_mib=0
run letterbox --set input_layout=letterbox
run simcc --set head=simcc
