"""Does RAR shrink the stability gap? ER, ER-RAR and ER-Mix-RAR on online Split
Fashion-MNIST with continual evaluation (every 10 steps, 200 samples per task),
paired seeds (the same seeds: the same streams and evaluation rows).

  python bench/stability_gap.py                  # MLP (m200, m50) and ResNet (m50), ~30 min
  python bench/stability_gap.py --only mlp_m200  # one setting

mlp_m200 / mlp_m50: configs/split_fashion_mnist.py (RAR's keys tuned on
validation: beta 0.1, epsilon 0.3, alpha 0.06, 5 steps) at learning rate 0.05
(tuned on validation for ER, ER-RAR and ER-Mix-RAR), memory 200 / 50, 20 seeds.
resnet_m50: configs/split_fashion_mnist_resnet.py with one batch-norm pass over
incoming and replay rows and RAR's keys of its docstring (epsilon 0.3, alpha 0.15,
beta 0.1), memory 50, ER and ER-RAR, `--resnet_seeds` seeds (5: ~15 min on 2 cores).
Writes bench/results/stability_gap/<setting>.json (per-seed summaries, seed-mean
curves), docs/_static/stability_gap_<setting>.png and docs/tables/stability_gap.md.
"""

import argparse
import glob
import os

import _study
from _common import cli

ROOT = _study.ROOT
OUT = os.path.join(ROOT, "bench", "results", "stability_gap")
TABLE = os.path.join(ROOT, "docs", "tables", "stability_gap.md")
MLP = dict(learning_rate=0.05, methods="er,er_rar,er_mix_rar", num_seeds=20)
RESNET = dict(
  batch_norm_rows="joint", epsilon_fgsm=0.3, alpha_fgsm=0.15, beta_coef=0.1, methods="er,er_rar"
)
SETTINGS = {
  "mlp_m200": ("split_fashion_mnist.py", dict(MLP, mem_size=200)),
  "mlp_m50": ("split_fashion_mnist.py", dict(MLP, mem_size=50)),
  "resnet_m50": ("split_fashion_mnist_resnet.py", dict(RESNET, mem_size=50)),
}


def render() -> str:
  return _study.render(
    sorted(glob.glob(os.path.join(OUT, "*.json"))),
    "python bench/stability_gap.py",
    extra=lambda r: f"; picture: `docs/_static/stability_gap_{r['setting']}.png`",
  )


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", choices=tuple(SETTINGS), action="append")
  p.add_argument("--resnet_seeds", type=int, default=5)
  p.add_argument("--render", action="store_true", help="only render the table from the results")
  a = p.parse_args()
  if not a.render:
    for name in a.only or SETTINGS:
      config_file, overrides = SETTINGS[name]
      if name.startswith("resnet"):
        overrides = dict(overrides, num_seeds=a.resnet_seeds)
      model, mem = name.split("_")
      record = _study.run(
        "stability_gap",
        name,
        config_file,
        overrides,
        os.path.join(ROOT, "docs", "_static", f"stability_gap_{name}.png"),
        f"Split Fashion-MNIST, {model.upper()}, memory {mem[1:]}, "
        f"{overrides.get('num_seeds', 10)} seeds, test split (200 per task)",
      )
      _study.save(os.path.join(OUT, f"{name}.json"), record)
  with open(TABLE, "w") as f:
    f.write(render())


if __name__ == "__main__":
  cli(main)
