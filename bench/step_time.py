"""Milliseconds per online training step (after compilation), as JSON lines.

  python bench/step_time.py                     # MLP + reduced ResNet-18, 1/4/16 seeds
  python bench/step_time.py --models=mlp --seeds=1 --methods=er,er_rar

The stream is synthetic data of the benchmark's shape (the step's cost does not
depend on pixel values). Each line: model, method, seeds, ms per step (all seeds
advancing together), ms per seed-step, compile seconds.
"""

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import cli, cpu_model

import rar_jax
from rar_jax.runner import host, loop

# As train.py does: glibc keeps freed heap mapped (rar_jax.runner.host);
# a user's MALLOC_TOP_PAD_ wins.
FREED_MEMORY_KEPT = host.keep_freed_memory() or "MALLOC_TOP_PAD_" in os.environ

SHAPES = {"mlp": (28, 28, 1), "resnet18_reduced": (32, 32, 3)}


def shape_of(model_name, input_size):
  shape = SHAPES[model_name]
  if input_size:  # square images of another side, the channels kept
    shape = (input_size, input_size, shape[2])
  return shape


def prepare(
  model_name,
  method,
  num_seeds,
  steps,
  iter_fgsm,
  batching,
  mem_size=200,
  conv_impl="auto",
  stream_loop="auto",
  matmul_precision="default",
  batch_norm_rows="group",
  input_size=0,
  cpu_conv_library="auto",
):
  """The compiled stream of ``steps`` minibatches on synthetic data, its
  arguments with the replay buffer already filled, and what ran."""
  cfg, chain = rar_jax.build_method(
    method, num_classes=10, mem_size=mem_size, batch_size_mem=10, batch_norm_rows=batch_norm_rows
  )
  if batching == "auto":
    batching = loop.default_batching(1)
  execution = loop.resolve_execution(
    conv_impl,
    stream_loop,
    model_name in rar_jax.models.CONV_MODELS,
    num_seeds,
    batching,
    loop.inner_loop_iters(cfg, chain, np.asarray(iter_fgsm)),
    cpu_conv_library,
    shape_of(model_name, input_size),
  )
  conv_impl, stream_loop = execution["conv_impl"], execution["stream_loop"]
  cpu_conv_library = execution["cpu_conv_library"]
  unroll = execution["unroll"]
  jax.config.update("jax_default_matmul_precision", matmul_precision)
  module = rar_jax.create_model(model_name, 10, conv_impl)
  hyper = rar_jax.Hyper.create(
    opt_lr=0.1, beta_coef=0.3, epsilon_fgsm=0.3, alpha_fgsm=0.075, iter_fgsm=iter_fgsm
  )
  tx = rar_jax.make_optimizer(0.1)
  n = steps * 10
  rng = np.random.default_rng(0)
  shape = shape_of(model_name, input_size)
  x = jnp.asarray(rng.uniform(size=(n, *shape)), jnp.float32)
  y = jnp.asarray(np.tile(np.arange(10), n // 10), jnp.int32)
  index = jnp.asarray(np.stack([rng.permutation(n).reshape(steps, 10) for _ in range(num_seeds)]))
  states = loop.init_states(module, tx, cfg, hyper, loop.seed_keys(range(num_seeds)), x[:10])
  step = rar_jax.make_train_step(module, tx, cfg, chain, unroll=unroll)
  runner = loop.make_stream_runner(step, batching, stream_loop, cpu_conv_library=cpu_conv_library)
  t0 = time.perf_counter()
  compiled = runner.lower(states, x, y, index).compile()
  compile_s = time.perf_counter() - t0
  # Fill the buffer first so the timed pass replays and attacks full batches.
  states, _ = compiled(states, x, y, index)
  jax.block_until_ready(states)
  execution = dict(
    batching=batching,
    conv_impl=conv_impl,
    cpu_conv_library=cpu_conv_library,
    stream_loop=stream_loop,
    unroll=unroll,
    matmul_precision=matmul_precision,
    batch_norm_rows=batch_norm_rows,
    input_shape=list(shape),
    compile_seconds=round(compile_s, 2),
  )
  return compiled, (states, x, y, index), execution


def measure(model_name, method, num_seeds, steps, repeats, iter_fgsm, batching, **options):
  compiled, args, execution = prepare(
    model_name, method, num_seeds, steps, iter_fgsm, batching, **options
  )
  times, cpu_times = [], []
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    out, _ = compiled(*args)
    jax.block_until_ready(out)
    times.append(time.perf_counter() - t0)
    cpu_times.append(time.process_time() - c0)
  # This VM is shared: the minimum over repeats is the least disturbed timing;
  # the median is reported beside it.
  ms = 1000 * float(np.min(times)) / steps
  return {
    "bench": "step_time",
    "system": "rar_jax",  # beside the paper's code's lines in a paper_code_step_time.py session
    "model": model_name,
    "method": method,
    "seeds": num_seeds,
    "batching": execution["batching"],
    "conv_impl": execution["conv_impl"],
    "cpu_conv_library": execution["cpu_conv_library"],
    "stream_loop": execution["stream_loop"],
    "unroll": execution["unroll"],
    "matmul_precision": execution["matmul_precision"],
    "iter_fgsm": iter_fgsm,
    "ms_per_step": round(ms, 4),
    "ms_per_step_median": round(1000 * float(np.median(times)) / steps, 4),
    "ms_per_seed_step": round(ms / num_seeds, 4),
    "compile_seconds": execution["compile_seconds"],
    # CPU seconds of this process (all its threads): less disturbed by other load.
    "cpu_ms_per_step": round(1000 * float(np.min(cpu_times)) / steps, 4),
    "steps_timed": steps,
    "device": jax.devices()[0].device_kind,
    "platform": jax.devices()[0].platform,
    "host": platform.node(),
    "cpu": cpu_model(),
    "batch_norm_rows": execution["batch_norm_rows"],
    "input_shape": execution["input_shape"],
    "freed_memory_kept": FREED_MEMORY_KEPT,
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="mlp,resnet18_reduced")
  p.add_argument("--methods", default="er,er_rar")
  p.add_argument("--seeds", default="1,4,16")
  p.add_argument("--steps", type=int, default=500, help="steps per timed pass (MLP)")
  p.add_argument("--resnet_steps", type=int, default=50)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--iter_fgsm", type=int, default=5)
  p.add_argument(
    "--batching",
    default="vmap",
    help="vmap, map (runs one after another) or auto (map on one CPU device)",
  )
  p.add_argument("--conv_impls", default="auto", help="comma-separated: auto, xla, im2col")
  p.add_argument("--stream_loops", default="auto", help="comma-separated: auto, scan, host")
  p.add_argument(
    "--cpu_conv_libraries", default="auto", help="comma-separated: auto, default, eigen"
  )
  p.add_argument(
    "--matmul_precision",
    default="default",
    help="jax_default_matmul_precision: default (TF32 on recent GPUs), highest",
  )
  p.add_argument(
    "--batch_norm_rows", default="group", help="comma-separated: group, joint (docs/config.md)"
  )
  p.add_argument(
    "--input_size", type=int, default=0, help="square side (0: 28 MLP, 32 ResNet; 84 mini-ImageNet)"
  )
  p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
  a = p.parse_args()
  if a.one:  # one measurement, in this process
    steps = a.steps if a.models == "mlp" else a.resnet_steps
    print(
      json.dumps(
        measure(
          a.models,
          a.methods,
          int(a.seeds),
          steps,
          a.repeats,
          a.iter_fgsm,
          a.batching,
          conv_impl=a.conv_impls,
          stream_loop=a.stream_loops,
          matmul_precision=a.matmul_precision,
          batch_norm_rows=a.batch_norm_rows,
          input_size=a.input_size,
          cpu_conv_library=a.cpu_conv_libraries,
        )
      ),
      flush=True,
    )
    return
  # Every measurement in a fresh process: timings taken after other programs
  # ran in the same process were up to 2x slower on this machine.
  for model_name in a.models.split(","):
    for method in a.methods.split(","):
      for s in a.seeds.split(","):
        for conv_impl in a.conv_impls.split(",") if model_name != "mlp" else ["auto"]:
          for stream_loop, bn, library in itertools.product(
            a.stream_loops.split(","),
            a.batch_norm_rows.split(","),
            a.cpu_conv_libraries.split(",") if model_name != "mlp" else ["auto"],
          ):
            subprocess.run(
              [
                sys.executable,
                __file__,
                "--one",
                f"--models={model_name}",
                f"--methods={method}",
                f"--seeds={s}",
                f"--steps={a.steps}",
                f"--resnet_steps={a.resnet_steps}",
                f"--repeats={a.repeats}",
                f"--iter_fgsm={a.iter_fgsm}",
                f"--batching={a.batching}",
                f"--conv_impls={conv_impl}",
                f"--stream_loops={stream_loop}",
                f"--matmul_precision={a.matmul_precision}",
                f"--batch_norm_rows={bn}",
                f"--input_size={a.input_size}",
                f"--cpu_conv_libraries={library}",
              ],
              check=True,
            )


if __name__ == "__main__":
  cli(main)
