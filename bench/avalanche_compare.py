"""rar_jax against Avalanche 0.6 (`ReplayPlugin`, `RARPlugin`) on the same
online Split Fashion-MNIST streams: ms per step and final accuracy, one table.

  python bench/avalanche_compare.py --avalanche_python /path/to/venv/bin/python

Avalanche needs torch and avalanche-lib in the interpreter given (default: this
one); this script installs nothing and prints a `skipped` line when they are
missing. Both sides see identical streams (written to an .npz file). Avalanche
runs with its defaults for RAR (beta 0.5, eps 0.0314, 2 iterations); rar_jax
runs er, er_rar with the same values and er_rar with the tuned values.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from _common import cli, quiet

from rar_jax.evaluation import metrics
from rar_jax.runner import experiment
from rar_jax.runner.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

AVALANCHE_HP = dict(beta_coef=0.5, epsilon_fgsm=0.0314, alpha_fgsm=0.0314 / 2, iter_fgsm=2)


def summary(name, system, acc, seconds, steps):
  acc = np.asarray(acc)
  return {
    "bench": "avalanche_compare",
    "system": system,
    "method": name,
    "seeds": int(acc.shape[0]),
    "final_avg_accuracy": metrics.summarize(metrics.final_average_accuracy(acc)),
    "final_forgetting": metrics.summarize(metrics.final_forgetting(acc)),
    "ms_per_seed_step": round(1000 * seconds / steps, 3),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--avalanche_python", default=sys.executable)
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--mem_size", type=int, default=200)
  p.add_argument("--tuned", default="", help="JSON of tuned RAR overrides for an extra row")
  p.add_argument("--systems", default="avalanche,rar_jax")
  p.add_argument("--plugins", default="replay,rar")
  a = p.parse_args()
  config = load_file(os.path.join(ROOT, "configs", "split_fashion_mnist.py"))
  config.update(
    num_seeds=a.seeds, mem_size=a.mem_size, progress=False, plot=False, validation_fraction=0.0
  )
  data = experiment.prepare_data(config)
  streams, train_x, train_y = data.streams, data.train_x, data.train_y
  test_x, test_y = data.eval_x, data.eval_y
  idx = streams.index.reshape(a.seeds, config.num_tasks, -1)
  with tempfile.TemporaryDirectory() as d:
    npz = os.path.join(d, "streams.npz")
    np.savez(
      npz,
      streams_x=train_x[idx][..., 0],
      streams_y=train_y[idx],
      test_x=test_x[..., 0],
      test_y=test_y,
      task=streams.task_of_class,
    )
    rows = []
    for plugin, name in (("replay", "er"), ("rar", "er_rar")):
      if "avalanche" not in a.systems or plugin not in a.plugins:
        continue
      out = subprocess.run(
        [
          a.avalanche_python,
          os.path.join(ROOT, "bench", "avalanche_worker.py"),
          npz,
          plugin,
          str(a.mem_size),
        ],
        capture_output=True,
        text=True,
      )
      if out.returncode != 0:
        print(
          json.dumps(
            {
              "bench": "avalanche_compare",
              "system": "avalanche",
              "error": out.stderr.strip().splitlines()[-1:],
            }
          )
        )
        continue
      r = json.loads(out.stdout.strip().splitlines()[-1])
      if "skipped" in r:
        print(json.dumps({"bench": "avalanche_compare", "system": "avalanche", **r}))
        break
      rows.append(summary(name, "avalanche-0.6", r["acc_matrix"], r["train_seconds"], r["steps"]))
      print(json.dumps(rows[-1]), flush=True)
    runs = [("er", {}), ("er_rar", AVALANCHE_HP)] if "rar_jax" in a.systems else []
    if a.tuned and "rar_jax" in a.systems:
      runs.append(("er_rar", json.loads(a.tuned)))
    for method, hp in runs:
      c = config.copy_and_resolve_references()
      c.update(methods=method, **hp)
      r = quiet(experiment.train_and_evaluate)(c, os.path.join(d, f"{method}{len(rows)}"))[method]
      # Seeds advance together under vmap: cost per seed-step, as Avalanche's.
      rows.append(
        summary(
          method + (" (tuned)" if hp and hp is not AVALANCHE_HP else ""),
          "rar_jax",
          r["acc_matrix"],
          r["train_seconds"],
          r["steps"] * r["num_seeds"],
        )
      )
      print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
  cli(main)
