"""A 16-cell sweep (4 beta x 4 epsilon, 1 seed each) of ER-RAR on Split
Fashion-MNIST (1000 samples per task): one program versus 16 separate
`train.py` processes, wall time each. JSON lines.

  python bench/sweep_time.py [--devices N]   # N host devices for the one-program run
"""

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BETAS = (0.1, 0.3, 0.5, 0.7)
EPSILONS = (0.05, 0.1, 0.2, 0.3)
COMMON = [
  "--config",
  "configs/split_fashion_mnist.py",
  "--config.methods=er_rar",
  "--config.num_seeds=1",
  "--config.progress=false",
  "--config.plot=false",
]


def train(args, devices=1):
  env = dict(
    os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}"
  )
  out = subprocess.run(
    [sys.executable, os.path.join(ROOT, "train.py"), *COMMON, *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    env=env,
  )
  if out.returncode != 0:
    raise SystemExit(out.stderr[-3000:])


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--devices", type=int, default=1)
  a = p.parse_args()
  spec = f"beta_coef={','.join(map(str, BETAS))};epsilon_fgsm={','.join(map(str, EPSILONS))}"
  with tempfile.TemporaryDirectory() as d:
    t0 = time.perf_counter()
    train([f"--config.sweep={spec}", "--workdir", f"{d}/sweep"], a.devices)
    one = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, (b, e) in enumerate(itertools.product(BETAS, EPSILONS)):
      train([f"--config.beta_coef={b}", f"--config.epsilon_fgsm={e}", "--workdir", f"{d}/{i}"])
    separate = time.perf_counter() - t0
  print(
    json.dumps(
      {
        "bench": "sweep_time",
        "cells": 16,
        "one_program_seconds": round(one, 1),
        "separate_runs_seconds": round(separate, 1),
        "devices": a.devices,
        "speedup": round(separate / one, 2),
      }
    ),
    flush=True,
  )


if __name__ == "__main__":
  main()
