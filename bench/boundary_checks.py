"""What `rar_jax.run_stream`'s input checks cost: the checks alone (images,
labels, index: one pass over the data) against one whole call, on a stream of
Split Fashion-MNIST's size (60000 rows of 28x28x1, 6000 steps of 10), MLP,
ER-RAR, 5 seeds. About 3 minutes on 2 cores.

  python bench/boundary_checks.py [--out bench/results/boundary_checks.jsonl]
"""

import argparse
import json
import time

import jax
import numpy as np
from _common import cpu_model

import rar_jax
from rar_jax.runner import inputs, training


def best_of(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rows", type=int, default=60000)
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--out", default="")
  a = p.parse_args()
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (a.rows, 28, 28, 1), dtype=np.uint8).astype(np.float32) / 255.0
  y = (np.arange(a.rows) % 10).astype(np.int32)
  seeds = list(range(a.seeds))
  index = np.stack([rng.permutation(a.rows).reshape(-1, 10) for _ in seeds]).astype(np.int32)
  module = rar_jax.MLP(10)
  cfg, chain = rar_jax.build_method("er_rar", 10, mem_size=200, iter_fgsm=2)
  tx = rar_jax.make_optimizer(0.1)
  states = rar_jax.init_states(module, tx, cfg, chain, seeds, x[:1])
  step = rar_jax.make_train_step(module, tx, cfg, chain)

  def checks():
    xs, ys = training._training_data(step, states, x, y)
    return inputs.index(
      "index", index, axes=("runs", "steps", "batch"), runs=len(seeds), rows=len(x)
    )

  checks_s = best_of(checks, 5)
  rar_jax.run_stream(step, states, x, y, index)  # compiles
  call_s = best_of(lambda: rar_jax.run_stream(step, states, x, y, index)[1], 2)
  row = {
    "bench": "boundary_checks",
    "cpu": cpu_model(),
    "rows": a.rows,
    "steps": int(index.shape[1]),
    "seeds": a.seeds,
    "checks_s": round(checks_s, 4),
    "run_stream_s": round(call_s, 2),
    "share": round(checks_s / call_s, 5),
  }
  print(json.dumps(row), flush=True)
  if a.out:
    with open(a.out, "a") as f:
      f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
  main()
