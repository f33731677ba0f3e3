#!/usr/bin/env bash
# The one-GPU figures of README "Scaling", in one go on a machine with a CUDA GPU:
#   bash benchmarks/gpu_figures.sh
# Needs the project's Python dependencies except mediapipe (no teacher runs here). Results land in
# benchmarks/results/ (ddp_cuda.json, ddp.json, train_throughput*_cuda.json).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), \
'cpu cores', torch.get_num_threads())"

# The train stage on the GPU, plainly and under torchrun (an NCCL process group of one), plus a
# second seed to show training noise. The GPU's default global batch (64) at 128 px.
python3 benchmarks/ddp.py --device cuda --processes 1 --torchrun-single --images 960 \
    --batch-size 64 --epochs 12
# The same images and recipe on this machine's CPU cores: 1 process, and 2 gloo processes.
python3 benchmarks/ddp.py --device cpu --processes 1 2 --noise-seed -1 --images 960 \
    --batch-size 64 --epochs 12
# The training loop against the model's forward/backward alone, at 128 and 224 px (in-memory
# skeleton drawings: the GPU rate, not the PNG renderer, is measured here).
for size in 128 224; do
    python3 benchmarks/train_throughput.py --device cuda --image-size "$size" --batch-size 64 \
        --images 2048 --epochs 3 --data skeleton --threads "$(nproc)"
done
