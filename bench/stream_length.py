"""Per-step cost against the stream's length: ms per training step of a whole
Split Fashion-MNIST run (1 seed) at 1000, 4000 and 12000 samples per task.
The buffer has a fixed size, so the cost should not grow. JSON lines.

  python bench/stream_length.py [--methods er,er_rar]
"""

import argparse
import json
import os
import tempfile

from _common import cli, quiet

from rar_jax.runner import experiment
from rar_jax.runner.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--methods", default="er,er_rar")
  p.add_argument("--lengths", default="1000,4000,12000")
  a = p.parse_args()
  for method in a.methods.split(","):
    for n in map(int, a.lengths.split(",")):
      c = load_file(os.path.join(ROOT, "configs", "split_fashion_mnist.py"))
      c.update(
        methods=method,
        samples_per_task=n,
        num_seeds=1,
        progress=False,
        plot=False,
        validation_fraction=0.0,
        log_every_steps=500,
      )
      with tempfile.TemporaryDirectory() as d:
        m = quiet(experiment.train_and_evaluate)(c, d)[method]
      print(
        json.dumps(
          {
            "bench": "stream_length",
            "method": method,
            "samples_per_task": n,
            "steps": m["steps"],
            "ms_per_step": round(1000 * m["train_seconds"] / m["steps"], 4),
          }
        ),
        flush=True,
      )


if __name__ == "__main__":
  cli(main)
