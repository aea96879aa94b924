"""Reruns finished runs from their own config.json and compares the numbers,
as JSON lines: does a result reproduce on this machine?

  python bench/rerun.py bench/results/quality/ncm_test_m200_er_rar_ncm ...

Each folder is one method's run as train.py wrote it (config.json and
metrics.json). The run is trained again into a temporary folder (plots and
checkpoints off; nothing in the folder is touched) and its per-seed final
average accuracies are compared with metrics.json's: the means, the largest
per-seed and per-entry (acc_matrix) differences, and whether every number is
identical. Bit-identical numbers need the same CPU kind and core count
(docs/reproducibility.md): pin the rerun as the original was pinned (the
folder's metrics.json records ``host_cpus``), e.g. ``taskset -c 0``.
"""

import argparse
import json
import os
import tempfile

import numpy as np
from _common import cli, cpu_model, quiet

from rar_jax.errors import ConfigError
from rar_jax.runner import experiment
from rar_jax.runner.config import base_config


def rerun(folder: str) -> dict:
  paths = [os.path.join(folder, n) for n in ("config.json", "metrics.json")]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise ConfigError(f"{folder}: no {', '.join(map(os.path.basename, missing))}")
  with open(paths[0]) as f:
    saved = json.load(f)
  with open(paths[1]) as f:
    before = json.load(f)
  config = base_config()  # keys added after the run was written run as their defaults
  config.update(saved)
  config.update(plot=False, progress=False, keep_checkpoints=0, overwrite=True)
  with tempfile.TemporaryDirectory() as out:
    (after,) = quiet(experiment.train_and_evaluate)(config, out).values()
  a, b = np.asarray(before["acc_matrix"]), np.asarray(after["acc_matrix"])
  sa = np.asarray(before["final_avg_accuracy"]["per_seed"])
  sb = np.asarray(after["final_avg_accuracy"]["per_seed"])
  return {
    "bench": "rerun",
    "folder": os.path.relpath(folder),
    "method": after["method"],
    "seeds": after["num_seeds"],
    "mean_before": before["final_avg_accuracy"]["mean"],
    "mean_after": after["final_avg_accuracy"]["mean"],
    "max_seed_diff": float(np.max(np.abs(sa - sb))),
    "max_entry_diff": float(np.nanmax(np.abs(a - b))),
    "identical": bool(np.array_equal(a, b, equal_nan=True)),
    "host_cpus_before": before.get("host_cpus"),
    "host_cpus_after": after.get("host_cpus"),
    "cpu": cpu_model(),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("folders", nargs="+", help="method folders written by train.py")
  for folder in p.parse_args().folders:
    print(json.dumps(rerun(folder)), flush=True)


if __name__ == "__main__":
  cli(main)
