"""Where a reduced ResNet-18 step spends its time: every convolution shape of
the network at one input size, timed alone on one pinned core, as its forward
pass, its input gradient and its kernel gradient, for XLA (rar_jax's path, with
each library of --cpu_conv_libraries) and, with --torch_python, PyTorch (the
paper's code's) in the same run. Minibatch 10. About 2 minutes at 84x84.

  python bench/conv_profile.py --input_size 84 --torch_python /path/venv/bin/python
"""

import argparse
import json
import os
import subprocess
import sys

from _common import cpu_model, pin_one_core

NF = 20


def shapes(side: int):
  """(name, side, cin, cout, kernel, stride, count) of the reduced ResNet-18
  (nf=20, widths 20/40/80/160) at ``side`` x ``side`` x 3 inputs."""
  out = [("stem", side, 3, NF, 3, 1, 1), ("layer1", side, NF, NF, 3, 1, 4)]
  for stage in (2, 3, 4):
    cin, cout = NF * 2 ** (stage - 2), NF * 2 ** (stage - 1)
    out.append((f"layer{stage}.down", side, cin, cout, 3, 2, 1))
    out.append((f"layer{stage}.shortcut", side, cin, cout, 1, 2, 1))
    side = (side + 1) // 2
    out.append((f"layer{stage}", side, cout, cout, 3, 1, 3))
  return out


JAX = r"""
import json, sys, time
import jax, jax.numpy as jnp, numpy as np
from jax import lax
from rar_jax.runner.cpu_conv import compiler_options
side, cin, cout, k, s = map(int, sys.argv[1:6])
options = compiler_options(sys.argv[6])
x = jnp.asarray(np.random.default_rng(0).random((10, side, side, cin)), jnp.float32)
w = jnp.asarray(np.random.default_rng(1).random((k, k, cin, cout)) * 0.1, jnp.float32)
dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
pad = ((k // 2, k // 2),) * 2
conv = lambda x, w: lax.conv_general_dilated(x, w, (s, s), pad, dimension_numbers=dn)
g = jnp.ones_like(conv(x, w))
fns = {
  "forward": (conv, (x, w)),
  "input_grad": (lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0], (x, w, g)),
  "kernel_grad": (lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0], (x, w, g)),
}
out = {}
for name, (f, args) in fns.items():
  f = jax.jit(f).lower(*args).compile(compiler_options=options)
  jax.block_until_ready(f(*args))
  times = []
  for _ in range(7):
    t = time.perf_counter(); jax.block_until_ready(f(*args)); times.append(time.perf_counter() - t)
  out[name] = round(1000 * min(times), 3)
print(json.dumps(out))
"""

TORCH = r"""
import json, sys, time, torch
torch.set_num_threads(1)
side, cin, cout, k, s = map(int, sys.argv[1:6])
x = torch.rand(10, cin, side, side, requires_grad=True)
w = (torch.rand(cout, cin, k, k) * 0.1).requires_grad_()
conv = lambda x, w: torch.nn.functional.conv2d(x, w, stride=s, padding=k // 2)
y = conv(x, w).detach()
g = torch.ones_like(y)
def forward():
  with torch.no_grad():
    conv(x, w)
def input_grad():  # the backward pass alone, from a recorded forward
  y = conv(x, w)
  t = time.perf_counter(); torch.autograd.grad(y, x, g); return time.perf_counter() - t
def kernel_grad():
  y = conv(x, w)
  t = time.perf_counter(); torch.autograd.grad(y, w, g); return time.perf_counter() - t
out = {}
forward(); times = []
for _ in range(7):
  t = time.perf_counter(); forward(); times.append(time.perf_counter() - t)
out["forward"] = round(1000 * min(times), 3)
for name, f in (("input_grad", input_grad), ("kernel_grad", kernel_grad)):
  f(); out[name] = round(1000 * min(f() for _ in range(7)), 3)
print(json.dumps(out))
"""


def one_thread_env():
  """This environment with OpenMP and XLA's CPU runtime held to one thread."""
  env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
  env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
  return env


def line(bench, input_size, shape, labels, ms):
  """One JSON line: ``labels`` (what ran), then the convolution (``shape``, a
  tuple of `shapes`) and its times ``ms``."""
  name, side, cin, cout, k, s, count = shape
  return dict(
    bench=bench,
    **labels,
    cpu=cpu_model(),
    input_size=input_size,
    conv=name,
    shape=[10, side, side, cin, cout, k, s],
    per_step_count=count,
    **ms,
  )


def run(python, code, args, env):
  out = subprocess.run(
    [python, "-c", code, *map(str, args)],
    capture_output=True,
    text=True,
    env=env,
    check=True,
    preexec_fn=pin_one_core,
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--input_size", type=int, default=84)
  p.add_argument("--torch_python", default="", help="an interpreter with PyTorch (optional)")
  p.add_argument("--out", default="", help="append the JSON lines to this file")
  p.add_argument("--cpu_conv_libraries", default="default,eigen", help="rar_jax's, comma-separated")
  a = p.parse_args()
  env = one_thread_env()
  rows = []
  for shape in shapes(a.input_size):
    _, side, cin, cout, k, s, _ = shape
    systems = {
      f"rar_jax (XLA, {lib})": (sys.executable, JAX, (lib,))
      for lib in a.cpu_conv_libraries.split(",")
    }
    if a.torch_python:
      systems["RAR-CL (PyTorch)"] = (a.torch_python, TORCH, ())
    for system, (python, code, extra) in systems.items():
      ms = run(python, code, (side, cin, cout, k, s, *extra), env)
      ms = {f"{key}_ms": v for key, v in ms.items()}
      rows.append(line("conv_profile", a.input_size, shape, dict(system=system), ms))
      print(json.dumps(rows[-1]), flush=True)
  if a.out:
    with open(a.out, "a") as f:
      f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
  main()
