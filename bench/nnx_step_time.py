"""Milliseconds per training step of an NNX model against the built-in Linen one, in one run.

  python bench/nnx_step_time.py                  # MLP 784-400-400-10, ER and ER-RAR, 1 and 4 seeds
  python bench/nnx_step_time.py --models=resnet18_reduced --seeds=1 --steps=20

The NNX models (`rar_jax.nnx_models`) have the Linen models' layers and parameter names.
Both go through the same compiled stream (`rar_jax.runner.loop.make_stream_runner`); their
timed passes alternate, so both see the same machine load. Each line: model, method, seeds, ms
per step for each (minimum and median over the repeats), the ratio, the seconds to trace and
compile each (where NNX's split and merge cost something: they run while tracing, not in the
compiled program), and whether the two lowered programs are the same text.
"""

import argparse
import functools
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import cli, cpu_model

import rar_jax
from rar_jax import nnx_models
from rar_jax.runner import loop

SHAPES = {"mlp": (28, 28, 1), "resnet18_reduced": (32, 32, 3)}
MODELS = {  # (Linen, NNX factory), the same layers and names
  "mlp": (rar_jax.MLP(10), functools.partial(nnx_models.MLP, 10)),
  # im2col: XLA's CPU convolutions run ~10x slower inside the compiled stream's loop (the
  # choice train.py makes on the CPU; rar_jax.models.im2col_conv).
  "resnet18_reduced": (
    rar_jax.ReducedResNet18(10, conv_impl="im2col"),
    functools.partial(nnx_models.ReducedResNet18, 10, in_channels=3, conv_impl="im2col"),
  ),
}


def compile_runner(model, method, num_seeds, x, y, index):
  cfg, chain = rar_jax.build_method(method, num_classes=10, mem_size=200, batch_size_mem=10)
  tx = rar_jax.make_optimizer(0.1)
  hyper = rar_jax.Hyper.create(
    opt_lr=0.1, beta_coef=0.3, epsilon_fgsm=0.3, alpha_fgsm=0.075, iter_fgsm=5
  )
  t0 = time.perf_counter()
  states = loop.init_states(model, tx, cfg, hyper, loop.seed_keys(range(num_seeds)), x[:10])
  step = rar_jax.make_train_step(model, tx, cfg, chain)
  runner = loop.make_stream_runner(step, "vmap", "scan")
  lowered = runner.lower(states, x, y, index)
  compiled = lowered.compile()
  seconds = time.perf_counter() - t0
  states, _ = compiled(states, x, y, index)  # a full buffer: the timed passes replay
  jax.block_until_ready(states)
  return compiled, states, seconds, lowered.as_text()


def measure(model_name, method, num_seeds, steps, repeats):
  rng = np.random.default_rng(0)
  n = steps * 10
  x = jnp.asarray(rng.uniform(size=(n, *SHAPES[model_name])), jnp.float32)
  y = jnp.asarray(np.tile(np.arange(10), n // 10), jnp.int32)
  index = jnp.asarray(np.stack([rng.permutation(n).reshape(steps, 10) for _ in range(num_seeds)]))
  models = dict(zip(("linen", "nnx"), MODELS[model_name]))
  built = {k: compile_runner(m, method, num_seeds, x, y, index) for k, m in models.items()}
  times = {k: [] for k in models}
  for _ in range(repeats):  # alternate: both see the same load
    for k, (compiled, states, _, _) in built.items():
      t0 = time.perf_counter()
      jax.block_until_ready(compiled(states, x, y, index))
      times[k].append(1000 * (time.perf_counter() - t0) / steps)
  row = {"bench": "nnx_step_time", "model": model_name, "method": method, "seeds": num_seeds}
  for k in models:
    row[f"{k}_ms_per_step"] = round(float(np.min(times[k])), 4)
    row[f"{k}_ms_per_step_median"] = round(float(np.median(times[k])), 4)
    row[f"{k}_compile_seconds"] = round(built[k][2], 2)
  row["nnx_over_linen"] = round(row["nnx_ms_per_step"] / row["linen_ms_per_step"], 3)
  # For the ResNet the texts differ only in how batch norm shapes its statistics for the
  # product (NNX: reshape, Linen: broadcast_in_dim), the same values.
  row["same_program"] = built["linen"][3] == built["nnx"][3]
  row["conv_impl"] = getattr(models["linen"], "conv_impl", None)
  row.update(
    steps_timed=steps, repeats=repeats, cpu=cpu_model(), device=jax.devices()[0].device_kind
  )
  return row


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", default="mlp", help="mlp, resnet18_reduced")
  p.add_argument("--methods", default="er,er_rar")
  p.add_argument("--seeds", default="1,4")
  p.add_argument("--steps", type=int, default=200, help="steps per timed pass")
  p.add_argument("--repeats", type=int, default=7)
  args = p.parse_args()
  for model_name in args.models.split(","):
    for method in args.methods.split(","):
      for seeds in [int(s) for s in args.seeds.split(",")]:
        row = measure(model_name, method, seeds, args.steps, args.repeats)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
  cli(main)
