"""Runs a small sweep (or its cells one by one) and prints the per-run final
accuracies as JSON. Used by test_sweep.py in subprocesses with a chosen
number of host devices (XLA_FLAGS=--xla_force_host_platform_device_count=N)."""

import json
import sys
import tempfile

import jax

from rar_jax.runner import experiment
from rar_jax.runner.config import base_config
from rar_jax.runner.sweep import parse_sweep

SWEEP = "beta_coef=0.1,0.5,0.9;epsilon_fgsm=0.3"  # 3 cells


def config(**overrides):
  c = base_config()
  c.update(
    dataset="digits",
    methods="er_rar",
    num_seeds=2,
    samples_per_task=100,
    mem_size=40,
    progress=False,
    plot=False,
    iter_fgsm=3,
    log_every_steps=5,
    keep_checkpoints=0,
  )
  c.update(overrides)
  return c


def main(mode):
  out = {"devices": jax.device_count()}
  with tempfile.TemporaryDirectory() as d:
    if mode == "sweep":
      r = experiment.train_and_evaluate(config(sweep=SWEEP), d)["er_rar"]
      out["cells"] = {
        json.dumps(c["overrides"], sort_keys=True): c["acc_matrix"] for c in r["cells"]
      }
      out["num_runs"] = r["num_runs"]
    else:
      out["cells"] = {}
      for i, cell in enumerate(parse_sweep(SWEEP)):
        r = experiment.train_and_evaluate(config(**cell), f"{d}/{i}")["er_rar"]
        out["cells"][json.dumps(cell, sort_keys=True)] = r["acc_matrix"]
  print("RESULT " + json.dumps(out))


if __name__ == "__main__":
  main(sys.argv[1])
