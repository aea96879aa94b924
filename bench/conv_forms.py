"""Other forms of the reduced ResNet-18's convolutions, against XLA's own, on one core.

Each form is timed as bench/conv_profile.py times XLA's convolution (one
pinned core, forward pass, input gradient and kernel gradient, minibatch 10)
for every convolution shape of the network at one input size:

- ``xla``: ``lax.conv_general_dilated`` with each ``cpu_conv_library``;
- ``winograd``: Winograd's F(2x2, 3x3) (stride 1 only): 16 batched matmuls
  between transformed 4x4 input tiles and transformed kernels, 2.25x fewer
  multiplications than the direct convolution; its gradients by autodiff;
- ``patch_kernel_grad``: the kernel gradient as 9 matmuls of shifted inputs
  with the output gradient (no transposes, which XLA puts in front of the
  kernel gradient's convolution);
- ``rows20``: XLA's convolution on both row groups of a step at once (20 rows,
  the time halved), against two calls of 10.

Each line also holds the form's largest difference from XLA's convolution,
relative to its largest value; the last lines sum each form over the network
as ER runs it (every convolution times its count, forward pass and both
gradients, the stem's input gradient left out), where the form covers every
shape. About 2 minutes at 84x84 or 32x32.

  python bench/conv_forms.py --input_size 84 --out bench/results/conv_forms_84_epyc25.jsonl
"""

import argparse
import json
import sys

from conv_profile import line, one_thread_env, run, shapes

JAX = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from jax import lax
from rar_jax.runner.cpu_conv import compiler_options
side, cin, cout, k, s, rows = map(int, sys.argv[1:7])
form, options = sys.argv[7], compiler_options(sys.argv[8])
x = jnp.asarray(np.random.default_rng(0).random((rows, side, side, cin)), jnp.float32)
w = jnp.asarray(np.random.default_rng(1).random((k, k, cin, cout)) * 0.1, jnp.float32)
dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
p = k // 2
conv = lambda x, w: lax.conv_general_dilated(x, w, (s, s), ((p, p),) * 2, dimension_numbers=dn)

def b_t(d0, d1, d2, d3):  # B^T d along one axis of the 4x4 tiles
  return d0 - d2, d1 + d2, d2 - d1, d1 - d3

def a_t(m0, m1, m2, m3):  # A^T m: the 2 outputs of a 4-point tile
  return m0 + m1 + m2, m1 - m2 - m3

def winograd(x, w):
  n, h, wd, c = x.shape
  th, tw = -(-h // 2), -(-wd // 2)
  xp = jnp.pad(x, ((0, 0), (1, 1 + 2 * th - h), (1, 1 + 2 * tw - wd), (0, 0)))
  tiles = []
  for r in b_t(*(xp[:, i:i + 2 * th:2] for i in range(4))):
    tiles.extend(b_t(*(r[:, :, j:j + 2 * tw:2] for j in range(4))))
  v = jnp.stack(tiles).reshape(16, n * th * tw, c)
  g = jnp.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], w.dtype)
  u = jnp.einsum("ai,ijck,bj->abck", g, w, g).reshape(16, c, w.shape[-1])
  m = lax.dot_general(v, u, (((2,), (1,)), ((0,), (0,)))).reshape(4, 4, n, th, tw, -1)
  rows_ = [a_t(*(mi[j] for j in range(4))) for mi in a_t(*(m[i] for i in range(4)))]
  y = jnp.stack([jnp.stack(r, axis=3) for r in rows_], axis=2)  # n, th, 2, tw, 2, k
  return y.reshape(n, 2 * th, 2 * tw, -1)[:, :h, :wd]

def patch_kernel_grad(x, g):
  ho, wo = g.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  taps = [xp[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s]
          for i in range(k) for j in range(k)]
  dims = (((0, 1, 2), (0, 1, 2)), ((), ()))
  return jnp.stack([lax.dot_general(t, g, dims) for t in taps]).reshape(k, k, cin, cout)

g = jnp.asarray(np.random.default_rng(2).random(conv(x, w).shape), jnp.float32)
xla = {
  "forward": (conv, (x, w)),
  "input_grad": (lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0], (x, w, g)),
  "kernel_grad": (lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0], (x, w, g)),
}
if form == "winograd":
  fns = {
    "forward": (winograd, (x, w)),
    "input_grad": (lambda x, w, g: jax.vjp(lambda x: winograd(x, w), x)[1](g)[0], (x, w, g)),
    "kernel_grad": (lambda x, w, g: jax.vjp(lambda w: winograd(x, w), w)[1](g)[0], (x, w, g)),
  }
elif form == "patch_kernel_grad":
  fns = {"kernel_grad": (lambda x, w, g: patch_kernel_grad(x, g), (x, w, g))}
else:
  fns = xla
out, err = {}, 0.0
for name, (f, args) in fns.items():
  ref, got = np.asarray(jax.jit(xla[name][0])(*args)), np.asarray(jax.jit(f)(*args))
  err = max(err, float(np.max(np.abs(ref - got)) / np.max(np.abs(ref))))
  f = jax.jit(f).lower(*args).compile(compiler_options=options)
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(7):
    t = time.perf_counter(); jax.block_until_ready(f(*args)); times.append(time.perf_counter() - t)
  out[name + "_ms"] = round(1000 * min(times) * 10 / rows, 3)  # per 10 rows
print(json.dumps(dict(out, max_rel_diff=err)))
"""

# (form, cpu_conv_library, rows per call)
FORMS = [
  ("xla", "default", 10),
  ("xla", "eigen", 10),
  ("winograd", "default", 10),
  ("patch_kernel_grad", "default", 10),
  ("rows20", "default", 20),
  ("rows20", "eigen", 20),
]


def network_totals(rows):
  """ms per 10 rows of all the network's convolutions in an ER step, per form
  (None where the form leaves a shape or a direction out)."""
  convs = {r["conv"] for r in rows}
  out = []
  for form, library, _ in FORMS:
    mine = [r for r in rows if (r["form"], r["cpu_conv_library"]) == (form, library)]
    total = 0.0
    for r in mine:
      keys = ["forward_ms", "kernel_grad_ms"] + ([] if r["conv"] == "stem" else ["input_grad_ms"])
      if any(k not in r for k in keys):
        total = None
        break
      total += r["per_step_count"] * sum(r[k] for k in keys)
    covered = {r["conv"] for r in mine} == convs
    out.append(
      dict(
        bench="conv_forms",
        form=form,
        cpu_conv_library=library,
        cpu=rows[0]["cpu"],
        input_size=rows[0]["input_size"],
        conv="network",
        er_ms=round(total, 1) if covered and total is not None else None,
      )
    )
  return out


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--input_size", type=int, default=84)
  p.add_argument("--out", default="", help="append the JSON lines to this file")
  a = p.parse_args()
  env = one_thread_env()
  rows = []
  for shape in shapes(a.input_size):
    _, side, cin, cout, k, s, _ = shape
    for form, library, n in FORMS:
      if form == "winograd" and (k, s) != (3, 1):
        continue
      ms = run(sys.executable, JAX, (side, cin, cout, k, s, n, form, library), env)
      labels = dict(form=form, cpu_conv_library=library)
      rows.append(line("conv_forms", a.input_size, shape, labels, ms))
      print(json.dumps(rows[-1]), flush=True)
  rows += network_totals(rows)
  for r in rows[-len(FORMS) :]:
    print(json.dumps(r), flush=True)
  if a.out:
    with open(a.out, "a") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
  main()
