#!/usr/bin/env bash
# GPU: how to run many seeds of the reduced ResNet-18 (the aim: 16 seeds of
# ER-RAR for at most 4x one seed), at 32x32 and at mini-ImageNet's 84x84, and an
# NNX model against its Linen twin, and continual evaluation's cost. One short script for a
# GPU machine; ~10 min.
#   bash bench/gpu_seeds.sh > gpu.jsonl
# Each line: conv_impl (xla = cuDNN convolutions, grouped under vmap; im2col =
# batched matmuls), matmul precision (default = TF32 on recent NVIDIA GPUs,
# highest = full float32), seeds 1 and 16, vmap batching, one compiled scan.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name --format=csv,noheader || true
for precision in default highest; do
  python bench/step_time.py --models=resnet18_reduced --methods=er,er_rar --seeds=1,16 \
    --resnet_steps=50 --repeats=3 --iter_fgsm=5 --batching=vmap --conv_impls=xla,im2col \
    --stream_loops=scan --matmul_precision=$precision
done
python bench/step_time.py --models=mlp --methods=er,er_rar --seeds=1,16 --batching=vmap --repeats=3
# mini-ImageNet's 84x84x3, 2 attack steps (the paper's mini-ImageNet setting), 1 and 16 seeds.
python bench/step_time.py --models=resnet18_reduced --methods=er,er_rar --seeds=1,16 \
  --resnet_steps=20 --repeats=3 --iter_fgsm=2 --batching=vmap --conv_impls=xla \
  --stream_loops=scan --input_size=84
# Continual evaluation's overhead (eval_every=10) on Split Fashion-MNIST: needs its IDX files,
# Debian's folder or FASHION_MNIST_DIR (e.g. copied under .data/ and carried to the machine).
FASHION_MNIST_DIR="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
if [ -d "$FASHION_MNIST_DIR" ]; then
  python bench/continual_cost.py --data_dir="$FASHION_MNIST_DIR" --stdout_only
else
  echo '{"bench": "continual_cost", "skipped": "no Fashion-MNIST IDX files: set FASHION_MNIST_DIR"}'
fi
# NNX against Linen, same weights, same compiled stream.
python bench/nnx_step_time.py --models=mlp --seeds=1,16 --steps=200 --repeats=3
python bench/nnx_step_time.py --models=resnet18_reduced --seeds=1,16 --steps=20 --repeats=3
