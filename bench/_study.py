"""Shared by the continual-evaluation studies (`stability_gap.py`,
`blurry_streams.py`): run methods on paired seeds with continual evaluation,
keep each method's per-seed summaries and seed-mean curve, render tables."""

import json
import os
import tempfile

import numpy as np
from _common import cpu_model, quiet

from rar_jax.evaluation.metrics import final_average_accuracy, summarize, two_se
from rar_jax.runner import experiment, plots
from rar_jax.runner.config import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTINUAL = dict(eval_every=10, eval_samples_per_task=200)
METRICS = ("final", "aaa", "min_acc", "wc_acc", "stability_gap")
NAMES = {
  "final": "final accuracy",
  "aaa": "AAA",
  "aaa_seen_classes": "AAA, seen classes",
  "min_acc": "min-ACC",
  "wc_acc": "WC-ACC",
  "stability_gap": "stability gap",
}


def run(bench, setting, config_file, overrides, picture, title):
  """Every method of ``overrides["methods"]`` on the same seeds; the continual
  picture to ``picture``; returns the result record (one JSON object)."""
  config = load_file(os.path.join(ROOT, "configs", config_file))
  config.update(plot=False, rar_samples=0, keep_checkpoints=0, progress=False, **CONTINUAL)
  config.update(overrides)
  with tempfile.TemporaryDirectory() as workdir:
    results = quiet(experiment.train_and_evaluate)(config, workdir)
    if config.stream != "class_incremental":  # the picture of the stream, as a run draws it
      data = experiment.prepare_data(config)
      experiment.write_stream_picture(config, data, os.path.dirname(picture))
      os.replace(
        os.path.join(os.path.dirname(picture), "stream.png"),
        picture.replace(".png", "_stream.png"),
      )
  plots.plot_continual(picture, results, title)
  methods = {}
  for method, r in results.items():
    c = r["continual"]
    per_seed = {k: c[k]["per_seed"] for k in METRICS if k != "final"}
    per_seed["final"] = final_average_accuracy(np.asarray(r["acc_matrix"])).tolist()
    if "aaa_seen_classes" in c:
      per_seed["aaa_seen_classes"] = c["aaa_seen_classes"]["per_seed"]
    for kind in ("disjoint", "blurry"):
      if r.get(f"final_accuracy_{kind}_classes"):
        per_seed[f"final_{kind}"] = r[f"final_accuracy_{kind}_classes"]["per_seed"]
    methods[method] = {
      "per_seed": per_seed,
      "stability_gap_per_switch": c["stability_gap_per_switch"],
      "steps": c["steps"],
      "task_ends": c["task_ends"],
      "mean_accuracy": np.asarray(c["accuracy"]).mean(0).round(4).tolist(),
      "seconds": r["train_seconds"],
    }
  return {
    "bench": bench,
    "setting": setting,
    "config": f"configs/{config_file}",
    "overrides": overrides,
    "seeds": config.num_seeds,
    **CONTINUAL,
    "methods": methods,
    "cpu": cpu_model(),
  }


def _pm(values) -> str:
  s = summarize(np.asarray(values))
  return f"{s['mean']:.3f} ± {s['se2']:.3f}"


def table(record, metrics=METRICS, names=NAMES) -> list:
  """Markdown lines: one row per method, then each method's paired difference to ER."""
  ms = record["methods"]
  rows = [
    f"| method | {' | '.join(names[k] for k in metrics)} |",
    "| --- |" + " --- |" * len(metrics),
  ]
  for m, d in ms.items():
    rows.append(f"| {m} | " + " | ".join(_pm(d["per_seed"][k]) for k in metrics) + " |")
  for m in ms:
    if m == "er":
      continue
    diffs = []
    for k in metrics:
      d = np.asarray(ms[m]["per_seed"][k]) - np.asarray(ms["er"]["per_seed"][k])
      diffs.append(f"{d.mean():+.3f} ± {float(two_se(d)):.3f} ({int((d > 0).sum())}/{len(d)})")
    rows.append(f"| {m} − er, paired | " + " | ".join(diffs) + " |")
  return rows


def save(path, record) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(record, f)
  print(json.dumps({k: v for k, v in record.items() if k != "methods"}), flush=True)


def render(paths, command, extra=lambda record: "", metrics=lambda record: METRICS, names=NAMES):
  """Markdown: per stored record (a JSON file) its title line and `table`, then a footer."""
  rows = []
  for path in paths:
    with open(path) as f:
      r = json.load(f)
    settings = ", ".join(f"{k}={v}" for k, v in r["overrides"].items())
    rows += [
      f"**{r['setting']}** ({r['seeds']} paired seeds; `{r['config']}` with {settings}; "
      f"{r['cpu']}{extra(r)})",
      "",
      *table(r, metrics(r), names),
      "",
    ]
  rows += [
    "Mean ± 2 standard errors over seeds; paired rows: the difference per seed, with how many",
    "seeds it is positive in (for the stability gap, positive means a *larger* gap).",
    f"Command: `{command}` (each table from one run of it).",
  ]
  return "\n".join(rows) + "\n"
