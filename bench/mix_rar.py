"""ER-mix-RAR against ER-mix on online Split Fashion-MNIST (MLP), with RAR's
clean term on the unmixed replay rows (the paper's code), as JSON lines.

  python bench/mix_rar.py                      # tune, then test (~25 min on 2 CPU cores)
  python bench/mix_rar.py --phase test         # the test runs only (reads the tuning)

tune: each method's keys on the 5% validation split at memory 200, 10 seeds
per cell, every cell in one program: ER-mix the learning rate (0.03, 0.05,
0.1); ER-mix-RAR the learning rate (0.05, 0.1) x beta_coef (0.1, 0.3) x
epsilon_fgsm (0.1, 0.3) (alpha_fgsm stays at the config's 0.06). test: each method's best
cell on the test split at memory 200 and 50, 20 seeds (the same seeds, so the
same streams: the difference is paired). Results: bench/results/mix_rar/<run>/
(not committed) and, per run, its config and per-seed numbers in
bench/results/mix_rar/runs_{tune,test}.jsonl (`_store`), which bench/report.py reads.
"""

import argparse
import json
import os

import _store
import numpy as np
from _common import cli, cpu_model, quiet

from rar_jax.runner import experiment
from rar_jax.runner.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "results", "mix_rar")
TUNING = {
  "er_mix": "learning_rate=0.03,0.05,0.1",
  "er_mix_rar": "learning_rate=0.05,0.1;beta_coef=0.1,0.3;epsilon_fgsm=0.1,0.3",
}
KEEP = ("metrics.json", "config.json", "acc_matrix.csv")


def config_for(method, **overrides):
  c = load_file(os.path.join(ROOT, "configs", "split_fashion_mnist.py"))
  c.update(methods=method, plot=False, rar_samples=0, keep_checkpoints=0, progress=False)
  c.update(overrides)
  return c


def run(name, method, **overrides):
  workdir = os.path.join(OUT, name)
  result = quiet(experiment.train_and_evaluate)(config_for(method, **overrides), workdir)
  for root, dirs, files in os.walk(workdir, topdown=False):  # keep per-seed records only
    for f in files:
      if f not in KEEP:
        os.remove(os.path.join(root, f))
    for d in dirs:
      if not os.listdir(os.path.join(root, d)):
        os.rmdir(os.path.join(root, d))
  _store.pack("mix_rar", name)
  return result[method]


def best_cell(method):
  return _store.find("mix_rar", f"tune_{method}")["metrics"]["best_cell"]


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--phase", default="all", choices=("all", "tune", "test"))
  a = p.parse_args()
  cpu = cpu_model()
  if a.phase in ("all", "tune"):
    for method, sweep in TUNING.items():
      r = run(f"tune_{method}", method, sweep=sweep, eval_split="validation", num_seeds=10)
      print(
        json.dumps(
          {
            "bench": "mix_rar",
            "phase": "tune",
            "method": method,
            "best_cell": r["best_cell"],
            "cpu": cpu,
          }
        ),
        flush=True,
      )
  if a.phase in ("all", "test"):
    for mem in (200, 50):
      per_seed = {}
      for method in TUNING:
        cell = best_cell(method)
        r = run(f"test_m{mem}_{method}", method, mem_size=mem, num_seeds=20, **cell)
        per_seed[method] = np.asarray(r["final_avg_accuracy"]["per_seed"])
        print(
          json.dumps(
            {
              "bench": "mix_rar",
              "phase": "test",
              "mem_size": mem,
              "method": method,
              "cell": cell,
              "accuracy": r["final_avg_accuracy"]["mean"],
              "se2": r["final_avg_accuracy"]["se2"],
              "forgetting": r["final_forgetting"]["mean"],
              "cpu": cpu,
            }
          ),
          flush=True,
        )
      d = per_seed["er_mix_rar"] - per_seed["er_mix"]
      print(
        json.dumps(
          {
            "bench": "mix_rar",
            "phase": "paired",
            "mem_size": mem,
            "er_mix_rar_minus_er_mix": float(d.mean()),
            "se2": float(2 * d.std(ddof=1) / np.sqrt(len(d))),
            "seeds_above": int((d > 0).sum()),
            "seeds": len(d),
          }
        ),
        flush=True,
      )


if __name__ == "__main__":
  cli(main)
