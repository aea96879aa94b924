"""ER, ER-RAR and ER-Mix-RAR on online Split Fashion-MNIST as sharp-boundary,
i-Blurry-50-10 and Gaussian (boundary_width 0.25) streams, memory 200, paired
seeds, with continual evaluation (every 10 steps, 200 samples per task).

  python bench/blurry_streams.py                 # the three streams, ~12 min on 2 cores
  python bench/blurry_streams.py --only blurry   # one stream

configs/split_fashion_mnist.py (RAR's keys tuned on validation) at learning rate
0.05, 10 seeds. Writes bench/results/blurry_streams/<stream>.json,
docs/_static/streams_<stream>.png (accuracy during the stream),
docs/_static/streams_<stream>_stream.png (seed 0's stream) and docs/tables/blurry_streams.md.
"""

import argparse
import os

import _study
from _common import cli

ROOT = _study.ROOT
OUT = os.path.join(ROOT, "bench", "results", "blurry_streams")
TABLE = os.path.join(ROOT, "docs", "tables", "blurry_streams.md")
BASE = dict(learning_rate=0.05, methods="er,er_rar,er_mix_rar", num_seeds=10, mem_size=200)
STREAMS = {
  "class_incremental": {},
  "blurry": dict(stream="blurry", disjoint_class_fraction=0.5, blurry_sample_fraction=0.1),
  "gaussian": dict(stream="gaussian", boundary_width=0.25),
}
METRICS = ("final", "aaa", "aaa_seen_classes", "wc_acc", "stability_gap")
BLURRY_METRICS = (
  "final",
  "final_disjoint",
  "final_blurry",
  "aaa",
  "aaa_seen_classes",
  "wc_acc",
  "stability_gap",
)
NAMES = dict(
  _study.NAMES, final_disjoint="final, disjoint classes", final_blurry="final, blurry classes"
)


def render() -> str:
  paths = [os.path.join(OUT, f"{n}.json") for n in STREAMS]
  return _study.render(
    [p for p in paths if os.path.exists(p)],
    "python bench/blurry_streams.py",
    metrics=lambda r: BLURRY_METRICS if r["setting"] == "blurry" else METRICS,
    names=NAMES,
  )


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", choices=tuple(STREAMS), action="append")
  p.add_argument("--render", action="store_true", help="only render the table from the results")
  a = p.parse_args()
  if not a.render:
    for name in a.only or STREAMS:
      record = _study.run(
        "blurry_streams",
        name,
        "split_fashion_mnist.py",
        dict(BASE, **STREAMS[name]),
        os.path.join(ROOT, "docs", "_static", f"streams_{name}.png"),
        f"Split Fashion-MNIST as a {name} stream, MLP, memory 200, 10 seeds, test split",
      )
      _study.save(os.path.join(OUT, f"{name}.json"), record)
  with open(TABLE, "w") as f:
    f.write(render())


if __name__ == "__main__":
  cli(main)
