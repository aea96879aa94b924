"""Whole-process cost of one online Split Fashion-MNIST run (start-up, data
loading, compilation, training, evaluation, result files), as JSON lines.

  python bench/whole_process.py            # er and er_rar, 1 seed, 1000 samples per task

Each method twice: with an empty persistent compilation cache (cold, a first
run) and again with the cache that run filled (warm, a rerun of the config).

Wall time of the `python train.py ...` subprocess and its peak resident memory
(ru_maxrss of the child).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def measure(method, samples_per_task, seeds, cache_dir, cache_state):
  with tempfile.TemporaryDirectory() as d:
    cmd = [
      sys.executable,
      os.path.join(ROOT, "train.py"),
      "--config",
      "configs/split_fashion_mnist.py",
      f"--config.methods={method}",
      f"--config.samples_per_task={samples_per_task}",
      f"--config.num_seeds={seeds}",
      "--config.progress=false",
      "--workdir",
      d,
      f"--compilation_cache={cache_dir}",
    ]
    t0 = time.perf_counter()
    # A fresh interpreter per measurement so ru_maxrss is this child's alone.
    wrapper = (
      "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]);"
      "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    out = subprocess.run(
      [sys.executable, "-c", wrapper, *cmd],
      cwd=ROOT,
      capture_output=True,
      text=True,
      env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    wall = time.perf_counter() - t0
    if out.returncode != 0:
      raise SystemExit(out.stderr[-3000:])
    peak_kib = int(out.stdout.strip().splitlines()[-1])
    with open(os.path.join(d, "metrics.json")) as f:
      m = json.load(f)
  return {
    "bench": "whole_process",
    "method": method,
    "compilation_cache": cache_state,
    "samples_per_task": samples_per_task,
    "seeds": seeds,
    "wall_seconds": round(wall, 2),
    "peak_rss_mib": round(peak_kib / 1024),
    "compile_seconds": round(m["compile_seconds"], 2),
    "train_seconds": round(m["train_seconds"], 2),
    "final_avg_accuracy": round(m["final_avg_accuracy"]["mean"], 3),
  }


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--methods", default="er,er_rar")
  p.add_argument("--samples_per_task", type=int, default=1000)
  p.add_argument("--seeds", type=int, default=1)
  a = p.parse_args()
  for method in a.methods.split(","):
    with tempfile.TemporaryDirectory() as cache:  # cold: empty cache; warm: the same config again
      for state in ("cold", "warm"):
        print(json.dumps(measure(method, a.samples_per_task, a.seeds, cache, state)), flush=True)


if __name__ == "__main__":
  main()
