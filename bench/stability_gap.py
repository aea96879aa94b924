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
import json
import os
import tempfile

import numpy as np
from _common import cli, cpu_model, quiet

from rar_jax.evaluation.metrics import final_average_accuracy, summarize, two_se
from rar_jax.runner import experiment, plots
from rar_jax.runner.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "bench", "results", "stability_gap")
TABLE = os.path.join(ROOT, "docs", "tables", "stability_gap.md")
CONTINUAL = dict(eval_every=10, eval_samples_per_task=200)
MLP = dict(learning_rate=0.05, methods="er,er_rar,er_mix_rar", num_seeds=20)
RESNET = dict(
  batch_norm_rows="joint", epsilon_fgsm=0.3, alpha_fgsm=0.15, beta_coef=0.1, methods="er,er_rar"
)
SETTINGS = {
  "mlp_m200": ("split_fashion_mnist.py", dict(MLP, mem_size=200)),
  "mlp_m50": ("split_fashion_mnist.py", dict(MLP, mem_size=50)),
  "resnet_m50": ("split_fashion_mnist_resnet.py", dict(RESNET, mem_size=50)),
}
METRICS = ("final", "aaa", "min_acc", "wc_acc", "stability_gap")
NAMES = {
  "final": "final accuracy",
  "aaa": "AAA",
  "min_acc": "min-ACC",
  "wc_acc": "WC-ACC",
  "stability_gap": "stability gap",
}


def run(name, resnet_seeds):
  config_file, overrides = SETTINGS[name]
  config = load_file(os.path.join(ROOT, "configs", config_file))
  config.update(plot=False, rar_samples=0, keep_checkpoints=0, progress=False, **CONTINUAL)
  config.update(overrides)
  if name.startswith("resnet"):
    config.num_seeds = resnet_seeds
  with tempfile.TemporaryDirectory() as workdir:
    results = quiet(experiment.train_and_evaluate)(config, workdir)
  plots.plot_continual(
    os.path.join(ROOT, "docs", "_static", f"stability_gap_{name}.png"),
    results,
    f"Split Fashion-MNIST, {name.split('_')[0].upper()}, memory {config.mem_size}, "
    f"{config.num_seeds} seeds, test split ({CONTINUAL['eval_samples_per_task']} per task)",
  )
  methods = {}
  for method, r in results.items():
    c = r["continual"]
    acc = np.asarray(c["accuracy"])
    per_seed = {k: c[k]["per_seed"] for k in METRICS if k != "final"}
    per_seed["final"] = final_average_accuracy(np.asarray(r["acc_matrix"])).tolist()
    methods[method] = {
      "per_seed": per_seed,
      "stability_gap_per_switch": c["stability_gap_per_switch"],
      "steps": c["steps"],
      "task_ends": c["task_ends"],
      "mean_accuracy": acc.mean(0).round(4).tolist(),  # [points][tasks], seed mean
      "seconds": r["train_seconds"],
    }
  return {
    "bench": "stability_gap",
    "setting": name,
    "config": f"configs/{config_file}",
    "overrides": overrides,
    "seeds": config.num_seeds,
    **CONTINUAL,
    "methods": methods,
    "cpu": cpu_model(),
  }


def pm(values) -> str:
  s = summarize(np.asarray(values))
  return f"{s['mean']:.3f} ± {s['se2']:.3f}"


def render() -> str:
  rows = []
  for path in sorted(glob.glob(os.path.join(OUT, "*.json"))):
    with open(path) as f:
      r = json.load(f)
    ms = r["methods"]
    head = " | ".join(NAMES[k] for k in METRICS)
    rows += [
      f"**{r['setting']}** ({r['seeds']} paired seeds; `{r['config']}` with "
      + ", ".join(f"{k}={v}" for k, v in r["overrides"].items())
      + f"; {r['cpu']}; picture: `docs/_static/stability_gap_{r['setting']}.png`)",
      "",
      f"| method | {head} |",
      "| --- |" + " --- |" * len(METRICS),
    ]
    for m, d in ms.items():
      rows.append(f"| {m} | " + " | ".join(pm(d["per_seed"][k]) for k in METRICS) + " |")
    for m in ms:
      if m == "er":
        continue
      diffs = []
      for k in METRICS:
        d = np.asarray(ms[m]["per_seed"][k]) - np.asarray(ms["er"]["per_seed"][k])
        diffs.append(f"{d.mean():+.3f} ± {float(two_se(d)):.3f} ({int((d > 0).sum())}/{len(d)})")
      rows.append(f"| {m} − er, paired | " + " | ".join(diffs) + " |")
    rows.append("")
  rows += [
    "Mean ± 2 standard errors over seeds; paired rows: the difference per seed, with how many",
    "seeds it is positive in (for the stability gap, positive means a *larger* gap).",
    "Command: `python bench/stability_gap.py` (each table from one run of it).",
  ]
  return "\n".join(rows) + "\n"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", choices=tuple(SETTINGS), action="append")
  p.add_argument("--resnet_seeds", type=int, default=5)
  p.add_argument("--render", action="store_true", help="only render the table from the results")
  a = p.parse_args()
  if not a.render:
    os.makedirs(OUT, exist_ok=True)
    for name in a.only or SETTINGS:
      result = run(name, a.resnet_seeds)
      with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump(result, f)
      print(json.dumps({k: v for k, v in result.items() if k != "methods"}), flush=True)
  with open(TABLE, "w") as f:
    f.write(render())


if __name__ == "__main__":
  cli(main)
