"""How XLA's CPU backend prices the reduced ResNet-18's forward and backward
passes by how the rows are laid out, as JSON lines (ms per call, minimum of
``--repeats`` timed passes of ``--calls`` calls, one thread):

- ``one_group``: gradient of one group of ``--rows`` rows, one program;
- ``two_programs``: that program called twice (two groups, as two dispatches);
- ``two_groups``: the gradient of two groups with their own batch statistics
  in one program (`batch_norm_rows=group`, the step's layout);
- ``vmapped_groups``: the same two groups vmapped in one program (one pass of
  2 x rows, per-group statistics);
- ``joint``: one group of 2 x rows (`batch_norm_rows=joint`).

  taskset -c 0 python bench/pass_layout.py

Throwaway-sized: it isolates the model's passes from the replay step (no
buffer, no optimiser), to tell what the step's ER time is made of.
"""

import argparse
import json
import os
import time

# One thread, as bench/paper_code_step_time.py measures (set before JAX starts).
os.environ["XLA_FLAGS"] = (
  os.environ.get("XLA_FLAGS", "")
  + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import cpu_model  # noqa: E402

from rar_jax import models  # noqa: E402
from rar_jax.runner import host


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--rows", type=int, default=10)
  p.add_argument("--side", type=int, default=32)
  p.add_argument("--channels", type=int, default=3)
  p.add_argument("--calls", type=int, default=10)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument(
    "--keep_freed_memory",
    type=int,
    default=1,
    help="1: rar_jax.runner.host.keep_freed_memory() first, as train.py does; 0: glibc's default",
  )
  a = p.parse_args()
  kept = bool(a.keep_freed_memory) and host.keep_freed_memory()
  n = a.rows
  model = models.create_model("resnet18_reduced", 10, "xla")
  x = jnp.asarray(np.random.default_rng(0).random((2 * n, a.side, a.side, a.channels)), jnp.float32)
  y = jnp.zeros(2 * n, jnp.int32)
  variables = model.init(jax.random.PRNGKey(0), x[:1], train=False)
  params, stats = variables["params"], variables["batch_stats"]

  def loss(p, xb, yb):
    out, _ = model.apply(
      {"params": p, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"]
    )
    return -jnp.mean(jax.nn.log_softmax(out)[jnp.arange(xb.shape[0]), yb])

  grad = jax.jit(jax.grad(loss))
  # Every layout takes the arrays as arguments: a closure over them would be folded into
  # constants at compile time.
  layouts = {
    "one_group": lambda p, x, y: grad(p, x[:n], y[:n]),
    "two_programs": lambda p, x, y: (grad(p, x[:n], y[:n]), grad(p, x[n:], y[n:])),
    "two_groups": jax.jit(
      lambda p, x, y: jax.grad(lambda q: loss(q, x[:n], y[:n]) + loss(q, x[n:], y[n:]))(p)
    ),
    "vmapped_groups": jax.jit(
      lambda p, x, y: jax.grad(
        lambda q: jnp.sum(
          jax.vmap(lambda xb, yb: loss(q, xb, yb))(x.reshape(2, n, *x.shape[1:]), y.reshape(2, n))
        )
      )(p)
    ),
    "joint": grad,
  }
  for name, fn in layouts.items():
    jax.block_until_ready(fn(params, x, y))  # compile and warm up
    times = []
    for _ in range(a.repeats):
      t = time.perf_counter()
      for _ in range(a.calls):
        out = fn(params, x, y)
      jax.block_until_ready(out)
      times.append((time.perf_counter() - t) / a.calls * 1000)
    line = {
      "bench": "pass_layout",
      "layout": name,
      "rows_per_group": n,
      "ms_per_call": round(min(times), 2),
      "ms_per_call_median": round(float(np.median(times)), 2),
      "cpu": cpu_model(),
      "keep_freed_memory": kept,
    }
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
  main()
