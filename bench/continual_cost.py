"""What continual evaluation costs: training wall time with `eval_every=10` and
200 evaluation samples per task against `eval_every=0`, same process, same machine.

  python bench/continual_cost.py                 # MLP and reduced ResNet-18 (~12 min, 2 cores)
  python bench/continual_cost.py --only mlp      # configs/split_fashion_mnist.py, 10 seeds

mlp: configs/split_fashion_mnist.py as shipped (ER-RAR, 10 seeds, 500 steps).
resnet: configs/split_fashion_mnist_resnet.py, ER-RAR, 2 seeds, 300 samples per
task (the ratio is per step: the full 10-seed run takes ~25 minutes a pass).
Each model runs off, on, off, on; the ratio is the sum of the "on" training
times over the sum of the "off" ones (`train_seconds` of metrics.json: the
chunks' wall time, the in-stream evaluation included, compilation excluded).
Appends one JSON line per model to bench/results/continual_cost.jsonl and
renders docs/tables/continual_cost.md from that file.
"""

import argparse
import json
import os
import tempfile

from _common import cli, cpu_model, quiet

from rar_jax.runner import experiment
from rar_jax.runner.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results", "continual_cost.jsonl")
TABLE = os.path.join(ROOT, "docs", "tables", "continual_cost.md")
SETUPS = {
  "mlp": ("split_fashion_mnist.py", {}),
  "resnet": (
    "split_fashion_mnist_resnet.py",
    dict(methods="er_rar", num_seeds=2, samples_per_task=300),
  ),
}
CONTINUAL = dict(eval_every=10, eval_samples_per_task=200)


def train_seconds(config_file, overrides, data_dir=None, **continual):
  config = load_file(os.path.join(ROOT, "configs", config_file))
  config.update(plot=False, rar_samples=0, keep_checkpoints=0, progress=False, **overrides)
  if data_dir:
    config.update(data_dir=data_dir)
  config.update(continual)
  with tempfile.TemporaryDirectory() as workdir:
    results = quiet(experiment.train_and_evaluate)(config, workdir)
  (r,) = results.values()
  return r["train_seconds"], r["num_seeds"], r["steps"], r["method"]


def measure(name, data_dir=None):
  config_file, overrides = SETUPS[name]
  # compile both once (persistent cache)
  train_seconds(config_file, overrides, data_dir, **CONTINUAL)
  off, on = [], []
  for _ in range(2):
    off.append(train_seconds(config_file, overrides, data_dir)[0])
    seconds, seeds, steps, method = train_seconds(config_file, overrides, data_dir, **CONTINUAL)
    on.append(seconds)
  return {
    "bench": "continual_cost",
    "model": name,
    "config": f"configs/{config_file}",
    "overrides": overrides,
    "method": method,
    "seeds": seeds,
    "steps": steps,
    **CONTINUAL,
    "train_seconds_off": off,
    "train_seconds_on": on,
    "ratio": sum(on) / sum(off),
    "cpu": cpu_model(),
  }


def render() -> str:
  rows = [
    "| model | config | method, seeds x steps | training time, off (2 passes) | "
    "with eval_every=10, 200 per task | ratio | CPU |",
    "| --- | --- | --- | --- | --- | --- | --- |",
  ]
  with open(RESULTS) as f:
    for r in map(json.loads, f):
      extra = ", ".join(f"{k}={v}" for k, v in r["overrides"].items() if k != "methods")
      rows.append(
        f"| {r['model']} | `{r['config']}`{' ' + extra if extra else ''} | {r['method']}, "
        f"{r['seeds']} x {r['steps']} | {sum(r['train_seconds_off']):.1f} s | "
        f"{sum(r['train_seconds_on']):.1f} s | {r['ratio']:.2f}x | {r['cpu']} |"
      )
  rows += ["", "Command: `python bench/continual_cost.py` (each row from one run of it)."]
  return "\n".join(rows) + "\n"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", choices=tuple(SETUPS), action="append")
  p.add_argument("--render", action="store_true", help="only render the table from the results")
  p.add_argument("--data_dir", default="", help="Fashion-MNIST's IDX files (default: Debian's)")
  p.add_argument(
    "--stdout_only", action="store_true", help="print the lines; results and table untouched"
  )
  a = p.parse_args()
  if not a.render:
    for name in a.only or SETUPS:
      line = measure(name, a.data_dir or None)
      print(json.dumps(line), flush=True)
      if a.stdout_only:
        continue
      with open(RESULTS, "a") as f:
        f.write(json.dumps(line) + "\n")
  if a.stdout_only:
    return
  with open(TABLE, "w") as f:
    f.write(render())


if __name__ == "__main__":
  cli(main)
