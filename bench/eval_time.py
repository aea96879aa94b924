"""Seconds to evaluate conv-net runs on a test set, per evaluation strategy, as JSON lines.

  python bench/eval_time.py                          # 4 runs, 2000 images of 28x28x1
  python bench/eval_time.py --runs 10 --images 10000 # Split Fashion-MNIST's test set, 10 seeds
  python bench/eval_time.py --input_shape 84,84,3 --runs 2 --images 1000 \
      --rows host:xla:250:default,host:xla:250:eigen  # mini-ImageNet's size, each CPU library

Rows: ``map`` (one program, the runs vmapped, the test set walked with
`lax.map`; im2col or XLA convolutions) and ``host`` (a Python loop over runs
and chunks around one compiled chunk program; the CPU default on one device,
`rar_jax.runner.loop.eval_execution`), optionally with the library behind XLA's
CPU convolutions (``cpu_conv_library``, as evaluation compiles it). Each row
evaluates the same parameters and reports how far its accuracies are from the
first row's. Synthetic images: the cost does not depend on pixel values.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import cli, cpu_model

import rar_jax
from rar_jax.evaluation import evaluator as evaluator_lib
from rar_jax.runner import cpu_conv, loop


def states_for(module, runs, x):
  cfg = rar_jax.ReplayConfig(num_classes=10)
  return loop.init_states(
    module,
    rar_jax.make_optimizer(0.1),
    cfg,
    rar_jax.Hyper.create(opt_lr=0.1),
    loop.seed_keys(range(runs)),
    x[:2],
  )


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--runs", type=int, default=4)
  p.add_argument("--images", type=int, default=2000)
  p.add_argument("--model", default="resnet18_reduced")
  p.add_argument(
    "--rows",
    default="map:im2col:100,host:xla:250",
    help="eval_loop:conv_impl:chunk[:cpu_conv_library], ...",
  )
  p.add_argument("--input_shape", default="28,28,1", help="one image's: H,W,C")
  a = p.parse_args()
  shape = tuple(int(d) for d in a.input_shape.split(","))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(a.images, *shape)), jnp.float32)
  y = jnp.asarray(rng.integers(0, 10, a.images), jnp.int32)
  task_of_class = jnp.tile(jnp.arange(10)[None] // 2, (a.runs, 1))
  first = None
  for row in a.rows.split(","):
    eval_loop, conv_impl, chunk, library = (row.split(":") + ["default"])[:4]
    module = rar_jax.create_model(a.model, 10, conv_impl)
    states = states_for(module, a.runs, x)
    options = cpu_conv.compiler_options(library, forward_only=True)
    evaluator = evaluator_lib.make_evaluator(
      module, 5, chunk=int(chunk), eval_loop=eval_loop, compiler_options=options
    )
    t0 = time.perf_counter()
    evaluate = evaluator.lower(states, x, y, task_of_class).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    acc = np.asarray(evaluate(states, x, y, task_of_class))
    seconds = time.perf_counter() - t0
    first = acc if first is None else first
    line = {
      "bench": "eval_time",
      "model": a.model,
      "eval_loop": eval_loop,
      "conv_impl": conv_impl,
      "chunk": int(chunk),
      "cpu_conv_library": library,
      "input_shape": list(shape),
      "runs": a.runs,
      "images": a.images,
      "seconds": round(seconds, 2),
      "ms_per_image_run": round(1000 * seconds / (a.runs * a.images), 3),
      "compile_seconds": round(compile_s, 2),
      # Other convolutions sum in another order: a near-tie image may flip.
      "max_accuracy_diff_vs_first_row": float(np.max(np.abs(acc - first))),
      "platform": jax.devices()[0].platform,
      "cpu": cpu_model(),
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
  cli(main)
